//! Durability: what was acknowledged survives a crash (SIGKILL) and a clean stop.

mod support;

use qianlian_proto::v1::{GetLogEntryRequest, GetRecordRequest, PutRecordRequest, RecordRef};
use support::*;

fn permit(i: u64) -> String {
    format!("5201152024031{}{:04}", 1 + i % 9, i)
}

#[tokio::test]
async fn every_record_and_receipt_survives_a_crash_and_a_restart() {
    let env = Env::new();
    let node = env.start();
    let mut receipts = Vec::new();
    let mut owner = exchange(&env, &node, "housing").await;
    for i in 0..20u64 {
        let r = owner
            .put_record(PutRecordRequest {
                record: Some(RecordRef {
                    department: "housing".into(),
                    dataset: "construction-permit".into(),
                    key: permit(i),
                }),
                payload: format!(r#"{{"project":"building {i}"}}"#).into_bytes(),
            })
            .await
            .expect("put")
            .into_inner();
        receipts.push(r.receipt.expect("receipt"));
    }
    // Crash: no clean shutdown, nothing flushed on the way out.
    node.kill();

    let node = env.start();
    let mut inspector = notary(&env, &node, "audit-office").await;
    for r in &receipts {
        let e = inspector
            .get_log_entry(GetLogEntryRequest {
                log_index: r.log_index,
            })
            .await
            .expect("record survives")
            .into_inner();
        assert_eq!(e.receipt.expect("receipt").record_hash, r.record_hash);
    }
    let got = exchange(&env, &node, "market-regulation")
        .await
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: "housing".into(),
                dataset: "construction-permit".into(),
                key: permit(7),
            }),
            purpose: "credit-check".into(),
        })
        .await
        .expect("record survives")
        .into_inner();
    assert_eq!(got.payload, br#"{"project":"building 7"}"#);
    // The log continues after the last acknowledged record.
    let next = got.receipt.expect("receipt").log_index;
    // (after the last record and the batch signature that seals it)
    assert_eq!(next, receipts.last().expect("receipts").log_index + 2);

    // A clean stop exits with success and keeps everything too.
    let status = node.stop();
    assert!(status.success(), "clean stop: {status:?}");
    let node = env.start();
    let e = notary(&env, &node, "audit-office")
        .await
        .get_log_entry(GetLogEntryRequest { log_index: next })
        .await
        .expect("read after clean restart")
        .into_inner();
    assert!(e.record_json.contains("credit-check"));
}
