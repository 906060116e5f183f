//! The Qianlian gateway: one node per department, as a library. The command line `qianlian`
//! (crate `qianlian-cli`) drives it.
//!
//! Dependencies point one way: [`domain`] ← [`node`] ← [`services`] ← [`server`].
//! - [`domain`]: the rules, with no IO and no gRPC: identifiers, datasets, the directory,
//!   identities, the access policy, subject keys, the sample data, the wire contract's names
//!   and limits.
//! - [`node`]: the parts of a running node: its configuration file, TLS, metrics, telemetry,
//!   health, the cluster-wide configuration in force, the record store, forwarding, PKI, time.
//! - [`services`]: one module per `qianlian.v1` service, their errors (the only place a gRPC
//!   status is built) and the conversions to the wire types.
//! - [`server`]: a running node, `run(config, listener, shutdown)`.

pub mod domain;
pub mod node;
pub mod server;
pub mod services;
