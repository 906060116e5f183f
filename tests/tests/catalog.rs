//! The data catalog, end to end through the real node and the CLI: the owner department
//! publishes its dataset's entry, every department and inspector reads it, and nobody else can
//! publish or replace it: not another department, not an inspector or operator, not a replay of
//! an old version, not an anonymous caller.

mod support;

use qianlian_proto::v1::catalog_client::CatalogClient;
use qianlian_proto::v1::{GetLogEntryRequest, ListEntriesRequest};
use support::*;

const ENTRY: &str = r#"
dataset = "enterprise-registration"
title_zh = "企业登记信息"
title_en = "Enterprise registration"
description = "Enterprises registered in the province, with their legal representatives."
sharing = "unconditional"
purposes = ["tax-check", "permit-review"]
update_frequency = "daily"
legal_basis = "《企业信息公示暂行条例》第六条"

[[field]]
name = "name"
class = "public"
shareable = true

[[field]]
name = "legal_representative_id"
class = "personal"
"#;

fn catalog_cli(env: &Env, node: &Node, who: &str, args: &[&str]) -> std::process::Output {
    let dir = env.path().to_str().expect("path").to_owned();
    let endpoint = node.endpoint();
    let mut all: Vec<&str> = vec!["catalog"];
    all.extend_from_slice(args);
    all.extend(["--as", who, "--dev-dir", &dir, "--endpoint", &endpoint]);
    cli(&all)
}

