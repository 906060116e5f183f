//! Node configuration: one TOML file per node. Relative paths are resolved against the folder
//! of the file, so a config and its certificates can move together. Unknown keys are refused,
//! so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The configuration could not be used. The operator's file is at fault; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: &'static str,
        message: String,
    },
}

/// A node's configuration, with paths already resolved.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, greater than zero.
    pub node_id: u64,
    /// Address to bind the gRPC port to.
    pub listen: SocketAddr,
    /// URL peers use to reach this node; default `https://<listen>`.
    pub advertise: String,
    /// Folder holding the Raft log, state machine and record store.
    pub data_dir: PathBuf,
    /// Trust domain of the SPIFFE identities in certificates, e.g. `gov.example`.
    pub trust_domain: String,
    /// Initialise a single-voter cluster of this node on first start.
    pub bootstrap: bool,
    pub tls: TlsFiles,
    pub policy: PolicyFiles,
    pub limits: Limits,
    pub checkpoint: CheckpointSettings,
    pub raft: RaftSettings,
    pub licenses: LicenseSettings,
    /// Where to serve Prometheus metrics over HTTP (`[metrics] listen`); `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    pub gateway: GatewaySettings,
}

/// The department this node is the gateway of, and how it reaches other departments.
#[derive(Debug, Clone, Default)]
pub struct GatewaySettings {
    /// The department whose data this gateway serves and on whose behalf it forwards. `None`:
    /// the node serves every dataset from its own store and forwards nothing (one-node set-ups).
    pub department: Option<String>,
    /// The department's client certificate and key, presented to other departments' gateways.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How long a forwarded request may take, connection included. Default 5 s.
    pub forward_timeout: std::time::Duration,
    /// Datasets served from an existing HTTP/JSON backend instead of the record store.
    pub adapters: Vec<AdapterSettings>,
}

/// One dataset served by an HTTP/JSON backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSettings {
    pub dataset: String,
    /// Base URL: `GET <url>/records/<key>` reads a record, `GET <url>/records?field=value`
    /// queries.
    pub url: String,
}

/// E-license settings. All optional: without them the node verifies nothing and issues nothing,
/// and says which key to set.
#[derive(Debug, Clone, Default)]
pub struct LicenseSettings {
    /// `departments.toml`: departments and their license public keys.
    pub directory: Option<PathBuf>,
    /// License signing keys (PKCS#8 PEM) of the departments this node issues for.
    pub signing_keys: Vec<PathBuf>,
    /// The cluster's key for hashing holder identifiers (hex, 32 bytes).
    pub subject_key: Option<PathBuf>,
    /// Node checkpoint keys (`<id>.note.pub`) put into exported trust bundles.
    pub trust_node_keys: Vec<PathBuf>,
    /// Node signatures a trust bundle's checkpoint and status list need (k of n). Default 1.
    pub min_cosigners: usize,
}

/// How this node signs checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// This node's Ed25519 note key (signed-note private key form, from `qianlian pki init`).
    pub signing_key: PathBuf,
    /// Origin line of checkpoints: names the log. Default `<trust_domain>/qianlian`.
    pub origin: String,
}

/// Raft settings.
#[derive(Debug, Clone, Copy)]
pub struct RaftSettings {
    /// How long a write waits for a majority before failing with UNAVAILABLE. Default 10 s.
    pub commit_timeout: std::time::Duration,
    /// Raft entries between snapshots of the state machine. Default 5000.
    pub snapshot_every: u64,
    /// Raft entries kept in the log after a snapshot, so slightly lagging followers catch up
    /// without a snapshot. Default 1000.
    pub log_kept_after_snapshot: u64,
}

/// Certificate files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA bundle that client and peer certificates must chain to.
    pub ca: PathBuf,
    /// This node's certificate (server and peer client).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Optional PEM file of certificate revocation lists.
    pub crl: Option<PathBuf>,
    /// How often the files are checked for changes (rotation without restart). Default 10 s.
    pub reload_every: std::time::Duration,
}

/// Policy files.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub model: PathBuf,
    pub rules: PathBuf,
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest record payload accepted by PutRecord, in bytes. Default 64 KiB; at most 4 MiB.
    pub max_payload_bytes: usize,
}

