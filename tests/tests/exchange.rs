//! Policy-checked, notarized exchange between departments, over real mutual TLS.

mod support;

use qianlian_proto::v1::{GetLogEntryRequest, GetRecordRequest, PutRecordRequest, RecordRef};
use support::*;
use tonic::Code;

fn enterprise(key: &str) -> Option<RecordRef> {
    Some(RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: key.into(),
    })
}

#[tokio::test]
async fn allowed_cross_department_read_returns_the_record_and_a_receipt_on_the_log() {
    let env = Env::new();
    let node = env.start();
    let key = uscc(1);
    let payload = br#"{"name":"test enterprise","status":"active"}"#.to_vec();

    let put = exchange(&env, &node, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: enterprise(&key),
            payload: payload.clone(),
        })
        .await
        .expect("owner may write")
        .into_inner();
    let put_receipt = put.receipt.expect("receipt");

    let got = exchange(&env, &node, "housing")
        .await
        .get_record(GetRecordRequest {
            record: enterprise(&key),
            purpose: "permit-review".into(),
        })
        .await
        .expect("policy allows housing to read for permit-review")
        .into_inner();
    assert_eq!(got.payload, payload);
    let receipt = got.receipt.expect("receipt");
    // After the write and the batch signature that seals it.
    assert_eq!(receipt.log_index, put_receipt.log_index + 2);
    assert_eq!(receipt.record_hash.len(), 32);

    // The inspector reads the access record back: same hash, and it says what happened.
    let entry = notary(&env, &node, "audit-office")
        .await
        .get_log_entry(GetLogEntryRequest {
            log_index: receipt.log_index,
        })
        .await
        .expect("inspector reads the log")
        .into_inner();
    assert_eq!(
        entry.receipt.expect("receipt").record_hash,
        receipt.record_hash
    );
    let json: serde_json::Value = serde_json::from_str(&entry.record_json).expect("json");
    let a = &unsealed(&json)["Exchange"];
    assert_eq!(a["caller"]["department"], "housing");
    assert_eq!(a["side"], "provider");
    assert_eq!(a["owner"], "market-regulation");
    assert_eq!(a["key"], key.as_str());
    assert_eq!(a["action"], "read");
    assert_eq!(a["purpose"], "permit-review");
    assert_eq!(a["decision"], "allow");
    assert_eq!(
        a["rule"],
        "p, housing, market-regulation, enterprise-registration, read, permit-review, \
         unified_social_credit_code|name|status|registered_capital_cny|established"
    );
    assert_eq!(a["disclosed_fields"], serde_json::json!(["name", "status"]));
    assert_eq!(a["response_digest"], hex(&got.payload_digest));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn read_without_a_policy_rule_is_denied_and_still_on_the_record() {
    let env = Env::new();
    let node = env.start();
    let key = uscc(2);
    let status = exchange(&env, &node, "housing")
        .await
        .get_record(GetRecordRequest {
            record: enterprise(&key),
            purpose: "marketing".into(),
        })
        .await
        .expect_err("no rule allows marketing");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("has no rule letting housing read market-regulation/enterprise-registration for purpose marketing"),
        "{}",
        status.message()
    );
    let index: u64 = status
        .metadata()
        .get("x-qianlian-log-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("refusal carries its log index");
    let hash = status
        .metadata()
        .get("x-qianlian-record-hash")
        .and_then(|v| v.to_str().ok())
        .expect("refusal carries its record hash")
        .to_owned();

    // The CLI shows the same record to the inspector.
    let out = cli(&[
        "client",
        "--endpoint",
        &node.endpoint(),
        "--ca",
        &env.pki().join("ca.crt").display().to_string(),
        "--cert",
        &env.identity("audit-office").0.display().to_string(),
        "--key",
        &env.identity("audit-office").1.display().to_string(),
        "log",
        "get",
        &index.to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("record hash {hash}")), "{text}");
    assert!(text.contains("\"decision\": \"deny\""), "{text}");
    assert!(text.contains("\"purpose\": \"marketing\""), "{text}");
}

