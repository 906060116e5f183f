//! Node configuration: one TOML file per node. Relative paths are resolved against the folder
//! of the file, so a config and its certificates can move together. Unknown keys are refused,
//! so a typo never silently falls back to a default.
//!
//! One file can serve every pod of a Kubernetes StatefulSet: `node_id = "ordinal"` takes the
//! id from the host name (`qianlian-2` is node 3), and paths and `advertise` may name
//! `{node_id}`, `{ordinal}` and `{hostname}`, filled in per node (see [`NodeConfig::parse_with_env`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Serve gRPC server reflection (`grpcurl list`), which lists every service and message
    /// to anyone who connects. Default on; `grpc_reflection = false` answers UNIMPLEMENTED.
    pub grpc_reflection: bool,
    pub tls: TlsFiles,
    pub policy: PolicyFiles,
    pub limits: Limits,
    pub checkpoint: CheckpointSettings,
    pub raft: RaftSettings,
    pub licenses: LicenseSettings,
    /// Where to serve Prometheus metrics over HTTP (`[metrics] listen`); `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    pub gateway: GatewaySettings,
    pub audit: AuditSettings,
}

/// Who may ask "who read my data": bearer tokens (JWT) from a trusted identity provider.
/// Without `token_keys` the question is refused with the key to set.
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// The `iss` a token must carry.
    pub token_issuer: String,
    /// The `aud` a token must carry.
    pub token_audience: String,
    /// The identity provider's public keys (PEM, SubjectPublicKeyInfo): Ed25519 (EdDSA), P-256
    /// (ES256) or RSA (RS256). Several during a key rotation.
    pub token_keys: Vec<PathBuf>,
    /// The claim that holds the subject's identifier (resident identity number or unified social
    /// credit code). Default `sub`.
    pub token_subject_claim: String,
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
    /// queries. `http://`, or `https://` with `ca`.
    pub url: String,
    /// CA bundle (PEM) an `https://` backend's certificate must chain to (TLS 1.3, server name
    /// checked against the URL's host). Required for `https://`, refused for `http://`.
    pub ca: Option<PathBuf>,
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
    /// A listener of its own for the Raft service (`[raft] listen`), so that load on the public
    /// port cannot starve consensus. When set, Raft is served only there, and `advertise` (the
    /// address stored in the cluster membership) defaults to `https://<raft.listen>`. Default
    /// `None`: Raft shares the main port.
    pub listen: Option<SocketAddr>,
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

/// Request and connection limits at the node's edge. A limit that is hit refuses the one
/// connection or call (RESOURCE_EXHAUSTED, HTTP 429) and counts it in
/// `qianlian_limit_hits_total`; it never stops the node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest record payload accepted by PutRecord, in bytes. Default 64 KiB; at most 4 MiB.
    pub max_payload_bytes: usize,
    /// Open connections (TLS handshakes included) on the main port, all sources together.
    /// Default 8192; keep it below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Open connections from one source address (an IPv6 source counts by its /64).
    /// Default 1024.
    pub max_connections_per_source: usize,
    /// HTTP/2 streams (calls) in flight on one connection; a client opening more waits for a
    /// free one. Default 128.
    pub max_streams_per_connection: u32,
    /// How long a call may take to produce its answer; then DEADLINE_EXCEEDED (HTTP 504).
    /// Raft calls are exempt: openraft bounds them itself. Default 30 s.
    pub request_timeout: Duration,
    /// How often the node pings an HTTP/2 connection, and how long it waits for the answer
    /// before closing it. Default 30 s and 10 s.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A connection older than this is told to go away (GOAWAY) and closed once its calls end,
    /// at the latest `request_timeout` later; clients reconnect, with a fresh handshake against
    /// the certificates and CRL then in force. Default 30 minutes.
    pub max_connection_age: Duration,
    /// Calls per second from one source address on connections without a client certificate
    /// (license verification, checkpoints, proofs, trust bundles, health, the HTTP routes);
    /// 0 turns the limit off. Default 100.
    pub anonymous_calls_per_second: u32,
    /// Calls such a source may make at once above that rate. Default 200.
    pub anonymous_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: 8192,
            max_connections_per_source: 1024,
            max_streams_per_connection: 128,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            anonymous_calls_per_second: 100,
            anonymous_burst: 200,
        }
    }
}

