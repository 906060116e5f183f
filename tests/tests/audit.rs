//! The audit trail as inspectors and data subjects use it, against a real node: queries by
//! every filter compared with a scan of the whole log, paging while the log grows, the citizen
//! view with bearer tokens, integrity verification of the log (live and from a stopped node's
//! altered files), and evidence bundles checked offline.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qianlian_gateway::domain::identifier::ResidentId;
use qianlian_gateway::domain::subject::SubjectKey;
use qianlian_proto::v1::audit_client::AuditClient;
use qianlian_proto::v1::{
    AccessFilter, FieldMatch, GetRecordRequest, MyAccessesRequest, PutRecordRequest,
    QueryAccessesRequest, QueryRecordsRequest, RecordRef, StreamLogRequest,
};
use qianlian_verifier::record::{Action, Decision, Record, Side};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

/// Enterprises put by market regulation; their legal representatives are CITIZENS residents.
const ENTERPRISES: u64 = 24;
const CITIZENS: u64 = 6;
const ISSUER: &str = "https://id.gov.example";
const AUDIENCE: &str = "qianlian";

fn citizen(i: u64) -> String {
    ResidentId::generate(100 + i).as_str().to_owned()
}

/// A node with an identity provider's key configured; returns the provider's signing key.
fn start(env: &Env) -> (Node, jsonwebtoken::EncodingKey) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("idp key");
    let public = env.path().join("idp.pub.pem");
    std::fs::write(&public, key.public_key_pem()).expect("write idp key");
    let extra = format!(
        "[audit]\ntoken_issuer = \"{ISSUER}\"\ntoken_audience = \"{AUDIENCE}\"\ntoken_keys = [\"{}\"]\n",
        public.display()
    );
    let node = env.start_with(&policies().join("policy.csv"), &extra);
    let encoding =
        jsonwebtoken::EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).expect("encoding");
    (node, encoding)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(key: &jsonwebtoken::EncodingKey, subject: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": exp}),
        key,
    )
    .expect("sign token")
}

async fn client(env: &Env, node: &Node, who: Option<&str>) -> AuditClient<Channel> {
    let ca = env.pki().join("ca.crt");
    let ids = who.map(|w| env.identity(w));
    let tls = tls(&ca, ids.as_ref().map(|(c, k)| (c.as_path(), k.as_path())));
    AuditClient::new(channel(node, tls).await.expect("connect"))
}

fn enterprise(i: u64) -> RecordRef {
    RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: uscc(i),
    }
}

/// Put the enterprises, then run `reads` accesses across departments, purposes and outcomes
/// from 16 concurrent callers.
async fn load(env: &Env, node: &Node, reads: u64) {
    let mut owner = exchange(env, node, "market-regulation").await;
    for i in 0..ENTERPRISES {
        let body = serde_json::json!({
            "unified_social_credit_code": uscc(i),
            "name": format!("黔链测试企业{i}"),
            "legal_representative": "张三",
            "legal_representative_id": citizen(i % CITIZENS),
            "registered_capital_cny": 1_000_000 + i,
            "established": "2020-01-01",
            "status": if i % 5 == 0 { "revoked" } else { "active" },
        });
        owner
            .put_record(PutRecordRequest {
                record: Some(enterprise(i)),
                payload: body.to_string().into_bytes(),
            })
            .await
            .expect("put");
    }
    accesses(env, node, 0, reads).await;
}

