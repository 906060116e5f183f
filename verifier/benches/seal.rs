//! What an originator seal costs per record on one core, against what a record cost before.
//!
//! - `seal/unsealed_encode_and_hash`: the state machine's per-record work before seals: the
//!   canonical bytes and the RFC 6962 leaf hash of a typical exchange record.
//! - `seal/sign`: the gateway sealing the record (one Ed25519 signature).
//! - `seal/check`: every node's origin check (one strict Ed25519 verification and the
//!   authority lookup in a directory of 40 departments).
//! - `seal/sealed_encode_and_hash`: the canonical bytes and leaf hash of the sealed record.
//! - `batch_seal/sign_32`: a node sealing the 32 records of a group-commit batch (one signature, a
//!   Merkle tree over their signed bytes, a path for each).
//! - `batch_seal/path_32`: a node's per-record work once the batch's signature is verified:
//!   the record's path to the batch root (the cache key of the verified signature).
//!
//! Every benchmark reports elements per second: one element is one record.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use qianlian_verifier::record::{
    Action, BatchSealedRecord, Caller, Decision, ExchangeRecord, OriginKey, OriginKeys, Originator,
    Record, SealedRecord, Side, SignerRole, SubjectHash,
};

fn exchange() -> Record {
    Record::Exchange(ExchangeRecord {
        request_id: "b8a1f0d2-4c3e-4f5a-9b6c-7d8e9f0a1b2c".into(),
        time_unix_ms: 1_770_000_000_000,
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
        disclosed_fields: vec!["name".into(), "status".into()],
        result_count: 1,
        subjects: vec![SubjectHash([0x33; 32])],
        request_digest: [7; 32],
        response_digest: Some([9; 32]),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    })
}

fn originator() -> Originator {
    Originator {
        role: SignerRole::Gateway,
        department: "market-regulation".into(),
        key_id: "market-regulation.gov.example".into(),
        public_key: [0; 32],
    }
}

fn seals(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let record = exchange();
    let sealed = Record::Sealed(Box::new(SealedRecord::seal(
        record.clone(),
        originator(),
        &key,
    )));
    let mut keys: Vec<OriginKey> = (0..40)
        .map(|i| OriginKey {
            role: SignerRole::Gateway,
            department: format!("department-{i}"),
            key_id: format!("node-{i}"),
            public_key: [i as u8; 32],
        })
        .collect();
    keys.push(OriginKey {
        role: SignerRole::Gateway,
        department: "market-regulation".into(),
        key_id: "market-regulation.gov.example".into(),
        public_key: key.verifying_key().to_bytes(),
    });
    let keys = OriginKeys {
        keys,
        ..Default::default()
    };
    assert_eq!(keys.check(&sealed, None), Ok(()));

    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("unsealed_encode_and_hash", |b| {
        b.iter(|| black_box(black_box(&record).hash()))
    });
    group.bench_function("sign", |b| {
        b.iter(|| {
            black_box(SealedRecord::seal(
                black_box(record.clone()),
                originator(),
                &key,
            ))
        })
    });
    group.bench_function("check", |b| {
        b.iter(|| black_box(keys.check(black_box(&sealed), None)))
    });
    group.bench_function("sealed_encode_and_hash", |b| {
        b.iter(|| black_box(black_box(&sealed).hash()))
    });
    group.finish();

    let batch: Vec<(Record, Originator)> =
        (0..32).map(|_| (record.clone(), originator())).collect();
    let sealed_batch = BatchSealedRecord::seal_batch(batch.clone(), &key);
    assert_eq!(
        keys.check(
            &Record::BatchSealed(Box::new(sealed_batch[5].clone())),
            None
        ),
        Ok(())
    );
    let mut group = c.benchmark_group("batch_seal");
    group.throughput(Throughput::Elements(32));
    group.bench_function("sign_32", |b| {
        b.iter(|| {
            black_box(BatchSealedRecord::seal_batch(
                black_box(batch.clone()),
                &key,
            ))
        })
    });
    group.bench_function("path_32", |b| {
        b.iter(|| {
            for s in &sealed_batch {
                black_box(black_box(s).batch_key().ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, seals);
criterion_main!(benches);