/// Default for [`Limits::max_payload_bytes`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Ceiling for [`Limits::max_payload_bytes`]: gRPC messages stay below 4 MiB.
pub const MAX_PAYLOAD_CEILING: usize = 4 * 1024 * 1024 - 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// A number, or `"ordinal"` (see [`node_identity`]).
    node_id: toml::Value,
    listen: String,
    advertise: Option<String>,
    data_dir: PathBuf,
    trust_domain: String,
    #[serde(default)]
    bootstrap: bool,
    grpc_reflection: Option<bool>,
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
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    token_issuer: Option<String>,
    token_audience: Option<String>,
    #[serde(default)]
    token_keys: Vec<PathBuf>,
    token_subject_claim: Option<String>,
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
    ca: Option<PathBuf>,
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
    listen: Option<String>,
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
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
    max_streams_per_connection: Option<u32>,
    request_timeout_ms: Option<u64>,
    keepalive_interval_ms: Option<u64>,
    keepalive_timeout_ms: Option<u64>,
    max_connection_age_ms: Option<u64>,
    anonymous_calls_per_second: Option<u32>,
    anonymous_burst: Option<u32>,
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
    "grpc_reflection",
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
    "raft.listen",
    "licenses.directory",
    "licenses.signing_keys",
    "licenses.subject_key",
    "licenses.trust_node_keys",
    "licenses.min_cosigners",
    "limits.max_payload_bytes",
    "limits.max_connections",
    "limits.max_connections_per_source",
    "limits.max_streams_per_connection",
    "limits.request_timeout_ms",
    "limits.keepalive_interval_ms",
    "limits.keepalive_timeout_ms",
    "limits.max_connection_age_ms",
    "limits.anonymous_calls_per_second",
    "limits.anonymous_burst",
    "metrics.listen",
    "gateway.department",
    "gateway.client_cert",
    "gateway.client_key",
    "gateway.forward_timeout_ms",
    "audit.token_issuer",
    "audit.token_audience",
    "audit.token_keys",
    "audit.token_subject_claim",
];

/// `QIANLIAN_*` variables that belong to the command line and scripts, not to a node config.
const ENV_NOT_CONFIG: &[&str] = &[
    "QIANLIAN_DEV_DIR",
    "QIANLIAN_ENDPOINT",
    "QIANLIAN_BIN",
    "QIANLIAN_CLUSTER_DIR",
    "QIANLIAN_BASE_PORT",
    "QIANLIAN_LOG_FORMAT",
    "QIANLIAN_GATEWAYS",
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

/// What `node_id = "ordinal"` reads: the host name, which in a StatefulSet is the pod name.
const HOSTNAME_VAR: &str = "HOSTNAME";

/// The value of `node_id` that derives the id from the host name.
pub const NODE_ID_ORDINAL: &str = "ordinal";

/// This node's id, and the ordinal and host name the id was derived from, if any.
struct NodeIdentity {
    node_id: u64,
    ordinal: Option<u64>,
    hostname: Option<String>,
}

/// `node_id` is a number greater than 0, or `"ordinal"`: the trailing `-N` of the host name
/// (a StatefulSet names its pods `<name>-0`, `<name>-1`, …) plus one.
fn node_identity(raw: &toml::Value, hostname: Option<&str>) -> Result<NodeIdentity, String> {
    let hostname = hostname.map(str::to_owned);
    match raw {
        toml::Value::Integer(n) if *n > 0 => Ok(NodeIdentity {
            node_id: *n as u64,
            ordinal: None,
            hostname,
        }),
        toml::Value::Integer(_) => Err("must be greater than 0 (Raft reserves 0)".into()),
        toml::Value::String(s) if s == NODE_ID_ORDINAL => {
            let Some(host) = hostname else {
                return Err(format!(
                    "`ordinal` takes the id from the host name, but {HOSTNAME_VAR} is not set; set {HOSTNAME_VAR} (Kubernetes sets it to the pod name) or give node_id as a number"
                ));
            };
            let ordinal = host
                .rsplit_once('-')
                .map(|(_, n)| n)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n < u64::MAX)
                .ok_or_else(|| {
                    format!(
                        "`ordinal` takes the id from the host name's trailing -<number> (a StatefulSet pod is named <statefulset>-<ordinal>), but the host name is `{host}`; run it as a StatefulSet pod or give node_id as a number"
                    )
                })?;
            Ok(NodeIdentity {
                node_id: ordinal + 1,
                ordinal: Some(ordinal),
                hostname: Some(host),
            })
        }
        toml::Value::String(s) => Err(format!(
            "`{s}` is neither a number nor \"{NODE_ID_ORDINAL}\" (the pod ordinal plus one)"
        )),
        other => Err(format!(
            "must be a number greater than 0 or \"{NODE_ID_ORDINAL}\", got {other}"
        )),
    }
}

