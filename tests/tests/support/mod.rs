//! Shared test harness: a fresh dev PKI, real `qianlian` node processes on 127.0.0.1:0, and
//! gRPC clients that connect with real certificates.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Records a new cluster's log starts with: the policy and the directory appended when the
/// cluster is initialised (or a bootstrapped node first starts).
pub const SEEDED: u64 = 2;

pub const DEPARTMENTS: [&str; 3] = ["market-regulation", "natural-resources", "housing"];

/// The `qianlian` binary under test (built by `make test` before the tests run).
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("QIANLIAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/qianlian
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("qianlian");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --bin qianlian`, or `make test`)",
        bin.display()
    );
    bin
}

/// Run the CLI to completion.
pub fn cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run qianlian")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's policy folder.
pub fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A test folder with a dev PKI.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with_nodes(1)
    }

    /// A PKI with nodes `node-1` … `node-<n>`, operators' nodes (no department).
    pub fn with_nodes(n: usize) -> Env {
        Env::with_node_departments(n, &[])
    }

    /// A PKI with nodes `node-1` … `node-<n>`; node i is the gateway of `departments[i - 1]`
    /// (named in its certificate) where that exists.
    pub fn with_node_departments(n: usize, departments: &[&str]) -> Env {
        Env::with_operators(n, departments, &["ops"])
    }

    /// [`Env::with_node_departments`] with these operators (each gets a certificate and a
    /// signing key, and the directory lists their keys).
    pub fn with_operators(n: usize, departments: &[&str], operators: &[&str]) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let mut args = vec![
            "pki".to_owned(),
            "init".into(),
            "--out".into(),
            pki.display().to_string(),
            "--trust-domain".into(),
            "gov.example".into(),
            "--inspector".into(),
            "audit-office".into(),
        ];
        for o in operators {
            args.push("--operator".into());
            args.push((*o).into());
        }
        for i in 1..=n {
            args.push("--node".into());
            args.push(match departments.get(i - 1) {
                Some(d) => format!("node-{i}={d}"),
                None => format!("node-{i}"),
            });
        }
        for d in DEPARTMENTS {
            args.push("--dept".into());
            args.push(d.into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&refs);
        assert!(out.status.success(), "pki init failed: {}", stderr(&out));
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pki(&self) -> PathBuf {
        self.path().join("pki")
    }

    /// Write a node config; `extra` is appended (e.g. a `[limits]` table).
    pub fn write_config(&self, rules: &Path, extra: &str) -> PathBuf {
        let p = policies();
        let config = format!(
            r#"node_id = 1
listen = "127.0.0.1:0"
data_dir = "{data}"
trust_domain = "gov.example"
bootstrap = true
[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/nodes/node-1.crt"
key = "{pki}/nodes/node-1.key"
reload_every_ms = 200
[policy]
model = "{model}"
rules = "{rules}"
[checkpoint]
signing_key = "{pki}/nodes/node-1.note.key"
[licenses]
directory = "{pki}/departments.toml"
signing_keys = ["{pki}/departments/market-regulation.license.key", "{pki}/departments/natural-resources.license.key", "{pki}/departments/housing.license.key"]
subject_key = "{pki}/subject.key"
trust_node_keys = ["{pki}/nodes/node-1.note.pub"]
{extra}
"#,
            data = self.path().join("data").display(),
            pki = self.pki().display(),
            model = p.join("model.conf").display(),
            rules = rules.display(),
        );
        let path = self.path().join("node.toml");
        std::fs::write(&path, config).expect("write config");
        path
    }

    /// Start a node with the default policy.
    pub fn start(&self) -> Node {
        self.start_with(&policies().join("policy.csv"), "")
    }

    pub fn start_with(&self, rules: &Path, extra: &str) -> Node {
        let config = self.write_config(rules, extra);
        Node::spawn(&config, &self.path().join("node.log"))
    }

    /// Client certificate files of a dev identity.
    pub fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        let c = self.pki().join("clients");
        (c.join(format!("{name}.crt")), c.join(format!("{name}.key")))
    }
}

/// A running `qianlian serve` process; killed when dropped.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// The metrics URL the node printed, when metrics are on.
    pub metrics: Option<String>,
}

impl Node {
    pub fn spawn(config: &Path, log: &Path) -> Node {
        Node::spawn_with_env(config, log, &[])
    }

    /// Start a node with extra environment variables. `OTEL_*` variables of the test's own
    /// environment are not passed on, so only `env` decides whether traces are exported.
    pub fn spawn_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Node {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("node log");
        let mut cmd = Command::new(bin());
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(" ready on ").nth(1) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .and_then(|a| a.parse().ok())
                            .expect("address in ready line");
                        let metrics = line
                            .split("metrics on ")
                            .nth(1)
                            .map(|m| m.trim_end_matches(')').to_owned());
                        return Node {
                            child,
                            addr,
                            log: log.to_owned(),
                            metrics,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "node did not become ready; its log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Crash the node (SIGKILL): nothing is flushed on the way out.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop the node the way an operator does (SIGTERM) and wait for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node did not stop within 20 s of SIGTERM");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TLS settings for a client: the CA to trust and an optional client identity (PEM files).
pub fn tls(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientTlsConfig {
    qianlian_gateway::node::tls::install_crypto_provider();
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
        .domain_name("localhost");
    if let Some((c, k)) = identity {
        t = t.identity(Identity::from_pem(
            std::fs::read(c).expect("cert"),
            std::fs::read(k).expect("key"),
        ));
    }
    t
}

/// Connect to a node; `Err` carries the transport error (e.g. a refused handshake).
pub async fn channel(
    node: &Node,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(node.endpoint())
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
}

/// An Exchange client acting as a dev identity.
pub async fn exchange(env: &Env, node: &Node, who: &str) -> ExchangeClient<Channel> {
    let (c, k) = env.identity(who);
    let ch = channel(node, tls(&env.pki().join("ca.crt"), Some((&c, &k))))
        .await
        .expect("connect");
    ExchangeClient::new(ch)
}

/// A Notary client acting as a dev identity.
pub async fn notary(env: &Env, node: &Node, who: &str) -> NotaryClient<Channel> {
    let (c, k) = env.identity(who);
    let ch = channel(node, tls(&env.pki().join("ca.crt"), Some((&c, &k))))
        .await
        .expect("connect");
    NotaryClient::new(ch)
}

/// A valid unified social credit code for test data.
pub fn uscc(i: u64) -> String {
    qianlian_gateway::domain::identifier::UnifiedSocialCreditCode::generate(i)
        .as_str()
        .to_owned()
}
pub mod cluster;
pub mod rfc6962;

/// The record inside a record's JSON view (`record_json`), whatever seal or signatures wrap it.
pub fn unsealed(json: &serde_json::Value) -> &serde_json::Value {
    ["Sealed", "BatchSealed", "Authorized"]
        .iter()
        .find_map(|k| json.get(*k))
        .map_or(json, |s| &s["record"])
}

/// The department whose gateway sealed a record, from its JSON view; `None` if unsealed.
pub fn sealed_for(json: &serde_json::Value) -> Option<&str> {
    ["Sealed", "BatchSealed"]
        .iter()
        .find_map(|k| json.get(*k))
        .and_then(|s| s["seal"]["originator"]["department"].as_str())
}

/// The log entry at `index` as the node behind `notary` has it, once that node has applied it
/// (a receipt may come from another node a moment before); panics after 10 s.
pub async fn applied_entry(
    notary: &mut NotaryClient<Channel>,
    index: u64,
) -> qianlian_proto::v1::GetLogEntryResponse {
    for _ in 0..100 {
        match notary
            .get_log_entry(qianlian_proto::v1::GetLogEntryRequest { log_index: index })
            .await
        {
            Ok(e) => return e.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("log entry {index}: {s:?}"),
        }
    }
    panic!("log entry {index} was not applied on this node within 10 s")
}

/// Call `call` every 100 ms until it fails with `code` (a change that reaches every node a
/// moment later) and return that status; panics with `what` and the last answer after 15 s.
pub async fn until_refused<T: std::fmt::Debug, F, Fut>(
    code: tonic::Code,
    what: &str,
    mut call: F,
) -> tonic::Status
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Err(s) if s.code() == code => return s,
            other if Instant::now() < deadline => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
