//! Checkpoints and proofs from a live cluster verify with the `verifier` crate and with an
//! independent RFC 6962 implementation, and are cosigned by every node.

mod support;

use std::time::Duration;

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::get_inclusion_proof_request::Record as Target;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{
    GetConsistencyProofRequest, GetInclusionProofRequest, GetLogEntryRequest, GetRecordRequest,
    PutRecordRequest, RecordRef,
};
use qianlian_verifier::NoteVerifier;
use support::cluster::Cluster;
use support::rfc6962;
use support::*;
use tonic::Code;

fn h32(v: &[u8]) -> [u8; 32] {
    v.try_into().expect("32 bytes")
}

fn node_keys(env: &Env, n: usize) -> Vec<NoteVerifier> {
    (1..=n)
        .map(|i| {
            let text = std::fs::read_to_string(env.pki().join(format!("nodes/node-{i}.note.pub")))
                .expect("vkey");
            NoteVerifier::from_vkey(text.trim()).expect("vkey parses")
        })
        .collect()
}

async fn write_some(c: &mut ExchangeClient<tonic::transport::Channel>, from: u64, n: u64) {
    for i in from..from + n {
        c.put_record(PutRecordRequest {
            record: Some(RecordRef {
                department: "market-regulation".into(),
                dataset: "enterprise-registration".into(),
                key: uscc(i),
            }),
            payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .await
        .expect("put");
    }
}

/// Tree sizes of the proofs test: before and after the second round of writes.
const OLD: u64 = 36;
const NEW: u64 = 62;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_are_cosigned_and_proofs_verify_with_two_implementations() {
    let cluster = Cluster::start(3, "");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let mut owner = ExchangeClient::new(
        cluster
            .channel(leader, "market-regulation")
            .await
            .expect("connect"),
    );
    // The log starts with the policy and directory that `cluster init` appends; each record
    // written one after another is followed by the batch signature that seals it.
    write_some(&mut owner, 0, (OLD - SEEDED) / 2).await;
    let (old_size, old_root) = cluster.converge(OLD, Duration::from_secs(20)).await;
    let old_root = h32(&old_root);
    write_some(&mut owner, 100, (NEW - OLD) / 2).await;
    cluster.converge(NEW, Duration::from_secs(20)).await;

    let keys = node_keys(&cluster.env, 3);
    for i in 1..=3 {
        // Proofs are public: no client certificate.
        let ch = channel(
            cluster.node(i),
            tls(&cluster.env.pki().join("ca.crt"), None),
        )
        .await
        .expect("connect");
        let mut notary = NotaryClient::new(ch);

        let r = notary
            .get_inclusion_proof(GetInclusionProofRequest {
                record: Some(Target::LogIndex(20)),
                tree_size: 0,
            })
            .await
            .expect("inclusion proof")
            .into_inner();
        let cp = r.checkpoint.expect("latest checkpoint");
        let v = qianlian_verifier::open_checkpoint(&cp.note, &keys)
            .expect("checkpoint verifies")
            .require_signers(3)
            .expect("all three nodes cosigned");
        assert_eq!(v.checkpoint.size, NEW);
        assert_eq!(v.checkpoint.origin, "gov.example/qianlian");
        let root = v.checkpoint.root;
        let proof: Vec<[u8; 32]> = r.proof.iter().map(|p| h32(p)).collect();
        let leaf = h32(&r.record_hash);
        qianlian_verifier::verify_inclusion(&leaf, 20, NEW, &proof, &root).expect("verifier crate");
        assert!(
            rfc6962::inclusion_ok(20, NEW, &leaf, &proof, &root),
            "independent verifier"
        );
        let mut bad = proof.clone();
        bad[0][0] ^= 1;
        assert!(!rfc6962::inclusion_ok(20, NEW, &leaf, &bad, &root));
        assert!(qianlian_verifier::verify_inclusion(&leaf, 20, NEW, &bad, &root).is_err());

        // The record hash is the leaf hash of the bytes the log returns.
        let e = NotaryClient::new(cluster.channel(i, "audit-office").await.expect("connect"))
            .get_log_entry(GetLogEntryRequest { log_index: 20 })
            .await
            .expect("entry")
            .into_inner();
        assert_eq!(rfc6962::leaf(&e.record), leaf);

        // Lookup by hash finds the same index.
        let by_hash = notary
            .get_inclusion_proof(GetInclusionProofRequest {
                record: Some(Target::RecordHash(leaf.to_vec())),
                tree_size: NEW,
            })
            .await
            .expect("by hash")
            .into_inner();
        assert_eq!(by_hash.log_index, 20);

        let c = notary
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size,
                new_size: 0,
            })
            .await
            .expect("consistency proof")
            .into_inner();
        let proof: Vec<[u8; 32]> = c.proof.iter().map(|p| h32(p)).collect();
        assert_eq!(c.new_size, NEW);
        qianlian_verifier::verify_consistency(old_size, NEW, &old_root, &root, &proof)
            .expect("verifier crate");
        assert!(
            rfc6962::consistency_ok(old_size, NEW, &old_root, &root, &proof),
            "independent verifier"
        );
        let mut wrong_old = old_root;
        wrong_old[31] ^= 1;
        assert!(!rfc6962::consistency_ok(
            old_size, NEW, &wrong_old, &root, &proof
        ));

        // Bad requests say what is wrong.
        let s = notary
            .get_inclusion_proof(GetInclusionProofRequest {
                record: Some(Target::LogIndex(NEW)),
                tree_size: NEW,
            })
            .await
            .expect_err("index beyond size");
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
        let s = notary
            .get_inclusion_proof(GetInclusionProofRequest {
                record: Some(Target::RecordHash(vec![1, 2, 3])),
                tree_size: 0,
            })
            .await
            .expect_err("short hash");
        assert!(s.message().contains("32 bytes"), "{}", s.message());
    }
}

#[tokio::test]
async fn the_cli_verifies_inclusion_against_the_cosigned_checkpoint() {
    let env = Env::new();
    let node = env.start();
    let mut c = exchange(&env, &node, "housing").await;
    let s = c
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: "market-regulation".into(),
                dataset: "enterprise-registration".into(),
                key: uscc(5),
            }),
            purpose: "permit-review".into(),
        })
        .await
        .expect_err("not found, but notarized");
    assert_eq!(s.code(), Code::NotFound);
    let ca = env.pki().join("ca.crt").display().to_string();
    let key = env
        .pki()
        .join("nodes/node-1.note.pub")
        .display()
        .to_string();
    let out = cli(&[
        "client",
        "--endpoint",
        &node.endpoint(),
        "--ca",
        &ca,
        "--trust",
        &key,
        "proof",
        "inclusion",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("verified: log index 0"),
        "{}",
        stdout(&out)
    );
    // A key the log did not sign with is not trusted.
    let other = Env::new();
    let wrong = other
        .pki()
        .join("nodes/node-1.note.pub")
        .display()
        .to_string();
    let out = cli(&[
        "client",
        "--endpoint",
        &node.endpoint(),
        "--ca",
        &ca,
        "--trust",
        &wrong,
        "checkpoint",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
}
