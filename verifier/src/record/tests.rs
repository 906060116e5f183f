//! Frozen bytes of every record variant, round trips, and the rules a record must meet.

use super::*;

pub(crate) fn sample() -> Record {
    Record::Access(AccessRecord {
        request_id: "6f1c2b1e-8d7a-4a53-9c43-2b7f0c8e9a10".into(),
        time_unix_ms: 1_764_000_000_000,
        caller: Caller {
            department: "housing".into(),
            role: "department".into(),
            cert_fingerprint: "ab".repeat(32),
        },
        owner: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: "91520100MA6DKJ8X3T".into(),
        action: Action::Read,
        purpose: "permit-review".into(),
        decision: Decision::Allow,
        policy_version: "1".into(),
        rule: "p, housing, market-regulation, enterprise-registration, read, permit-review".into(),
        request_digest: [7; 32],
        response_digest: Some([9; 32]),
    })
}

#[test]
fn round_trips() {
    let r = sample();
    assert_eq!(Record::decode(&r.encode()).ok(), Some(r));
}

#[test]
fn v1_bytes_are_frozen() {
    let bytes = sample().encode();
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_V1_LEAF_HASH,
        "the canonical encoding of a v1 access record changed: old logs would no longer verify"
    );
    assert_eq!(bytes[0], FORMAT_V1);
}

const FROZEN_V1_LEAF_HASH: &str =
    "21b9788655eedbf16e6a4e54393123a438fc475f088eac66d020252301514386";

pub(crate) fn sample_issued() -> Record {
    Record::LicenseIssued(LicenseIssuedRecord {
        request_id: "3d0f6a52-1b9e-4c7d-8a21-5e4f3c2b1a09".into(),
        time_unix_ms: 1_768_435_200_000,
        caller: Caller {
            department: "market-regulation".into(),
            role: "department".into(),
            cert_fingerprint: "cd".repeat(32),
        },
        license_hash: [0x11; 32],
        license_type: "business-license".into(),
        number: "GZ-2026-000123".into(),
        department: "market-regulation".into(),
        holder_hash: [0x22; 32],
        valid_from: 1_768_435_200,
        valid_until: Some(1_925_000_000),
    })
}

pub(crate) fn sample_status() -> Record {
    Record::LicenseStatus(LicenseStatusRecord {
        request_id: "9a7c1e33-6f2d-4b08-b5e4-0c1d2e3f4a5b".into(),
        time_unix_ms: 1_769_000_000_000,
        caller: Caller {
            department: "market-regulation".into(),
            role: "department".into(),
            cert_fingerprint: "cd".repeat(32),
        },
        license_hash: [0x11; 32],
        change: LicenseStatusChange::Revoked,
        reason: "fraud".into(),
    })
}

#[test]
fn v1_license_bytes_are_frozen() {
    // The variant number follows the format byte: 1 and 2, after `Access` (0).
    for (record, variant, frozen) in [
        (sample_issued(), 1, FROZEN_V1_ISSUED_LEAF_HASH),
        (sample_status(), 2, FROZEN_V1_STATUS_LEAF_HASH),
    ] {
        let bytes = record.encode();
        assert_eq!(bytes[..2], [FORMAT_V1, variant]);
        assert_eq!(
            hex::encode(leaf_hash(&bytes)),
            frozen,
            "the canonical encoding of {record:?} changed: old logs would no longer verify"
        );
        assert_eq!(Record::decode(&bytes).ok(), Some(record));
    }
}

const FROZEN_V1_ISSUED_LEAF_HASH: &str =
    "21b9b1d51a326d57a8a3b002a5c9a1d912ac1eb97a1bcd8cfdb0b50ae641c84d";
const FROZEN_V1_STATUS_LEAF_HASH: &str =
    "0193de3a8cfb6b20777d9a012286b64f614081e508c65f57cd0ebcd965e0f313";

pub(crate) fn sample_exchange() -> Record {
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
        rule: "p, housing, market-regulation, enterprise-registration, read, permit-review, name|status".into(),
        disclosed_fields: vec!["name".into(), "status".into()],
        result_count: 1,
        subjects: vec![SubjectHash([0x33; 32])],
        request_digest: [7; 32],
        response_digest: Some([9; 32]),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    })
}

