//! The node's edge under abuse: idle connections and a flood of streams, anonymous callers over
//! their rate, connections kept past their age, and revocation that reaches connections
//! already open and cannot be switched off by a bad CRL file.
//!
//! The tests of this file run one at a time (`SERIAL`): the flood test measures latency, and
//! the others would disturb it on a two-core machine.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qianlian_gateway::domain::identity::Role;
use qianlian_gateway::node::pki::leaf_params;
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::raft_client::RaftClient;
use qianlian_proto::v1::{
    GetCheckpointRequest, GetInclusionProofRequest, GetRecordRequest, RaftMessage, RecordRef,
    get_inclusion_proof_request,
};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use support::cluster::Cluster;
use support::*;
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// File descriptors the attacked node may hold in the flood test: the soft limit many systems
/// still give a service, with room for its database. Without the per-source cap, 2,000 idle
/// connections exhaust it and the node accepts no one else.
const NODE_FDS: u32 = 1536;
/// The bound on the 99th percentile of "connect, TLS handshake, health check" from an
/// unrelated client while the node is under attack: a debug build on two cores shared with
/// the attackers, two other nodes and whatever else the machine runs. Without the limits the
/// probes do not get an answer at all (the node runs out of file descriptors).
const HEALTH_P99: Duration = Duration::from_secs(2);

/// Sum of the samples of `metric` whose labels include all of `labels`.
fn value(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", url])
        .output()
        .expect("curl");
    stdout(&out)
}

/// Let this test process hold thousands of sockets: soft file-descriptor limit up to the hard.
fn raise_own_fd_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(0);
    let pid = std::process::id().to_string();
    let arg = format!("--nofile={hard}:{hard}");
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &arg])
        .status();
}

/// Lower the file-descriptor limit of the process `pid` (soft and hard) to `n`.
fn limit_fds(pid: u32, n: u32) {
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:{n}")])
        .status()
        .expect("prlimit")
        .success();
    assert!(ok, "prlimit failed");
}