#[tokio::test]
async fn only_the_owner_publishes_its_datasets_catalog_entry_and_every_department_reads_it() {
    let env = Env::new();
    let node = env.start();
    let file = env.path().join("entry.toml");
    std::fs::write(&file, ENTRY).expect("write entry");
    let file = file.to_str().expect("path");

    let empty = catalog_cli(&env, &node, "housing", &["list"]);
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(
        stdout(&empty).contains("no catalog entries yet"),
        "{}",
        stdout(&empty)
    );

    // Housing does not own enterprise registration; the inspector and the operator own nothing.
    for (who, expected) in [
        ("housing", "belongs to market-regulation"),
        ("audit-office", "inspector certificates cannot publish"),
        ("ops", "operator certificates cannot"),
    ] {
        let out = catalog_cli(&env, &node, who, &["publish", file]);
        assert!(!out.status.success(), "{who} published");
        assert!(stderr(&out).contains(expected), "{who}: {}", stderr(&out));
    }

    let published = catalog_cli(&env, &node, "market-regulation", &["publish", file]);
    assert!(published.status.success(), "{}", stderr(&published));
    assert!(
        stdout(&published)
            .contains("published enterprise-registration version 1 as market-regulation"),
        "{}",
        stdout(&published)
    );

    for who in ["housing", "natural-resources", "audit-office"] {
        let shown = catalog_cli(&env, &node, who, &["show", "enterprise-registration"]);
        assert!(shown.status.success(), "{who}: {}", stderr(&shown));
        let json: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
        assert_eq!(json["version"], 1);
        assert_eq!(json["owner"], "market-regulation");
        assert_eq!(json["sharing"], "unconditional");
        // The CLI sorted what the department wrote in any order.
        assert_eq!(
            json["purposes"],
            serde_json::json!(["permit-review", "tax-check"])
        );
        assert_eq!(json["fields"][0]["name"], "legal_representative_id");
        assert_eq!(json["fields"][0]["shareable"], false);
        assert_eq!(json["fields"][1]["class"], "public");
    }

    // A replay of version 1 is refused; the next publication is version 2.
    let replay = format!("version = 1\n{ENTRY}");
    let replay_file = env.path().join("replay.toml");
    std::fs::write(&replay_file, replay).expect("write");
    let out = catalog_cli(
        &env,
        &node,
        "market-regulation",
        &["publish", replay_file.to_str().expect("path")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not follow version 1 in force: publish version 2"),
        "{}",
        stderr(&out)
    );
    let second = catalog_cli(&env, &node, "market-regulation", &["publish", file]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).contains("version 2"), "{}", stdout(&second));

    // A malformed entry gets the rule it breaks.
    let broken = ENTRY.replace("sharing = \"unconditional\"", "sharing = \"sometimes\"");
    let broken_file = env.path().join("broken.toml");
    std::fs::write(&broken_file, broken).expect("write");
    let out = catalog_cli(
        &env,
        &node,
        "market-regulation",
        &["publish", broken_file.to_str().expect("path")],
    );
    assert!(
        stderr(&out)
            .contains("sharing `sometimes` is not one of: unconditional, conditional, not-shared"),
        "{}",
        stderr(&out)
    );

    // Over gRPC: the list, and the entry's record in the log, sealed by the node's gateway key
    // for market regulation.
    let ca = env.pki().join("ca.crt");
    let (cert, key) = env.identity("housing");
    let mut housing = CatalogClient::new(
        channel(&node, tls(&ca, Some((&cert, &key))))
            .await
            .expect("housing channel"),
    );
    let entries = housing
        .list_entries(ListEntriesRequest {})
        .await
        .expect("list")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1, "one entry in force per dataset");
    let in_force = &entries[0];
    assert_eq!(in_force.entry.as_ref().map(|e| e.version), Some(2));
    let mut notary = notary(&env, &node, "housing").await;
    let logged = notary
        .get_log_entry(GetLogEntryRequest {
            log_index: in_force.log_index,
        })
        .await
        .expect("the catalog record is readable by every department")
        .into_inner();
    assert_eq!(
        logged.receipt.unwrap_or_default().record_hash,
        in_force.leaf_hash
    );
    let json: serde_json::Value = serde_json::from_str(&logged.record_json).expect("record json");
    assert_eq!(
        json["Governance"]["department"], "market-regulation",
        "{json}"
    );

    // Over HTTP/JSON, with the same certificates and checks.
    let http = |who: Option<&str>, method: &str, path: &str, body: Option<String>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "-X", method, "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", node.addr.port()),
            ]);
        if let Some(who) = who {
            let (cert, key) = env.identity(who);
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(body) = body {
            cmd.args(["-H", "content-type: application/json", "--data", &body]);
        }
        let out = cmd
            .arg(format!("https://localhost:{}{path}", node.addr.port()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        let json: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        (code.to_owned(), json)
    };
    let (code, listed) = http(Some("natural-resources"), "GET", "/v1/catalog", None);
    assert_eq!(code, "200", "{listed}");
    assert_eq!(listed["entries"][0]["version"], 2, "{listed}");
    let (code, shown) = http(
        Some("audit-office"),
        "GET",
        "/v1/catalog/enterprise-registration",
        None,
    );
    assert_eq!(
        (code.as_str(), &shown["owner"]),
        ("200", &serde_json::json!("market-regulation"))
    );
    let mut third = shown.clone();
    third["version"] = 3.into();
    for key in ["owner", "log_index", "leaf_hash", "time_unix_ms"] {
        if let Some(o) = third.as_object_mut() {
            o.remove(key);
        }
    }
    let (code, refused) = http(
        Some("housing"),
        "POST",
        "/v1/catalog",
        Some(third.to_string()),
    );
    assert_eq!(code, "403", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to market-regulation"),
        "{refused}"
    );
    let (code, published) = http(
        Some("market-regulation"),
        "POST",
        "/v1/catalog",
        Some(third.to_string()),
    );
    assert_eq!(code, "200", "{published}");
    assert_eq!(published["version"], 3);
    let (code, stale) = http(
        Some("market-regulation"),
        "POST",
        "/v1/catalog",
        Some(third.to_string()),
    );
    assert_eq!(code, "409", "{stale}");
    let (code, anonymous) = http(None, "GET", "/v1/catalog", None);
    assert_eq!(code, "401", "{anonymous}");

    // Without a client certificate.
    let mut anonymous = CatalogClient::new(channel(&node, tls(&ca, None)).await.expect("channel"));
    let err = anonymous
        .list_entries(ListEntriesRequest {})
        .await
        .expect_err("anonymous callers are refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}
