//! Operator authorisation: frozen bytes of version 3, who must sign which change, replays.

use ed25519_dalek::SigningKey;

use super::*;
use crate::leaf_hash;
use crate::record::tests::sample_config;
use crate::record::{ConfigRecord, DecodeError, OriginKey};

fn operator_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn operator(id: &str, seed: u8) -> OriginKey {
    OriginKey {
        role: SignerRole::Operator,
        department: id.into(),
        key_id: format!("{id}:{seed:02x}"),
        public_key: operator_key(seed).verifying_key().to_bytes(),
    }
}

/// A directory in force with departments `a`, `b` and the operators given.
fn in_force(operators: &[OriginKey]) -> OriginKeys {
    OriginKeys {
        keys: operators.to_vec(),
        departments: vec!["a".into(), "b".into()],
        ..Default::default()
    }
}

fn directory_change(toml: &str) -> Record {
    let Record::Config(c) = sample_config() else {
        panic!("config")
    };
    Record::Config(ConfigRecord {
        change: ConfigChange::Directory { toml: toml.into() },
        ..c
    })
}

fn signed(record: Record, replaces: u64, by: &[(&str, u8)]) -> Record {
    let mut a = AuthorizedRecord::new(record, replaces);
    for (id, seed) in by {
        a.sign(id, &format!("{id}:{seed:02x}"), &operator_key(*seed));
    }
    Record::Authorized(Box::new(a))
}

const FROZEN_V3_CONFIG_LEAF_HASH: &str =
    "ee20e51eeab40ce7b07b5b582432c0377f39f2259cc7417e8cecca25ffbadd12";

#[test]
fn v3_bytes_are_frozen() {
    let record = signed(sample_config(), 1, &[("ops-a", 0x51)]);
    let bytes = record.encode();
    // Version 3, then the inner record's variant (config).
    assert_eq!(bytes[..2], [FORMAT_V3, 4]);
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_V3_CONFIG_LEAF_HASH,
        "the canonical encoding of an authorised record changed: old logs would no longer verify"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    assert_eq!(record.content(), &sample_config());
    // Ed25519 signatures are deterministic: the frozen bytes pin the signed message too.
    let keys = in_force(&[operator("ops-a", 0x51)]);
    assert_eq!(keys.check_config(&record, |_| 1, None), Ok(()));
}

#[test]
fn only_config_records_carry_operator_signatures() {
    let mut bytes = vec![FORMAT_V3];
    let not_config = AuthorizedRecord::new(crate::record::tests::sample(), 0);
    bytes.extend(postcard::to_stdvec(&not_config).expect("encode"));
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::Malformed(m)) if m.contains("not a config change")
    ));
}

#[test]
fn without_operator_keys_in_force_a_change_needs_no_signature() {
    let keys = in_force(&[]);
    assert_eq!(keys.check_config(&sample_config(), |_| 3, None), Ok(()));
    // A signature it carries must still verify.
    let Record::Authorized(mut a) = signed(sample_config(), 3, &[("ops-a", 0x51)]) else {
        panic!("authorized")
    };
    a.signatures[0].signature[5] ^= 1;
    assert!(matches!(
        keys.check_config(&Record::Authorized(a), |_| 3, None),
        Err(OriginError::BadSignature { .. })
    ));
}

#[test]
fn with_operator_keys_in_force_a_change_needs_a_listed_operators_signature() {
    let keys = in_force(&[operator("ops-a", 0x51), operator("ops-b", 0x52)]);
    let err = keys
        .check_config(&sample_config(), |_| 1, None)
        .expect_err("unsigned");
    assert!(matches!(
        err,
        OriginError::UnsignedConfig { kind: "policy" }
    ));
    assert!(
        err.to_string().contains("sign it with an operator key"),
        "{err}"
    );

    assert_eq!(
        keys.check_config(&signed(sample_config(), 1, &[("ops-b", 0x52)]), |_| 1, None),
        Ok(())
    );
    // A key the directory does not list, even under a listed operator's name.
    let err = keys
        .check_config(&signed(sample_config(), 1, &[("ops-a", 0x60)]), |_| 1, None)
        .expect_err("unlisted");
    assert!(matches!(err, OriginError::UnknownKey { .. }), "{err:?}");
    // Altered after signing.
    let Record::Authorized(mut a) = signed(sample_config(), 1, &[("ops-a", 0x51)]) else {
        panic!("authorized")
    };
    if let Record::Config(c) = &mut a.record {
        c.change = ConfigChange::Policy {
            model: String::new(),
            rules: "p, *, *, *, *, *\n".into(),
        };
    }
    assert!(matches!(
        keys.check_config(&Record::Authorized(a), |_| 1, None),
        Err(OriginError::BadSignature { .. })
    ));
}