impl NodeIdentity {
    /// Fill in `{node_id}`, `{ordinal}` and `{hostname}`; the error says which one is unknown.
    fn expand(&self, value: &str) -> Result<String, String> {
        if !value.contains('{') {
            return Ok(value.to_owned());
        }
        let mut out = value.replace("{node_id}", &self.node_id.to_string());
        if out.contains("{ordinal}") {
            let o = self.ordinal.ok_or_else(|| {
                format!(
                    "`{value}` names {{ordinal}}, which only node_id = \"{NODE_ID_ORDINAL}\" defines; use {{node_id}}"
                )
            })?;
            out = out.replace("{ordinal}", &o.to_string());
        }
        if out.contains("{hostname}") {
            let h = self.hostname.as_deref().ok_or_else(|| {
                format!("`{value}` names {{hostname}}, but {HOSTNAME_VAR} is not set")
            })?;
            out = out.replace("{hostname}", h);
        }
        Ok(out)
    }

    fn expand_path(&self, path: PathBuf) -> Result<PathBuf, String> {
        match path.to_str() {
            Some(s) if s.contains('{') => self.expand(s).map(PathBuf::from),
            _ => Ok(path),
        }
    }
}

/// The host name, for `node_id = "ordinal"`: `HOSTNAME` if set, else the kernel's (the scratch
/// image has no shell to set it, but Kubernetes and Docker set both).
fn hostname(env: &[(String, String)]) -> Option<String> {
    env.iter()
        .find(|(k, _)| k == HOSTNAME_VAR)
        .map(|(_, v)| v.trim().to_owned())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
}

impl NodeConfig {
    /// Read and validate a config file, then apply `QIANLIAN_*` environment overrides.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        if let Some(h) = hostname(&env) {
            env.retain(|(k, _)| k != HOSTNAME_VAR);
            env.push((HOSTNAME_VAR.to_owned(), h));
        }
        Self::parse_with_env(&text, base, path, &env)
    }

    /// Parse config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, path: &Path) -> Result<NodeConfig, ConfigError> {
        Self::parse_with_env(text, base, path, &[])
    }

    /// Parse config text, then apply `QIANLIAN_*` overrides from `env` (see [`ENV_KEYS`]).
    ///
    /// `node_id = "ordinal"` takes the id from `HOSTNAME` in `env`: its trailing `-N`, plus one.
    /// Path keys and `advertise` may name `{node_id}`, `{ordinal}` (with `"ordinal"` only) and
    /// `{hostname}`, e.g. `cert = "/pki/node-{node_id}.crt"`.
    pub fn parse_with_env(
        text: &str,
        base: &Path,
        path: &Path,
        env: &[(String, String)],
    ) -> Result<NodeConfig, ConfigError> {
        let raw = raw_config(text, env).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        let at = |e: Invalid| e.in_file(path);
        // Values section by section, then every path: the first mistake found is reported.
        let raft = raft(&raw.raft).map_err(at)?;
        let node = node_keys(&raw, env_hostname(env), raft.listen).map_err(at)?;
        let limits = limits(raw.limits).map_err(at)?;
        let checkpoint = checkpoint(raw.checkpoint, &raw.trust_domain).map_err(at)?;
        let licenses = licenses(raw.licenses).map_err(at)?;
        let tls = tls(raw.tls).map_err(at)?;
        let metrics_listen = metrics(raw.metrics).map_err(at)?;
        let gateway = gateway(raw.gateway).map_err(at)?;
        let audit = audit(raw.audit).map_err(at)?;
        let mut config = NodeConfig {
            node_id: node.identity.node_id,
            listen: node.listen,
            advertise: node.advertise,
            data_dir: raw.data_dir,
            trust_domain: raw.trust_domain,
            bootstrap: raw.bootstrap,
            grpc_reflection: raw.grpc_reflection.unwrap_or(true),
            tls,
            policy: PolicyFiles {
                model: raw.policy.model,
                rules: raw.policy.rules,
            },
            limits,
            checkpoint,
            raft,
            licenses,
            metrics_listen,
            gateway,
            audit,
        };
        config.resolve_paths(&node.identity, base).map_err(at)?;
        Ok(config)
    }

    /// Per-node placeholders first, then relative paths against the config's folder (`base`).
    fn resolve_paths(&mut self, identity: &NodeIdentity, base: &Path) -> Result<(), Invalid> {
        let resolve = |key: &'static str, path: &mut PathBuf| -> Result<(), Invalid> {
            let p = identity
                .expand_path(std::mem::take(path))
                .map_err(|m| invalid(key, m))?;
            *path = if p.is_absolute() { p } else { base.join(p) };
            Ok(())
        };
        let resolve_all = |key: &'static str, paths: &mut Vec<PathBuf>| {
            paths.iter_mut().try_for_each(|p| resolve(key, p))
        };
        if let Some(p) = &mut self.gateway.client_cert {
            resolve("gateway.client_cert", p)?;
        }
        if let Some(p) = &mut self.gateway.client_key {
            resolve("gateway.client_key", p)?;
        }
        for a in &mut self.gateway.adapters {
            if let Some(p) = &mut a.ca {
                resolve("gateway.adapter.ca", p)?;
            }
        }
        resolve_all("audit.token_keys", &mut self.audit.token_keys)?;
        resolve("data_dir", &mut self.data_dir)?;
        resolve("tls.ca", &mut self.tls.ca)?;
        resolve("tls.cert", &mut self.tls.cert)?;
        resolve("tls.key", &mut self.tls.key)?;
        if let Some(p) = &mut self.tls.crl {
            resolve("tls.crl", p)?;
        }
        resolve("policy.model", &mut self.policy.model)?;
        resolve("policy.rules", &mut self.policy.rules)?;
        resolve("checkpoint.signing_key", &mut self.checkpoint.signing_key)?;
        let l = &mut self.licenses;
        if let Some(p) = &mut l.directory {
            resolve("licenses.directory", p)?;
        }
        resolve_all("licenses.signing_keys", &mut l.signing_keys)?;
        if let Some(p) = &mut l.subject_key {
            resolve("licenses.subject_key", p)?;
        }
        resolve_all("licenses.trust_node_keys", &mut l.trust_node_keys)
    }
}

