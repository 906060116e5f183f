//! `qianlian dev`: the embedded default. A single-node cluster on 127.0.0.1 with a generated dev
//! PKI, the default policy and sample records of three departments, in one local folder.
//! Running it again reuses the folder: same keys, same log, same records.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

use crate::client;
use crate::profile::{DEFAULT_LISTEN, Profile};
use qianlian_gateway::domain::samples::samples;
use qianlian_gateway::node::config::NodeConfig;
use qianlian_gateway::node::pki::{self, PkiPlan};
use qianlian_gateway::server;

/// The departments of the embedded default.
pub const DEPARTMENTS: [&str; 3] = ["market-regulation", "natural-resources", "housing"];

const MODEL: &str = include_str!("../../policies/model.conf");
const RULES: &str = include_str!("../../policies/policy.csv");

/// Prepare the dev folder (PKI, policy, config) without starting anything.
pub fn prepare(dir: &Path, listen: SocketAddr) -> anyhow::Result<PathBuf> {
    // The usual Prometheus port beside the usual gateway port; an ephemeral one otherwise.
    let metrics = if listen.port() == 7400 {
        "127.0.0.1:9464"
    } else {
        "127.0.0.1:0"
    };
    std::fs::create_dir_all(dir.join("policies"))?;
    let report = pki::init(&PkiPlan {
        out: dir.join("pki"),
        trust_domain: "gov.example".into(),
        departments: DEPARTMENTS.iter().map(|s| s.to_string()).collect(),
        inspectors: vec!["audit-office".into()],
        operators: vec!["ops".into()],
        nodes: vec!["node-1".into()],
        node_hosts: vec![],
        names: vec![
            ("market-regulation".into(), "贵州省市场监督管理局".into()),
            ("natural-resources".into(), "贵州省自然资源厅".into()),
            ("housing".into(), "贵州省住房和城乡建设厅".into()),
        ],
        leaf_days: 365,
        force: false,
    })?;
    if !report.written.is_empty() {
        println!("dev PKI written to {}", dir.join("pki").display());
    }
    dev_identity_provider(&dir.join("pki"))?;
    for (name, text) in [("model.conf", MODEL), ("policy.csv", RULES)] {
        let p = dir.join("policies").join(name);
        if !p.exists() {
            std::fs::write(&p, text)?;
        }
    }
    let config = dir.join("node.toml");
    if !config.exists() {
        std::fs::write(
            &config,
            format!(
                r#"# Qianlian dev node, written by `qianlian dev`. Edit freely; it is reused.
node_id = 1
listen = "{listen}"
data_dir = "data"
trust_domain = "gov.example"
bootstrap = true

[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/node-1.crt"
key = "pki/nodes/node-1.key"

[policy]
model = "policies/model.conf"
rules = "policies/policy.csv"

[checkpoint]
signing_key = "pki/nodes/node-1.note.key"

[licenses]
directory = "pki/departments.toml"
signing_keys = ["pki/departments/market-regulation.license.key", "pki/departments/natural-resources.license.key", "pki/departments/housing.license.key"]
subject_key = "pki/subject.key"
trust_node_keys = ["pki/nodes/node-1.note.pub"]
min_cosigners = 1

[limits]
max_payload_bytes = 65536

[metrics]
listen = "{metrics}"

# A stand-in identity provider for citizens' tokens: `qianlian audit dev-token --subject ID`.
[audit]
token_issuer = "{DEV_TOKEN_ISSUER}"
token_audience = "{DEV_TOKEN_AUDIENCE}"
token_keys = ["pki/dev-idp.pub.pem"]
"#
            ),
        )?;
    }
    Ok(config)
}

/// `iss` of the dev identity provider's tokens.
pub const DEV_TOKEN_ISSUER: &str = "https://id.dev.qianlian.invalid";
/// `aud` of the dev identity provider's tokens.
pub const DEV_TOKEN_AUDIENCE: &str = "qianlian";

/// The dev identity provider's Ed25519 key (`pki/dev-idp.key`, PKCS#8, mode 0600) and its
/// public half (`pki/dev-idp.pub.pem`), written once.
fn dev_identity_provider(pki: &Path) -> anyhow::Result<()> {
    let (key, public) = (pki.join("dev-idp.key"), pki.join("dev-idp.pub.pem"));
    if key.exists() && public.exists() {
        return Ok(());
    }
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    pki::write_file(&key, pair.serialize_pem().as_bytes(), true)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    pki::write_file(&public, pair.public_key_pem().as_bytes(), false)
        .map_err(|e| anyhow::anyhow!("{}: {e}", public.display()))?;
    Ok(())
}

/// A citizen's token from the dev identity provider of the dev folder `dir`, naming `subject`
/// (a resident identity number or unified social credit code), valid for `minutes`.
pub fn dev_token(dir: &Path, subject: &str, minutes: u64) -> anyhow::Result<String> {
    let subject = qianlian_gateway::services::license::normalise_holder_id(subject)
        .map_err(|e| anyhow::anyhow!("--subject: {}", e.to_string().replace("holder_id", "it")))?;
    let path = dir.join("pki").join("dev-idp.key");
    let pem = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e}; run `qianlian dev` once to write the dev identity provider",
            path.display()
        )
    })?;
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let now = qianlian_gateway::node::time::now_unix().max(0) as u64;
    let claims = serde_json::json!({
        "iss": DEV_TOKEN_ISSUER,
        "aud": DEV_TOKEN_AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + minutes * 60,
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &key,
    )?)
}

