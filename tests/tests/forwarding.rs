//! Cross-department exchange through department gateways: three `qianlian serve` processes,
//! each the gateway of one department and a node of one shared three-node cluster. A
//! department's systems call their own gateway, which forwards to the owner's; both sides are
//! notarized under one request id; the policy limits the fields per purpose and is replicated
//! state; no citizen identifier reaches the log in clear.

mod support;

use base64::Engine as _;
use qianlian_raft_store::record::Record;
use std::time::{Duration, Instant};

use qianlian_proto::v1::admin_client::AdminClient;
use qianlian_proto::v1::audit_client::AuditClient;
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{
    AccessFilter, ApplyPolicyRequest, FieldMatch, GetConfigRequest, GetLogEntryRequest,
    GetRecordRequest, PutRecordRequest, QueryAccessesRequest, QueryRecordsRequest, RecordRef,
};
use support::cluster::{Cluster, GATEWAY_CONFIG};
use support::{applied_entry, policies, sealed_for, stderr, stdout, unsealed, until_refused, uscc};
use tonic::Code;
use tonic::transport::Channel;

/// Node i is the gateway of: 1 market-regulation, 2 natural-resources, 3 housing.
const MARKET: usize = 1;
const LAND: usize = 2;
const HOUSING: usize = 3;

/// A resident identity number (valid check digit) for the legal representative.
const REP_ID: &str = "11010519491231002X";
const MANAGER_ID: &str = "110105194912310029";

fn enterprise(code: &str) -> Option<RecordRef> {
    Some(RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: code.into(),
    })
}

async fn exchange(c: &Cluster, node: usize, who: &str) -> ExchangeClient<Channel> {
    ExchangeClient::new(c.channel(node, who).await.expect("connect"))
}

/// The JSON view of the record at `index`, read as the inspector.
async fn entry(c: &Cluster, index: u64) -> (Vec<u8>, serde_json::Value) {
    let e = log_entry(c, index).await;
    let json: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
    // A gateway whose key the directory lists seals its records: the exchange is inside.
    (e.record, unsealed(&json)["Exchange"].clone())
}

/// The log entry at `index` as housing's node has it, once that node has applied it (a receipt
/// may come from another node a moment before).
async fn log_entry(c: &Cluster, index: u64) -> qianlian_proto::v1::GetLogEntryResponse {
    let mut n = NotaryClient::new(c.channel(HOUSING, "audit-office").await.expect("connect"));
    applied_entry(&mut n, index).await
}

