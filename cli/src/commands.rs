//! The subcommands of `qianlian`, one module each: its arguments (clap) and what it does.
//! The calls they make to gateways live in the `qianlian_cli` library.

pub mod audit;
pub mod bench;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod dev;
pub mod license;
pub mod pki;
pub mod seed;
pub mod serve;
