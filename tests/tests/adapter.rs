//! A dataset served from an existing HTTP/JSON backend instead of the record store: the gateway
//! reads and queries it, decides, limits fields and notarizes exactly as for stored records.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use qianlian_proto::v1::{
    FieldMatch, GetLogEntryRequest, GetRecordRequest, PutRecordRequest, QueryRecordsRequest,
    RecordRef,
};
use support::*;
use tonic::Code;

const PERMIT: &str = "520115202403110001";

/// A backend on 127.0.0.1 answering the adapter protocol from a fixed permit; keeps the
/// request lines it saw.
fn backend() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/permits", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let record = serde_json::json!({
            "permit_number": PERMIT,
            "builder_credit_code": uscc(2),
            "project": "观山湖区综合楼",
            "project_manager_id": "110105194912310029",
        });
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok() && h != "\r\n" && !h.is_empty() {
                h.clear();
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            log.lock().expect("log").push(path.clone());
            let (status, body) = if path == format!("/permits/records/{PERMIT}") {
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
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
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

#[tokio::test]
async fn an_unreachable_backend_is_unavailable_with_its_address() {
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
        s.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        s.message()
    );
}