/// A channel to `addr` from the local address `from` (127.0.0.0/8 gives each attacker its
/// own source address).
async fn channel_from(
    addr: SocketAddr,
    from: IpAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .local_address(Some(from))
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_a_stream_flood_leave_other_clients_answered_and_raft_its_leader() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let cluster = Cluster::start(3, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let before = cluster.status(leader).await.expect("status");
    let node = cluster.node(leader);
    let addr = node.addr;
    let ca = cluster.env.pki().join("ca.crt");
    limit_fds(node.child.id(), NODE_FDS);

    // 2,000 connections from 127.0.0.2 that never start TLS (the node drops them after its
    // 10 s handshake timeout). It admits 1,024 (the per-source default) and closes the rest at
    // once.
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut idle = Vec::new();
    for _ in 0..2000 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(attacker, 0)).expect("bind");
        if let Ok(s) = socket.connect(addr).await {
            idle.push(s);
        }
    }

    // The attack is in place once the node has taken every one of them off its accept queue.
    let metrics_url = node.metrics.clone().expect("metrics url");
    let per_source = "reason=\"connections_per_source\"";
    for _ in 0..100 {
        let refused = value(
            &scrape(&metrics_url),
            "qianlian_limit_hits_total",
            &[per_source],
        );
        if refused as usize + 1024 >= idle.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One anonymous connection from 127.0.0.3 opening 10,000 inclusion-proof streams at once:
    // the node lets 128 run at a time and answers those over the source's rate with
    // RESOURCE_EXHAUSTED.
    let flooder: IpAddr = "127.0.0.3".parse().expect("ip");
    let flood_channel = channel_from(addr, flooder, tls(&ca, None))
        .await
        .expect("flooder connects");
    let (fired, all_fired) = tokio::sync::oneshot::channel();
    let flood = tokio::spawn(async move {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..10_000 {
            let mut client = NotaryClient::new(flood_channel.clone());
            calls.spawn(async move {
                client
                    .get_inclusion_proof(GetInclusionProofRequest {
                        record: Some(get_inclusion_proof_request::Record::LogIndex(0)),
                        tree_size: 1,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            });
        }
        let _ = fired.send(());
        let (mut ok, mut exhausted, mut other) = (0, 0, Vec::new());
        while let Some(r) = calls.join_next().await {
            match r.expect("call task") {
                Ok(()) => ok += 1,
                Err(Code::ResourceExhausted) => exhausted += 1,
                Err(c) => other.push(c),
            }
        }
        (ok, exhausted, other)
    });

    // Meanwhile another client, from 127.0.0.1, connects afresh and asks for health (from the
    // moment every flood call is on its way: the test's own spawning is not the node's load).
    let _ = all_fired.await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while !flood.is_finished() || started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let probe = async {
            let ch = channel(node, tls(&ca, None))
                .await
                .map_err(|e| format!("{e:?}"))?;
            HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|s| format!("{s:?}"))
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => latencies.push(t.elapsed()),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("no answer within 5 s".into()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(100),
            "the flood did not end within 100 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, exhausted, other) = flood.await.expect("flood");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!(
        "flood: {ok} answered, {exhausted} RESOURCE_EXHAUSTED, other {:?}, in {:?}; {} idle connections held by the test, node holds {fds} fds; probes {latencies:?}, failures {failures:?}",
        other.iter().take(3).collect::<Vec<_>>(),
        started.elapsed(),
        idle.len()
    );
    drop(idle);

    assert!(
        failures.is_empty(),
        "{} of {} health probes failed while under attack, e.g. {:?}",
        failures.len(),
        failures.len() + latencies.len(),
        failures.first()
    );
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    assert!(
        p99 <= HEALTH_P99,
        "health p99 {p99:?} over {HEALTH_P99:?} ({} probes)",
        latencies.len()
    );
    assert_eq!(ok + exhausted + other.len(), 10_000);
    // At 100 calls a second (burst 200) from its address the flooder gets a few hundred
    // answers; without the limit it would get them all.
    assert!(
        ok <= 1_000 && exhausted > 0,
        "the flood was not rate limited: {ok} answered, {exhausted} RESOURCE_EXHAUSTED, {} others",
        other.len()
    );
    // A call refused before the node read its request ends with a stream reset, and a
    // connection that makes the node reset more than h2 allows is sent away (GOAWAY): the
    // flooder's calls still in flight then end CANCELLED, UNAVAILABLE or UNKNOWN. Those are
    // refusals too; any other code is not.
    assert!(
        other
            .iter()
            .all(|c| matches!(c, Code::Unavailable | Code::Unknown | Code::Cancelled)),
        "unexpected codes: {} of them, e.g. {:?}",
        other.len(),
        other
            .iter()
            .filter(|c| !matches!(c, Code::Unavailable | Code::Unknown | Code::Cancelled))
            .take(5)
            .collect::<Vec<_>>()
    );

    let after = cluster.status(leader).await.expect("status after");
    assert_eq!(
        (after.leader_id, after.term),
        (before.leader_id, before.term),
        "Raft lost its leader under the attack"
    );
    let text = scrape(&metrics_url);
    let refused = value(&text, "qianlian_limit_hits_total", &[per_source]);
    assert!(
        refused >= 900.0,
        "idle connections over the per-source cap: {refused}\n{text}"
    );
    assert!(
        value(
            &text,
            "qianlian_limit_hits_total",
            &["reason=\"anonymous_rate\""]
        ) > 0.0
    );
}

#[tokio::test]
async fn an_anonymous_caller_over_its_rate_gets_resource_exhausted_and_a_department_does_not() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        "[limits]\nanonymous_calls_per_second = 5\nanonymous_burst = 10\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let ca = env.pki().join("ca.crt");
    let anonymous = channel(&node, tls(&ca, None)).await.expect("connect");
    let mut notary = NotaryClient::new(anonymous);
    let started = Instant::now();
    let (mut ok, mut refused) = (0u32, None);
    for _ in 0..40 {
        match notary.get_checkpoint(GetCheckpointRequest::default()).await {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                refused = Some(s);
            }
        }
    }
    let refused = refused.expect("40 calls at once exceed 10 + 5/s");
    assert!(
        refused
            .message()
            .contains("limits.anonymous_calls_per_second"),
        "{}",
        refused.message()
    );
    let allowed = 10 + 5 * (started.elapsed().as_secs() as u32 + 1);
    assert!(
        ok <= allowed,
        "{ok} calls answered, at most {allowed} allowed"
    );

    // The HTTP routes share the rate: 429 with a JSON body saying why. Twenty requests on one
    // connection are over 10 + 5/s whatever is left of the bucket.
    let url = format!(
        "{}/livez",
        node.endpoint().replace("127.0.0.1", "localhost")
    );
    let mut args = vec![
        "-sS".to_owned(),
        "--cacert".to_owned(),
        ca.display().to_string(),
        "-i".to_owned(),
    ];
    args.extend(std::iter::repeat_n(url, 20));
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    let answers = stdout(&out);
    let refused = answers
        .split("HTTP/2 ")
        .find(|a| a.starts_with("429"))
        .unwrap_or_else(|| panic!("no 429 among 20 requests:\n{answers}"));
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(
        refused.contains("content-type: application/json"),
        "{refused}"
    );
    let body = refused.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON body");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many calls")),
        "{json}"
    );

    // A department is known by its certificate and not rate limited.
    let mut housing = notary_as(&env, &node, "housing").await;
    for _ in 0..40 {
        housing
            .get_checkpoint(GetCheckpointRequest::default())
            .await
            .expect("a department's calls are not counted against the anonymous rate");
    }
    let text = scrape(node.metrics.as_ref().expect("metrics"));
    assert!(
        value(
            &text,
            "qianlian_limit_hits_total",
            &["reason=\"anonymous_rate\""]
        ) >= 2.0,
        "{text}"
    );
}