/// Accesses number `from..to`: housing (permit review), natural resources (property
/// registration), housing for a purpose no rule grants (denied), and natural-resources queries.
async fn accesses(env: &Env, node: &Node, from: u64, to: u64) {
    let mut tasks = Vec::new();
    let workers = 16;
    for w in 0..workers {
        let mut housing = exchange(env, node, "housing").await;
        let mut land = exchange(env, node, "natural-resources").await;
        tasks.push(tokio::spawn(async move {
            let mut j = from + w;
            while j < to {
                let e = j % ENTERPRISES;
                match j % 7 {
                    0..=2 => {
                        housing
                            .get_record(GetRecordRequest {
                                record: Some(enterprise(e)),
                                purpose: "permit-review".into(),
                            })
                            .await
                            .expect("permit review read");
                    }
                    3..=4 => {
                        land.get_record(GetRecordRequest {
                            record: Some(enterprise(e)),
                            purpose: "property-registration".into(),
                        })
                        .await
                        .expect("property registration read");
                    }
                    5 => {
                        let s = housing
                            .get_record(GetRecordRequest {
                                record: Some(enterprise(e)),
                                purpose: "marketing".into(),
                            })
                            .await
                            .expect_err("no rule grants marketing");
                        assert_eq!(s.code(), Code::PermissionDenied);
                    }
                    _ => {
                        land.query_records(QueryRecordsRequest {
                            department: "market-regulation".into(),
                            dataset: "enterprise-registration".into(),
                            r#match: vec![FieldMatch {
                                field: "legal_representative_id".into(),
                                value: citizen(e % CITIZENS),
                            }],
                            purpose: "property-registration".into(),
                            limit: 10,
                        })
                        .await
                        .expect("query");
                    }
                }
                j += workers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("access task");
    }
}

/// Every record of the log, decoded, streamed as the inspector.
async fn scan(a: &mut AuditClient<Channel>) -> Vec<Record> {
    let mut s = a
        .stream_log(StreamLogRequest { start: 0, end: 0 })
        .await
        .expect("stream")
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.expect("chunk") {
        assert_eq!(chunk.first_index, out.len() as u64, "chunks in order");
        for bytes in chunk.records {
            // Queries match what a record says, sealed or not.
            out.push(Record::decode(&bytes).expect("decode").into_content());
        }
    }
    out
}

/// Every page of a query; the log indices in the order returned, and the first page's log size.
async fn pages(
    a: &mut AuditClient<Channel>,
    filter: &AccessFilter,
    oldest_first: bool,
    limit: u32,
) -> (Vec<u64>, u64) {
    let mut cursor = String::new();
    let mut out = Vec::new();
    let mut size = None;
    loop {
        let r = a
            .query_accesses(QueryAccessesRequest {
                filter: Some(filter.clone()),
                oldest_first,
                limit,
                cursor,
            })
            .await
            .expect("query")
            .into_inner();
        assert!(r.entries.len() <= limit as usize);
        size.get_or_insert(r.tree_size);
        for e in r.entries {
            let receipt = e.receipt.expect("receipt");
            let record = Record::decode(&e.record).expect("decode");
            assert_eq!(
                receipt.record_hash,
                qianlian_verifier::leaf_hash(&e.record).to_vec()
            );
            let json: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
            assert_eq!(json, serde_json::to_value(&record).expect("json"));
            out.push(receipt.log_index);
        }
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
    }
    (out, size.unwrap_or_default())
}

/// What the test expects: the access records below `size` for which `pred` holds, ordered by
/// (time, log index).
fn expected(
    log: &[Record],
    size: u64,
    oldest_first: bool,
    pred: &dyn Fn(&Record) -> bool,
) -> Vec<u64> {
    let mut v: Vec<(u64, u64)> = log
        .iter()
        .enumerate()
        .take(size as usize)
        .filter(|(_, r)| matches!(r, Record::Exchange(_) | Record::Access(_)) && pred(r))
        .map(|(i, r)| (r.time_unix_ms(), i as u64))
        .collect();
    v.sort();
    if !oldest_first {
        v.reverse();
    }
    v.into_iter().map(|(_, i)| i).collect()
}

fn x(r: &Record) -> &qianlian_verifier::record::ExchangeRecord {
    match r {
        Record::Exchange(x) => x,
        other => panic!("not an exchange record: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_queries_return_exactly_what_a_scan_of_the_log_finds() {
    let env = Env::new();
    let (node, _) = start(&env);
    load(&env, &node, 1200).await;
    // A second policy version half-way through the trail.
    let out = cli(&[
        "policy",
        "apply",
        policies().join("policy.csv").to_str().expect("path"),
        "--as",
        "ops",
        "--dev-dir",
        env.path().to_str().expect("path"),
        "--endpoint",
        &node.endpoint(),
    ]);
    assert!(out.status.success(), "policy apply: {}", stderr(&out));
    accesses(&env, &node, 1200, 2400).await;

    let mut a = client(&env, &node, Some("audit-office")).await;
    let log = scan(&mut a).await;
    assert!(log.len() > 2400, "log holds {} records", log.len());
    let key = SubjectKey::new(
        hex::decode(
            std::fs::read_to_string(env.pki().join("subject.key"))
                .expect("key")
                .trim(),
        )
        .expect("hex")
        .try_into()
        .expect("32 bytes"),
    );
    let subject = citizen(2);
    let subject_hash = key.hash(&subject).0;
    let times: Vec<u64> = log.iter().map(Record::time_unix_ms).collect();
    let (t1, t2) = (times[log.len() / 3], times[2 * log.len() / 3]);
    let sure = |r: &Record| matches!(r, Record::Exchange(_));

    type Pred = Box<dyn Fn(&Record) -> bool>;
    let cases: Vec<(&str, AccessFilter, Pred)> = vec![
        (
            "consumer",
            AccessFilter {
                consumer: "housing".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).caller.department == "housing"),
        ),
        (
            "provider",
            AccessFilter {
                provider: "market-regulation".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).owner == "market-regulation"),
        ),
        (
            "dataset by owner/id",
            AccessFilter {
                dataset: "market-regulation/enterprise-registration".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).dataset == "enterprise-registration"),
        ),
        (
            "dataset by id",
            AccessFilter {
                dataset: "enterprise-registration".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).dataset == "enterprise-registration"),
        ),
        (
            "record key",
            AccessFilter {
                key: uscc(3),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).key == uscc(3)),
        ),
        (
            "action",
            AccessFilter {
                action: "query".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).action == Action::Query),
        ),
        (
            "decision",
            AccessFilter {
                decision: "deny".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).decision == Decision::Deny),
        ),
        (
            "purpose",
            AccessFilter {
                purpose: "property-registration".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).purpose == "property-registration"),
        ),
        (
            "policy version",
            AccessFilter {
                policy_version: Some(2),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).policy_version == 2),
        ),
        (
            "subject",
            AccessFilter {
                subject: subject.to_lowercase(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).subjects.iter().any(|s| s.0 == subject_hash)),
        ),
        (
            "side",
            AccessFilter {
                side: "provider".into(),
                ..Default::default()
            },
            Box::new(move |r| sure(r) && x(r).side == Side::Provider),
        ),
        (
            "time range",
            AccessFilter {
                since_unix_ms: Some(t1),
                until_unix_ms: Some(t2),
                ..Default::default()
            },
            Box::new(move |r| (t1..t2).contains(&r.time_unix_ms())),
        ),
        (
            "consumer, decision, purpose, policy version and time",
            AccessFilter {
                consumer: "housing".into(),
                decision: "allow".into(),
                purpose: "permit-review".into(),
                policy_version: Some(1),
                since_unix_ms: Some(t1),
                ..Default::default()
            },
            Box::new(move |r| {
                sure(r)
                    && x(r).caller.department == "housing"
                    && x(r).decision == Decision::Allow
                    && x(r).purpose == "permit-review"
                    && x(r).policy_version == 1
                    && r.time_unix_ms() >= t1
            }),
        ),
        (
            "nothing matches",
            AccessFilter {
                consumer: "housing".into(),
                purpose: "property-registration".into(),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (name, filter, pred) in &cases {
        for oldest_first in [false, true] {
            let (got, size) = pages(&mut a, filter, oldest_first, 37).await;
            let want = expected(&log, size, oldest_first, pred.as_ref());
            assert_eq!(got, want, "{name} (oldest first: {oldest_first})");
            if *name != "nothing matches" {
                assert!(!want.is_empty(), "{name}: the test data must hold matches");
            }
        }
    }

    // The CLI writes the same matches as CSV and JSON lines.
    let dir = env.path().to_str().expect("path").to_owned();
    let csv_path = env.path().join("housing.csv");
    let out = cli(&[
        "audit",
        "query",
        "--as",
        "audit-office",
        "--dev-dir",
        &dir,
        "--endpoint",
        &node.endpoint(),
        "--consumer",
        "housing",
        "--decision",
        "deny",
        "--limit",
        "0",
        "--format",
        "csv",
        "--out",
        csv_path.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "audit query: {}", stderr(&out));
    let want = expected(&log, log.len() as u64, false, &|r| {
        sure(r) && x(r).caller.department == "housing" && x(r).decision == Decision::Deny
    });
    let csv_text = std::fs::read_to_string(&csv_path).expect("csv");
    let mut lines = csv_text.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("log_index,record_hash,time_unix_ms")
    );
    let got: Vec<u64> = lines
        .map(|l| l.split(',').next().expect("column").parse().expect("index"))
        .collect();
    assert_eq!(got, want);
    let out = cli(&[
        "audit",
        "query",
        "--as",
        "audit-office",
        "--dev-dir",
        &dir,
        "--endpoint",
        &node.endpoint(),
        "--subject",
        &subject,
        "--oldest-first",
        "--limit",
        "0",
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "audit query: {}", stderr(&out));
    let got: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["log_index"].as_u64().expect("index")
        })
        .collect();
    let want = expected(&log, log.len() as u64, true, &|r| {
        sure(r) && x(r).subjects.iter().any(|s| s.0 == subject_hash)
    });
    assert_eq!(got, want);
    assert!(
        !stdout(&out).contains(&subject),
        "the identifier itself never appears in results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_neither_repeats_nor_skips_while_the_log_grows() {
    let env = Env::new();
    let (node, _) = start(&env);
    load(&env, &node, 600).await;
    let mut a = client(&env, &node, Some("audit-office")).await;
    let filter = AccessFilter {
        consumer: "housing".into(),
        ..Default::default()
    };
    let mut cursor = String::new();
    let mut got = Vec::new();
    let mut first_size = None;
    let mut round = 0;
    loop {
        let r = a
            .query_accesses(QueryAccessesRequest {
                filter: Some(filter.clone()),
                oldest_first: false,
                limit: 25,
                cursor,
            })
            .await
            .expect("page")
            .into_inner();
        first_size.get_or_insert(r.tree_size);
        assert_eq!(
            Some(r.tree_size),
            first_size,
            "every page answers at the first page's size"
        );
        got.extend(
            r.entries
                .iter()
                .map(|e| e.receipt.clone().expect("receipt").log_index),
        );
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
        // Housing reads more between pages.
        accesses(&env, &node, 600 + round * 21, 600 + (round + 1) * 21).await;
        round += 1;
    }
    assert!(round >= 4, "the walk took several pages");
    let log = scan(&mut a).await;
    let size = first_size.expect("size");
    assert!(log.len() as u64 > size, "the log grew during the walk");
    let want = expected(
        &log,
        size,
        false,
        &|r| matches!(r, Record::Exchange(x) if x.caller.department == "housing"),
    );
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "no record twice");
    assert_eq!(
        got, want,
        "exactly the records at the first page's log size"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_inspectors_query_and_bad_queries_are_refused_with_the_reason() {
    let env = Env::new();
    let (node, _) = start(&env);
    load(&env, &node, 30).await;
    let q = |filter: AccessFilter, limit: u32, cursor: &str| QueryAccessesRequest {
        filter: Some(filter),
        oldest_first: false,
        limit,
        cursor: cursor.into(),
    };
    let mut housing = client(&env, &node, Some("housing")).await;
    let s = housing
        .query_accesses(q(AccessFilter::default(), 10, ""))
        .await
        .expect_err("a department is not an inspector");
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("inspector"), "{}", s.message());
    let mut ops = client(&env, &node, Some("ops")).await;
    let s = ops
        .query_accesses(q(AccessFilter::default(), 10, ""))
        .await
        .expect_err("an operator is not an inspector");
    assert_eq!(s.code(), Code::PermissionDenied);
    let mut anonymous = client(&env, &node, None).await;
    let s = anonymous
        .query_accesses(q(AccessFilter::default(), 10, ""))
        .await
        .expect_err("no certificate");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = housing
        .stream_log(StreamLogRequest { start: 0, end: 0 })
        .await
        .expect_err("a department may not stream the log");
    assert_eq!(s.code(), Code::PermissionDenied);

    let mut a = client(&env, &node, Some("audit-office")).await;
    let bad = [
        (
            q(
                AccessFilter {
                    action: "delete".into(),
                    ..Default::default()
                },
                10,
                "",
            ),
            "read, write, query",
        ),
        (
            q(
                AccessFilter {
                    subject: "52010219900307123".into(),
                    ..Default::default()
                },
                10,
                "",
            ),
            "subject",
        ),
        (q(AccessFilter::default(), 5000, ""), "1 to 1000"),
        (q(AccessFilter::default(), 10, "not-a-cursor"), "cursor"),
        (
            q(
                AccessFilter {
                    since_unix_ms: Some(10),
                    until_unix_ms: Some(10),
                    ..Default::default()
                },
                10,
                "",
            ),
            "empty",
        ),
        (
            q(
                AccessFilter {
                    dataset: "no-such-dataset".into(),
                    ..Default::default()
                },
                10,
                "",
            ),
            "not in the directory",
        ),
    ];
    for (req, reason) in bad {
        let s = a.query_accesses(req).await.expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
        assert!(
            s.message().contains(reason),
            "{} lacks {reason}",
            s.message()
        );
    }
    let s = a
        .stream_log(StreamLogRequest {
            start: 0,
            end: 1_000_000,
        })
        .await
        .expect_err("beyond the log");
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_sees_only_the_accesses_to_their_own_data() {
    let env = Env::new();
    let (node, idp) = start(&env);
    load(&env, &node, 300).await;
    let mut inspector = client(&env, &node, Some("audit-office")).await;
    let mut anonymous = client(&env, &node, None).await;
    let mine = |token: Option<String>| {
        let mut r = tonic::Request::new(MyAccessesRequest {
            limit: 1000,
            cursor: String::new(),
        });
        if let Some(t) = token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        r
    };
    for i in [1, 4] {
        let person = citizen(i);
        let got: Vec<u64> = anonymous
            .my_accesses(mine(Some(token(&idp, &person, now_s() + 600))))
            .await
            .expect("my accesses")
            .into_inner()
            .accesses
            .iter()
            .map(|a| a.log_index)
            .collect();
        let (want, _) = pages(
            &mut inspector,
            &AccessFilter {
                subject: person.clone(),
                side: "provider".into(),
                ..Default::default()
            },
            false,
            1000,
        )
        .await;
        assert!(!want.is_empty(), "citizen {i} has accesses");
        assert_eq!(got, want, "citizen {i} sees exactly their own accesses");
        let other = pages(
            &mut inspector,
            &AccessFilter {
                subject: citizen(i + 1),
                ..Default::default()
            },
            false,
            1000,
        )
        .await
        .0;
        assert!(
            got.iter().all(|g| !other.contains(g)),
            "nothing of another citizen"
        );

        // The same over HTTP/JSON, as a phone app asks.
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(env.pki().join("ca.crt"))
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", node.addr.port()),
                "-H",
                &format!(
                    "authorization: Bearer {}",
                    token(&idp, &person, now_s() + 600)
                ),
                &format!(
                    "https://localhost:{}/v1/audit/my-accesses?limit=1000",
                    node.addr.port()
                ),
            ])
            .output()
            .expect("curl");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
        let http: Vec<u64> = body["accesses"]
            .as_array()
            .expect("accesses")
            .iter()
            .map(|a| a["log_index"].as_u64().expect("index"))
            .collect();
        assert_eq!(http, want);
    }

    // The CLI a citizen runs: no client certificate, only the token.
    let person = citizen(1);
    let out = cli(&[
        "audit",
        "mine",
        "--token",
        &token(&idp, &person, now_s() + 600),
        "--format",
        "jsonl",
        "--dev-dir",
        env.path().to_str().expect("path"),
        "--endpoint",
        &node.endpoint(),
    ]);
    assert!(out.status.success(), "audit mine: {}", stderr(&out));
    let listed: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            assert_eq!(v["provider"], "market-regulation");
            v["log_index"].as_u64().expect("index")
        })
        .collect();
    let (want, _) = pages(
        &mut inspector,
        &AccessFilter {
            subject: person.clone(),
            side: "provider".into(),
            ..Default::default()
        },
        false,
        1000,
    )
    .await;
    assert_eq!(listed, want);

    let foreign = jsonwebtoken::EncodingKey::from_ed_pem(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .expect("key")
            .serialize_pem()
            .as_bytes(),
    )
    .expect("key");
    for (t, reason) in [
        (Some(token(&idp, &person, now_s() - 3600)), "expired"),
        (Some(token(&foreign, &person, now_s() + 600)), "signature"),
        (None, "Bearer"),
    ] {
        let s = anonymous.my_accesses(mine(t)).await.expect_err("refused");
        assert_eq!(s.code(), Code::Unauthenticated, "{}", s.message());
        assert!(
            s.message().contains(reason),
            "{} lacks {reason}",
            s.message()
        );
    }
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(env.pki().join("ca.crt"))
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", node.addr.port()),
            &format!(
                "https://localhost:{}/v1/audit/my-accesses",
                node.addr.port()
            ),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

