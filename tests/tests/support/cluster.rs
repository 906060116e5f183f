//! Several real node processes on 127.0.0.1 forming one Raft cluster.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use qianlian_proto::v1::admin_client::AdminClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{ClusterStatus, GetCheckpointRequest, StatusRequest};
use tonic::transport::Channel;

use super::{Env, Node, channel, cli, policies, stderr, tls};

/// A cluster of `qianlian serve` processes, node ids 1..=n.
pub struct Cluster {
    pub env: Env,
    pub ports: Vec<u16>,
    pub nodes: Vec<Option<Node>>,
    /// Environment variables every node process gets.
    pub node_env: Vec<(String, String)>,
    /// The ports of the nodes' own Raft listeners (`[raft] listen`); empty when Raft shares
    /// the main port.
    pub raft_ports: Vec<u16>,
}

/// The department whose gateway node i is, in order (`{dept}` in a node's extra config).
pub const GATEWAYS: [&str; 3] = ["market-regulation", "natural-resources", "housing"];

/// Extra config that makes node i the gateway of `GATEWAYS[i - 1]`.
pub const GATEWAY_CONFIG: &str = r#"[gateway]
department = "{dept}"
client_cert = "{pki}/clients/{dept}.crt"
client_key = "{pki}/clients/{dept}.key"
forward_timeout_ms = 2000
"#;