/// A key's value cannot be used: which key, and why.
struct Invalid {
    key: &'static str,
    message: String,
}

fn invalid(key: &'static str, message: String) -> Invalid {
    Invalid { key, message }
}

impl Invalid {
    fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: path.display().to_string(),
            key: self.key,
            message: self.message,
        }
    }
}

/// The file's text with the environment's overrides applied, checked against the known keys.
fn raw_config(text: &str, env: &[(String, String)]) -> Result<RawConfig, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    apply_env(&mut table, env)?;
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

/// `HOSTNAME` as `env` gives it, if set and not empty.
fn env_hostname(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .find(|(k, _)| k == HOSTNAME_VAR)
        .map(|(_, v)| v.as_str())
        .filter(|h| !h.is_empty())
}

/// The top-level keys that need checking: who the node is, where it listens, how peers reach
/// it, and the trust domain.
struct NodeKeys {
    identity: NodeIdentity,
    listen: SocketAddr,
    advertise: String,
}

fn node_keys(
    raw: &RawConfig,
    hostname: Option<&str>,
    raft_listen: Option<SocketAddr>,
) -> Result<NodeKeys, Invalid> {
    let identity = node_identity(&raw.node_id, hostname).map_err(|m| invalid("node_id", m))?;
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        invalid(
            "listen",
            format!("`{}` is not an address like 127.0.0.1:7400", raw.listen),
        )
    })?;
    let advertise = match &raw.advertise {
        Some(a) => identity.expand(a).map_err(|m| invalid("advertise", m))?,
        // Membership stores one address per node, the one Raft is served on.
        None => format!("https://{}", raft_listen.unwrap_or(listen)),
    };
    if raft_listen == Some(listen) && listen.port() != 0 {
        return Err(invalid(
            "raft.listen",
            format!(
                "`{listen}` is also `listen`; give Raft a port of its own, or leave raft.listen out to share the main port"
            ),
        ));
    }
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
    Ok(NodeKeys {
        identity,
        listen,
        advertise,
    })
}

