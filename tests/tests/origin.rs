//! Proof of origin, end to end: the real node seals each department's exchange records with
//! the key the directory publishes for it, an inspector proves offline from an evidence bundle
//! which gateway wrote each record (also after the key has been retired), an altered seal fails
//! `audit check` with the reason, and a bundle from before seals still checks.

mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RecordRef};
use qianlian_verifier::record::Record;
use support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn enterprise(i: u64) -> RecordRef {
    RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: uscc(i),
    }
}

/// Market regulation puts enterprises `from..to`; housing reads each once.
async fn traffic(env: &Env, node: &Node, from: u64, to: u64) {
    let mut owner = exchange(env, node, "market-regulation").await;
    let mut housing = exchange(env, node, "housing").await;
    for i in from..to {
        let body = serde_json::json!({
            "unified_social_credit_code": uscc(i),
            "name": format!("黔链测试企业{i}"),
            "legal_representative": "张三",
            "legal_representative_id": qianlian_gateway::domain::identifier::ResidentId::generate(100 + i).as_str(),
            "registered_capital_cny": 1_000_000 + i,
            "established": "2020-01-01",
            "status": "active",
        });
        owner
            .put_record(PutRecordRequest {
                record: Some(enterprise(i)),
                payload: body.to_string().into_bytes(),
            })
            .await
            .expect("put");
        housing
            .get_record(GetRecordRequest {
                record: Some(enterprise(i)),
                purpose: "permit-review".into(),
            })
            .await
            .expect("read");
    }
}

fn audit_cli(env: &Env, node: &Node, args: &[&str]) -> std::process::Output {
    let dir = env.path().to_str().expect("path").to_owned();
    let mut all: Vec<&str> = vec!["audit"];
    all.extend_from_slice(args);
    let endpoint = node.endpoint();
    all.extend([
        "--as",
        "audit-office",
        "--dev-dir",
        &dir,
        "--endpoint",
        &endpoint,
    ]);
    cli(&all)
}

/// Export market regulation's exchange records to `name` and return its path.
fn export(env: &Env, node: &Node, name: &str) -> PathBuf {
    let out_path = env.path().join(name);
    let out = audit_cli(
        env,
        node,
        &[
            "export",
            "--provider",
            "market-regulation",
            "--out",
            out_path.to_str().expect("p"),
        ],
    );
    assert!(
        out.status.success(),
        "export: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out_path
}

fn check(file: &Path) -> (bool, String) {
    let out = cli(&["audit", "check", file.to_str().expect("p")]);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn bundle_records(file: &Path) -> Vec<(serde_json::Value, Record)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("bundle")).expect("json");
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let bytes = B64.decode(r["record"].as_str().expect("b64")).expect("b64");
            (r.clone(), Record::decode(&bytes).expect("a record"))
        })
        .collect()
}

