//! Calls that need no department certificate, under the load anyone can send: checkpoints
//! shared instead of cosigned per call, license watches only for the holder's token or a
//! department's or inspector's certificate, and metrics whose size random paths cannot grow.

mod support;

use std::time::Duration;

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::get_inclusion_proof_request::Record as Target;
use qianlian_proto::v1::licenses_client::LicensesClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{
    GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest,
    IssueLicenseRequest, PutRecordRequest, RecordRef, WatchLicensesRequest,
};
use qianlian_verifier::NoteVerifier;
use support::cluster::Cluster;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn h32(v: &[u8]) -> [u8; 32] {
    v.try_into().expect("32 bytes")
}

/// The metrics text of a node.
fn scrape(node: &Node) -> String {
    let url = node.metrics.as_deref().expect("metrics are on");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "scrape {url}: {}", stderr(&out));
    stdout(&out)
}

/// The sum of the samples of `metric` whose labels include every one of `labels`.
fn value(text: &str, metric: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(metric) && labels.iter().all(|w| l.contains(w))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn write_some(c: &mut ExchangeClient<Channel>, from: u64, n: u64) -> Vec<(u64, [u8; 32])> {
    let mut receipts = Vec::new();
    for i in from..from + n {
        let r = c
            .put_record(PutRecordRequest {
                record: Some(RecordRef {
                    department: "market-regulation".into(),
                    dataset: "enterprise-registration".into(),
                    key: uscc(i),
                }),
                payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
            })
            .await
            .expect("put")
            .into_inner()
            .receipt
            .expect("receipt");
        receipts.push((r.log_index, h32(&r.record_hash)));
    }
    receipts
}

/// Wait until every node has applied `size` records, read from its metrics so that no
/// checkpoint is asked for meanwhile.
async fn applied_everywhere(cluster: &Cluster, size: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sizes: Vec<u64> = (1..=3)
            .map(|i| value(&scrape(cluster.node(i)), "qianlian_log_records", &[]))
            .collect();
        if sizes.iter().all(|s| *s >= size) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not applied everywhere within 20 s: {sizes:?}, want {size}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per node: (checkpoint cosignature requests sent, served).
fn cosign_counts(cluster: &Cluster) -> Vec<(u64, u64)> {
    (1..=3)
        .map(|i| {
            let text = scrape(cluster.node(i));
            let head = ["head=\"checkpoint\""];
            (
                value(&text, "qianlian_cosign_requests_sent", &head),
                value(&text, "qianlian_cosign_requests_served", &head),
            )
        })
        .collect()
}

fn node_keys(env: &Env) -> Vec<NoteVerifier> {
    (1..=3)
        .map(|i| {
            let text = std::fs::read_to_string(env.pki().join(format!("nodes/node-{i}.note.pub")))
                .expect("vkey");
            NoteVerifier::from_vkey(text.trim()).expect("vkey parses")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_checkpoint_calls_cost_one_round_of_cosignatures() {
    let cluster = Cluster::start(3, METRICS);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let mut owner = ExchangeClient::new(
        cluster
            .channel(leader, "market-regulation")
            .await
            .expect("connect"),
    );
    write_some(&mut owner, 0, 5).await;
    // Each record written one after another is followed by the signature that seals it.
    let size = SEEDED + 2 * 5;
    applied_everywhere(&cluster, size).await;
    // A follower is asked; its members are the leader and the other follower.
    let asked = leader % 3 + 1;
    let others: Vec<usize> = (1..=3).filter(|i| *i != asked).collect();
    // Any checkpoint the node kept is now past its one-second bound and older than the log:
    // the calls below need a new one.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let before = cosign_counts(&cluster);
    // With a certificate, so that a per-source limit on anonymous calls cannot decide this.
    let ch = cluster.channel(asked, "housing").await.expect("connect");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut c = NotaryClient::new(ch.clone());
        calls.spawn(async move {
            c.get_checkpoint(GetCheckpointRequest::default())
                .await
                .map(|r| r.into_inner().checkpoint)
        });
    }
    let mut notes = Vec::new();
    while let Some(answer) = calls.join_next().await {
        let cp = answer
            .expect("task")
            .expect("checkpoint")
            .expect("a checkpoint in the answer");
        notes.push(cp);
    }
    let after = cosign_counts(&cluster);

    let sent = after[asked - 1].0 - before[asked - 1].0;
    let served: Vec<u64> = others
        .iter()
        .map(|i| after[i - 1].1 - before[i - 1].1)
        .collect();
    assert_eq!(
        sent, 2,
        "one round: one request to each of the two other members, not one per call"
    );
    assert_eq!(served, [1, 1], "each member was asked once");
    let keys = node_keys(&cluster.env);
    let first = &notes[0];
    assert!(
        notes.iter().all(|n| n.note == first.note),
        "every caller shares one checkpoint"
    );
    assert_eq!(first.tree_size, size);
    qianlian_verifier::open_checkpoint(&first.note, &keys)
        .expect("checkpoint verifies")
        .require_signers(3)
        .expect("cosigned by all three: cosigning really happened");

    // The calls only read the shared checkpoint: a second wave within its second asks nobody.
    let before = cosign_counts(&cluster);
    let mut c = NotaryClient::new(ch.clone());
    for _ in 0..20 {
        let cp = c
            .get_checkpoint(GetCheckpointRequest::default())
            .await
            .expect("checkpoint")
            .into_inner()
            .checkpoint
            .expect("checkpoint");
        assert_eq!(cp.note, first.note);
    }
    assert_eq!(cosign_counts(&cluster)[asked - 1].0, before[asked - 1].0);

    // A record newer than the shared checkpoint: a proof against "the latest" comes with a
    // checkpoint that covers it, and checks against that checkpoint's root.
    let (index, leaf) = write_some(&mut owner, 100, 1).await[0];
    assert_eq!(index, size);
    applied_everywhere(&cluster, size + 1).await;
    let mut anonymous = NotaryClient::new(
        channel(
            cluster.node(asked),
            tls(&cluster.env.pki().join("ca.crt"), None),
        )
        .await
        .expect("connect"),
    );
    let r = anonymous
        .get_inclusion_proof(GetInclusionProofRequest {
            record: Some(Target::LogIndex(index)),
            tree_size: 0,
        })
        .await
        .expect("inclusion proof of the newest record")
        .into_inner();
    let cp = r.checkpoint.expect("the checkpoint it is proven against");
    assert_eq!(r.tree_size, cp.tree_size);
    let opened = qianlian_verifier::open_checkpoint(&cp.note, &keys)
        .expect("verifies")
        .require_signers(2)
        .expect("cosigned");
    assert!(opened.checkpoint.size > index);
    let proof: Vec<[u8; 32]> = r.proof.iter().map(|p| h32(p)).collect();
    assert!(support::rfc6962::inclusion_ok(
        index,
        opened.checkpoint.size,
        &leaf,
        &proof,
        &opened.checkpoint.root
    ));

    // A proof for a named tree size is of exactly that size: it checks against the checkpoint
    // the hundred callers got.
    let old = qianlian_verifier::open_checkpoint(&first.note, &keys).expect("verifies");
    let (i3, leaf3) = (SEEDED + 1, {
        let e = NotaryClient::new(cluster.channel(asked, "audit-office").await.expect("c"))
            .get_log_entry(qianlian_proto::v1::GetLogEntryRequest {
                log_index: SEEDED + 1,
            })
            .await
            .expect("entry")
            .into_inner();
        support::rfc6962::leaf(&e.record)
    });
    let r = anonymous
        .get_inclusion_proof(GetInclusionProofRequest {
            record: Some(Target::LogIndex(i3)),
            tree_size: size,
        })
        .await
        .expect("proof at a named size")
        .into_inner();
    assert_eq!(r.tree_size, size);
    assert!(r.checkpoint.is_none());
    let proof: Vec<[u8; 32]> = r.proof.iter().map(|p| h32(p)).collect();
    assert!(support::rfc6962::inclusion_ok(
        i3,
        size,
        &leaf3,
        &proof,
        &old.checkpoint.root
    ));
    // And the latest checkpoint extends it.
    let c = anonymous
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size: size,
            new_size: 0,
        })
        .await
        .expect("consistency")
        .into_inner();
    let new = qianlian_verifier::open_checkpoint(&c.checkpoint.expect("checkpoint").note, &keys)
        .expect("verifies");
    assert_eq!(c.new_size, new.checkpoint.size);
    let proof: Vec<[u8; 32]> = c.proof.iter().map(|p| h32(p)).collect();
    assert!(support::rfc6962::consistency_ok(
        size,
        c.new_size,
        &old.checkpoint.root,
        &new.checkpoint.root,
        &proof
    ));
}

const ISSUER: &str = "https://id.gov.example";
const AUDIENCE: &str = "qianlian";

/// A node with an identity provider's key configured; returns its signing key.
fn start_with_idp(env: &Env, extra: &str) -> (Node, jsonwebtoken::EncodingKey) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("idp key");
    let public = env.path().join("idp.pub.pem");
    std::fs::write(&public, key.public_key_pem()).expect("write idp key");
    let extra = format!(
        "[audit]\ntoken_issuer = \"{ISSUER}\"\ntoken_audience = \"{AUDIENCE}\"\ntoken_keys = [\"{}\"]\n{extra}",
        public.display()
    );
    let node = env.start_with(&policies().join("policy.csv"), &extra);
    let encoding =
        jsonwebtoken::EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).expect("encoding");
    (node, encoding)
}

