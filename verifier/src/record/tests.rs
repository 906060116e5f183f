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
