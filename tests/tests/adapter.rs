//! A dataset served from an existing HTTP/JSON backend instead of the record store: the gateway
//! reads and queries it (over HTTP, or HTTPS with the CA configured for it), decides, limits
//! fields and notarizes exactly as for stored records; the citizens a backend's records name
//! are found however the backend writes their numbers; a failing backend's address, error page
//! and the values asked stay inside the owner's gateway.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use qianlian_proto::v1::{
    FieldMatch, GetLogEntryRequest, GetRecordRequest, PutRecordRequest, QueryRecordsRequest,
    RecordRef,
};
use support::*;
use tonic::Code;

const PERMIT: &str = "520115202403110001";

/// What a test backend answers for a request path: status line and body.
type Answer = Box<dyn Fn(&str) -> (&'static str, String) + Send>;

/// A backend on 127.0.0.1 answering with `answer`, over TLS with `tls`; returns its base URL
/// (`<scheme>://127.0.0.1:<port>/permits`) and keeps the request lines it saw.
fn serve(
    tls: Option<Arc<rustls::ServerConfig>>,
    answer: Answer,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}/permits",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(tcp) = stream else { continue };
            match &tls {
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    answer_one(&mut s, &answer, &log);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                None => {
                    let mut s = tcp;
                    answer_one(&mut s, &answer, &log);
                }
            }
        }
    });
    (url, seen)
}

/// Read one request's line and headers from `stream`, answer it.
fn answer_one<S: Read + Write>(stream: &mut S, answer: &Answer, log: &Mutex<Vec<String>>) {
    let mut line = String::new();
    {
        let mut reader = BufReader::new(&mut *stream);
        if reader.read_line(&mut line).is_err() {
            return;
        }
        // Skip the headers.
        let mut h = String::new();
        while reader.read_line(&mut h).is_ok() && h != "\r\n" && !h.is_empty() {
            h.clear();
        }
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    log.lock().expect("log").push(path.clone());
    let (status, body) = answer(&path);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A backend answering the adapter protocol from a fixed permit.
fn backend() -> (String, Arc<Mutex<Vec<String>>>) {
    backend_over(None)
}

fn backend_over(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let record = serde_json::json!({
        "permit_number": PERMIT,
        "builder_credit_code": uscc(2),
        "project": "观山湖区综合楼",
        "project_manager_id": "110105194912310029",
    });
    serve(
        tls,
        Box::new(move |path| {
            if path == format!("/permits/records/{PERMIT}") {
                ("200 OK", record.to_string())
            } else if path.starts_with("/permits/records?") && path.contains(&uscc(2)) {
                (
                    "200 OK",
                    serde_json::json!([{"key": PERMIT, "record": record}]).to_string(),
                )
            } else if path.starts_with("/permits/records?") {
                ("200 OK", "[]".to_owned())
            } else {
                ("404 Not Found", String::new())
            }
        }),
    )
}

fn permit(key: &str) -> Option<RecordRef> {
    Some(RecordRef {
        department: "housing".into(),
        dataset: "construction-permit".into(),
        key: key.into(),
    })
}

#[tokio::test]
async fn a_backend_serves_reads_and_queries_under_policy_and_on_the_record() {
    let (url, seen) = backend();
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[gateway]\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"{url}\"\n"
        ),
    );
    let mut market = exchange(&env, &node, "market-regulation").await;
    let got = market
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect("read through the backend")
        .into_inner();
    let json: serde_json::Value = serde_json::from_slice(&got.payload).expect("json");
    assert_eq!(json["project"], "观山湖区综合楼");
    assert!(
        seen.lock()
            .expect("log")
            .contains(&format!("/permits/records/{PERMIT}"))
    );
    let e = notary(&env, &node, "audit-office")
        .await
        .get_log_entry(GetLogEntryRequest {
            log_index: got.receipt.expect("receipt").log_index,
        })
        .await
        .expect("entry")
        .into_inner();
    let r: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
    let r = unsealed(&r);
    assert_eq!(r["Exchange"]["result_count"], 1);
    assert_eq!(
        r["Exchange"]["subjects"].as_array().map(Vec::len),
        Some(1),
        "the manager, hashed"
    );
    assert!(!e.record_json.contains("110105194912310029"));

    // A record the backend does not have: allowed, notarized, NOT_FOUND.
    let s = market
        .get_record(GetRecordRequest {
            record: permit("520115202403120002"),
            purpose: "credit-check".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(s.code(), Code::NotFound, "{}", s.message());
    assert!(s.metadata().get("x-qianlian-log-index").is_some());

    // A query by an indexed field goes to the backend's query form.
    let q = market
        .query_records(QueryRecordsRequest {
            department: "housing".into(),
            dataset: "construction-permit".into(),
            r#match: vec![FieldMatch {
                field: "builder_credit_code".into(),
                value: uscc(2),
            }],
            purpose: "credit-check".into(),
            limit: 5,
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(q.records.len(), 1);
    assert_eq!(q.records[0].key, PERMIT);
    assert!(
        seen.lock()
            .expect("log")
            .iter()
            .any(|p| p.contains("builder_credit_code=") && p.ends_with("limit=5")),
        "{:?}",
        seen.lock().expect("log")
    );

    // Without a rule, the backend is not even asked.
    let before = seen.lock().expect("log").len();
    let s = exchange(&env, &node, "natural-resources")
        .await
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect_err("no rule");
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(seen.lock().expect("log").len(), before);

    // Writes go to the backend, not through the gateway.
    let s = exchange(&env, &node, "housing")
        .await
        .put_record(PutRecordRequest {
            record: permit(PERMIT),
            payload: b"{}".to_vec(),
        })
        .await
        .expect_err("backend-served");
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("HTTP backend"), "{}", s.message());
}

/// The request id a status carries in its metadata.
fn request_id_of(s: &tonic::Status) -> String {
    s.metadata()
        .get("x-qianlian-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-qianlian-request-id in the status")
        .to_owned()
}

#[tokio::test]
async fn backend_failures_reach_the_caller_without_addresses_or_personal_values() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[gateway]\nforward_timeout_ms = 1000\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"http://127.0.0.1:{port}/permits\"\n"
        ),
    );
    let s = exchange(&env, &node, "market-regulation")
        .await
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect_err("backend down");
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
    assert!(
        s.message().contains("could not be reached"),
        "{}",
        s.message()
    );
    assert!(
        !s.message().contains("127.0.0.1") && !s.message().contains("/permits"),
        "the backend's address stays inside: {}",
        s.message()
    );
    // The operator finds the cause under the request id the caller was given.
    let id = request_id_of(&s);
    assert!(s.message().contains(&id), "{}", s.message());
    let needle = format!("127.0.0.1:{port}");
    let mut logged = false;
    for _ in 0..100 {
        logged = node
            .log_text()
            .lines()
            .any(|l| l.contains(&id) && l.contains(&needle));
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", node.log_text());
}