fn audit_cli(env: &Env, node: Option<&Node>, args: &[&str]) -> std::process::Output {
    let dir = env.path().to_str().expect("path").to_owned();
    let mut all: Vec<String> = vec!["audit".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend([
        "--as".into(),
        "audit-office".into(),
        "--dev-dir".into(),
        dir,
    ]);
    if let Some(n) = node {
        all.extend(["--endpoint".into(), n.endpoint()]);
    }
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    cli(&refs)
}

fn edit_bundle(path: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("bundle")).expect("json");
    edit(&mut v);
    std::fs::write(to, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_verifies_and_evidence_stands_alone_until_a_byte_changes() {
    let env = Env::new();
    let (node, _) = start(&env);
    load(&env, &node, 200).await;

    // A checkpoint an inspector kept from earlier, then more traffic.
    let mut n = notary(&env, &node, "audit-office").await;
    let old = n
        .get_checkpoint(qianlian_proto::v1::GetCheckpointRequest::default())
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .expect("checkpoint");
    let kept = env.path().join("kept.checkpoint");
    std::fs::write(&kept, &old.note).expect("write");
    accesses(&env, &node, 200, 300).await;
    // The node's latest checkpoint is shared by every caller and renewed at most a second
    // after the log grows (`checkpoint_max_age`): wait that long for one past the kept one.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let out = audit_cli(
        &env,
        Some(&node),
        &["verify", "--checkpoint", kept.to_str().expect("p")],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "verify: {text}");
    assert!(text.contains("consistent"), "{text}");
    assert!(text.contains(&format!("{}", old.tree_size)), "{text}");

    // Evidence for housing's denied reads, checked offline.
    let bundle = env.path().join("evidence.json");
    let out = audit_cli(
        &env,
        Some(&node),
        &[
            "export",
            "--consumer",
            "housing",
            "--decision",
            "deny",
            "--out",
            bundle.to_str().expect("p"),
        ],
    );
    assert!(out.status.success(), "export: {}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("json");
    let records = v["records"].as_array().expect("records");
    assert!(records.len() > 5, "{} records", records.len());
    assert!(!v["policies"].as_array().expect("policies").is_empty());
    let check = |file: &Path, extra: &[&str]| {
        let mut args = vec!["audit", "check", file.to_str().expect("p")];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let out = check(&bundle, &[]);
    assert!(
        out.status.success(),
        "check: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let trust = env.path().join("trust.json");
    let out = cli(&[
        "license",
        "trust-bundle",
        "--out",
        trust.to_str().expect("p"),
        "--as",
        "housing",
        "--dev-dir",
        env.path().to_str().expect("p"),
        "--endpoint",
        &node.endpoint(),
    ]);
    assert!(out.status.success(), "trust bundle: {}", stderr(&out));
    let out = check(&bundle, &["--trust-bundle", trust.to_str().expect("p")]);
    assert!(
        out.status.success(),
        "pinned check: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // One altered byte in one record.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let altered = env.path().join("altered.json");
    let index = records[3]["log_index"].as_u64().expect("index");
    edit_bundle(&bundle, &altered, |v| {
        let r = &mut v["records"][3]["record"];
        let mut bytes = b64.decode(r.as_str().expect("b64")).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        *r = serde_json::Value::String(b64.encode(bytes));
    });
    let out = check(&altered, &[]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an altered record fails: {text}"
    );
    assert!(text.contains(&format!("log index {index}")), "{text}");
    // An edited JSON view next to intact bytes.
    edit_bundle(&bundle, &altered, |v| {
        let view = &mut v["records"][0]["record_json"];
        let inner = match view.get("BatchSealed") {
            Some(_) => &mut view["BatchSealed"]["record"],
            None => view,
        };
        assert!(inner.get("Exchange").is_some(), "{inner}");
        inner["Exchange"]["caller"]["department"] = serde_json::json!("natural-resources");
    });
    let out = check(&altered, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A changed byte in a stopped node's stored record is found and named.
    assert!(node.stop().success());
    let raft = env.path().join("data").join("raft");
    let bad = 57;
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &raft).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &raft, cfs).expect("open");
        let cf = db.cf_handle("records").expect("records");
        let (k, value) = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .nth(bad)
            .expect("record")
            .expect("read");
        let mut value = value.to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        db.put_cf(cf, k, value).expect("tamper");
        db.flush_cf(cf).expect("flush");
    }
    let out = audit_cli(
        &env,
        None,
        &[
            "verify",
            "--data-dir",
            env.path().join("data").to_str().expect("p"),
            "--checkpoint",
            kept.to_str().expect("p"),
        ],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "verify must fail: {text}");
    assert!(text.contains(&format!("log index {bad}")), "{text}");
}