pub(crate) fn sample_config() -> Record {
    Record::Config(ConfigRecord {
        request_id: "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f".into(),
        time_unix_ms: 1_770_000_100_000,
        caller: Caller {
            department: "ops".into(),
            role: "operator".into(),
            cert_fingerprint: "01".repeat(32),
        },
        change: ConfigChange::Policy {
            model: "[request_definition]\nr = sub, dom, obj, act, purpose\n".into(),
            rules: "p, housing, housing, construction-permit, *, *\n".into(),
        },
    })
}

#[test]
fn exchange_and_config_bytes_are_frozen() {
    // Variants 3 and 4, after the license records.
    for (record, variant, frozen) in [
        (sample_exchange(), 3, FROZEN_EXCHANGE_LEAF_HASH),
        (sample_config(), 4, FROZEN_CONFIG_LEAF_HASH),
    ] {
        let bytes = record.encode();
        assert_eq!(bytes[..2], [FORMAT_V1, variant]);
        assert_eq!(
            hex::encode(leaf_hash(&bytes)),
            frozen,
            "the canonical encoding of {record:?} changed: old logs would no longer verify"
        );
        assert_eq!(Record::decode(&bytes).ok(), Some(record));
    }
}

const FROZEN_EXCHANGE_LEAF_HASH: &str =
    "ccf83fa2b2e826236bc08860f2be77830ae312f61ec8bf96bd595160db8a8423";
const FROZEN_CONFIG_LEAF_HASH: &str =
    "6bedb31524aefbb984e3e5d6bf9d33eac29f4eef3f1a201d6680197c7632a66d";

