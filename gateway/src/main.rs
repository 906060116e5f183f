//! `qianlian`: the gateway node and its command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use qianlian_gateway::client::{self, Profile};
use qianlian_gateway::config::NodeConfig;
use qianlian_gateway::pki::{self, PkiPlan};
use qianlian_gateway::telemetry::{self, NodeResource, Telemetry};
use qianlian_gateway::{dev, server};

/// A request allocates and frees many small buffers on several threads (TLS records, HTTP/2
/// frames, protobuf messages, access records); mimalloc's per-thread heaps serve them without the
/// contention and fragmentation of the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Qianlian: a cross-department government data-sharing gateway with a notarized access trail.
#[derive(Parser, Debug)]
#[command(name = "qianlian", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded default: a single node with dev PKI, default policy and sample data.
    Dev {
        /// Folder for keys, config and data; reused on the next run.
        #[arg(long, default_value = "qianlian-dev", env = "QIANLIAN_DEV_DIR")]
        dir: PathBuf,
        /// Address to serve on (default 127.0.0.1:7400, or what node.toml says).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Load the sample records of the embedded default into a running node, each put by its
    /// owner department (for container deployments).
    Seed {
        /// PKI folder from `qianlian pki init` (client certificates of the departments).
        #[arg(long)]
        pki: PathBuf,
        #[arg(long)]
        endpoint: String,
        /// Name the server certificate must carry.
        #[arg(long, default_value = "localhost")]
        server_name: String,
    },
    /// Run a node from its config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Call a gateway.
    Client(ClientArgs),
    /// Manage the membership of the Raft cluster (operator certificate).
    Cluster(ClusterArgs),
    /// Replace or show the cluster's access policy (operator certificate).
    Policy(ConfigArgs),
    /// Replace or show the cluster's department directory (operator certificate).
    Directory(ConfigArgs),
    /// Issue, change, verify and watch e-licenses.
    License(LicenseArgs),
    /// Query the access trail, check its integrity, export and check evidence bundles.
    Audit(Box<AuditArgs>),
    /// Measure a running gateway (or etcd, for comparison): closed-loop load over mutual TLS,
    /// throughput, latency percentiles, errors and CPU time.
    Bench {
        #[command(flatten)]
        who: ClientArgsNoCommand,
        /// Concurrent clients, each with its own connection.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Seconds measured, after the warm-up (fractions allowed).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of warm-up, not measured (fractions allowed).
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value = "enterprise-registration")]
        dataset: String,
        /// Record key to read; default: the first dev sample.
        #[arg(long)]
        key: Option<String>,
        /// Declared purpose; default: permit-review for read, marketing (no rule grants it)
        /// for denied-read.
        #[arg(long)]
        purpose: Option<String>,
        /// read (allowed GetRecord), denied-read (GetRecord refused and notarized), put
        /// (PutRecord, fresh keys), issue (IssueLicense), verify (VerifyLicense), audit-query
        /// (QueryAccesses, newest 100 by housing; needs --as audit-office), or etcd-put (etcd
        /// KV.Put, with --etcd); put and issue need --as market-regulation.
        #[arg(long, default_value = "read")]
        workload: String,
        /// etcd client URLs, comma-separated (e.g. http://127.0.0.1:2379): measure etcd puts
        /// instead of a gateway.
        #[arg(long)]
        etcd: Option<String>,
        /// etcd-put: bytes per value; use the record_bytes of a notarized run.
        #[arg(long, default_value_t = 0)]
        value_size: usize,
        /// verify: distinct licenses issued first and verified in turn (1: the same QR code
        /// every call).
        #[arg(long, default_value_t = 1)]
        licenses: usize,
        /// verify: documents per call; above 1, each call is one VerifyLicenses with this many
        /// documents (up to 1000) and every document counts as one request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// A process whose CPU time is reported as the nodes' (the gateway or etcd); repeatable.
        #[arg(long = "node-pid")]
        node_pids: Vec<u32>,
        /// Name of the setup in the outputs, e.g. qianlian-3.
        #[arg(long, default_value = "")]
        label: String,
        /// Also write the figures to this file: .csv (row appended), .json (replaced) or .jsonl
        /// (line appended).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Format of --out when its extension does not say: csv, json or jsonl.
        #[arg(long)]
        format: Option<String>,
    },
}

