//! End-to-end tests for Qianlian live in `tests/tests/`.