#[tokio::test]
async fn a_backends_error_page_and_the_values_asked_are_not_echoed() {
    const CITIZEN: &str = "52010219500101001X";
    let (url, seen) = serve(
        None,
        Box::new(|_| {
            (
                "500 Internal Server Error",
                format!(
                    "ORA-00942 at http://10.1.2.3:1521/permits-db for project_manager_id={CITIZEN}"
                ),
            )
        }),
    );
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[gateway]\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"{url}\"\n"
        ),
    );
    let mut market = exchange(&env, &node, "market-regulation").await;
    let read = market
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect_err("backend error");
    let query = market
        .query_records(QueryRecordsRequest {
            department: "housing".into(),
            dataset: "construction-permit".into(),
            r#match: vec![FieldMatch {
                field: "project_manager_id".into(),
                value: CITIZEN.to_lowercase(),
            }],
            purpose: "credit-check".into(),
            limit: 5,
        })
        .await
        .expect_err("backend error");
    assert!(
        seen.lock()
            .expect("log")
            .iter()
            .any(|p| p.contains(CITIZEN)),
        "the backend was asked for the citizen"
    );
    for s in [read, query] {
        assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
        assert!(s.message().contains("answered HTTP 500"), "{}", s.message());
        let m = s.message().to_uppercase();
        for secret in [
            CITIZEN,
            "10.1.2.3",
            "ORA-00942",
            "127.0.0.1",
            "/PERMITS",
            "PROJECT_MANAGER_ID",
        ] {
            assert!(
                !m.contains(secret),
                "`{secret}` reached the caller: {}",
                s.message()
            );
        }
        assert!(s.message().contains(&request_id_of(&s)), "{}", s.message());
    }
    drop(node);
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as rustls server config; the
/// CA's PEM is written to `dir/<name>-ca.crt`, whose path is returned.
fn backend_tls(
    dir: &std::path::Path,
    name: &str,
) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} backend CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::IpAddress(std::net::IpAddr::V4(
        std::net::Ipv4Addr::LOCALHOST,
    ))];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .expect("server config");
    let path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&path, ca_cert.pem()).expect("write CA");
    (Arc::new(config), path)
}

#[tokio::test]
async fn an_https_backend_is_read_with_the_ca_configured_for_it_and_no_other() {
    let env = Env::new();
    let (tls, ca) = backend_tls(env.path(), "permits");
    let (url, seen) = backend_over(Some(tls.clone()));
    assert!(url.starts_with("https://127.0.0.1:"));
    let node = env.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[gateway]\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"{url}\"\nca = \"{}\"\n",
            ca.display()
        ),
    );
    let got = exchange(&env, &node, "market-regulation")
        .await
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect("read over HTTPS")
        .into_inner();
    let json: serde_json::Value = serde_json::from_slice(&got.payload).expect("json");
    assert_eq!(json["project"], "观山湖区综合楼");
    assert!(
        seen.lock()
            .expect("log")
            .contains(&format!("/permits/records/{PERMIT}"))
    );
    drop(node);

    // The same backend, but the gateway trusts another CA: the handshake fails, nothing is read.
    let other = Env::new();
    let (_, wrong_ca) = backend_tls(other.path(), "other");
    let (url, seen) = backend_over(Some(tls));
    let node = other.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[gateway]\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"{url}\"\nca = \"{}\"\n",
            wrong_ca.display()
        ),
    );
    let s = exchange(&other, &node, "market-regulation")
        .await
        .get_record(GetRecordRequest {
            record: permit(PERMIT),
            purpose: "credit-check".into(),
        })
        .await
        .expect_err("untrusted backend");
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
    assert!(
        seen.lock().expect("log").is_empty(),
        "no request reached it"
    );
}