/// The department whose gateway sealed the record at `index`, if it is sealed: by its own
/// seal, or by the batch signature record after it that covers it (whose key the directory in
/// force lists among that department's node keys).
async fn sealed_by(c: &Cluster, index: u64) -> Option<String> {
    let e = log_entry(c, index).await;
    let json: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
    if let Some(d) = sealed_for(&json) {
        return Some(d.to_owned());
    }
    let mut leaves = vec![qianlian_verifier::leaf_hash(&e.record)];
    for at in index + 1..index + 64 {
        let next = log_entry(c, at).await;
        let Ok(Record::BatchSignature(s)) = Record::decode(&next.record) else {
            leaves.push(qianlian_verifier::leaf_hash(&next.record));
            continue;
        };
        let start = at.checked_sub(s.count)?;
        if start > index {
            return None;
        }
        let position = (index - start) as usize;
        let mut covered = Vec::new();
        for i in start..at {
            covered.push(qianlian_verifier::leaf_hash(&log_entry(c, i).await.record));
        }
        s.verify(&covered)
            .expect("the batch signature covers its records");
        assert_eq!(covered[position], leaves[0]);
        let out = c.operator(1, "directory", &["show"]);
        let text: String = stdout(&out)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let directory: toml::Value = toml::from_str(&text).expect("directory toml");
        let key = base64::engine::general_purpose::STANDARD.encode(s.public_key);
        return directory["department"]
            .as_array()?
            .iter()
            .find(|d| {
                d.get("node_keys")
                    .and_then(|k| k.as_array())
                    .is_some_and(|keys| keys.iter().any(|k| k["public_key"].as_str() == Some(&key)))
            })
            .and_then(|d| d["id"].as_str())
            .map(str::to_owned);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_exchange_through_their_gateways_with_purpose_bound_fields() {
    let mut c = Cluster::start(3, GATEWAY_CONFIG);
    c.leader(Duration::from_secs(20)).await;
    c.apply_gateways();

    // The owners store their records through their own gateways.
    let code = uscc(7);
    let record = serde_json::json!({
        "unified_social_credit_code": code,
        "name": "贵州筑城建设有限公司",
        "legal_representative": "王芳",
        "legal_representative_id": REP_ID.to_lowercase(),
        "registered_capital_cny": 5_000_000,
        "established": "2015-03-12",
        "status": "存续",
    });
    let mut market = exchange(&c, MARKET, "market-regulation").await;
    market
        .put_record(PutRecordRequest {
            record: enterprise(&code),
            payload: record.to_string().into_bytes(),
        })
        .await
        .expect("owner put");
    // Another department's gateway does not store an owner's records.
    let s = exchange(&c, HOUSING, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: enterprise(&code),
            payload: b"{}".to_vec(),
        })
        .await
        .expect_err("wrong gateway");
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    assert!(s.message().contains("its own gateway"), "{}", s.message());

    // 1. Housing reads through its own gateway for a permit review: forwarded, limited.
    let mut housing = exchange(&c, HOUSING, "housing").await;
    let read = async |client: &mut ExchangeClient<Channel>, purpose: &str| {
        client
            .get_record(GetRecordRequest {
                record: enterprise(&code),
                purpose: purpose.into(),
            })
            .await
    };
    let resp = read(&mut housing, "permit-review")
        .await
        .expect("forwarded read")
        .into_inner();
    let got: serde_json::Value = serde_json::from_slice(&resp.payload).expect("json");
    assert_eq!(got["name"], "贵州筑城建设有限公司");
    assert!(got.get("legal_representative_id").is_none(), "{got}");
    assert!(got.get("legal_representative").is_none(), "{got}");
    let limited = [
        "established",
        "name",
        "registered_capital_cny",
        "status",
        "unified_social_credit_code",
    ];
    assert_eq!(resp.disclosed_fields, limited);
    assert_eq!(resp.policy_version, 1);
    let provider = resp.receipt.expect("provider receipt").log_index;
    let consumer = resp.consumer_receipt.expect("consumer receipt").log_index;
    let (_, p) = entry(&c, provider).await;
    let (_, k) = entry(&c, consumer).await;
    assert_eq!(
        p["request_id"], k["request_id"],
        "both sides share the request id"
    );
    assert_eq!(p["side"], "provider");
    assert_eq!(p["gateway"], "market-regulation");
    // `pki init --node node-N=<department>` published each gateway's key, so each side's
    // record carries its own gateway's seal.
    assert_eq!(
        sealed_by(&c, provider).await.as_deref(),
        Some("market-regulation")
    );
    assert_eq!(sealed_by(&c, consumer).await.as_deref(), Some("housing"));
    assert_eq!(k["side"], "consumer");
    assert_eq!(k["gateway"], "housing");
    for r in [&p, &k] {
        assert_eq!(r["caller"]["department"], "housing");
        assert_eq!(r["decision"], "allow");
        assert_eq!(r["purpose"], "permit-review");
        assert_eq!(r["policy_version"], 1);
        assert_eq!(r["disclosed_fields"], serde_json::json!(limited));
        assert_eq!(r["response_digest"], p["response_digest"]);
    }
    assert!(
        p["rule"]
            .as_str()
            .unwrap_or_default()
            .contains("permit-review")
    );
    // No personal field disclosed: no data subject on the record.
    assert_eq!(p["subjects"], serde_json::json!([]));

    // The pairing id is the consumer gateway's: an id the system sends is echoed as its own
    // correlation id, never recorded; the response names the records' id.
    let mine = "5f0c6d1e-0000-4000-8000-000000000001";
    let mut req = tonic::Request::new(GetRecordRequest {
        record: enterprise(&code),
        purpose: "permit-review".into(),
    });
    req.metadata_mut()
        .insert("x-qianlian-request-id", mine.parse().expect("ascii"));
    req.metadata_mut().insert(
        "x-qianlian-correlation-id",
        "housing-batch-17".parse().expect("ascii"),
    );
    let resp = housing.get_record(req).await.expect("forwarded read");
    let header = |name: &str| {
        resp.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (id, correlation) = (
        header("x-qianlian-request-id"),
        header("x-qianlian-correlation-id"),
    );
    let resp = resp.into_inner();
    let (_, p2) = entry(&c, resp.receipt.expect("receipt").log_index).await;
    let (_, k2) = entry(&c, resp.consumer_receipt.expect("receipt").log_index).await;
    assert_eq!(p2["request_id"], k2["request_id"]);
    assert_eq!(id.as_deref(), k2["request_id"].as_str());
    assert_ne!(
        k2["request_id"], mine,
        "the system's id does not pair records"
    );
    assert_ne!(p2["request_id"], p["request_id"], "a new id per call");
    assert_eq!(correlation.as_deref(), Some("housing-batch-17"));

    // 2. Natural resources calls the owner's gateway directly, for a purpose that discloses the
    // representative: the record names the data subject by keyed hash only.
    let direct = read(
        &mut exchange(&c, MARKET, "natural-resources").await,
        "property-registration",
    )
    .await
    .expect("direct read")
    .into_inner();
    assert!(direct.consumer_receipt.is_none());
    let got: serde_json::Value = serde_json::from_slice(&direct.payload).expect("json");
    assert_eq!(got["legal_representative_id"], REP_ID, "stored normalised");
    let (_, d) = entry(&c, direct.receipt.expect("receipt").log_index).await;
    assert_eq!(d["side"], "provider");
    assert_eq!(d["subjects"].as_array().map(Vec::len), Some(1));

    // 3. No rule: natural resources may not read for marketing. Refused on the owner's side,
    // recorded on both.
    let mut land = exchange(&c, LAND, "natural-resources").await;
    let s = read(&mut land, "marketing").await.expect_err("no rule");
    assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message());
    assert!(s.message().contains("has no rule"), "{}", s.message());
    let index: u64 = s
        .metadata()
        .get("x-qianlian-log-index")
        .expect("receipt")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("index");
    let (_, k) = entry(&c, index).await;
    assert_eq!(
        (k["side"].as_str(), k["decision"].as_str()),
        (Some("consumer"), Some("deny"))
    );
    assert_eq!(k["disclosed_fields"], serde_json::json!([]));
    assert_eq!(k["policy_version"], 1, "the owner's version that refused");

    // 4. No purpose: refused before any decision.
    let s = read(&mut land, "").await.expect_err("no purpose");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("`purpose` is required"),
        "{}",
        s.message()
    );

    // 5. A gateway forwards for its own department only.
    let s = read(
        &mut exchange(&c, HOUSING, "natural-resources").await,
        "property-registration",
    )
    .await
    .expect_err("not its department");
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(
        s.message().contains("forwards requests of `housing` only"),
        "{}",
        s.message()
    );

    // 6. Queries by indexed fields; a personal value is recorded as a keyed hash.
    let mut housing_own = exchange(&c, HOUSING, "housing").await;
    let permit = "520115202403110001";
    housing_own
        .put_record(PutRecordRequest {
            record: Some(RecordRef {
                department: "housing".into(),
                dataset: "construction-permit".into(),
                key: permit.into(),
            }),
            payload: serde_json::json!({
                "permit_number": permit,
                "builder_credit_code": code,
                "project_manager_id": MANAGER_ID,
                "project": "观山湖区综合楼",
            })
            .to_string()
            .into_bytes(),
        })
        .await
        .expect("permit put");
    let q = land
        .query_records(QueryRecordsRequest {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            r#match: vec![FieldMatch {
                field: "legal_representative_id".into(),
                value: REP_ID.to_lowercase(),
            }],
            purpose: "property-registration".into(),
            limit: 0,
        })
        .await
        .expect("forwarded query")
        .into_inner();
    assert_eq!(q.records.len(), 1);
    assert_eq!(q.records[0].key, code);
    let (_, qr) = entry(&c, q.receipt.expect("receipt").log_index).await;
    assert_eq!(qr["action"], "query");
    assert_eq!(qr["result_count"], 1);
    let key = qr["key"].as_str().unwrap_or_default();
    assert!(key.starts_with("legal_representative_id=subject:"), "{key}");
    let s = land
        .query_records(QueryRecordsRequest {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            r#match: vec![FieldMatch {
                field: "registered_capital_cny".into(),
                value: "5000000".into(),
            }],
            purpose: "property-registration".into(),
            limit: 0,
        })
        .await
        .expect_err("not indexed");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("not an indexed field"),
        "{}",
        s.message()
    );

    // 7. The replicated log holds no citizen identifier in clear, in any form.
    let size = c.status(MARKET).await.expect("status").tree_size;
    for i in 0..size {
        let (bytes, _) = entry(&c, i).await;
        let mut n = NotaryClient::new(c.channel(MARKET, "audit-office").await.expect("connect"));
        let json = n
            .get_log_entry(GetLogEntryRequest { log_index: i })
            .await
            .expect("entry")
            .into_inner()
            .record_json;
        for id in [REP_ID, MANAGER_ID, &REP_ID.to_lowercase()] {
            let raw = String::from_utf8_lossy(&bytes);
            assert!(
                !raw.contains(id) && !json.contains(id),
                "log index {i} names {id} in clear"
            );
        }
    }

    // 8. The audit trail: every node answers an inspector's query with the same records, both
    // sides of a forwarded read share a request id, and the whole log verifies against a
    // checkpoint cosigned by all three nodes.
    c.converge(size, Duration::from_secs(20)).await;
    let mut answers = Vec::new();
    for node in [MARKET, HOUSING] {
        let mut a = AuditClient::new(c.channel(node, "audit-office").await.expect("connect"));
        let r = a
            .query_accesses(QueryAccessesRequest {
                filter: Some(AccessFilter {
                    consumer: "housing".into(),
                    dataset: "market-regulation/enterprise-registration".into(),
                    ..Default::default()
                }),
                oldest_first: true,
                limit: 1000,
                cursor: String::new(),
            })
            .await
            .expect("audit query")
            .into_inner();
        answers.push(r.entries);
    }
    assert_eq!(answers[0], answers[1], "every node holds the same trail");
    let sides: Vec<(String, String)> = answers[0]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
            let x = &unsealed(&v)["Exchange"];
            (
                x["request_id"].as_str().expect("id").to_owned(),
                x["side"].as_str().expect("side").to_owned(),
            )
        })
        .collect();
    assert!(
        sides.iter().any(|(id, side)| side == "consumer"
            && sides.iter().any(|(i2, s2)| i2 == id && s2 == "provider")),
        "a forwarded read is on the trail from both sides: {sides:?}"
    );
    let keys: Vec<String> = (1..=3)
        .map(|i| {
            c.env
                .pki()
                .join(format!("nodes/node-{i}.note.pub"))
                .display()
                .to_string()
        })
        .collect();
    let out = c.operator(
        HOUSING,
        "audit",
        &[
            "--trust",
            &keys[0],
            "--trust",
            &keys[1],
            "--trust",
            &keys[2],
            "--min-signers",
            "3",
            "verify",
        ],
    );
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("verified:"), "{}", stdout(&out));

    // 9. The owner's gateway is down: a clear UNAVAILABLE naming the department, in bounded time.
    c.stop(MARKET);
    let started = Instant::now();
    let s = read(&mut housing, "permit-review")
        .await
        .expect_err("owner down");
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
    assert!(
        s.message().contains("department `market-regulation`"),
        "{}",
        s.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_switches_every_read_at_one_version_and_a_bad_one_changes_nothing() {
    let c = Cluster::start(3, GATEWAY_CONFIG);
    c.leader(Duration::from_secs(20)).await;
    c.apply_gateways();
    let code = uscc(3);
    exchange(&c, MARKET, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: enterprise(&code),
            payload: serde_json::json!({"name": "n", "status": "存续", "legal_representative_id": REP_ID})
                .to_string()
                .into_bytes(),
        })
        .await
        .expect("put");

    // Version 2 lets housing see only the name for a permit review.
    let rules = std::fs::read_to_string(policies().join("policy.csv")).expect("rules");
    let narrower = rules.replace(
        "read, permit-review, unified_social_credit_code|name|status|registered_capital_cny|established",
        "read, permit-review, name",
    );
    assert_ne!(rules, narrower);
    let file = c.env.path().join("narrower.csv");
    std::fs::write(&file, &narrower).expect("write");

    // Reads run through both gateways while the policy changes.
    let reader = |channel: Channel| {
        let code = code.clone();
        async move {
            let mut client = ExchangeClient::new(channel);
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                if let Ok(r) = client
                    .get_record(GetRecordRequest {
                        record: enterprise(&code),
                        purpose: "permit-review".into(),
                    })
                    .await
                {
                    let r = r.into_inner();
                    let fields: Vec<String> =
                        serde_json::from_slice::<serde_json::Value>(&r.payload)
                            .expect("json")
                            .as_object()
                            .expect("object")
                            .keys()
                            .cloned()
                            .collect();
                    seen.push((
                        r.policy_version,
                        r.disclosed_fields,
                        fields,
                        r.receipt.expect("receipt").log_index,
                    ));
                }
            }
            seen
        }
    };
    let a = tokio::spawn(reader(
        c.channel(HOUSING, "housing").await.expect("connect"),
    ));
    let b = tokio::spawn(reader(c.channel(MARKET, "housing").await.expect("connect")));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = c.operator(LAND, "policy", &["apply", &file.display().to_string()]);
    assert!(out.status.success(), "policy apply: {}", stderr(&out));
    assert!(
        stdout(&out).contains("policy version 2"),
        "{}",
        stdout(&out)
    );
    let mut seen = a.await.expect("reader");
    seen.extend(b.await.expect("reader"));
    let versions: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(versions, [1, 2].into(), "reads before and after the change");
    for (version, disclosed, fields, index) in &seen {
        let expected: &[&str] = match version {
            1 => &["name", "status"],
            _ => &["name"],
        };
        assert_eq!(disclosed, expected, "version {version}");
        let mut fields = fields.clone();
        fields.sort();
        assert_eq!(
            fields, expected,
            "version {version}: the payload matches the version"
        );
        let (_, r) = entry(&c, *index).await;
        assert_eq!(r["policy_version"], *version);
        assert_eq!(r["disclosed_fields"], serde_json::json!(expected));
    }

    // A broken policy is refused with its line, by the CLI and by the server; nothing changes.
    let bad = c.env.path().join("bad.csv");
    std::fs::write(&bad, format!("{narrower}\np, housing, market-regulation\n")).expect("write");
    let out = c.operator(LAND, "policy", &["apply", &bad.display().to_string()]);
    assert!(!out.status.success());
    let line = narrower.lines().count() + 2;
    assert!(
        stderr(&out).contains(&format!("bad.csv:{line}: a `p` rule needs 5 fields")),
        "{}",
        stderr(&out)
    );
    let mut admin = AdminClient::new(c.channel(HOUSING, "ops").await.expect("connect"));
    let s = admin
        .apply_policy(ApplyPolicyRequest {
            model: String::new(),
            rules: "p, housing, x, y, read, z, Bad Field\n".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("rules:1: field 6"), "{}", s.message());
    let v = admin
        .get_config(GetConfigRequest {
            kind: "policy".into(),
        })
        .await
        .expect("config")
        .into_inner();
    assert_eq!(v.version.expect("version").version, 2);
    assert_eq!(v.text, narrower);
    // A department may not change the policy.
    let mut not_ops = AdminClient::new(c.channel(HOUSING, "housing").await.expect("connect"));
    let s = not_ops
        .apply_policy(ApplyPolicyRequest {
            model: String::new(),
            rules: rules.clone(),
            ..Default::default()
        })
        .await
        .expect_err("not an operator");
    assert_eq!(s.code(), Code::PermissionDenied);
}