/// The PKI's directory with every department's node keys removed, applied by the operator:
/// the node's key retires, and records are no longer sealed.
fn retire_node_keys(env: &Env, node: &Node) {
    let pki = env.pki();
    let mut doc: toml::Table = std::fs::read_to_string(pki.join("departments.toml"))
        .expect("directory")
        .parse()
        .expect("toml");
    for d in doc["department"].as_array_mut().expect("departments") {
        d.as_table_mut().expect("table").remove("node_keys");
    }
    let file = env.path().join("directory.toml");
    std::fs::write(&file, toml::to_string(&doc).expect("toml")).expect("write");
    let ca = pki.join("ca.crt").display().to_string();
    let cert = pki.join("clients/ops.crt").display().to_string();
    let key = pki.join("clients/ops.key").display().to_string();
    let endpoint = node.endpoint();
    let out = cli(&[
        "directory",
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--endpoint",
        &endpoint,
        "apply",
        file.to_str().expect("p"),
    ]);
    assert!(
        out.status.success(),
        "directory apply: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_origin_is_proven_offline_and_an_altered_seal_fails_the_check() {
    let env = Env::new();
    let node = env.start();

    // The node serves every department, and `pki init` published its key for each: its
    // records are sealed from the first.
    traffic(&env, &node, 0, 3).await;
    let new = export(&env, &node, "new.json");
    // Sealed in batches: each record as small as an unsealed one, with the batch signature
    // record that covers it beside it in the bundle.
    let sealed: Vec<_> = bundle_records(&new)
        .into_iter()
        .filter(|(j, _)| j.get("signed_by").is_some())
        .collect();
    assert!(sealed.len() >= 3, "{} sealed records", sealed.len());
    for (j, r) in &sealed {
        assert!(r.originator().is_none(), "no seal inside the record");
        let signature = B64
            .decode(j["signed_by"]["record"].as_str().expect("b64"))
            .expect("b64");
        assert!(matches!(
            Record::decode(&signature),
            Ok(Record::BatchSignature(_))
        ));
    }
    let (ok, text) = check(&new);
    assert!(ok, "new bundle: {text}");
    let first = sealed[0].0["log_index"].as_u64().expect("index");
    assert!(
        text.contains(&format!(
            "origin: log index {first} sealed by market-regulation gateway with key node-1.gov.example"
        )),
        "{text}"
    );

    // The operator retires the node's keys: later records are unsealed, and a bundle exported
    // afterwards still proves who sealed the earlier ones, by the key as it was listed then.
    retire_node_keys(&env, &node);
    traffic(&env, &node, 3, 6).await;
    let after = export(&env, &node, "after.json");
    let records = bundle_records(&after);
    assert!(
        records
            .iter()
            .any(|(j, r)| r.originator().is_none() && j.get("signed_by").is_none())
    );
    let (ok, text) = check(&after);
    assert!(ok, "bundle after the rotation: {text}");
    assert!(
        text.contains(&format!(
            "origin: log index {first} sealed by market-regulation"
        )),
        "{text}"
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&after).expect("bundle")).expect("json");
    let mr = v["departments"]
        .as_array_mut()
        .expect("departments")
        .iter_mut()
        .find(|d| d["id"] == "market-regulation")
        .expect("market-regulation");
    let retired = mr["retired_keys"].as_array_mut().expect("retired keys");
    let gateway = retired
        .iter_mut()
        .find(|k| k["role"] == "gateway")
        .expect("the node key, retired");
    assert_eq!(gateway["key"]["key_id"], "node-1.gov.example");
    assert!(gateway["from"].as_u64().expect("from") <= first);
    // Claimed retired before the record it sealed: the record's origin is not proven.
    gateway["until"] = first.into();
    let shrunk = env.path().join("shrunk.json");
    std::fs::write(&shrunk, serde_json::to_string(&v).expect("json")).expect("write");
    let (ok, text) = check(&shrunk);
    assert!(!ok, "a key retired before its record: {text}");
    assert!(
        text.contains(&format!("log index {first}: origin not proven")),
        "{text}"
    );

    // A bundle frozen before seals still checks.
    let frozen = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../verifier/testdata/evidence-before-seals.json");
    let (ok, text) = check(&frozen);
    assert!(ok, "frozen bundle: {text}");
    assert!(text.contains("verified: 4 records"), "{text}");

    // One bit of the batch signature that covers a record (the last bytes of the signature
    // record the bundle carries for it).
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&new).expect("bundle")).expect("json");
    let at = v["records"]
        .as_array()
        .expect("records")
        .iter()
        .position(|r| r["log_index"].as_u64() == Some(first))
        .expect("listed");
    let mut altered_v = v.clone();
    let mut bytes = B64
        .decode(
            v["records"][at]["signed_by"]["record"]
                .as_str()
                .expect("b64"),
        )
        .expect("b64");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    Record::decode(&bytes).expect("still a record");
    altered_v["records"][at]["signed_by"]["record"] = B64.encode(&bytes).into();
    let file = env.path().join("altered.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&altered_v).expect("json"),
    )
    .expect("write");
    let (ok, text) = check(&file);
    assert!(!ok, "an altered seal must fail: {text}");
    assert!(
        text.contains(&format!("log index {first}: origin not proven"))
            && text.contains("does not verify"),
        "{text}"
    );
    node.stop();
}