/// Default for [`Limits::max_payload_bytes`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Ceiling for [`Limits::max_payload_bytes`]: gRPC messages stay below 4 MiB.
pub const MAX_PAYLOAD_CEILING: usize = 4 * 1024 * 1024 - 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: u64,
    listen: String,
    advertise: Option<String>,
    data_dir: PathBuf,
    trust_domain: String,
    #[serde(default)]
    bootstrap: bool,
    tls: RawTls,
    policy: RawPolicy,
    #[serde(default)]
    limits: RawLimits,
    checkpoint: RawCheckpoint,
    #[serde(default)]
    raft: RawRaft,
    #[serde(default)]
    licenses: RawLicenses,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    gateway: RawGateway,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    department: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    forward_timeout_ms: Option<u64>,
    #[serde(default)]
    adapter: Vec<RawAdapter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    dataset: String,
    url: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLicenses {
    directory: Option<PathBuf>,
    #[serde(default)]
    signing_keys: Vec<PathBuf>,
    subject_key: Option<PathBuf>,
    #[serde(default)]
    trust_node_keys: Vec<PathBuf>,
    min_cosigners: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    signing_key: PathBuf,
    origin: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRaft {
    commit_timeout_ms: Option<u64>,
    snapshot_every: Option<u64>,
    log_kept_after_snapshot: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    reload_every_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    model: PathBuf,
    rules: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_payload_bytes: Option<usize>,
}

/// Config keys that `QIANLIAN_<KEY>` environment variables override (`.` becomes `_`, upper
/// case): e.g. `QIANLIAN_LISTEN`, `QIANLIAN_TLS_CERT`, `QIANLIAN_RAFT_COMMIT_TIMEOUT_MS`.
/// Values are read as TOML (numbers, booleans, `["a", "b"]`), or as a string otherwise.
pub const ENV_KEYS: &[&str] = &[
    "node_id",
    "listen",
    "advertise",
    "data_dir",
    "trust_domain",
    "bootstrap",
    "tls.ca",
    "tls.cert",
    "tls.key",
    "tls.crl",
    "tls.reload_every_ms",
    "policy.model",
    "policy.rules",
    "checkpoint.signing_key",
    "checkpoint.origin",
    "raft.commit_timeout_ms",
    "raft.snapshot_every",
    "raft.log_kept_after_snapshot",
    "licenses.directory",
    "licenses.signing_keys",
    "licenses.subject_key",
    "licenses.trust_node_keys",
    "licenses.min_cosigners",
    "limits.max_payload_bytes",
    "metrics.listen",
    "gateway.department",
    "gateway.client_cert",
    "gateway.client_key",
    "gateway.forward_timeout_ms",
];

/// `QIANLIAN_*` variables that belong to the command line and scripts, not to a node config.
const ENV_NOT_CONFIG: &[&str] = &[
    "QIANLIAN_DEV_DIR",
    "QIANLIAN_ENDPOINT",
    "QIANLIAN_BIN",
    "QIANLIAN_CLUSTER_DIR",
    "QIANLIAN_BASE_PORT",
    "QIANLIAN_LOG_FORMAT",
];

fn env_name(key: &str) -> String {
    format!("QIANLIAN_{}", key.replace('.', "_").to_uppercase())
}

/// Apply overrides; an unknown `QIANLIAN_*` name is refused so that a typo never passes
/// silently.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), String> {
    for (name, value) in env {
        if !name.starts_with("QIANLIAN_") || ENV_NOT_CONFIG.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = ENV_KEYS.iter().find(|k| env_name(k) == *name) else {
            return Err(format!(
                "environment variable {name} names no config key; known: {}",
                ENV_KEYS
                    .iter()
                    .map(|k| env_name(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut target = &mut *table;
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        for part in parts {
            let entry = target
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            target = entry
                .as_table_mut()
                .ok_or_else(|| format!("{name}: config key `{part}` is not a table"))?;
        }
        target.insert(leaf.to_owned(), parsed);
    }
    Ok(())
}

impl NodeConfig {
    /// Read and validate a config file, then apply `QIANLIAN_*` environment overrides.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::parse_with_env(&text, base, path, &env)
    }

    /// Parse config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, path: &Path) -> Result<NodeConfig, ConfigError> {
        Self::parse_with_env(text, base, path, &[])
    }

    /// Parse config text, then apply `QIANLIAN_*` overrides from `env` (see [`ENV_KEYS`]).
    pub fn parse_with_env(
        text: &str,
        base: &Path,
        path: &Path,
        env: &[(String, String)],
    ) -> Result<NodeConfig, ConfigError> {
        let p = || path.display().to_string();
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: p(),
            message: e.to_string(),
        })?;
        apply_env(&mut table, env).map_err(|message| ConfigError::Parse { path: p(), message })?;
        let raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: p(),
                    message: e.to_string(),
                })?;
        let invalid = |key, message: String| ConfigError::Invalid {
            path: p(),
            key,
            message,
        };
        if raw.node_id == 0 {
            return Err(invalid(
                "node_id",
                "must be greater than 0 (Raft reserves 0)".into(),
            ));
        }
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:7400", raw.listen),
            )
        })?;
        let advertise = raw.advertise.unwrap_or_else(|| format!("https://{listen}"));
        if !advertise.starts_with("https://") {
            return Err(invalid(
                "advertise",
                format!("`{advertise}` must be an https:// URL peers can reach"),
            ));
        }
        if raw.trust_domain.is_empty() || raw.trust_domain.contains('/') {
            return Err(invalid(
                "trust_domain",
                "must be a DNS-style name such as gov.example".into(),
            ));
        }
        let max_payload_bytes = raw
            .limits
            .max_payload_bytes
            .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
        if max_payload_bytes == 0 || max_payload_bytes > MAX_PAYLOAD_CEILING {
            return Err(invalid(
                "limits.max_payload_bytes",
                format!("must be between 1 and {MAX_PAYLOAD_CEILING}, got {max_payload_bytes}"),
            ));
        }
        let origin = raw
            .checkpoint
            .origin
            .unwrap_or_else(|| format!("{}/qianlian", raw.trust_domain));
        if origin.is_empty() || origin.chars().any(char::is_whitespace) {
            return Err(invalid(
                "checkpoint.origin",
                format!("`{origin}` must be one word without spaces, e.g. gov.example/qianlian"),
            ));
        }
        let commit_timeout_ms = raw.raft.commit_timeout_ms.unwrap_or(10_000);
        if !(100..=600_000).contains(&commit_timeout_ms) {
            return Err(invalid(
                "raft.commit_timeout_ms",
                format!("must be between 100 and 600000, got {commit_timeout_ms}"),
            ));
        }
        let snapshot_every = raw.raft.snapshot_every.unwrap_or(5000);
        if snapshot_every < 10 {
            return Err(invalid(
                "raft.snapshot_every",
                format!("must be at least 10 Raft entries, got {snapshot_every}"),
            ));
        }
        let log_kept_after_snapshot = raw.raft.log_kept_after_snapshot.unwrap_or(1000);
        let min_cosigners = raw.licenses.min_cosigners.unwrap_or(1);
        if min_cosigners == 0
            || (!raw.licenses.trust_node_keys.is_empty()
                && min_cosigners > raw.licenses.trust_node_keys.len())
        {
            return Err(invalid(
                "licenses.min_cosigners",
                format!(
                    "must be between 1 and the number of licenses.trust_node_keys ({}), got {min_cosigners}",
                    raw.licenses.trust_node_keys.len()
                ),
            ));
        }
        let reload_every_ms = raw.tls.reload_every_ms.unwrap_or(10_000);
        if !(100..=3_600_000).contains(&reload_every_ms) {
            return Err(invalid(
                "tls.reload_every_ms",
                format!("must be between 100 and 3600000, got {reload_every_ms}"),
            ));
        }
        let metrics_listen = match &raw.metrics.listen {
            Some(l) => Some(l.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("`{l}` is not an address like 127.0.0.1:9464"),
                )
            })?),
            None => None,
        };
        let g = raw.gateway;
        if let Some(d) = &g.department
            && (d.is_empty()
                || !d
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(invalid(
                "gateway.department",
                format!("`{d}` must be a department id: lowercase letters, digits and `-`"),
            ));
        }
        if g.department.is_some() != g.client_cert.is_some()
            || g.client_cert.is_some() != g.client_key.is_some()
        {
            return Err(invalid(
                "gateway.client_cert",
                "a gateway's department, client_cert and client_key go together: set all three (the department's client certificate from `qianlian pki init`, clients/<department>.crt and .key) or none".into(),
            ));
        }
        let forward_timeout_ms = g.forward_timeout_ms.unwrap_or(5_000);
        if !(100..=120_000).contains(&forward_timeout_ms) {
            return Err(invalid(
                "gateway.forward_timeout_ms",
                format!("must be between 100 and 120000, got {forward_timeout_ms}"),
            ));
        }
        for a in &g.adapter {
            if !a.url.starts_with("http://") || a.url.parse::<http::Uri>().is_err() {
                return Err(invalid(
                    "gateway.adapter.url",
                    format!(
                        "`{}` (dataset {}) must be an http:// URL such as http://10.0.0.9:8080/permits",
                        a.url, a.dataset
                    ),
                ));
            }
        }
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let gateway = GatewaySettings {
            department: g.department,
            client_cert: g.client_cert.map(abs),
            client_key: g.client_key.map(abs),
            forward_timeout: std::time::Duration::from_millis(forward_timeout_ms),
            adapters: g
                .adapter
                .into_iter()
                .map(|a| AdapterSettings {
                    dataset: a.dataset,
                    url: a.url.trim_end_matches('/').to_owned(),
                })
                .collect(),
        };
        Ok(NodeConfig {
            gateway,
            node_id: raw.node_id,
            listen,
            advertise,
            data_dir: abs(raw.data_dir),
            trust_domain: raw.trust_domain,
            bootstrap: raw.bootstrap,
            tls: TlsFiles {
                ca: abs(raw.tls.ca),
                cert: abs(raw.tls.cert),
                key: abs(raw.tls.key),
                crl: raw.tls.crl.map(abs),
                reload_every: std::time::Duration::from_millis(reload_every_ms),
            },
            policy: PolicyFiles {
                model: abs(raw.policy.model),
                rules: abs(raw.policy.rules),
            },
            limits: Limits { max_payload_bytes },
            checkpoint: CheckpointSettings {
                signing_key: abs(raw.checkpoint.signing_key),
                origin,
            },
            metrics_listen,
            licenses: LicenseSettings {
                directory: raw.licenses.directory.map(abs),
                signing_keys: raw.licenses.signing_keys.into_iter().map(abs).collect(),
                subject_key: raw.licenses.subject_key.map(abs),
                trust_node_keys: raw.licenses.trust_node_keys.into_iter().map(abs).collect(),
                min_cosigners,
            },
            raft: RaftSettings {
                commit_timeout: std::time::Duration::from_millis(commit_timeout_ms),
                snapshot_every,
                log_kept_after_snapshot,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
listen = "127.0.0.1:7400"
data_dir = "data"
trust_domain = "gov.example"
bootstrap = true
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/a.crt"
key = "/abs/a.key"
[policy]
model = "model.conf"
rules = "policy.csv"
[checkpoint]
signing_key = "pki/nodes/a.note.key"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("/etc/q"), Path::new("/etc/q/node.toml"))
    }

    #[test]
    fn resolves_paths_and_applies_defaults() {
        let c = parse(GOOD).expect("parses");
        assert_eq!(c.data_dir, Path::new("/etc/q/data"));
        assert_eq!(c.tls.key, Path::new("/abs/a.key"));
        assert_eq!(c.advertise, "https://127.0.0.1:7400");
        assert_eq!(c.limits.max_payload_bytes, DEFAULT_MAX_PAYLOAD_BYTES);
        assert!(c.bootstrap);
        assert_eq!(c.checkpoint.origin, "gov.example/qianlian");
        assert_eq!(
            c.checkpoint.signing_key,
            Path::new("/etc/q/pki/nodes/a.note.key")
        );
        assert_eq!(c.raft.commit_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn environment_overrides_keys_and_refuses_unknown_names() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let c = NodeConfig::parse_with_env(
            GOOD,
            Path::new("/etc/q"),
            Path::new("/etc/q/node.toml"),
            &env(&[
                ("QIANLIAN_LISTEN", "127.0.0.1:9000"),
                ("QIANLIAN_NODE_ID", "7"),
                ("QIANLIAN_RAFT_COMMIT_TIMEOUT_MS", "2500"),
                ("QIANLIAN_TLS_CERT", "other.crt"),
                ("QIANLIAN_DEV_DIR", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("overrides apply");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.node_id, 7);
        assert_eq!(
            c.raft.commit_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(c.tls.cert, Path::new("/etc/q/other.crt"));
        let err = NodeConfig::parse_with_env(
            GOOD,
            Path::new("/etc/q"),
            Path::new("/etc/q/node.toml"),
            &env(&[("QIANLIAN_LISTN", "x")]),
        )
        .expect_err("typo");
        assert!(
            err.to_string()
                .contains("QIANLIAN_LISTN names no config key"),
            "{err}"
        );
        let err = NodeConfig::parse_with_env(
            GOOD,
            Path::new("/etc/q"),
            Path::new("/etc/q/node.toml"),
            &env(&[("QIANLIAN_NODE_ID", "0")]),
        )
        .expect_err("validated like the file");
        assert!(err.to_string().contains("key `node_id`"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("node_id = 1", "node_id = 0"), "key `node_id`"),
            (GOOD.replace("127.0.0.1:7400", "localhost"), "key `listen`"),
            (
                format!("{GOOD}[limits]\nmax_payload_bytes = 0\n"),
                "key `limits.max_payload_bytes`",
            ),
            (GOOD.replace("bootstrap", "bootstrapp"), "bootstrapp"),
            (GOOD.replace("[policy]", "[polcy]"), "polcy"),
            (
                format!("{GOOD}[raft]\ncommit_timeout_ms = 5\n"),
                "key `raft.commit_timeout_ms`",
            ),
            (
                GOOD.replace("[checkpoint]", "[checkpoint]\norigin = \"a b\""),
                "key `checkpoint.origin`",
            ),
            (
                format!("{GOOD}[metrics]\nlisten = \"localhost\"\n"),
                "key `metrics.listen`",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(needle).to_string();
            assert!(err.starts_with("config /etc/q/node.toml"), "{err}");
            assert!(err.contains(needle), "{err} should name {needle}");
        }
    }
}