/// The subject named by every written form below.
const PERSON: &str = "52010219500101001X";
const ISSUER: &str = "https://id.gov.example";
const AUDIENCE: &str = "qianlian";

#[tokio::test]
async fn an_identifier_written_in_any_form_is_found_by_audit_mine() {
    // The backend writes the manager's number as its clerks typed it.
    let forms = [
        ("520115202403110002", "52010219500101001x"),
        ("520115202403110003", "520102 19500101 001X"),
        ("520115202403110004", "５２０１０２１９５００１０１００１Ｘ"),
        ("520115202403110005", "110105194912310029"),
    ];
    let (url, _) = serve(
        None,
        Box::new(move |path| {
            match forms
                .iter()
                .find(|(p, _)| path == format!("/permits/records/{p}"))
            {
                Some((p, id)) => (
                    "200 OK",
                    serde_json::json!({"permit_number": p, "project_manager_id": id}).to_string(),
                ),
                None => ("404 Not Found", String::new()),
            }
        }),
    );
    let env = Env::new();
    let idp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("idp key");
    let public = env.path().join("idp.pub.pem");
    std::fs::write(&public, idp.public_key_pem()).expect("write idp key");
    let node = env.start_with(
        &policies().join("policy.csv"),
        &format!(
            "[audit]\ntoken_issuer = \"{ISSUER}\"\ntoken_audience = \"{AUDIENCE}\"\ntoken_keys = [\"{}\"]\n[gateway]\n[[gateway.adapter]]\ndataset = \"construction-permit\"\nurl = \"{url}\"\n",
            public.display()
        ),
    );

    // Reads through the backend, one per written form.
    let mut market = exchange(&env, &node, "market-regulation").await;
    let mut want = Vec::new();
    let mut other = Vec::new();
    for (p, _) in forms {
        let r = market
            .get_record(GetRecordRequest {
                record: permit(p),
                purpose: "credit-check".into(),
            })
            .await
            .expect("read through the backend")
            .into_inner();
        let index = r.receipt.expect("receipt").log_index;
        if p.ends_with('5') {
            other.push(index);
        } else {
            want.push(index);
        }
    }
    // Writes to the record store with the number in lower case and with spaces, and a read of
    // each by a department the policy shows the number to.
    let mut natural = exchange(&env, &node, "natural-resources").await;
    for (i, written) in [(31, "52010219500101001x"), (32, " 520102 19500101 001x ")] {
        let enterprise = RecordRef {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: uscc(i),
        };
        let put = market
            .put_record(PutRecordRequest {
                record: Some(enterprise.clone()),
                payload: serde_json::json!({
                    "unified_social_credit_code": uscc(i),
                    "name": "黔链测试企业",
                    "legal_representative_id": written,
                })
                .to_string()
                .into_bytes(),
            })
            .await
            .expect("put")
            .into_inner();
        want.push(put.receipt.expect("receipt").log_index);
        let read = natural
            .get_record(GetRecordRequest {
                record: Some(enterprise),
                purpose: "property-registration".into(),
            })
            .await
            .expect("read")
            .into_inner();
        want.push(read.receipt.expect("receipt").log_index);
    }
    want.sort_unstable();

    // The citizen asks with the number in its standard form.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": PERSON, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_ed_pem(idp.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("token");
    let out = cli(&[
        "audit",
        "mine",
        "--token",
        &token,
        "--format",
        "jsonl",
        "--dev-dir",
        env.path().to_str().expect("path"),
        "--endpoint",
        &node.endpoint(),
    ]);
    assert!(out.status.success(), "audit mine: {}", stderr(&out));
    let mut listed: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["log_index"].as_u64().expect("index")
        })
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed, want,
        "every form of {PERSON}, nothing of another person"
    );
    assert!(other.iter().all(|o| !listed.contains(o)));

    // An inspector asking with any written form finds the same accesses.
    for asked in [
        PERSON,
        "52010219500101001x",
        "５２０１０２１９５００１０１００１Ｘ",
    ] {
        let out = cli(&[
            "audit",
            "query",
            "--as",
            "audit-office",
            "--subject",
            asked,
            "--side",
            "provider",
            "--limit",
            "0",
            "--format",
            "jsonl",
            "--dev-dir",
            env.path().to_str().expect("path"),
            "--endpoint",
            &node.endpoint(),
        ]);
        assert!(out.status.success(), "audit query: {}", stderr(&out));
        let mut found: Vec<u64> = stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["log_index"].as_u64().expect("index")
            })
            .collect();
        found.sort_unstable();
        assert_eq!(found, want, "asked as {asked}");
    }
}