/// A number in `range`, or `default`; the error names the key and the range.
fn within<T>(
    key: &'static str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        return Err(invalid(
            key,
            format!(
                "must be between {} and {}, got {v}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(v)
}

fn limits(raw: RawLimits) -> Result<Limits, Invalid> {
    let d = Limits::default();
    let ms = |key, value, default: Duration, range| {
        within(key, value, default.as_millis() as u64, range).map(Duration::from_millis)
    };
    let max_connections = within(
        "limits.max_connections",
        raw.max_connections,
        d.max_connections,
        1..=1_000_000,
    )?;
    Ok(Limits {
        max_payload_bytes: within(
            "limits.max_payload_bytes",
            raw.max_payload_bytes,
            d.max_payload_bytes,
            1..=MAX_PAYLOAD_CEILING,
        )?,
        max_connections,
        max_connections_per_source: within(
            "limits.max_connections_per_source",
            raw.max_connections_per_source,
            d.max_connections_per_source.min(max_connections),
            1..=max_connections,
        )?,
        max_streams_per_connection: within(
            "limits.max_streams_per_connection",
            raw.max_streams_per_connection,
            d.max_streams_per_connection,
            1..=10_000,
        )?,
        request_timeout: ms(
            "limits.request_timeout_ms",
            raw.request_timeout_ms,
            d.request_timeout,
            100..=3_600_000,
        )?,
        keepalive_interval: ms(
            "limits.keepalive_interval_ms",
            raw.keepalive_interval_ms,
            d.keepalive_interval,
            1_000..=3_600_000,
        )?,
        keepalive_timeout: ms(
            "limits.keepalive_timeout_ms",
            raw.keepalive_timeout_ms,
            d.keepalive_timeout,
            1_000..=600_000,
        )?,
        max_connection_age: ms(
            "limits.max_connection_age_ms",
            raw.max_connection_age_ms,
            d.max_connection_age,
            1_000..=7 * 86_400_000,
        )?,
        anonymous_calls_per_second: within(
            "limits.anonymous_calls_per_second",
            raw.anonymous_calls_per_second,
            d.anonymous_calls_per_second,
            0..=1_000_000,
        )?,
        anonymous_burst: within(
            "limits.anonymous_burst",
            raw.anonymous_burst,
            d.anonymous_burst,
            1..=1_000_000,
        )?,
    })
}

/// `[checkpoint]`; the origin defaults to `<trust_domain>/qianlian`.
fn checkpoint(raw: RawCheckpoint, trust_domain: &str) -> Result<CheckpointSettings, Invalid> {
    let origin = raw
        .origin
        .unwrap_or_else(|| format!("{trust_domain}/qianlian"));
    if origin.is_empty() || origin.chars().any(char::is_whitespace) {
        return Err(invalid(
            "checkpoint.origin",
            format!("`{origin}` must be one word without spaces, e.g. gov.example/qianlian"),
        ));
    }
    Ok(CheckpointSettings {
        signing_key: raw.signing_key,
        origin,
    })
}

fn raft(raw: &RawRaft) -> Result<RaftSettings, Invalid> {
    let listen = raw
        .listen
        .as_ref()
        .map(|l| {
            l.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "raft.listen",
                    format!("`{l}` is not an address like 10.0.0.7:7401"),
                )
            })
        })
        .transpose()?;
    let commit_timeout_ms = raw.commit_timeout_ms.unwrap_or(10_000);
    if !(100..=600_000).contains(&commit_timeout_ms) {
        return Err(invalid(
            "raft.commit_timeout_ms",
            format!("must be between 100 and 600000, got {commit_timeout_ms}"),
        ));
    }
    let snapshot_every = raw.snapshot_every.unwrap_or(5000);
    if snapshot_every < 10 {
        return Err(invalid(
            "raft.snapshot_every",
            format!("must be at least 10 Raft entries, got {snapshot_every}"),
        ));
    }
    Ok(RaftSettings {
        commit_timeout: std::time::Duration::from_millis(commit_timeout_ms),
        snapshot_every,
        log_kept_after_snapshot: raw.log_kept_after_snapshot.unwrap_or(1000),
        listen,
    })
}

fn licenses(raw: RawLicenses) -> Result<LicenseSettings, Invalid> {
    let min_cosigners = raw.min_cosigners.unwrap_or(1);
    if min_cosigners == 0
        || (!raw.trust_node_keys.is_empty() && min_cosigners > raw.trust_node_keys.len())
    {
        return Err(invalid(
            "licenses.min_cosigners",
            format!(
                "must be between 1 and the number of licenses.trust_node_keys ({}), got {min_cosigners}",
                raw.trust_node_keys.len()
            ),
        ));
    }
    Ok(LicenseSettings {
        directory: raw.directory,
        signing_keys: raw.signing_keys,
        subject_key: raw.subject_key,
        trust_node_keys: raw.trust_node_keys,
        min_cosigners,
    })
}

