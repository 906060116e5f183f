//! Notarization records and their canonical bytes, defined in the verifier for offline checkers.
pub use qianlian_verifier::record::*;