/// Who to connect as, for commands without a client subcommand.
#[derive(Args, Debug)]
struct ClientArgsNoCommand {
    #[arg(long = "as", default_value = "housing")]
    as_name: String,
    #[arg(long, default_value = "qianlian-dev", env = "QIANLIAN_DEV_DIR")]
    dev_dir: PathBuf,
    #[arg(long, env = "QIANLIAN_ENDPOINT")]
    endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Write a root CA, node certificates and client certificates.
    Init {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "gov.example")]
        trust_domain: String,
        /// A department (client certificate, role `department`); repeatable.
        #[arg(long = "dept")]
        departments: Vec<String>,
        /// An inspector (client certificate, role `inspector`); repeatable.
        #[arg(long = "inspector")]
        inspectors: Vec<String>,
        /// An operator (client certificate, role `operator`); repeatable.
        #[arg(long = "operator")]
        operators: Vec<String>,
        /// A gateway node (server certificate); default: one per department.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Extra DNS name or IP for node certificates; repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Display name of a department as <id>=<name> (e.g. Chinese names); repeatable.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Validity of node and client certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Overwrite existing keys and certificates (a new CA invalidates every old certificate).
        #[arg(long)]
        force: bool,
    },
}

/// Who to connect as, and where.
#[derive(Args, Debug)]
struct ConnArgs {
    /// Use the dev profile of this department, inspector or operator (from `qianlian dev`).
    #[arg(long = "as", global = true)]
    as_name: Option<String>,
    /// Folder of the dev profile.
    #[arg(
        long,
        default_value = "qianlian-dev",
        env = "QIANLIAN_DEV_DIR",
        global = true
    )]
    dev_dir: PathBuf,
    /// Gateway URL, e.g. https://127.0.0.1:7400.
    #[arg(long, env = "QIANLIAN_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// CA bundle (instead of a dev profile).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (instead of a dev profile).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Client key (instead of a dev profile).
    #[arg(long = "key", id = "key_file", global = true)]
    key: Option<PathBuf>,
    /// Name the server certificate must carry.
    #[arg(long, default_value = "localhost", global = true)]
    server_name: String,
    /// A node's checkpoint verifier key file (`nodes/<id>.note.pub`) to trust; repeatable.
    /// Default with a dev profile: every node key of the dev PKI.
    #[arg(long = "trust", global = true)]
    trust: Vec<PathBuf>,
    /// Signatures of trusted nodes a checkpoint needs.
    #[arg(long, default_value_t = 1, global = true)]
    min_signers: usize,
}

#[derive(Args, Debug)]
struct ClientArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Args, Debug)]
struct ClusterArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate FILE, then append it to the log: every node switches to it at that log index.
    Apply {
        /// Policy rules (policy.csv) or directory (departments.toml).
        file: PathBuf,
        /// Policy only: a new Casbin model (default: keep the model in force).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Print the version in force and its text.
    Show,
}

#[derive(Args, Debug)]
struct LicenseArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: LicenseCommand,
}

