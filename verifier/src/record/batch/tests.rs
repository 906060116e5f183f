//! Batch seals: frozen bytes of version 4, every record of a batch proving its origin alone,
//! and the edits that must break it.

use ed25519_dalek::SigningKey;

use super::*;
use crate::record::OriginKeys;
use crate::record::tests::{
    gateway_key, gateway_originator, keys_of_market_regulation, sample_exchange,
};

fn exchange(i: u64) -> Record {
    let Record::Exchange(mut e) = sample_exchange() else {
        panic!("exchange")
    };
    e.time_unix_ms += i;
    Record::Exchange(e)
}

fn batch(n: u64) -> Vec<Record> {
    BatchSealedRecord::seal_batch(
        (0..n)
            .map(|i| (exchange(i), gateway_originator("market-regulation")))
            .collect(),
        &gateway_key(),
    )
    .into_iter()
    .map(|s| Record::BatchSealed(Box::new(s)))
    .collect()
}

/// Market regulation's gateway key, as the directory lists it.
fn keys() -> OriginKeys {
    keys_of_market_regulation()
}

const FROZEN_V4_EXCHANGE_LEAF_HASH: &str =
    "05daeea505b6a04c623dbd9364ca4301ea03944d97cebb63e7acd3832196433a";

#[test]
fn v4_bytes_are_frozen() {
    let record = batch(3).remove(1);
    let bytes = record.encode();
    // Version 4, then the inner record's variant (exchange).
    assert_eq!(bytes[..2], [FORMAT_V4, 3]);
    assert_eq!(
        hex::encode(crate::leaf_hash(&bytes)),
        FROZEN_V4_EXCHANGE_LEAF_HASH,
        "the canonical encoding of a batch-sealed record changed: old logs would no longer verify"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    assert_eq!(record.content(), &exchange(1));
    assert_eq!(keys().check(&record, None), Ok(()));
}

#[test]
fn every_record_of_a_batch_proves_its_origin_alone_with_one_signature() {
    for n in [1, 2, 3, 7, 64] {
        let records = batch(n);
        let mut batch_keys = Vec::new();
        for r in &records {
            assert_eq!(keys().check(r, None), Ok(()), "batch of {n}");
            let Record::BatchSealed(s) = r else {
                panic!("batch sealed")
            };
            batch_keys.push(s.batch_key().expect("a root"));
            // The JSON form round-trips too (hex path and signature).
            let json = serde_json::to_string(s.as_ref()).expect("json");
            let back: BatchSealedRecord = serde_json::from_str(&json).expect("back");
            assert_eq!(&back, s.as_ref());
        }
        batch_keys.dedup();
        assert_eq!(batch_keys.len(), 1, "one signature for the batch of {n}");
    }
}

#[test]
fn an_altered_record_path_index_or_signature_does_not_verify() {
    let sealed = |r: Record| match r {
        Record::BatchSealed(s) => s,
        _ => panic!("batch sealed"),
    };
    let one = sealed(batch(4).remove(2));
    let other_batch = sealed(batch(5).remove(2));
    let mut altered = one.clone();
    if let Record::Exchange(e) = &mut altered.record {
        e.decision = crate::record::Decision::Deny;
    }
    let mut moved = one.clone();
    moved.seal.index = 3;
    let mut path = one.clone();
    path.seal.path[0][0] ^= 1;
    let mut resized = one.clone();
    resized.seal.batch_size = 5;
    let mut signature = one.clone();
    signature.seal.signature[7] ^= 1;
    let mut foreign = one.clone();
    foreign.seal.signature = other_batch.seal.signature.clone();
    let mut renamed = one.clone();
    renamed.seal.originator.department = "housing".into();
    for bad in [altered, moved, path, resized, signature, foreign, renamed] {
        let err = bad.verify_signature().expect_err("must not verify");
        assert!(matches!(err, OriginError::BadSignature { .. }), "{err:?}");
    }
    // A key the directory does not list, honestly signed.
    let stranger = BatchSealedRecord::seal_batch(
        vec![(exchange(0), gateway_originator("market-regulation"))],
        &SigningKey::from_bytes(&[0x77; 32]),
    )
    .remove(0);
    assert!(matches!(
        keys().check(&Record::BatchSealed(Box::new(stranger)), None),
        Err(OriginError::UnknownKey { .. })
    ));
}