fn token(key: &jsonwebtoken::EncodingKey, subject: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": exp}),
        key,
    )
    .expect("sign token")
}

async fn licenses(env: &Env, node: &Node, who: Option<&str>) -> LicensesClient<Channel> {
    let ca = env.pki().join("ca.crt");
    let ids = who.map(|w| env.identity(w));
    let tls = tls(&ca, ids.as_ref().map(|(c, k)| (c.as_path(), k.as_path())));
    LicensesClient::new(channel(node, tls).await.expect("connect"))
}

fn watch(holder: &str, bearer: Option<&str>) -> tonic::Request<WatchLicensesRequest> {
    let mut req = tonic::Request::new(WatchLicensesRequest {
        holder_id: holder.to_owned(),
    });
    if let Some(t) = bearer {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holders_token_or_a_department_or_inspector_watches_licenses() {
    let env = Env::new();
    let (node, idp) = start_with_idp(&env, "");
    let (alice, bob) = (uscc(41), uscc(42));
    let mut issuer = licenses(&env, &node, Some("market-regulation")).await;
    let mut issued = std::collections::HashMap::new();
    for (holder, n) in [(&alice, 1), (&alice, 2), (&bob, 3)] {
        let r = issuer
            .issue_license(IssueLicenseRequest {
                license_type: "business-license".into(),
                number: format!("GZ-WATCH-{n:04}"),
                holder_name: "贵州黔云数据科技有限公司".into(),
                holder_id: holder.clone(),
                ..Default::default()
            })
            .await
            .expect("issue")
            .into_inner();
        issued
            .entry(holder.clone())
            .or_insert_with(Vec::new)
            .push(r.receipt.expect("receipt").log_index);
    }
    let indices = |r: &qianlian_proto::v1::WatchLicensesResponse| -> Vec<u64> {
        r.records.iter().map(|w| w.log_index).collect()
    };

    // Anonymous: refused, whoever is named.
    let mut public = licenses(&env, &node, None).await;
    let s = public
        .watch_licenses(watch(&alice, None))
        .await
        .expect_err("anonymous");
    assert_eq!(s.code(), Code::Unauthenticated, "{}", s.message());
    assert!(s.message().contains("bearer token"), "{}", s.message());

    // The holder's token: that holder's records, named or not, and nobody else's.
    let t = token(&idp, &alice);
    for named in [alice.as_str(), ""] {
        let r = public
            .watch_licenses(watch(named, Some(&t)))
            .await
            .expect("own licenses")
            .into_inner();
        assert_eq!(indices(&r), issued[&alice], "named {named:?}");
        let cp = r.checkpoint.expect("checkpoint");
        assert!(r.records.iter().all(|w| w.log_index < cp.tree_size));
    }
    let s = public
        .watch_licenses(watch(&bob, Some(&t)))
        .await
        .expect_err("someone else's");
    assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message());
    // A token the identity provider did not sign.
    let forged = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let k = jsonwebtoken::EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).expect("k");
        token(&k, &bob)
    };
    let s = public
        .watch_licenses(watch(&bob, Some(&forged)))
        .await
        .expect_err("forged");
    assert_eq!(s.code(), Code::Unauthenticated, "{}", s.message());

    // Departments and inspectors watch any holder; operators do not.
    for who in ["housing", "audit-office"] {
        let r = licenses(&env, &node, Some(who))
            .await
            .watch_licenses(watch(&bob, None))
            .await
            .expect("department or inspector")
            .into_inner();
        assert_eq!(indices(&r), issued[&bob], "{who}");
    }
    let s = licenses(&env, &node, Some("ops"))
        .await
        .watch_licenses(watch(&bob, None))
        .await
        .expect_err("operator");
    assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message());

    // The CLI: with the holder's token, no certificate; without one, it names the fix.
    let ca = env.pki().join("ca.crt").display().to_string();
    let ep = node.endpoint();
    let base = ["license", "--ca", &ca, "--endpoint", &ep, "watch"];
    let out = cli(&[&base[..], &["--token", &t]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 record(s)"), "{}", stdout(&out));
    let out = cli(&[&base[..], &["--holder", &bob]].concat());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
}

/// Send one request for `path` on `ch`; the HTTP status.
async fn raw(ch: &mut Channel, method: &str, path: &str) -> u16 {
    use tonic::codegen::Service as _;
    use tonic::codegen::http;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::empty())
        .expect("request");
    std::future::poll_fn(|cx| ch.poll_ready(cx))
        .await
        .expect("ready");
    ch.call(req).await.expect("answered").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_random_paths_leave_the_metrics_the_same_size() {
    let env = Env::new();
    let node = env.start_with(&policies().join("policy.csv"), METRICS);
    let (c, k) = env.identity("housing");
    let ch = channel(&node, tls(&env.pki().join("ca.crt"), Some((&c, &k))))
        .await
        .expect("connect");
    // Paths of every kind a caller can invent: unknown services, unknown methods of a served
    // service, plain HTTP paths; each kind once before measuring, so its labels exist.
    let path = |n: u64| match n % 4 {
        0 => format!("/qianlian.v1.Nope{n}/Call{n}"),
        1 => format!("/qianlian.v1.Notary/Nope{n}"),
        2 => format!("/no/such/page/{n}"),
        _ => format!("/{n:x}"),
    };
    let method = |n: u64| if n.is_multiple_of(2) { "POST" } else { "GET" };
    let mut warm = ch.clone();
    for n in 0..8 {
        raw(&mut warm, method(n), &path(n)).await;
    }
    let before = scrape(&node);

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32u64 {
        let mut ch = ch.clone();
        tasks.spawn(async move {
            let mut n = 1_000 + worker;
            while n < 10_000 + 1_000 {
                raw(&mut ch, method(n), &path(n)).await;
                n += 32;
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(t) = tasks.join_next().await {
            t.expect("worker");
        }
    })
    .await
    .expect("10,000 requests within two minutes");
    // A served route still has its own labels.
    assert_eq!(raw(&mut warm.clone(), "GET", "/livez").await, 200);
    let after = scrape(&node);

    // Only counter values changed (a few more digits each), and the /livez series was added.
    assert!(
        after.len() < before.len() + 1024,
        "metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    let lines = |t: &str| t.lines().filter(|l| !l.contains("/livez")).count();
    assert_eq!(lines(&after), lines(&before), "no new series");
    let unknown = value(&after, "qianlian_requests_total", &["service=\"unknown\""]);
    assert_eq!(
        unknown,
        10_000 + 8,
        "every request is counted, as `unknown`"
    );
    assert!(
        after.contains("service=\"http\",method=\"/livez\""),
        "{after}"
    );
}
