//! The `qianlian.v1` services, one module each.
//!
//! - [`exchange`]: records read and written across departments, each access notarized.
//! - [`license`]: e-licenses issued, changed, verified and watched.
//! - [`audit`]: the access trail for inspectors and data subjects, evidence bundles.
//! - [`notary`]: the log read back, checkpoints and proofs.
//! - [`admin`]: cluster membership and the replicated configuration.
//! - [`catalog`]: the catalog entries each department publishes for the datasets it owns.
//! - [`error`]: service errors and the only place they become gRPC statuses.
//! - [`convert`]: the node's types in their wire form, and wire values back.

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod convert;
pub mod error;
pub mod exchange;
pub mod license;
pub mod notary;
