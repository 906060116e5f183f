//! The parts of a running node.
//!
//! - [`config`]: the node's TOML file; [`tls`]: TLS 1.3 serving with optional, verified client
//!   certificates; [`crl`]: which CRL file is put in force and whether it is current;
//!   [`connections`]: each listener's connection caps, and closing connections whose
//!   certificate stops being acceptable; [`pki`]: certificates and keys (the dev PKI, license
//!   keys).
//! - [`cluster_config`]: the access policy and directory in force, replicated through the log.
//! - [`records`]: each department's own records (RocksDB, outside the log).
//! - [`forward`]: calls to another department's gateway and to HTTP/JSON backends.
//! - [`health`]: gRPC health, `/livez` and `/readyz`; [`metrics`]: Prometheus metrics;
//!   [`telemetry`]: logs, request spans, OTLP trace export and W3C trace context.
//! - [`time`] and [`request_id`]: the clock and the ids the log records.

pub mod cluster_config;
pub mod config;
pub mod connections;
pub mod crl;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod pki;
pub mod records;
pub mod request_id;
pub mod seal;
pub mod telemetry;
pub mod time;
pub mod tls;