#[tokio::test]
async fn departments_read_only_log_records_they_are_party_to() {
    let env = Env::new();
    let node = env.start();
    let status = exchange(&env, &node, "housing")
        .await
        .get_record(GetRecordRequest {
            record: enterprise(&uscc(3)),
            purpose: "permit-review".into(),
        })
        .await
        .expect_err("record does not exist");
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    let index: u64 = status
        .metadata()
        .get("x-qianlian-log-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a read of a missing record is notarized too");

    // housing (caller) and market-regulation (owner) may read it; natural-resources may not.
    for who in ["housing", "market-regulation"] {
        notary(&env, &node, who)
            .await
            .get_log_entry(GetLogEntryRequest { log_index: index })
            .await
            .unwrap_or_else(|s| panic!("{who} is a party: {s}"));
    }
    let s = notary(&env, &node, "natural-resources")
        .await
        .get_log_entry(GetLogEntryRequest { log_index: index })
        .await
        .expect_err("not a party");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = notary(&env, &node, "audit-office")
        .await
        .get_log_entry(GetLogEntryRequest {
            log_index: index + 100,
        })
        .await
        .expect_err("beyond the log");
    assert_eq!(s.code(), Code::NotFound);
    assert!(
        s.message().contains("beyond the end of the log"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn inspectors_and_non_owners_cannot_write_and_the_refusal_is_recorded() {
    let env = Env::new();
    let node = env.start();
    for who in ["housing", "audit-office"] {
        let s = exchange(&env, &node, who)
            .await
            .put_record(PutRecordRequest {
                record: enterprise(&uscc(4)),
                payload: b"{}".to_vec(),
            })
            .await
            .expect_err("only the owner writes");
        assert_eq!(s.code(), Code::PermissionDenied, "{who}: {}", s.message());
        assert!(s.metadata().get("x-qianlian-log-index").is_some());
    }
    // And nothing was stored.
    let s = exchange(&env, &node, "market-regulation")
        .await
        .get_record(GetRecordRequest {
            record: enterprise(&uscc(4)),
            purpose: "audit".into(),
        })
        .await
        .expect_err("nothing stored");
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test]
async fn the_gateway_draws_the_request_id_and_echoes_the_callers_own() {
    let env = Env::new();
    let node = env.start();
    let mut housing = exchange(&env, &node, "housing").await;
    let ask = |metadata: &[(&'static str, &str)]| {
        let mut req = tonic::Request::new(GetRecordRequest {
            record: enterprise(&uscc(3)),
            purpose: "permit-review".into(),
        });
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, v.parse().expect("ascii"));
        }
        req
    };
    let mine = "5f0c6d1e-0000-4000-8000-000000000002";
    // Not found, notarized: the status carries the ids too.
    let s = housing
        .get_record(ask(&[("x-qianlian-request-id", mine)]))
        .await
        .expect_err("no such record");
    assert_eq!(s.code(), tonic::Code::NotFound, "{}", s.message());
    let header = |md: &tonic::metadata::MetadataMap, name: &str| {
        md.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = header(s.metadata(), "x-qianlian-request-id").expect("request id");
    assert_ne!(id, mine);
    assert_eq!(
        header(s.metadata(), "x-qianlian-correlation-id").as_deref(),
        Some(mine),
        "the caller's own id comes back as its correlation id"
    );
    let index: u64 = header(s.metadata(), "x-qianlian-log-index")
        .expect("index")
        .parse()
        .expect("number");
    let entry = notary(&env, &node, "audit-office")
        .await
        .get_log_entry(GetLogEntryRequest { log_index: index })
        .await
        .expect("entry")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&entry.record_json).expect("json");
    assert_eq!(unsealed(&json)["Exchange"]["request_id"], id.as_str());
    assert!(!entry.record_json.contains(mine), "never recorded");
    // In the gateway's log beside the request id.
    let mut logged = false;
    for _ in 0..100 {
        logged = node
            .log_text()
            .lines()
            .any(|l| l.contains(&id) && l.contains(mine));
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", node.log_text());
    // A correlation id too long to log is refused, saying the limit.
    let long = "c".repeat(200);
    let s = housing
        .get_record(ask(&[("x-qianlian-correlation-id", &long)]))
        .await
        .expect_err("too long");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
    assert!(s.message().contains("at most 128"), "{}", s.message());
}

#[tokio::test]
async fn department_ids_and_role_names_may_not_meet() {
    let env = Env::new();
    let node = env.start();
    let ops = |args: &[&str]| {
        let mut all = args.to_vec();
        let dir = env.path().to_str().expect("path").to_owned();
        let endpoint = node.endpoint();
        all.extend(["--as", "ops", "--dev-dir", &dir, "--endpoint", &endpoint]);
        cli(&all)
    };
    // A directory with a department named like the policy's role `owner` (`g, …, owner, …`):
    // refused, and the directory in force is unchanged.
    let directory = std::fs::read_to_string(env.pki().join("departments.toml")).expect("dir");
    let with_owner = format!("{directory}\n[[department]]\nid = \"owner\"\nname = \"Owner\"\n");
    let file = env.path().join("departments-owner.toml");
    std::fs::write(&file, with_owner).expect("write");
    let out = ops(&["directory", "apply", file.to_str().expect("path")]);
    assert!(!out.status.success(), "applied: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("`owner` is both a role"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    let shown = ops(&["directory", "show"]);
    assert!(!stdout(&shown).contains("\"owner\""), "{}", stdout(&shown));

    // A department the policy does not name yet is fine; a policy then giving its id to a
    // role is refused against the directory in force.
    let with_tax = format!("{directory}\n[[department]]\nid = \"tax-bureau\"\nname = \"Tax\"\n");
    let file = env.path().join("departments-tax.toml");
    std::fs::write(&file, with_tax).expect("write");
    let out = ops(&["directory", "apply", file.to_str().expect("path")]);
    assert!(out.status.success(), "directory apply: {}", stderr(&out));
    let rules = format!(
        "{}\ng, housing, tax-bureau, market-regulation\n",
        std::fs::read_to_string(policies().join("policy.csv")).expect("policy")
    );
    let file = env.path().join("policy-role.csv");
    std::fs::write(&file, rules).expect("write");
    let out = ops(&["policy", "apply", file.to_str().expect("path")]);
    assert!(!out.status.success(), "applied: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("`tax-bureau` is both a role"), "{err}");
    assert!(err.contains("the directory in force"), "{err}");
}
