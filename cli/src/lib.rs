//! The command line `qianlian`, as a library of the calls its subcommands make: connecting to a
//! gateway as a department, inspector or operator ([`client`]), the audit commands
//! ([`audit_client`]), the license commands ([`license_client`]), the embedded default
//! ([`dev`]) and the load generator ([`bench`]). The subcommands themselves, their arguments
//! and their dispatch live in the binary (`src/main.rs`, `src/commands/`).

pub mod audit_client;
pub mod bench;
pub mod client;
pub mod config_signing;
pub mod dev;
pub mod license_client;
pub mod profile;