async fn notary_as(env: &Env, node: &Node, who: &str) -> NotaryClient<Channel> {
    support::notary(env, node, who).await
}

#[tokio::test]
async fn a_connection_is_closed_at_its_maximum_age() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        "[limits]\nmax_connection_age_ms = 1000\nrequest_timeout_ms = 500\n",
    );
    // A client that completes the handshake and then holds the connection without a word.
    let mut idle = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-alpn",
            "h2",
            "-connect",
            &node.addr.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl");
    let started = Instant::now();
    let closed = loop {
        if let Ok(Some(_)) = idle.try_wait() {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(8) {
            let _ = idle.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let closed = closed.expect("the node kept an idle connection past its maximum age");
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
}

/// The test CA, to issue certificates and CRLs.
fn ca_issuer(env: &Env) -> Issuer<'static, KeyPair> {
    let pki = env.pki();
    let key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).expect("ca key"))
        .expect("ca key");
    Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).expect("ca crt"),
        key,
    )
    .expect("issuer")
}

/// A `housing` department certificate with the serial number `serial`; returns (crt, key).
fn housing_with_serial(env: &Env, serial: u64) -> (PathBuf, PathBuf) {
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(
        "gov.example",
        "housing",
        Role::Department,
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
    .expect("params");
    params.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca_issuer(env)).expect("sign");
    let crt = env.path().join(format!("housing-{serial}.crt"));
    let key_path = env.path().join(format!("housing-{serial}.key"));
    std::fs::write(&crt, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (crt, key_path)
}

/// A CRL of the test CA numbered `number`, current from `this_update` to `next_update`,
/// revoking `serials`.
fn crl(
    env: &Env,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    serials: &[u64],
) -> String {
    CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: this_update,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca_issuer(env))
    .expect("crl")
    .pem()
    .expect("pem")
}

fn current_crl(env: &Env, number: u64, serials: &[u64]) -> String {
    let now = OffsetDateTime::now_utc();
    crl(
        env,
        number,
        now - time::Duration::minutes(10) + time::Duration::seconds(number as i64),
        now + time::Duration::days(1),
        serials,
    )
}

/// Start a node whose `tls.crl` is `crl_path` (reloaded every 200 ms).
fn start_with_crl(env: &Env, crl_path: &Path, extra: &str) -> Node {
    let config = env.write_config(&policies().join("policy.csv"), extra);
    Node::spawn_with_env(
        &config,
        &env.path().join("node.log"),
        &[("QIANLIAN_TLS_CRL", &crl_path.display().to_string())],
    )
}

fn record_request() -> GetRecordRequest {
    GetRecordRequest {
        record: Some(RecordRef {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: uscc(5),
        }),
        purpose: "permit-review".into(),
    }
}

/// One GetRecord on `client`: `Ok` if the call got past the door (an answer from the policy or
/// the record store counts).
async fn get(client: &mut ExchangeClient<Channel>) -> Result<(), tonic::Status> {
    match client.get_record(record_request()).await {
        Ok(_) => Ok(()),
        Err(s) if matches!(s.code(), Code::NotFound | Code::PermissionDenied) => Ok(()),
        Err(s) => Err(s),
    }
}