#[test]
fn only_reason_codes_enter_the_log() {
    assert_eq!(sample_status().check(), Ok(()));
    assert_eq!(sample().check(), Ok(()));
    for bad in ["", "Fraud", "court order", &"x".repeat(33)] {
        let Record::LicenseStatus(mut r) = sample_status() else {
            panic!("not a status record")
        };
        r.reason = bad.into();
        assert!(
            matches!(
                Record::LicenseStatus(r).check(),
                Err(RecordError::ReasonCode { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(is_reason_code(&"a".repeat(32)));
}

#[test]
fn refuses_unknown_format_trailing_bytes_and_garbage() {
    let mut bytes = sample().encode();
    bytes[0] = 9;
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::UnknownFormat(9))
    ));
    let mut bytes = sample().encode();
    bytes.push(0);
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(Record::decode(&[]), Err(DecodeError::Empty)));
    assert!(matches!(
        Record::decode(&[1, 0xff, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn refuses_a_second_spelling_of_the_same_record() {
    // The variant index is a one-byte varint; with a continuation byte it reads the same.
    let canonical = sample().encode();
    let mut padded = vec![canonical[0], canonical[1] | 0x80, 0];
    padded.extend_from_slice(&canonical[2..]);
    match Record::decode(&padded) {
        Err(DecodeError::Malformed(reason)) => assert!(reason.contains("canonical"), "{reason}"),
        other => panic!("a padded varint decoded: {other:?}"),
    }
    assert_eq!(Record::decode(&canonical), Ok(sample()));
}

#[test]
fn json_view_uses_hex_digests() {
    let json = serde_json::to_value(sample()).unwrap_or_default();
    assert_eq!(json["Access"]["request_digest"], "07".repeat(32));
    assert_eq!(json["Access"]["decision"], "allow");
}

/// A fixed gateway key of market-regulation, for frozen bytes.
pub(crate) fn gateway_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x42; 32])
}

pub(crate) fn gateway_originator(department: &str) -> Originator {
    Originator {
        role: SignerRole::Gateway,
        department: department.into(),
        key_id: format!("{department}.node"),
        public_key: [0; 32],
    }
}

pub(crate) fn sample_sealed() -> Record {
    Record::Sealed(Box::new(SealedRecord::seal(
        sample_exchange(),
        gateway_originator("market-regulation"),
        &gateway_key(),
    )))
}

pub(crate) fn keys_of_market_regulation() -> OriginKeys {
    OriginKeys {
        keys: vec![OriginKey {
            role: SignerRole::Gateway,
            department: "market-regulation".into(),
            key_id: "market-regulation.node".into(),
            public_key: gateway_key().verifying_key().to_bytes(),
        }],
        ..Default::default()
    }
}

#[test]
fn v2_bytes_are_frozen() {
    let record = sample_sealed();
    let bytes = record.encode();
    // Version 2, then the inner record's variant (exchange).
    assert_eq!(bytes[..2], [FORMAT_V2, 3]);
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_V2_EXCHANGE_LEAF_HASH,
        "the canonical encoding of a sealed record changed: old logs would no longer verify"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    assert_eq!(record.content(), &sample_exchange());
    // Ed25519 signatures are deterministic: the frozen bytes pin the signed message too.
    assert_eq!(keys_of_market_regulation().check(&record, None), Ok(()));
}

const FROZEN_V2_EXCHANGE_LEAF_HASH: &str =
    "1db0ac9e2c861f63f8bd59dfef303a5dd20310146b762e7dba00fc13e03ffe12";

#[test]
fn an_altered_record_or_seal_does_not_verify() {
    let Record::Sealed(sealed) = sample_sealed() else {
        panic!("sealed")
    };
    let keys = keys_of_market_regulation();
    let mut altered = sealed.clone();
    if let Record::Exchange(e) = &mut altered.record {
        e.decision = Decision::Deny;
    }
    let mut resigned = sealed.clone();
    resigned.seal.signature[0] ^= 1;
    let mut renamed = sealed.clone();
    renamed.seal.originator.key_id = "other.node".into();
    for bad in [altered, resigned, renamed] {
        let err = keys
            .check(&Record::Sealed(bad), None)
            .expect_err("must not verify");
        assert!(matches!(err, OriginError::BadSignature { .. }), "{err:?}");
        assert!(err.to_string().contains("does not verify"), "{err}");
    }
}

#[test]
fn only_the_responsible_departments_listed_key_may_seal() {
    let keys = keys_of_market_regulation();
    // Housing's gateway signing market-regulation's provider record, with its own key.
    let housing = ed25519_dalek::SigningKey::from_bytes(&[0x43; 32]);
    let as_housing = Record::Sealed(Box::new(SealedRecord::seal(
        sample_exchange(),
        gateway_originator("housing"),
        &housing,
    )));
    assert!(matches!(
        keys.check(&as_housing, None),
        Err(OriginError::WrongSigner { .. })
    ));
    // Claiming to be market-regulation with a key the directory does not list.
    let unlisted = Record::Sealed(Box::new(SealedRecord::seal(
        sample_exchange(),
        gateway_originator("market-regulation"),
        &housing,
    )));
    assert!(matches!(
        keys.check(&unlisted, None),
        Err(OriginError::UnknownKey { .. })
    ));
    // A department that publishes gateway keys must seal; one that publishes none need not.
    assert!(matches!(
        keys.check(&sample_exchange(), None),
        Err(OriginError::Unsealed { .. })
    ));
    assert_eq!(
        OriginKeys::default().check(&sample_exchange(), None),
        Ok(())
    );
    // A license status change answers to the license's issuer, whoever the caller is.
    let issuer_keys = OriginKeys {
        keys: vec![OriginKey {
            role: SignerRole::Gateway,
            department: "market-regulation".into(),
            key_id: "n".into(),
            public_key: [1; 32],
        }],
        ..Default::default()
    };
    assert!(matches!(
        issuer_keys.check(&sample_status(), Some("market-regulation")),
        Err(OriginError::Unsealed { .. })
    ));
    assert_eq!(issuer_keys.check(&sample_status(), Some("housing")), Ok(()));
}

#[test]
fn seals_are_not_nested_and_v1_cannot_carry_one() {
    let Record::Sealed(inner) = sample_sealed() else {
        panic!("sealed")
    };
    let nested = Record::Sealed(Box::new(SealedRecord {
        record: Record::Sealed(inner.clone()),
        seal: inner.seal.clone(),
    }));
    assert!(matches!(
        Record::decode(&nested.encode()),
        Err(DecodeError::Malformed(_))
    ));
    let mut v1 = vec![FORMAT_V1];
    v1.extend(postcard::to_stdvec(&Record::Sealed(inner)).unwrap_or_default());
    assert!(matches!(
        Record::decode(&v1),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn v5_bytes_are_frozen() {
    let covered = [sample_exchange(), sample_exchange()];
    let leaves: Vec<crate::Hash> = covered.iter().map(Record::hash).collect();
    let record = Record::BatchSignature(Box::new(BatchSignatureRecord::sign(
        SignerRole::Gateway,
        &gateway_key(),
        &leaves,
        1_770_000_000_000,
    )));
    let bytes = record.encode();
    assert_eq!(bytes[0], FORMAT_V5);
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_V5_BATCH_SIGNATURE_LEAF_HASH,
        "the canonical encoding of a batch signature changed: old logs would no longer verify"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    let Record::BatchSignature(s) = record else {
        panic!("a batch signature")
    };
    // Ed25519 signatures are deterministic: the frozen bytes pin the signed message too.
    assert_eq!(s.verify(&leaves), Ok(()));
    let keys = keys_of_market_regulation();
    let o = keys
        .covered_originator(&s, &covered[0], None)
        .expect("listed");
    assert_eq!(o.key_id, "market-regulation.node");
    assert_eq!(keys.check_authority_by(&covered[0], None, Some(&o)), Ok(()));
    // A version-1 body may not carry one: its only spelling is version 5.
    let mut v1 = vec![FORMAT_V1];
    v1.extend(postcard::to_stdvec(&Record::BatchSignature(s)).unwrap_or_default());
    assert!(Record::decode(&v1).is_err());
}

const FROZEN_V5_BATCH_SIGNATURE_LEAF_HASH: &str =
    "bc375031828738b07061cc2937ec9b202696eab56bffa7af427949b53cee6da2";

#[test]
fn membership_changes_decode_with_their_frozen_bytes() {
    let from = MemberSet::new([(1, "https://n1:7400".to_owned())], [1]);
    let record = Record::Config(ConfigRecord {
        request_id: "m".into(),
        time_unix_ms: 1_770_000_000_000,
        caller: Caller {
            department: "ops".into(),
            role: "operator".into(),
            cert_fingerprint: "00".into(),
        },
        change: ConfigChange::Membership {
            to: from.with_learner(2, "https://n2:7400"),
            from,
        },
    });
    let bytes = record.encode();
    assert_eq!(bytes[0], FORMAT_V1);
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_V1_MEMBERSHIP_LEAF_HASH,
        "the canonical encoding of a membership change changed"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    assert_eq!(record.check(), Ok(()));
    // Lists out of order are not a membership.
    let Record::Config(mut c) = record else {
        panic!("config")
    };
    if let ConfigChange::Membership { to, .. } = &mut c.change {
        to.members.reverse();
    }
    assert!(Record::Config(c).check().is_err());
}

const FROZEN_V1_MEMBERSHIP_LEAF_HASH: &str =
    "7c788a55598416fff527aa650971a2f9e3ae866351f6df5aab8b846ef608c224";

#[test]
fn catalog_entries_decode_with_their_frozen_bytes() {
    use super::governance::{
        CatalogEntry, CatalogField, FieldClass, GovernanceRecord, GovernanceStep, SharingClass,
        UpdateFrequency,
    };
    let record = Record::Governance(GovernanceRecord {
        time_unix_ms: 1_770_000_000_000,
        department: "market-regulation".into(),
        step: GovernanceStep::Catalog(CatalogEntry {
            dataset: "enterprise-registration".into(),
            version: 2,
            title_zh: "企业登记信息".into(),
            title_en: "Enterprise registration".into(),
            description: "Registered enterprises.".into(),
            fields: vec![
                CatalogField {
                    name: "legal_representative_id".into(),
                    class: FieldClass::Personal,
                    shareable: false,
                },
                CatalogField {
                    name: "name".into(),
                    class: FieldClass::Public,
                    shareable: true,
                },
            ],
            sharing: SharingClass::Conditional,
            purposes: vec!["permit-review".into()],
            update_frequency: UpdateFrequency::Daily,
            legal_basis: "《企业信息公示暂行条例》".into(),
        }),
    });
    assert_eq!(record.check(), Ok(()));
    let bytes = record.encode();
    assert_eq!(bytes[0], FORMAT_V1);
    assert_eq!(
        hex::encode(leaf_hash(&bytes)),
        FROZEN_CATALOG_LEAF_HASH,
        "the canonical encoding of a catalog entry changed: old logs would no longer verify"
    );
    assert_eq!(Record::decode(&bytes).ok(), Some(record.clone()));
    // Its department's gateway answers for it; an unsealed one is refused even where the
    // department publishes no keys.
    let keys = OriginKeys::default();
    assert!(matches!(
        keys.check_authority(&record, None),
        Err(OriginError::Unsealed { .. })
    ));
}

const FROZEN_CATALOG_LEAF_HASH: &str =
    "36382a4d95cdf04f318bbb68a3a34a126ba62135b001b1b35a64a1d45bce8f18";