fn tls(raw: RawTls) -> Result<TlsFiles, Invalid> {
    let reload_every_ms = raw.reload_every_ms.unwrap_or(10_000);
    if !(100..=3_600_000).contains(&reload_every_ms) {
        return Err(invalid(
            "tls.reload_every_ms",
            format!("must be between 100 and 3600000, got {reload_every_ms}"),
        ));
    }
    Ok(TlsFiles {
        ca: raw.ca,
        cert: raw.cert,
        key: raw.key,
        crl: raw.crl,
        reload_every: std::time::Duration::from_millis(reload_every_ms),
    })
}

/// `[metrics] listen`, the address metrics are served on, if any.
fn metrics(raw: RawMetrics) -> Result<Option<SocketAddr>, Invalid> {
    raw.listen
        .map(|l| {
            l.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("`{l}` is not an address like 127.0.0.1:9464"),
                )
            })
        })
        .transpose()
}

fn gateway(raw: RawGateway) -> Result<GatewaySettings, Invalid> {
    if let Some(d) = &raw.department
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
    if raw.department.is_some() != raw.client_cert.is_some()
        || raw.client_cert.is_some() != raw.client_key.is_some()
    {
        return Err(invalid(
            "gateway.client_cert",
            "a gateway's department, client_cert and client_key go together: set all three (the department's client certificate from `qianlian pki init`, clients/<department>.crt and .key) or none".into(),
        ));
    }
    let forward_timeout_ms = raw.forward_timeout_ms.unwrap_or(5_000);
    if !(100..=120_000).contains(&forward_timeout_ms) {
        return Err(invalid(
            "gateway.forward_timeout_ms",
            format!("must be between 100 and 120000, got {forward_timeout_ms}"),
        ));
    }
    for a in &raw.adapter {
        let https = a.url.starts_with("https://");
        if !(https || a.url.starts_with("http://")) || a.url.parse::<http::Uri>().is_err() {
            return Err(invalid(
                "gateway.adapter.url",
                format!(
                    "`{}` (dataset {}) must be an http:// or https:// URL such as http://10.0.0.9:8080/permits",
                    a.url, a.dataset
                ),
            ));
        }
        if https && a.ca.is_none() {
            return Err(invalid(
                "gateway.adapter.ca",
                format!(
                    "`{}` (dataset {}) is https://: set `ca` to the CA bundle (PEM) its certificate chains to",
                    a.url, a.dataset
                ),
            ));
        }
        if !https && a.ca.is_some() {
            return Err(invalid(
                "gateway.adapter.ca",
                format!(
                    "`{}` (dataset {}) is plain http://, so `ca` would not be used: write the URL as https:// or remove `ca`",
                    a.url, a.dataset
                ),
            ));
        }
    }
    Ok(GatewaySettings {
        department: raw.department,
        client_cert: raw.client_cert,
        client_key: raw.client_key,
        forward_timeout: std::time::Duration::from_millis(forward_timeout_ms),
        adapters: raw
            .adapter
            .into_iter()
            .map(|a| AdapterSettings {
                dataset: a.dataset,
                url: a.url.trim_end_matches('/').to_owned(),
                ca: a.ca,
            })
            .collect(),
    })
}

/// `[audit]`; the subject claim defaults to `sub`.
fn audit(raw: RawAudit) -> Result<AuditSettings, Invalid> {
    if !raw.token_keys.is_empty()
        && (raw.token_issuer.as_deref().unwrap_or("").is_empty()
            || raw.token_audience.as_deref().unwrap_or("").is_empty())
    {
        return Err(invalid(
            "audit.token_issuer",
            "audit.token_keys needs audit.token_issuer and audit.token_audience: the `iss` and `aud` the identity provider puts in its tokens".into(),
        ));
    }
    Ok(AuditSettings {
        token_issuer: raw.token_issuer.unwrap_or_default(),
        token_audience: raw.token_audience.unwrap_or_default(),
        token_keys: raw.token_keys,
        token_subject_claim: raw.token_subject_claim.unwrap_or_else(|| "sub".to_owned()),
    })
}

#[cfg(test)]
mod tests;