/// Prepare the dev folder ([`prepare`]) and load its node config, listening on `listen` when
/// given.
pub fn prepare_config(dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<NodeConfig> {
    let listen_default: SocketAddr = DEFAULT_LISTEN.parse()?;
    let mut config = NodeConfig::load(&prepare(dir, listen.unwrap_or(listen_default))?)?;
    if let Some(l) = listen {
        config.listen = l;
    }
    Ok(config)
}

/// Run the embedded default from its prepared folder `dir` until Ctrl-C.
pub async fn run(dir: &Path, config: NodeConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e}; stop the other process or pass --listen 127.0.0.1:<port>",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let endpoint = format!("https://{addr}");
    std::fs::write(dir.join("endpoint"), &endpoint)?;
    let node = server::start(config, listener).await?;
    let metrics = node
        .metrics_addr()
        .map(|a| format!("metrics: http://{a}/metrics"))
        .unwrap_or_default();
    let seeded = dir.join("data").join("sample-data-loaded");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serve = tokio::spawn(node.serve(async {
        let _ = stop_rx.await;
    }));
    if !seeded.exists() {
        load_samples(dir, &endpoint).await?;
        std::fs::write(&seeded, "sample records were loaded through PutRecord\n")?;
    }
    print_tour(dir, &endpoint, &metrics);
    tokio::select! {
        r = qianlian_gateway::server::shutdown_signal() => {
            r?;
            println!("stopping…");
        }
        r = &mut serve => {
            r??;
            anyhow::bail!("the node stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(());
    serve.await??;
    println!("stopped; run `qianlian dev` again to continue with the same data");
    Ok(())
}

async fn load_samples(dir: &Path, endpoint: &str) -> anyhow::Result<()> {
    seed(&dir.join("pki"), endpoint, "localhost").await
}

/// Put the sample records through `endpoint`, each as its owner department, with the client
/// certificates of the PKI in `pki` (`qianlian seed`, used by the container deployment).
pub async fn seed(pki: &Path, endpoint: &str, server_name: &str) -> anyhow::Result<()> {
    let samples = samples();
    for (owner, dataset, key, json) in &samples {
        let clients = pki.join("clients");
        let profile = Profile {
            endpoint: endpoint.to_owned(),
            ca: pki.join("ca.crt"),
            identity: Some((
                clients.join(format!("{owner}.crt")),
                clients.join(format!("{owner}.key")),
            )),
            server_name: server_name.to_owned(),
        };
        client::put(&profile, dataset, key, serde_json::to_vec(json)?).await?;
    }
    println!("loaded {} sample records", samples.len());
    Ok(())
}

fn print_tour(dir: &Path, endpoint: &str, metrics: &str) {
    let samples = samples();
    let enterprise = &samples[0].2;
    let representative = samples[0].3["legal_representative_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let property = &samples[5].2;
    let d = dir.display();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "qianlian".into());
    println!(
        r#"
Qianlian dev node ready on {endpoint}   (data in {d}; Ctrl-C stops it)
{metrics}

Try, in another terminal (from this folder):
  Q={exe}
  # housing reads an enterprise registration for a permit review: allowed, notarized
  $Q client --as housing get enterprise-registration {enterprise} --purpose permit-review
  # the same read for marketing: PERMISSION_DENIED, and the refusal is on the record too
  $Q client --as housing get enterprise-registration {enterprise} --purpose marketing
  # natural resources reads its own record
  $Q client --as natural-resources get real-estate-registration '{property}' --purpose audit
  # market regulation registers an enterprise
  $Q client --as market-regulation put enterprise-registration {enterprise} --json '{{"name":"贵州黔云数据科技有限公司","status":"存续"}}'
  # read the notarization log back (the inspector may read every record)
  $Q client --as audit-office log get 0
  # the inspector's trail: who read what, when, why, under which policy version
  $Q audit --as audit-office query --consumer housing
  # recompute the whole log and check it against the cosigned checkpoint
  $Q audit --as audit-office verify
  # evidence for someone who trusts nobody, checked offline
  $Q audit --as audit-office export --decision deny --out evidence.json && $Q audit check evidence.json
  # natural resources reads the enterprise for a property registration, legal representative included;
  # that representative asks which departments read data about them (a token from the dev identity provider)
  $Q client --as natural-resources get enterprise-registration {enterprise} --purpose property-registration
  $Q audit mine --token "$($Q audit dev-token --subject {representative})"
"#
    );
}