#[test]
fn a_change_signed_against_another_version_is_refused() {
    let keys = in_force(&[operator("ops-a", 0x51)]);
    let change = signed(sample_config(), 1, &[("ops-a", 0x51)]);
    let err = keys
        .check_config(&change, |_| 2, None)
        .expect_err("replayed");
    assert_eq!(
        err,
        OriginError::Stale {
            kind: "policy",
            replaces: 1,
            in_force: 2
        }
    );
    assert!(err.to_string().contains("sign the change again"), "{err}");
    // Moving the signed version number breaks the signatures.
    let Record::Authorized(mut a) = change else {
        panic!("authorized")
    };
    a.replaces = 2;
    assert!(matches!(
        keys.check_config(&Record::Authorized(a), |_| 2, None),
        Err(OriginError::BadSignature { .. })
    ));
}

#[test]
fn removing_a_department_or_an_operator_key_needs_two_operators() {
    let (a, b) = (operator("ops-a", 0x51), operator("ops-b", 0x52));
    let keys = in_force(&[a.clone(), b.clone()]);
    let removes_b = OriginKeys {
        keys: vec![a.clone(), b.clone()],
        departments: vec!["a".into()],
        ..Default::default()
    };
    let drops_ops_b = OriginKeys {
        keys: vec![a.clone()],
        departments: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let adds_c = OriginKeys {
        keys: vec![a.clone(), b.clone()],
        departments: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    let change = directory_change("[[department]]\nid = \"a\"\nname = \"A\"\n");
    for (new, why) in [
        (&removes_b, "removes department b"),
        (&drops_ops_b, "removes or replaces an operator key"),
    ] {
        let err = keys
            .check_config(
                &signed(change.clone(), 4, &[("ops-a", 0x51)]),
                |_| 4,
                Some(new),
            )
            .expect_err("one operator");
        assert!(
            matches!(&err, OriginError::TooFewSignatures { needed: 2, found: 1, why: w, .. } if w.contains(why)),
            "{err:?}"
        );
        assert!(err.to_string().contains("--cosign"), "{err}");
        assert_eq!(
            keys.check_config(
                &signed(change.clone(), 4, &[("ops-a", 0x51), ("ops-b", 0x52)]),
                |_| 4,
                Some(new)
            ),
            Ok(())
        );
    }
    // Two keys of one operator are one operator.
    let two_keys = in_force(&[a.clone(), operator("ops-a", 0x53), b.clone()]);
    assert!(matches!(
        two_keys.check_config(
            &signed(change.clone(), 4, &[("ops-a", 0x51), ("ops-a", 0x53)]),
            |_| 4,
            Some(&removes_b)
        ),
        Err(OriginError::TooFewSignatures { found: 1, .. })
    ));
    // Adding a department needs one.
    assert_eq!(
        keys.check_config(
            &signed(change.clone(), 4, &[("ops-b", 0x52)]),
            |_| 4,
            Some(&adds_c)
        ),
        Ok(())
    );
    // Where the directory lists a single operator, that operator's signature is enough.
    let alone = in_force(std::slice::from_ref(&a));
    let removes_b_alone = OriginKeys {
        keys: vec![a],
        departments: vec!["a".into()],
        ..Default::default()
    };
    assert_eq!(
        alone.check_config(
            &signed(change, 4, &[("ops-a", 0x51)]),
            |_| 4,
            Some(&removes_b_alone)
        ),
        Ok(())
    );
}

#[test]
fn one_key_signing_twice_is_refused() {
    let Record::Authorized(mut a) = signed(sample_config(), 1, &[("ops-a", 0x51)]) else {
        panic!("authorized")
    };
    let copy = a.signatures[0].clone();
    a.signatures.push(copy);
    let keys = in_force(&[operator("ops-a", 0x51)]);
    assert!(matches!(
        keys.check_config(&Record::Authorized(a), |_| 1, None),
        Err(OriginError::DuplicateSignature { .. })
    ));
}