#[derive(Subcommand, Debug)]
enum LicenseCommand {
    /// Issue a license as your department; writes the holder's bundle and prints the QR payload.
    Issue {
        /// business-license, real-estate-certificate or construction-permit.
        #[arg(long = "type")]
        license_type: String,
        #[arg(long)]
        number: String,
        #[arg(long)]
        holder_name: String,
        /// Unified social credit code or resident identity number of the holder.
        #[arg(long)]
        holder_id: String,
        /// Start of validity, Unix seconds (default: now).
        #[arg(long, default_value_t = 0)]
        valid_from: i64,
        /// End of validity, Unix seconds, exclusive (default: none, or --valid-days).
        #[arg(long, default_value_t = 0)]
        valid_until: i64,
        /// Validity in days from now (instead of --valid-until).
        #[arg(long)]
        valid_days: Option<i64>,
        /// A type-specific field as key=value; repeatable.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Where to write the holder's bundle (license + evidence, JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Suspend a license you issued.
    Suspend {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a suspended license you issued.
    Reinstate {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a license you issued (final).
    Revoke {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Verify a license online (any node, no client certificate) or offline (--offline --trust).
    Verify {
        /// A holder bundle (JSON) or a file holding the QR payload.
        file: Option<PathBuf>,
        #[arg(long)]
        qr: Option<String>,
        /// Verify with the verifier crate and a trust bundle only (`--trust BUNDLE`).
        #[arg(long)]
        offline: bool,
        /// Trust bundle from `license trust-bundle` (also accepted as `--trust BUNDLE`).
        #[arg(long = "trust-bundle", id = "trust_bundle")]
        trust_bundle: Option<PathBuf>,
    },
    /// Export the trust bundle offline verifiers need.
    TrustBundle {
        #[arg(long)]
        out: PathBuf,
    },
    /// Render a license's QR code as PNG and/or SVG.
    Qr {
        file: Option<PathBuf>,
        #[arg(long)]
        qr: Option<String>,
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// List every license issued, suspended or revoked for a holder, with proofs.
    Watch {
        #[arg(long)]
        holder: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Initialise a new cluster with these voters (send it to one of them).
    Init {
        /// A member as <id>=https://<host>:<port>; repeatable.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// Succeed without a change when the node already belongs to an initialised cluster
        /// (for a job that may run again, e.g. in Kubernetes).
        #[arg(long)]
        skip_if_initialised: bool,
    },
    /// Add a node as a learner (it receives the log, does not vote).
    AddLearner {
        /// The node as <id>=https://<host>:<port>.
        node: String,
    },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a node from the cluster.
    Remove { node_id: u64 },
    /// Show leader, members and log position.
    Status,
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Store a record of your own department's dataset.
    Put {
        dataset: String,
        key: String,
        /// The record as a JSON object.
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        /// Read the JSON object from a file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Read a record for a declared purpose.
    Get {
        dataset: String,
        key: String,
        #[arg(long)]
        purpose: String,
    },
    /// Find records by indexed fields, for a declared purpose.
    Query {
        dataset: String,
        /// Conditions `field=value`; all must hold.
        #[arg(required = true)]
        conditions: Vec<String>,
        #[arg(long)]
        purpose: String,
        /// Most records returned (default 100).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Read the notarization log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Fetch the latest cosigned checkpoint and verify its signatures.
    Checkpoint {
        /// Also keep the signed note in this file (for `audit verify --checkpoint`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch a proof and verify it against the latest cosigned checkpoint.
    Proof {
        #[command(subcommand)]
        command: ProofCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ProofCommand {
    /// Prove that the record at a log index is in the log.
    Inclusion { index: u64 },
    /// Prove that the log of an earlier size is a prefix of the latest one.
    Consistency {
        old_size: u64,
        /// Root hash (hex) of the earlier checkpoint you kept.
        #[arg(long)]
        old_root: Option<String>,
    },
}

#[derive(Args, Debug)]
struct AuditArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: AuditCommand,
}

/// What an audit query matches; every option given must hold.
#[derive(Args, Debug, Clone, Default)]
struct FilterArgs {
    /// Department that asked for the data.
    #[arg(long)]
    consumer: Option<String>,
    /// Department that owns the data.
    #[arg(long)]
    provider: Option<String>,
    /// Dataset: <owner>/<dataset>, or the dataset id alone.
    #[arg(long)]
    dataset: Option<String>,
    /// Record key (or the recorded text of a query).
    #[arg(long = "record-key")]
    record_key: Option<String>,
    /// read, write or query.
    #[arg(long)]
    action: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// Declared purpose code.
    #[arg(long)]
    purpose: Option<String>,
    /// Version of the policy that decided.
    #[arg(long)]
    policy_version: Option<u64>,
    /// A data subject's resident identity number or unified social credit code (the node
    /// hashes it; it is never stored).
    #[arg(long)]
    subject: Option<String>,
    /// A data subject's keyed hash (64 hex digits).
    #[arg(long)]
    subject_hash: Option<String>,
    /// provider (the owner's record) or consumer (the forwarding gateway's record).
    #[arg(long)]
    side: Option<String>,
    /// From this time (inclusive): Unix ms or RFC 3339, e.g. 2026-11-25T08:00:00+08:00.
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive): Unix ms or RFC 3339.
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn to_proto(&self) -> anyhow::Result<qianlian_proto::v1::AccessFilter> {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Ok(qianlian_proto::v1::AccessFilter {
            consumer: s(&self.consumer),
            provider: s(&self.provider),
            dataset: s(&self.dataset),
            key: s(&self.record_key),
            action: s(&self.action),
            decision: s(&self.decision),
            purpose: s(&self.purpose),
            policy_version: self.policy_version,
            subject: s(&self.subject),
            subject_hash: match &self.subject_hash {
                Some(h) => hex::decode(h)
                    .ok()
                    .filter(|v| v.len() == 32)
                    .ok_or_else(|| anyhow::anyhow!("--subject-hash must be 64 hex digits"))?,
                None => Vec::new(),
            },
            side: s(&self.side),
            since_unix_ms: self
                .since
                .as_deref()
                .map(qianlian_gateway::audit_client::parse_time)
                .transpose()?,
            until_unix_ms: self
                .until
                .as_deref()
                .map(qianlian_gateway::audit_client::parse_time)
                .transpose()?,
        })
    }
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Find accesses in the trail (inspector certificate), newest first.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// Oldest first instead.
        #[arg(long)]
        oldest_first: bool,
        /// Records to print in all; 0 prints every match.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Records fetched per call (1 to 1000).
        #[arg(long, default_value_t = 500)]
        page_size: u32,
        /// Go on from a cursor an earlier run printed.
        #[arg(long, default_value = "")]
        cursor: String,
        /// table, jsonl, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Which departments read data about you: needs a bearer token from the identity provider,
    /// no client certificate.
    Mine {
        /// The token (or set QIANLIAN_TOKEN).
        #[arg(long, env = "QIANLIAN_TOKEN", hide_env_values = true)]
        token: String,
        /// Accesses to print; 0 prints all.
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// table or jsonl.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Write a self-contained evidence bundle for a query (inspector certificate).
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        out: PathBuf,
        /// Most records in the bundle; a query matching more is refused.
        #[arg(long, default_value_t = 10_000)]
        max_records: u32,
    },
    /// Verify an evidence bundle offline, with no node and no network.
    Check {
        bundle: PathBuf,
        /// Pin the node keys and k of this trust bundle (`qianlian license trust-bundle`)
        /// instead of trusting the keys the evidence bundle carries.
        #[arg(long = "trust-bundle")]
        trust_bundle: Option<PathBuf>,
    },
    /// Print a citizen's token from the dev identity provider of a `qianlian dev` folder.
    DevToken {
        /// Resident identity number or unified social credit code the token names.
        #[arg(long)]
        subject: String,
        /// Minutes the token is valid.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Stream the whole log, recompute the Merkle tree, and check it against every cosigned
    /// checkpoint given or fetched, and the consistency between them; reports the first bad
    /// log index. Needs an inspector or operator certificate, or --data-dir.
    Verify {
        /// A cosigned checkpoint saved earlier (signed note text); repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Read a stopped node's data folder instead of asking a running node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Show the record at a log index.
    Get { index: u64 },
}

fn profile(args: &ConnArgs) -> anyhow::Result<Profile> {
    match (&args.as_name, &args.cert, &args.key, &args.ca) {
        (Some(name), None, None, _) => {
            let mut p = Profile::dev(&args.dev_dir, name, args.endpoint.clone())?;
            if let Some(ca) = &args.ca {
                p.ca = ca.clone();
            }
            p.server_name = args.server_name.clone();
            Ok(p)
        }
        (None, cert, key, Some(ca)) => {
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => anyhow::bail!("--cert and --key go together"),
            };
            Ok(Profile {
                endpoint: args
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| dev::DEFAULT_ENDPOINT.to_owned()),
                ca: ca.clone(),
                identity,
                server_name: args.server_name.clone(),
            })
        }
        (Some(_), _, _, _) => anyhow::bail!("use either --as or --cert/--key, not both"),
        (None, _, _, None) => anyhow::bail!(
            "say who you are: --as <department> (dev profile) or --ca with --cert and --key"
        ),
    }
}

fn parse_member(s: &str) -> anyhow::Result<(u64, String)> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("`{s}`: write a member as <id>=https://<host>:<port>"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}`: node id `{id}` is not a number"))?;
    Ok((id, addr.to_owned()))
}

async fn run_config(kind: &str, args: ConfigArgs) -> anyhow::Result<()> {
    let p = profile(&args.conn)?;
    match args.command {
        ConfigCommand::Show => client::show_config(&p, kind).await,
        ConfigCommand::Apply { file, model } => {
            let read = |f: &PathBuf| {
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
            };
            let text = read(&file)?;
            let model_path = model;
            let model = model_path.as_ref().map(read).transpose()?;
            // Refuse a broken file here, naming its path and line, before anything is sent.
            if kind == "policy" {
                qianlian_gateway::policy::parse_rules(&text, &file)?;
                if let (Some(m), Some(path)) = (&model, &model_path) {
                    qianlian_gateway::policy::Policy::from_text(m, &text, 0, path, &file).await?;
                }
            } else {
                qianlian_gateway::directory::Directory::from_toml(
                    &text,
                    &file.display().to_string(),
                )?;
            }
            client::apply_config(&p, kind, text, model).await
        }
    }
}

async fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let p = profile(&args.conn)?;
    let op = match args.command {
        ClusterCommand::Init {
            nodes,
            skip_if_initialised,
        } => {
            let members = nodes
                .iter()
                .map(|n| parse_member(n))
                .collect::<anyhow::Result<_>>()?;
            if skip_if_initialised && client::cluster_is_initialised(&p).await? {
                println!("the cluster is already initialised; nothing to do");
                return client::cluster(&p, client::ClusterOp::Status).await;
            }
            client::ClusterOp::Init(members)
        }
        ClusterCommand::AddLearner { node } => {
            let (id, addr) = parse_member(&node)?;
            client::ClusterOp::AddLearner(id, addr)
        }
        ClusterCommand::Promote { node_id } => client::ClusterOp::Promote(node_id),
        ClusterCommand::Remove { node_id } => client::ClusterOp::Remove(node_id),
        ClusterCommand::Status => client::ClusterOp::Status,
    };
    client::cluster(&p, op).await
}

fn profile_or_public(conn: &ConnArgs) -> anyhow::Result<Profile> {
    // Verification, trust bundles and watching are public: a CA and an endpoint suffice.
    if conn.as_name.is_none() && conn.ca.is_none() {
        let ca = conn.dev_dir.join("pki").join("ca.crt");
        anyhow::ensure!(
            ca.exists(),
            "say which CA to trust: --ca FILE (or --as <name> with a dev profile)"
        );
        return Ok(Profile {
            endpoint: conn.endpoint.clone().unwrap_or_else(|| {
                std::fs::read_to_string(conn.dev_dir.join("endpoint"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| dev::DEFAULT_ENDPOINT.to_owned())
            }),
            ca,
            identity: None,
            server_name: conn.server_name.clone(),
        });
    }
    profile(conn)
}

async fn run_license(args: LicenseArgs) -> anyhow::Result<bool> {
    use qianlian_gateway::license_client as lc;
    use qianlian_proto::v1::LicenseStatusChange as C;
    let conn = &args.conn;
    match args.command {
        LicenseCommand::Issue {
            license_type,
            number,
            holder_name,
            holder_id,
            valid_from,
            valid_until,
            valid_days,
            fields,
            out,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let valid_until = match valid_days {
                Some(d) => now + d * 86_400,
                None => valid_until,
            };
            let fields = fields
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--field `{f}`: write key=value"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let args = lc::IssueArgs {
                license_type,
                number,
                holder_name,
                holder_id,
                valid_from,
                valid_until,
                fields,
            };
            lc::issue(&profile(conn)?, args, &out).await?;
            Ok(true)
        }
        LicenseCommand::Suspend {
            license_hash,
            reason,
        } => {
            lc::change(&profile(conn)?, &license_hash, C::Suspend, &reason).await?;
            Ok(true)
        }
        LicenseCommand::Reinstate {
            license_hash,
            reason,
        } => {
            lc::change(&profile(conn)?, &license_hash, C::Reinstate, &reason).await?;
            Ok(true)
        }
        LicenseCommand::Revoke {
            license_hash,
            reason,
        } => {
            lc::change(&profile(conn)?, &license_hash, C::Revoke, &reason).await?;
            Ok(true)
        }
        LicenseCommand::Verify {
            file,
            qr,
            offline,
            trust_bundle,
        } => {
            if !offline {
                return lc::verify_online(
                    &profile_or_public(conn)?,
                    file.as_deref(),
                    qr.as_deref(),
                )
                .await;
            }
            let bundle = match (trust_bundle, conn.trust.as_slice()) {
                (Some(t), _) => t,
                (None, [t]) => t.clone(),
                _ => anyhow::bail!(
                    "--offline needs the trust bundle: --trust BUNDLE (from `qianlian license trust-bundle`)"
                ),
            };
            lc::verify_offline_cli(file.as_deref(), qr.as_deref(), &bundle)
        }
        LicenseCommand::TrustBundle { out } => {
            lc::trust_bundle(&profile_or_public(conn)?, &out).await?;
            Ok(true)
        }
        LicenseCommand::Qr { file, qr, png, svg } => {
            anyhow::ensure!(
                png.is_some() || svg.is_some(),
                "say where: --png FILE and/or --svg FILE"
            );
            lc::qr(
                file.as_deref(),
                qr.as_deref(),
                png.as_deref(),
                svg.as_deref(),
            )?;
            Ok(true)
        }
        LicenseCommand::Watch { holder } => {
            lc::watch(&profile_or_public(conn)?, &holder).await?;
            Ok(true)
        }
    }
}

async fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let p = profile(&args.conn)?;
    let dev_dir = args
        .conn
        .as_name
        .as_ref()
        .map(|_| args.conn.dev_dir.as_path());
    let trust = || client::trusted_keys(&args.conn.trust, dev_dir);
    let k = args.conn.min_signers;
    match args.command {
        ClientCommand::Put {
            dataset,
            key,
            json,
            file,
        } => {
            let body = match (json, file) {
                (Some(j), None) => j.into_bytes(),
                (None, Some(f)) => std::fs::read(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                _ => anyhow::bail!("give the record with --json '{{...}}' or --file FILE"),
            };
            client::put(&p, &dataset, &key, body).await
        }
        ClientCommand::Get {
            dataset,
            key,
            purpose,
        } => client::get(&p, &dataset, &key, &purpose).await,
        ClientCommand::Query {
            dataset,
            conditions,
            purpose,
            limit,
        } => client::query(&p, &dataset, &conditions, &purpose, limit).await,
        ClientCommand::Log {
            command: LogCommand::Get { index },
        } => client::log_get(&p, index).await,
        ClientCommand::Checkpoint { out } => {
            client::checkpoint(&p, &trust()?, k, out.as_deref()).await
        }
        ClientCommand::Proof {
            command: ProofCommand::Inclusion { index },
        } => client::prove_inclusion(&p, index, &trust()?, k).await,
        ClientCommand::Proof {
            command: ProofCommand::Consistency { old_size, old_root },
        } => {
            let old_root = match old_root {
                Some(h) => Some(
                    hex::decode(&h)
                        .ok()
                        .and_then(|v| <[u8; 32]>::try_from(v).ok())
                        .ok_or_else(|| anyhow::anyhow!("--old-root must be 64 hex digits"))?,
                ),
                None => None,
            };
            client::prove_consistency(&p, old_size, old_root, &trust()?, k).await
        }
    }
}

/// Run an audit command; `Ok(false)` when a check ran and failed.
async fn run_audit(args: AuditArgs) -> anyhow::Result<bool> {
    use qianlian_gateway::audit_client::{self, Format, QueryPlan};
    let dev_dir = args
        .conn
        .as_name
        .as_ref()
        .map(|_| args.conn.dev_dir.as_path());
    let trust = || client::trusted_keys(&args.conn.trust, dev_dir);
    match args.command {
        AuditCommand::Query {
            filter,
            oldest_first,
            limit,
            page_size,
            cursor,
            format,
            out,
        } => {
            if !(1..=1000).contains(&page_size) {
                anyhow::bail!("--page-size must be between 1 and 1000, got {page_size}");
            }
            let plan = QueryPlan {
                filter: filter.to_proto()?,
                oldest_first,
                max: limit,
                page_size,
                cursor,
                format: Format::parse(&format)?,
                out,
            };
            audit_client::query(&profile(&args.conn)?, plan).await?;
            Ok(true)
        }
        AuditCommand::Mine {
            token,
            limit,
            format,
        } => {
            let mut p = match profile(&args.conn) {
                Ok(p) => p,
                Err(_) => Profile {
                    endpoint: args.conn.endpoint.clone().unwrap_or_else(|| {
                        std::fs::read_to_string(args.conn.dev_dir.join("endpoint"))
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_else(|_| dev::DEFAULT_ENDPOINT.to_owned())
                    }),
                    ca: args.conn.dev_dir.join("pki").join("ca.crt"),
                    identity: None,
                    server_name: args.conn.server_name.clone(),
                },
            };
            // A data subject has no client certificate: the token is the credential.
            p.identity = None;
            audit_client::mine(&p, &token, limit, Format::parse(&format)?).await?;
            Ok(true)
        }
        AuditCommand::Export {
            filter,
            out,
            max_records,
        } => {
            audit_client::export(&profile(&args.conn)?, filter.to_proto()?, max_records, &out)
                .await?;
            Ok(true)
        }
        AuditCommand::Check {
            bundle,
            trust_bundle,
        } => audit_client::verify::check(&bundle, trust_bundle.as_deref()),
        AuditCommand::DevToken { subject, minutes } => {
            println!("{}", dev::dev_token(&args.conn.dev_dir, &subject, minutes)?);
            Ok(true)
        }
        AuditCommand::Verify {
            checkpoints,
            data_dir,
        } => {
            let source = match &data_dir {
                Some(d) => audit_client::verify::Source::DataDir(d.clone()),
                None => audit_client::verify::Source::Node(profile(&args.conn)?),
            };
            audit_client::verify::verify(source, &checkpoints, &trust()?, args.conn.min_signers)
                .await
        }
    }
}

async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (key `listen`): {e}", config.listen))?;
    let node_id = config.node_id;
    let node = server::start(config, listener).await?;
    // One line on stdout that scripts and tests wait for.
    let metrics = node
        .metrics_addr()
        .map(|a| format!(", metrics on http://{a}/metrics"))
        .unwrap_or_default();
    println!(
        "qianlian node {node_id} ready on {} (log size {}{metrics})",
        node.local_addr()?,
        node.log_size()
    );
    node.serve(async {
        if let Err(e) = qianlian_gateway::shutdown_signal().await {
            tracing::error!(error = %e, "cannot listen for signals; stopping");
        }
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

/// Set up logs and, for the commands that run a node, trace export when `OTEL_EXPORTER_OTLP_*`
/// asks for it; the node is named in its spans by its config, which is loaded first for that
/// (and for `serve`, returned).
fn start_telemetry(command: &Command) -> anyhow::Result<(Telemetry, Option<NodeConfig>)> {
    let config = match command {
        Command::Serve { config } => Some(NodeConfig::load(config)?),
        Command::Dev { dir, listen } => {
            let listen = match listen {
                Some(l) => *l,
                None => dev::DEFAULT_LISTEN.parse()?,
            };
            Some(NodeConfig::load(&dev::prepare(dir, listen)?)?)
        }
        _ => None,
    };
    let node = config.as_ref().map(NodeResource::of);
    Ok((telemetry::init(node.as_ref())?, config))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let not_genuine = std::cell::Cell::new(false);
    let result = runtime.block_on(async {
        // Inside the runtime: the span exporter runs on it.
        let (telemetry, config) = start_telemetry(&cli.command)?;
        let result = run(cli.command, config, &not_genuine).await;
        // Spans of the last requests leave before the process does.
        telemetry.shutdown().await;
        result
    });
    match result {
        Ok(()) if not_genuine.get() => ExitCode::from(2),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error message already carries its cause; the chain would repeat it.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    config: Option<NodeConfig>,
    not_genuine: &std::cell::Cell<bool>,
) -> anyhow::Result<()> {
    match command {
        Command::Dev { dir, listen } => dev::run(&dir, listen).await,
        Command::Serve { .. } => match config {
            Some(config) => serve(config).await,
            None => anyhow::bail!("serve: the node config was not loaded"),
        },
        Command::Seed {
            pki,
            endpoint,
            server_name,
        } => dev::seed(&pki, &endpoint, &server_name).await,
        Command::Pki {
            command:
                PkiCommand::Init {
                    out,
                    trust_domain,
                    departments,
                    inspectors,
                    operators,
                    nodes,
                    hosts,
                    names,
                    days,
                    force,
                },
        } => {
            let names = names
                .iter()
                .map(|n| {
                    n.split_once('=')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--name `{n}`: write <id>=<name>"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = pki::init(&PkiPlan {
                out,
                trust_domain,
                departments,
                inspectors,
                operators,
                nodes,
                node_hosts: hosts,
                names,
                leaf_days: days,
                force,
            })?;
            for p in &report.written {
                println!("wrote {}", p.display());
            }
            for p in &report.kept {
                println!("kept  {} (exists; --force replaces it)", p.display());
            }
            Ok(())
        }
        Command::Client(args) => run_client(args).await,
        Command::Cluster(args) => run_cluster(args).await,
        Command::Audit(args) => match run_audit(*args).await {
            // A failed check is an answer, not an error: exit 2.
            Ok(false) => {
                not_genuine.set(true);
                Ok(())
            }
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Policy(args) => run_config("policy", args).await,
        Command::Directory(args) => run_config("directory", args).await,
        Command::License(args) => match run_license(args).await {
            // A verdict other than genuine is an answer, not an error: exit 2.
            Ok(false) => {
                not_genuine.set(true);
                Ok(())
            }
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Bench {
            who,
            clients,
            seconds,
            warmup,
            dataset,
            key,
            purpose,
            workload,
            etcd,
            value_size,
            licenses,
            batch,
            node_pids,
            label,
            out,
            format,
        } => {
            use qianlian_gateway::bench::{self, OutFormat, Target, Workload};
            let workload = Workload::parse(&workload).map_err(anyhow::Error::msg)?;
            let secs = |name: &str, v: f64| {
                if v.is_finite() && v >= 0.0 {
                    Ok(std::time::Duration::from_secs_f64(v))
                } else {
                    Err(anyhow::anyhow!(
                        "--{name} must be a number of seconds ≥ 0, not {v}"
                    ))
                }
            };
            let out = match out {
                Some(path) => {
                    let f = match format {
                        Some(f) => OutFormat::parse(&f),
                        None => OutFormat::from_path(&path),
                    }
                    .map_err(anyhow::Error::msg)?;
                    Some((path, f))
                }
                None => None,
            };
            let target = match etcd {
                Some(list) => Target::Etcd(bench::etcd::parse_endpoints(&list)?),
                // Several nodes: --endpoint https://a,https://b (clients spread over them).
                None => Target::Gateway(match who.endpoint {
                    Some(list) => list
                        .split(',')
                        .map(|e| {
                            Profile::dev(&who.dev_dir, &who.as_name, Some(e.trim().to_owned()))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                    None => vec![Profile::dev(&who.dev_dir, &who.as_name, None)?],
                }),
            };
            let owner = qianlian_gateway::dataset::builtin(&dataset)
                .map(|(owner, _)| owner)
                .ok_or_else(|| anyhow::anyhow!("unknown dataset `{dataset}`"))?;
            let key = key.unwrap_or_else(|| dev::samples()[0].2.clone());
            let purpose = purpose.unwrap_or_else(|| {
                if workload == Workload::DeniedRead {
                    "marketing".into()
                } else {
                    "permit-review".into()
                }
            });
            let plan = bench::BenchPlan {
                workload,
                clients,
                warmup: secs("warmup", warmup)?,
                duration: secs("seconds", seconds)?,
                dataset,
                owner: owner.to_owned(),
                key,
                purpose,
                value_bytes: value_size,
                licenses,
                batch,
                node_pids,
                label,
            };
            let report = bench::run(&target, &plan).await?;
            println!("{clients} client(s): {report}");
            if let Some((path, format)) = out {
                report.write_to(&path, format)?;
            }
            Ok(())
        }
    }
}