/// A free loopback port below Linux's ephemeral range (32768–60999), so that no outgoing
/// connection of a running test can take it between this check and the node's bind.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Start `n` nodes and form a cluster of them all as voters; `extra` is appended to every
    /// node's config.
    pub fn start(n: usize, extra: &str) -> Cluster {
        Cluster::start_with_spares(n, 0, extra)
    }

    /// Start `n + spares` nodes; the first `n` form the cluster, the spares run uninitialised
    /// (ids `n+1 ..`), ready to be added.
    pub fn start_with_spares(n: usize, spares: usize, extra: &str) -> Cluster {
        Cluster::start_full(n, spares, extra, Vec::new())
    }

    /// Start `n` voters whose processes get the environment variables `node_env`.
    pub fn start_with_env(n: usize, extra: &str, node_env: Vec<(String, String)>) -> Cluster {
        Cluster::start_full(n, 0, extra, node_env)
    }

    /// Start `n` voters that serve Raft on a port of their own (`[raft] listen`), which is
    /// also the address the membership stores.
    pub fn start_with_raft_ports(n: usize, extra: &str) -> Cluster {
        Cluster::start_opts(n, 0, extra, Vec::new(), true)
    }

    /// Start `n` voters and `spares` uninitialised nodes from a PKI with these operators; the
    /// first one initialises the cluster.
    pub fn start_with_operators(
        n: usize,
        spares: usize,
        extra: &str,
        operators: &[&str],
    ) -> Cluster {
        let env = Env::with_operators(n + spares, &[], operators);
        Cluster::start_in(env, n, spares, extra, Vec::new(), false)
    }

    fn start_full(
        n: usize,
        spares: usize,
        extra: &str,
        node_env: Vec<(String, String)>,
    ) -> Cluster {
        Cluster::start_opts(n, spares, extra, node_env, false)
    }

    fn start_opts(
        n: usize,
        spares: usize,
        extra: &str,
        node_env: Vec<(String, String)>,
        raft_ports: bool,
    ) -> Cluster {
        let total = n + spares;
        // Nodes that serve as departments' gateways carry their department in their certificate.
        let env = if extra.contains("department = \"{dept}\"") {
            let departments: Vec<&str> = (0..total).map(|i| GATEWAYS[i % GATEWAYS.len()]).collect();
            Env::with_node_departments(total, &departments)
        } else {
            Env::with_nodes(total)
        };
        Cluster::start_in(env, n, spares, extra, node_env, raft_ports)
    }

    fn start_in(
        env: Env,
        n: usize,
        spares: usize,
        extra: &str,
        node_env: Vec<(String, String)>,
        raft_ports: bool,
    ) -> Cluster {
        let total = n + spares;
        let ports: Vec<u16> = (0..total).map(|_| free_port()).collect();
        let raft_ports = if raft_ports {
            (0..total).map(|_| free_port()).collect()
        } else {
            Vec::new()
        };
        let mut c = Cluster {
            env,
            ports,
            nodes: (0..total).map(|_| None).collect(),
            node_env,
            raft_ports,
        };
        for i in 1..=total {
            c.write_config(i, extra);
            c.start_node(i);
        }
        let mut args = vec!["init".to_owned()];
        for i in 1..=n {
            args.push("--node".into());
            args.push(format!("{i}={}", c.raft_endpoint(i)));
        }
        let out = c.ops(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "cluster init: {}", stderr(&out));
        c
    }

    pub fn dir(&self, i: usize) -> PathBuf {
        self.env.path().join(format!("node-{i}"))
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i - 1])
    }

    /// The address node `i` serves Raft on, as the membership stores it.
    pub fn raft_endpoint(&self, i: usize) -> String {
        match self.raft_ports.get(i - 1) {
            Some(p) => format!("https://127.0.0.1:{p}"),
            None => self.endpoint(i),
        }
    }

    fn write_config(&self, i: usize, extra: &str) {
        // `{dept}` in `extra` is this node's department (node i serves GATEWAYS[i - 1]);
        // `{pki}` is the PKI folder.
        let mut extra = extra
            .replace("{dept}", GATEWAYS[(i - 1) % GATEWAYS.len()])
            .replace("{pki}", &self.env.pki().display().to_string());
        if let Some(p) = self.raft_ports.get(i - 1) {
            extra.push_str(&format!("\n[raft]\nlisten = \"127.0.0.1:{p}\"\n"));
        }
        let dir = self.dir(i);
        std::fs::create_dir_all(&dir).expect("node dir");
        let pki = self.env.pki();
        let p = policies();
        let config = format!(
            r#"node_id = {i}
listen = "127.0.0.1:{port}"
data_dir = "{data}"
trust_domain = "gov.example"
[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/nodes/node-{i}.crt"
key = "{pki}/nodes/node-{i}.key"
[policy]
model = "{model}"
rules = "{rules}"
[checkpoint]
signing_key = "{pki}/nodes/node-{i}.note.key"
[licenses]
directory = "{pki}/departments.toml"
signing_keys = ["{pki}/departments/market-regulation.license.key", "{pki}/departments/natural-resources.license.key", "{pki}/departments/housing.license.key"]
subject_key = "{pki}/subject.key"
trust_node_keys = [{trust}]
min_cosigners = 2
{extra}
"#,
            port = self.ports[i - 1],
            trust = (1..=self.ports.len())
                .map(|n| format!("\"{}/nodes/node-{n}.note.pub\"", pki.display()))
                .collect::<Vec<_>>()
                .join(", "),
            data = dir.join("data").display(),
            pki = pki.display(),
            model = p.join("model.conf").display(),
            rules = p.join("policy.csv").display(),
        );
        std::fs::write(dir.join("node.toml"), config).expect("config");
    }

    pub fn start_node(&mut self, i: usize) {
        let dir = self.dir(i);
        let vars: Vec<(&str, &str)> = self
            .node_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let node = Node::spawn_with_env(&dir.join("node.toml"), &dir.join("node.log"), &vars);
        self.nodes[i - 1] = Some(node);
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i - 1].take() {
            n.kill();
        }
    }

    /// SIGTERM node `i` and wait for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i - 1].take() {
            n.stop();
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i - 1].as_ref().expect("node is running")
    }

    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|i| self.nodes[i - 1].is_some())
            .collect()
    }

    /// Run `qianlian cluster <args>` as the operator against node `i`.
    pub fn ops(&self, i: usize, args: &[&str]) -> std::process::Output {
        self.operator(i, "cluster", args)
    }

    /// Run `qianlian <command> <args>` as the operator against node `i`.
    pub fn operator(&self, i: usize, command: &str, args: &[&str]) -> std::process::Output {
        self.operator_as("ops", i, command, args)
    }

    /// Run `qianlian <command> <args>` as operator `who` against node `i`.
    pub fn operator_as(
        &self,
        who: &str,
        i: usize,
        command: &str,
        args: &[&str],
    ) -> std::process::Output {
        let pki = self.env.pki();
        let ca = pki.join("ca.crt").display().to_string();
        let (cert, key) = self.env.identity(who);
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let endpoint = self.endpoint(i);
        let mut all = vec![
            command,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--endpoint",
            &endpoint,
        ];
        all.extend_from_slice(args);
        cli(&all)
    }

    /// A channel to node `i` as a dev identity.
    pub async fn channel(&self, i: usize, who: &str) -> Result<Channel, tonic::transport::Error> {
        let (c, k) = self.env.identity(who);
        channel(
            self.node(i),
            tls(&self.env.pki().join("ca.crt"), Some((&c, &k))),
        )
        .await
    }

    pub async fn status(&self, i: usize) -> Option<ClusterStatus> {
        let ch = self.channel(i, "ops").await.ok()?;
        AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// The leader's node id as seen by running nodes, waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for i in self.running() {
                if let Some(s) = self.status(i).await {
                    let l = s.leader_id as usize;
                    if l != 0 && self.running().contains(&l) {
                        return l;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among running nodes within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (tree size, root) of node `i`'s latest checkpoint.
    pub async fn checkpoint(&self, i: usize) -> Option<(u64, Vec<u8>, String)> {
        let ch = self.channel(i, "audit-office").await.ok()?;
        let c = NotaryClient::new(ch)
            .get_checkpoint(GetCheckpointRequest::default())
            .await
            .ok()?
            .into_inner()
            .checkpoint?;
        Some((c.tree_size, c.root_hash, c.note))
    }

    /// Wait until every running node reports the same tree size (at least `min`) and root.
    pub async fn converge(&self, min: u64, timeout: Duration) -> (u64, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for i in self.running() {
                seen.push(self.checkpoint(i).await);
            }
            if let Some(Some((size, root, _))) = seen.first()
                && *size >= min
                && seen
                    .iter()
                    .all(|s| s.as_ref().is_some_and(|(z, r, _)| z == size && r == root))
            {
                return (*size, root.clone());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes did not converge within {timeout:?}: {:?}",
                seen.iter()
                    .map(|s| s.as_ref().map(|(z, _, _)| *z))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Apply (as the operator, through node 1) a directory naming node i as the gateway of
    /// `GATEWAYS[i - 1]`; returns once node 1 has switched to it (version 2, after the one
    /// seeded by `cluster init`).
    pub fn apply_gateways(&self) {
        let out = self.apply_directory(&[]);
        assert!(out.status.success(), "directory apply: {}", stderr(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("directory version 2"), "{said}");
        // The apply waits for node 1 only; a test may next call through any other node.
        for i in self.running() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let shown = self.operator(i, "directory", &["show"]);
                if String::from_utf8_lossy(&shown.stdout).contains("directory version 2 ") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {i} did not apply directory version 2: {}",
                    stderr(&shown)
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    /// SHA-256 (lowercase hex) of node i's TLS certificate, as a directory pins it.
    pub fn cert_fingerprint(&self, i: usize) -> String {
        use base64::Engine;
        use sha2::Digest;
        let pem = std::fs::read_to_string(self.env.pki().join(format!("nodes/node-{i}.crt")))
            .expect("node certificate");
        let b64: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("PEM base64");
        hex::encode(sha2::Sha256::digest(der))
    }

    /// Apply the PKI's directory with node i as the gateway of `GATEWAYS[i - 1]`, and
    /// `cert_fingerprint` set as `pins` say: (department, node whose certificate is pinned).
    pub fn apply_directory(&self, pins: &[(&str, usize)]) -> std::process::Output {
        let path = self.env.pki().join("departments.toml");
        let mut doc: toml::Table = std::fs::read_to_string(&path)
            .expect("directory")
            .parse()
            .expect("toml");
        for d in doc["department"].as_array_mut().expect("departments") {
            let id = d["id"].as_str().expect("id").to_owned();
            let node = GATEWAYS.iter().position(|g| *g == id).expect("a gateway") + 1;
            d.as_table_mut()
                .expect("table")
                .insert("gateway".into(), self.endpoint(node).into());
            if let Some((_, pinned)) = pins.iter().find(|(d, _)| *d == id) {
                d.as_table_mut().expect("table").insert(
                    "cert_fingerprint".into(),
                    self.cert_fingerprint(*pinned).into(),
                );
            }
        }
        let file = self.env.path().join("directory.toml");
        std::fs::write(&file, toml::to_string(&doc).expect("toml")).expect("write");
        self.operator(1, "directory", &["apply", &file.display().to_string()])
    }
}
