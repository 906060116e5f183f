//! The rules of data sharing, with no IO and no gRPC.
//!
//! - [`identity`]: the caller, parsed once from its client certificate.
//! - [`identifier`] and [`dataset`]: the datasets exchanged and the rules their keys follow.
//! - [`directory`]: departments, their gateways and their keys.
//! - [`policy`]: Casbin access decisions, indexed by owner department.
//! - [`subject`]: the keyed digest under which a data subject's accesses are indexed.
//! - [`samples`]: the sample records of the embedded default.

pub mod dataset;
pub mod directory;
pub mod identifier;
pub mod identity;
pub mod policy;
pub mod samples;
pub mod subject;
