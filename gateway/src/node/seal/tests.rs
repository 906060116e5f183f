//! Records sealed together share one signature; each still proves its origin alone.

use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::record::{Action, Caller, Decision, ExchangeRecord, Record, Side};
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::license::DepartmentKey;
use qianlian_verifier::record::{OriginKey, OriginKeys, SignerRole};

use super::NodeSeal;
use crate::domain::directory::{Directory, DirectoryEntry};
use crate::node::cluster_config::DirectoryInForce;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x21; 32])
}

fn seal() -> NodeSeal {
    let directory = Directory {
        department: vec![DirectoryEntry {
            id: "market-regulation".into(),
            name: "market-regulation".into(),
            keys: vec![],
            node_keys: vec![DepartmentKey::new("mr.node", &key().verifying_key())],
            gateway: None,
            cert_fingerprint: None,
            datasets: vec![],
        }],
        operator: vec![],
    };
    NodeSeal::new(
        key(),
        Arc::new(ArcSwap::from_pointee(DirectoryInForce {
            version: 1,
            directory,
        })),
    )
}

/// Market regulation's provider side of exchange `i`.
fn record(i: u64) -> Record {
    Record::Exchange(ExchangeRecord {
        request_id: format!("exchange-{i}"),
        time_unix_ms: 1_770_000_000_000 + i,
        caller: Caller {
            department: "housing".into(),
            role: "department".into(),
            cert_fingerprint: "ef".repeat(32),
        },
        side: Side::Provider,
        gateway: "market-regulation".into(),
        owner: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        action: Action::Read,
        key: "91520100MA6DKJ8X3T".into(),
        purpose: "permit-review".into(),
        decision: Decision::Allow,
        policy_version: 3,
        rule: "p, housing, market-regulation, enterprise-registration, read, permit-review".into(),
        disclosed_fields: vec!["name".into()],
        result_count: 1,
        subjects: vec![],
        request_digest: [7; 32],
        response_digest: None,
        trace_id: String::new(),
    })
}

fn keys() -> OriginKeys {
    OriginKeys {
        keys: vec![OriginKey {
            role: SignerRole::Gateway,
            department: "market-regulation".into(),
            key_id: "mr.node".into(),
            public_key: key().verifying_key().to_bytes(),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn records_sealed_together_share_a_signature_and_each_verifies() {
    let seal = seal();
    let sealed =
        futures::future::join_all((0..50).map(|i| seal.seal(record(i), "market-regulation"))).await;
    let mut batches = Vec::new();
    for (i, r) in sealed.iter().enumerate() {
        let Record::BatchSealed(s) = r else {
            panic!("record {i} is not batch-sealed: {r:?}")
        };
        assert_eq!(r.content(), &record(i as u64), "in order");
        assert_eq!(keys().check(r, None), Ok(()));
        batches.push(s.batch_key().expect("a root"));
    }
    batches.dedup();
    assert!(
        batches.len() < 5,
        "50 records waiting together took {} signatures",
        batches.len()
    );

    // A lone record is sealed at once, alone.
    let lone = seal.seal(record(99), "market-regulation").await;
    let Record::BatchSealed(s) = &lone else {
        panic!("batch-sealed")
    };
    assert_eq!((s.seal.batch_size, s.seal.path.len()), (1, 0));
    assert_eq!(keys().check(&lone, None), Ok(()));
}

#[tokio::test]
async fn a_department_that_does_not_list_this_nodes_key_gets_its_record_unsealed() {
    let seal = seal();
    assert_eq!(seal.seal(record(0), "housing").await, record(0));
}