/// A call as the identity in `files` on a fresh connection.
async fn fresh_call(node: &Node, ca: &Path, files: (&Path, &Path)) -> Result<(), String> {
    let ch = channel(node, tls(ca, Some(files)))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    get(&mut ExchangeClient::new(ch))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

async fn wait_for_log(node: &Node, needle: &str) {
    for _ in 0..100 {
        if node.log_text().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node never logged `{needle}`:\n{}", node.log_text());
}

#[tokio::test]
async fn a_certificate_revoked_by_a_new_crl_stops_working_on_a_connection_opened_before() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let ca = env.pki().join("ca.crt");
    let crl_path = env.path().join("crl.pem");
    std::fs::write(&crl_path, current_crl(&env, 1, &[])).expect("crl");
    // The maximum age is far away: what closes the connection is the new CRL.
    const MAX_AGE: Duration = Duration::from_secs(30);
    let node = start_with_crl(&env, &crl_path, "[limits]\nmax_connection_age_ms = 30000\n");
    let (crt, key) = housing_with_serial(&env, 0x4242);
    let mut housing = ExchangeClient::new(
        channel(&node, tls(&ca, Some((&crt, &key))))
            .await
            .expect("connect"),
    );
    get(&mut housing).await.expect("not revoked yet");
    let (nc, nk) = env.identity("natural-resources");
    let mut other = ExchangeClient::new(
        channel(&node, tls(&ca, Some((&nc, &nk))))
            .await
            .expect("connect"),
    );
    get(&mut other).await.expect("works");

    std::fs::write(&crl_path, current_crl(&env, 2, &[0x4242])).expect("new crl");
    let written = Instant::now();
    let stopped = loop {
        if get(&mut housing).await.is_err() {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < MAX_AGE,
            "the revoked certificate still works on its connection after {MAX_AGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stopped < Duration::from_secs(5),
        "the revoked certificate worked for {stopped:?} after the CRL was written"
    );
    wait_for_log(&node, "closing a connection").await;
    assert!(node.log_text().contains("revoked"), "{}", node.log_text());
    get(&mut other)
        .await
        .expect("a certificate the CRL does not name keeps its connection");
    let again = fresh_call(&node, &ca, (&crt, &key)).await;
    assert!(again.is_err(), "a new connection is refused too");
}

#[tokio::test]
async fn an_empty_crl_file_is_refused_and_the_old_one_stays_in_force() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let ca = env.pki().join("ca.crt");
    let crl_path = env.path().join("crl.pem");
    std::fs::write(&crl_path, current_crl(&env, 1, &[0x4343])).expect("crl");
    let node = start_with_crl(&env, &crl_path, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let (crt, key) = housing_with_serial(&env, 0x4343);
    fresh_call(&node, &ca, (&crt, &key))
        .await
        .expect_err("revoked from the start");

    // A copy job truncates the file before writing it, and stops there.
    std::fs::write(&crl_path, "").expect("truncate");
    wait_for_log(&node, "CRL file refused").await;
    assert!(
        node.log_text().contains("holds no CRL"),
        "{}",
        node.log_text()
    );
    let log_before = node.log_text().matches("Revoked").count();
    fresh_call(&node, &ca, (&crt, &key))
        .await
        .expect_err("revocation must stay on");
    wait_for_log(&node, "TLS handshake refused").await;
    assert!(
        node.log_text().matches("Revoked").count() > log_before,
        "refused for being revoked:\n{}",
        node.log_text()
    );
    let (nc, nk) = env.identity("natural-resources");
    fresh_call(&node, &ca, (&nc, &nk))
        .await
        .expect("others still get in");
    let text = scrape(node.metrics.as_ref().expect("metrics"));
    assert_eq!(
        value(&text, "qianlian_crl_refused_total", &["reason=\"empty\""]),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn an_expired_crl_is_refused_and_one_that_expires_in_force_fails_closed_and_says_why() {
    let _serial = SERIAL.lock().await;
    let env = Env::new();
    let ca = env.pki().join("ca.crt");
    let crl_path = env.path().join("crl.pem");
    let now = OffsetDateTime::now_utc();
    // In force for a few more seconds, revoking 0x4444.
    let expires = now + time::Duration::seconds(8);
    std::fs::write(
        &crl_path,
        crl(
            &env,
            1,
            now - time::Duration::minutes(5),
            expires,
            &[0x4444],
        ),
    )
    .expect("crl");
    let node = start_with_crl(&env, &crl_path, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let (revoked_crt, revoked_key) = housing_with_serial(&env, 0x4444);
    let (nc, nk) = env.identity("natural-resources");

    // A file already past its nextUpdate, un-revoking 0x4444: refused.
    std::fs::write(
        &crl_path,
        crl(
            &env,
            2,
            now - time::Duration::days(2),
            now - time::Duration::days(1),
            &[],
        ),
    )
    .expect("expired crl");
    wait_for_log(&node, "CRL file refused").await;
    assert!(
        node.log_text().contains("expired at"),
        "{}",
        node.log_text()
    );
    fresh_call(&node, &ca, (&revoked_crt, &revoked_key))
        .await
        .expect_err("the CRL in force still revokes it");
    fresh_call(&node, &ca, (&nc, &nk))
        .await
        .expect("a good certificate works while the CRL is current");

    // The CRL in force passes its nextUpdate: department certificates are refused, saying why.
    let wait = (expires - OffsetDateTime::now_utc())
        .whole_milliseconds()
        .max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 1500)).await;
    let err = fresh_call(&node, &ca, (&nc, &nk))
        .await
        .expect_err("fail closed once the CRL expired");
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert!(err.contains("CRL expired"), "{err}");
    let readyz = std::process::Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca.display().to_string(),
            &format!(
                "{}/readyz",
                node.endpoint().replace("127.0.0.1", "localhost")
            ),
        ])
        .output()
        .expect("curl");
    assert!(
        stdout(&readyz).contains("CRL expired"),
        "{}",
        stdout(&readyz)
    );
    let text = scrape(node.metrics.as_ref().expect("metrics"));
    assert!(
        value(&text, "qianlian_crl_next_update_seconds", &[]) < 0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "qianlian_crl_refused_total", &["reason=\"expired\""]),
        1.0,
        "{text}"
    );
}

