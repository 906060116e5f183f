//! What a notarized record costs before it reaches the disk: canonical encoding, the RFC 6962
//! leaf hash, decoding, and the checkpoint each apply signs.
//!
//! - `record/encode/<kind>`: `Record::encode` of a typical access record (an allowed read with
//!   a response digest, or a refusal with the sentence that explains it).
//! - `record/hash/<kind>`: `Record::hash` (encoding included, as the state machine pays it).
//! - `record/decode/<kind>`: `Record::decode` of the canonical bytes (log reads, integrity check).
//! - `checkpoint/sign`: `CheckpointSigner::sign` of a tree head: the C2SP checkpoint body and one
//!   Ed25519 signature, paid once per apply call (per batch), not per record.
//! - `checkpoint/cosign`: a peer's cosignature of the same head.
//!
//! Every benchmark reports elements per second: one element is one record or one signature.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qianlian_raft_store::checkpoint::{CheckpointSigner, DEFAULT_ORIGIN};
use qianlian_raft_store::record::{AccessRecord, Action, Caller, Decision, Record};
use qianlian_verifier::{NoteSigner, leaf_hash};

fn access(allowed: bool) -> Record {
    Record::Access(AccessRecord {
        request_id: "5f0c6a3e-4b7d-4f1e-9a55-2c9d8e7f6a10".into(),
        time_unix_ms: 1_780_000_000_123,
        caller: Caller {
            department: "housing".into(),
            role: "department".into(),
            cert_fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
        },
        owner: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: "91520100000000000J".into(),
        action: Action::Read,
        purpose: if allowed {
            "permit-review"
        } else {
            "marketing"
        }
        .into(),
        decision: if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        policy_version: "314140af2350".into(),
        rule: if allowed {
            "p, housing, market-regulation, enterprise-registration, read, permit-review".into()
        } else {
            "policy 314140af2350 has no rule letting housing read market-regulation/enterprise-registration for purpose marketing".into()
        },
        request_digest: [0x5a; 32],
        response_digest: allowed.then_some([0xa5; 32]),
    })
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    for (kind, record) in [
        ("allowed-read", access(true)),
        ("denied-read", access(false)),
    ] {
        let bytes = record.encode();
        eprintln!("record {kind}: {} bytes encoded", bytes.len());
        group.bench_function(format!("encode/{kind}"), |b| {
            b.iter(|| black_box(black_box(&record).encode()))
        });
        group.bench_function(format!("hash/{kind}"), |b| {
            b.iter(|| black_box(black_box(&record).hash()))
        });
        group.bench_function(format!("leaf_hash_only/{kind}"), |b| {
            b.iter(|| black_box(leaf_hash(black_box(&bytes))))
        });
        group.bench_function(format!("decode/{kind}"), |b| {
            b.iter(|| black_box(Record::decode(black_box(&bytes)).expect("decodes")))
        });
    }
    group.finish();
}

fn checkpoints(c: &mut Criterion) {
    let key = NoteSigner::from_seed("node-1", &[7; 32]).expect("key name");
    let peer = NoteSigner::from_seed("node-2", &[8; 32]).expect("key name");
    let signer = CheckpointSigner::new(Some(key), DEFAULT_ORIGIN).expect("origin");
    let cosigner = CheckpointSigner::new(Some(peer), DEFAULT_ORIGIN).expect("origin");
    let root = leaf_hash(b"root");
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| black_box(signer.sign(black_box(10_000_000), root).expect("signs")))
    });
    group.bench_function("cosign", |b| {
        b.iter(|| black_box(cosigner.cosign(black_box(10_000_000), root).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, records, checkpoints);
criterion_main!(benches);