/// Accesses of market-regulation's registrations by housing, as node `node` holds them.
async fn housing_reads(c: &Cluster, node: usize) -> usize {
    let mut audit = AuditClient::new(c.channel(node, "audit-office").await.expect("connect"));
    audit
        .query_accesses(QueryAccessesRequest {
            filter: Some(AccessFilter {
                consumer: "housing".into(),
                dataset: "market-regulation/enterprise-registration".into(),
                ..Default::default()
            }),
            oldest_first: true,
            limit: 1000,
            cursor: String::new(),
        })
        .await
        .expect("audit query")
        .into_inner()
        .entries
        .len()
}

/// A directory that pins an owner gateway's certificate: a consumer's gateway forwards only to
/// a server presenting exactly that certificate, and sends nothing to any other server at the
/// owner's address, even one the CA vouches for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_goes_only_to_the_gateway_certificate_the_directory_pins() {
    let c = Cluster::start(3, GATEWAY_CONFIG);
    c.leader(Duration::from_secs(20)).await;
    // Market regulation's gateway is node 1, pinned to node 1's certificate.
    let out = c.apply_directory(&[("market-regulation", MARKET)]);
    assert!(out.status.success(), "directory apply: {}", stderr(&out));
    let code = uscc(11);
    exchange(&c, MARKET, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: enterprise(&code),
            payload: serde_json::json!({"name": "n", "status": "存续"})
                .to_string()
                .into_bytes(),
        })
        .await
        .expect("put");
    let mut housing = exchange(&c, HOUSING, "housing").await;
    let get = GetRecordRequest {
        record: enterprise(&code),
        purpose: "permit-review".into(),
    };
    // Until housing's node has the directory, the gateway is unknown there.
    let deadline = Instant::now() + Duration::from_secs(15);
    let resp = loop {
        match housing.get_record(get.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(s) if Instant::now() < deadline => {
                let _ = s;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("read through a correctly pinned gateway: {s:?}"),
        }
    };
    assert!(resp.consumer_receipt.is_some(), "forwarded");
    assert!(resp.receipt.is_some(), "answered by the owner's gateway");

    // The directory now pins node 2's certificate (issued by the same CA) for market
    // regulation, while node 1 still answers at its address.
    let out = c.apply_directory(&[("market-regulation", LAND)]);
    assert!(out.status.success(), "directory apply: {}", stderr(&out));
    let refused = until_refused(
        Code::FailedPrecondition,
        "a read through a wrongly pinned gateway",
        || {
            let (mut housing, get) = (housing.clone(), get.clone());
            async move { housing.get_record(get).await }
        },
    )
    .await;
    let m = refused.message();
    assert!(m.contains(&c.cert_fingerprint(MARKET)), "{m}");
    assert!(m.contains(&c.cert_fingerprint(LAND)), "{m}");
    assert!(
        m.contains("the directory pins") && m.contains("`market-regulation`"),
        "{m}"
    );
    assert!(m.contains("qianlian directory apply"), "names the fix: {m}");
    let q = housing
        .query_records(QueryRecordsRequest {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            r#match: vec![FieldMatch {
                field: "name".into(),
                value: "n".into(),
            }],
            purpose: "permit-review".into(),
            limit: 10,
        })
        .await
        .expect_err("a query through a wrongly pinned gateway");
    assert_eq!(q.code(), Code::FailedPrecondition, "{}", q.message());

    // Nothing reached the owner and nothing was recorded on either side.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = housing_reads(&c, MARKET).await;
    for _ in 0..3 {
        let s = housing
            .get_record(get.clone())
            .await
            .expect_err("pinned away");
        assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(housing_reads(&c, MARKET).await, before);

    // The right pin again: forwarding resumes.
    let out = c.apply_directory(&[("market-regulation", MARKET)]);
    assert!(out.status.success(), "directory apply: {}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match housing.get_record(get.clone()).await {
            Ok(r) => {
                assert!(r.into_inner().consumer_receipt.is_some());
                break;
            }
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("a read after the pin was corrected: {s:?}"),
        }
    }
    assert!(housing_reads(&c, MARKET).await > before);
}