/// A Vote call with an empty message to `endpoint` as `who` (a dev identity, a node
/// certificate `node-N`, or no certificate); the status code it ends with, or `None` when the
/// connection itself is refused.
async fn vote(cluster: &Cluster, endpoint: &str, who: Option<&str>) -> Option<Code> {
    let pki = cluster.env.pki();
    let files = who.map(|w| match w.strip_prefix("node-") {
        Some(_) => (
            pki.join(format!("nodes/{w}.crt")),
            pki.join(format!("nodes/{w}.key")),
        ),
        None => cluster.env.identity(w),
    });
    let tls = tls(
        &pki.join("ca.crt"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    );
    let ch = Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    let r = RaftClient::new(ch)
        .vote(RaftMessage { data: Vec::new() })
        .await;
    Some(match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    })
}

#[tokio::test]
async fn raft_on_a_port_of_its_own_carries_consensus_and_admits_node_certificates_only() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with_raft_ports(3, "");
    let leader = cluster.leader(Duration::from_secs(30)).await;
    // Consensus runs over the Raft ports: the seeded records reach every node, and a new one
    // written on a follower (forwarded to the leader over its Raft port) does too.
    let (size, _) = cluster.converge(SEEDED, Duration::from_secs(30)).await;
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let mut ex = ExchangeClient::new(
        cluster
            .channel(follower, "market-regulation")
            .await
            .expect("department connects"),
    );
    let refused = ex
        .get_record(record_request())
        .await
        .expect_err("no such record");
    assert!(
        matches!(refused.code(), Code::NotFound | Code::PermissionDenied),
        "{refused:?}"
    );
    let index: u64 = refused
        .metadata()
        .get("x-qianlian-log-index")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("the answer names its log index");
    assert!(index >= size, "index {index}, tree size before {size}");
    cluster.converge(index + 1, Duration::from_secs(30)).await;

    let raft = cluster.raft_endpoint(leader);
    let main = cluster.endpoint(leader);
    // On the Raft port a node certificate reaches the service (which refuses the empty
    // message); a department certificate and a caller without one are turned away at the
    // handshake, before any gRPC status could be sent (TLS 1.3 tells the client after its
    // first call went out, which then ends CANCELLED, UNAVAILABLE or UNKNOWN).
    let as_node = vote(&cluster, &raft, Some("node-2")).await;
    assert!(
        as_node == Some(Code::InvalidArgument),
        "a node certificate on the Raft port: {as_node:?}"
    );
    for who in [Some("market-regulation"), None] {
        let got = vote(&cluster, &raft, who).await;
        assert!(
            matches!(
                got,
                None | Some(Code::Unavailable | Code::Cancelled | Code::Unknown)
            ),
            "{who:?} on the Raft port: {got:?}"
        );
    }
    // The main port no longer serves Raft at all, even to a node certificate.
    assert_eq!(
        vote(&cluster, &main, Some("node-2")).await,
        Some(Code::Unimplemented),
        "Raft on the main port"
    );
}
