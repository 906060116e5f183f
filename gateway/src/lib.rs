//! The Qianlian gateway: one node per department.
//!
//! - [`identity`]: the caller, parsed once from its client certificate.
//! - [`tls`]: TLS 1.3 serving with optional, verified client certificates.
//! - [`policy`]: Casbin access decisions, indexed by owner department.
//! - [`dataset`] and [`identifier`]: the datasets exchanged and the rules their keys follow.
//! - [`store`]: each department's own records (RocksDB, outside the log).
//! - [`exchange`]: the data service; [`notary`]: the log read back, checkpoints and proofs;
//!   [`admin`]: cluster membership; [`license`]: e-licenses; [`directory`]: departments and keys;
//!   [`audit`]: the access trail for inspectors and data subjects, evidence bundles.
//! - [`health`]: gRPC health, `/livez` and `/readyz`; [`metrics`]: Prometheus metrics;
//!   [`telemetry`]: logs, request spans, OTLP trace export and W3C trace context.
//! - [`server`]: a running node (`run(config, listener, shutdown)`); [`config`]: its TOML file.
//! - [`pki`], [`dev`], [`client`], [`audit_client`], [`bench`]: the dev PKI, the embedded
//!   default, the CLI client (its audit commands apart) and the load generator.

pub mod admin;
pub mod audit;
pub mod audit_client;
pub mod bench;
pub mod client;
pub mod config;
pub mod dataset;
pub mod dev;
pub mod directory;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod health;
pub mod identifier;
pub mod identity;
pub mod license;
pub mod license_client;
pub mod metrics;
pub mod notary;
pub mod pki;
pub mod policy;
pub mod replicated;
pub mod server;
pub mod store;
pub mod subject;
pub mod telemetry;
pub mod tls;

/// A fresh random (version 4) UUID naming one request in the log. Drawn from the thread's
/// cryptographic generator, reseeded from the OS, rather than one `getrandom` system call per
/// request.
pub fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let a = uuid::Uuid::parse_str(&super::new_request_id()).expect("a UUID");
        let b = uuid::Uuid::parse_str(&super::new_request_id()).expect("a UUID");
        assert_eq!(a.get_version(), Some(uuid::Version::Random));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
