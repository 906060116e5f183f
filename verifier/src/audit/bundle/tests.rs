//! A bundle built from an in-memory log and cosigned checkpoint passes; every kind of edit an
//! untrusted hand could make is refused, naming the log index.

use super::check::check_bundle;
use super::*;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::ed25519_dalek::SigningKey;
use crate::hash::{Hash, leaf_hash};
use crate::note::{NoteError, NoteSigner, SignedNote};
use crate::proof::ProofError;
use crate::record::SignerRole;
use crate::record::tests::{sample_config, sample_exchange, sample_issued};
use crate::record::{ConfigChange, Record};
use crate::tree::MemoryTree;

const ORIGIN: &str = "qianlian.example/notary";

fn node(i: u8) -> NoteSigner {
    NoteSigner::from_seed(format!("node-{i}"), &[i; 32]).expect("valid name")
}

fn exchange(policy_version: u64, time_unix_ms: u64) -> Record {
    let Record::Exchange(mut r) = sample_exchange() else {
        panic!("not an exchange record")
    };
    r.policy_version = policy_version;
    r.time_unix_ms = time_unix_ms;
    Record::Exchange(r)
}

fn config(change: ConfigChange) -> Record {
    let Record::Config(mut c) = sample_config() else {
        panic!("not a config record")
    };
    c.change = change;
    Record::Config(c)
}

fn policy(rules: &str) -> Record {
    config(ConfigChange::Policy {
        model: "[request_definition]\nr = sub, dom, obj, act, purpose\n".into(),
        rules: rules.into(),
    })
}

/// The log: 0 policy v1, 1 directory, 2 exchange (v1), 3 license issued, 4 policy v2,
/// 5 exchange (v2), 6 exchange (local files), 7 exchange (v1).
fn log() -> Vec<Record> {
    vec![
        policy("p, housing, housing, construction-permit, *, *\n"),
        config(ConfigChange::Directory {
            toml: "[[department]]\nid = \"housing\"\n".into(),
        }),
        exchange(1, 1_000),
        sample_issued(),
        policy("p, housing, market-regulation, enterprise-registration, read, *\n"),
        exchange(2, 3_000),
        exchange(0, 2_000),
        exchange(1, 4_000),
    ]
}

fn tree_of(log: &[Record]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for r in log {
        tree.push_entry(&r.encode());
    }
    tree
}

/// A bundle of records 2, 5, 6 and 3 and policies 1 and 2, its checkpoint signed by the first
/// `signers` of three nodes, two of which are required.
fn bundle(signers: u8) -> EvidenceBundle {
    bundle_of(log(), signers)
}

/// [`bundle`] over another log of the same shape.
fn bundle_of(log: Vec<Record>, signers: u8) -> EvidenceBundle {
    let tree = tree_of(&log);
    let size = tree.size();
    let proof = |i: u64| tree.inclusion_proof(i, size).expect("inside the tree");
    let text = Checkpoint::new(ORIGIN, size, tree.root())
        .sign(&node(1))
        .expect("valid checkpoint");
    let mut note = SignedNote::parse(&text).expect("parses");
    for i in 2..=signers {
        note.add_signature(&node(i)).expect("room for signatures");
    }
    let department_key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    EvidenceBundle {
        version: EVIDENCE_BUNDLE_VERSION,
        created_unix_ms: 5_000,
        query: "reads of market-regulation/enterprise-registration".into(),
        origin: ORIGIN.into(),
        checkpoint: note.to_string(),
        node_keys: (1..=3).map(|i| node(i).verifier().to_vkey()).collect(),
        min_cosigners: 2,
        departments: vec![BundleDepartment {
            id: "market-regulation".into(),
            name: "贵州省市场监督管理局".into(),
            keys: vec![DepartmentKey::new(
                "market-regulation-2026",
                &department_key,
            )],
            node_keys: vec![],
            sealed_from: None,
            retired_keys: vec![],
        }],
        records: [2, 5, 6, 3]
            .into_iter()
            .map(|i| BundleRecord::new(i, log[i as usize].encode(), proof(i)).expect("decodes"))
            .collect(),
        policies: [(1, 0), (2, 4)]
            .into_iter()
            .map(|(version, i)| BundlePolicy {
                version,
                log_index: i,
                record: log[i as usize].encode(),
                proof: proof(i),
            })
            .collect(),
    }
}

fn refused(bundle: &EvidenceBundle) -> BundleError {
    check_bundle(bundle, None).expect_err("the bundle must be refused")
}

#[test]
fn a_cosigned_bundle_passes_and_reports_what_it_proves() {
    let report = check_bundle(&bundle(2), None).expect("valid bundle");
    assert_eq!(report.origin, ORIGIN);
    assert_eq!(report.tree_size, 8);
    assert_eq!(report.signers, ["node-1", "node-2"]);
    assert_eq!(report.min_cosigners, 2);
    assert!(!report.keys_pinned);
    assert_eq!((report.records_checked, report.policies_checked), (4, 2));
    let issued_at = sample_issued().time_unix_ms();
    assert_eq!(report.time_range_unix_ms, Some((1_000, issued_at)));
    assert_eq!(bundle(2).highest_policy_version(), 2);
}

#[test]
fn json_round_trips_with_hex_proofs_and_base64_bytes() {
    let original = bundle(3);
    let json = original.to_json_pretty();
    assert_eq!(EvidenceBundle::from_json(&json), Ok(original.clone()));
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let first_hash = &value["records"][0]["proof"][0];
    assert_eq!(first_hash, &hex::encode(original.records[0].proof[0]));
    assert!(
        value["records"][0]["record"]
            .as_str()
            .is_some_and(|s| s.starts_with("AQM"))
    );
}

#[test]
fn unknown_fields_bad_hashes_and_other_versions_are_refused() {
    let json = bundle(2).to_json_pretty();
    let extra = json.replacen(
        "\"version\": 1,",
        "\"version\": 1, \"signed_by_me\": true,",
        1,
    );
    assert!(matches!(
        EvidenceBundle::from_json(&extra),
        Err(BundleError::Json { reason }) if reason.contains("signed_by_me")
    ));
    let hash = hex::encode(bundle(2).records[0].proof[0]);
    let upper = json.replacen(&hash, &hash.to_uppercase(), 1);
    assert!(matches!(
        EvidenceBundle::from_json(&upper),
        Err(BundleError::Json { reason }) if reason.contains("lowercase hex")
    ));
    let v2 = json.replacen("\"version\": 1,", "\"version\": 2,", 1);
    assert_eq!(
        EvidenceBundle::from_json(&v2),
        Err(BundleError::UnsupportedVersion { version: 2 })
    );
    let mut b = bundle(2);
    b.version = 2;
    assert_eq!(refused(&b), BundleError::UnsupportedVersion { version: 2 });
}

#[test]
fn one_altered_byte_in_a_record_is_refused_naming_its_index() {
    let mut b = bundle(2);
    let bytes = &mut b.records[1].record;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let error = refused(&b);
    assert!(matches!(
        error,
        BundleError::Inclusion {
            entry: Entry::Record,
            log_index: 5,
            ..
        }
    ));
    assert!(
        error.to_string().contains("record at log index 5"),
        "{error}"
    );
}

#[test]
fn an_edited_json_view_is_refused() {
    let mut b = bundle(2);
    b.records[2].record_json["Exchange"]["caller"]["department"] = "audit-office".into();
    assert_eq!(
        refused(&b),
        BundleError::JsonView {
            log_index: 6,
            at: "/Exchange/caller/department".into()
        }
    );
}

#[test]
fn a_json_view_repeating_a_key_is_refused_when_read() {
    // An edited copy of a field ahead of the genuine one: serde_json alone keeps the last, so
    // the view would compare equal to the record while a reader sees the edit first.
    let json = bundle(2).to_json_pretty();
    let genuine = "\"department\": \"housing\"";
    assert!(json.contains(genuine), "{json}");
    let doubled = json.replacen(
        genuine,
        &format!("\"department\": \"audit-office\", {genuine}"),
        1,
    );
    let error = EvidenceBundle::from_json(&doubled).expect_err("a repeated key was accepted");
    assert!(
        matches!(&error, BundleError::Json { reason }
            if reason.contains("\"department\" appears twice")),
        "{error}"
    );
    // The same text without the repeat still reads, so the refusal is the repeat's.
    let once = json.replacen(genuine, "\"department\": \"audit-office\"", 1);
    assert!(EvidenceBundle::from_json(&once).is_ok());
}

#[test]
fn wrong_or_missing_proofs_are_refused() {
    let mut b = bundle(2);
    b.records[0].proof = b.records[1].proof.clone();
    assert!(matches!(
        refused(&b),
        BundleError::Inclusion {
            log_index: 2,
            source: ProofError::RootMismatch { .. },
            ..
        }
    ));
    let mut b = bundle(2);
    b.policies[1].proof.clear();
    assert!(matches!(
        refused(&b),
        BundleError::Inclusion {
            entry: Entry::Policy,
            log_index: 4,
            source: ProofError::WrongProofLength { .. }
        }
    ));
    let mut b = bundle(2);
    b.records[3].log_index = 8;
    assert_eq!(
        refused(&b),
        BundleError::OutsideTree {
            entry: Entry::Record,
            log_index: 8,
            tree_size: 8
        }
    );
    let mut b = bundle(2);
    b.records[3] = b.records[0].clone();
    assert_eq!(
        refused(&b),
        BundleError::DuplicateIndex {
            entry: Entry::Record,
            log_index: 2
        }
    );
}

#[test]
fn policies_must_run_from_version_one_to_the_highest_referenced() {
    let mut b = bundle(2);
    b.policies.pop();
    assert_eq!(
        refused(&b),
        BundleError::MissingPolicy {
            log_index: 5,
            referenced: 2,
            missing: 2
        }
    );
    let mut b = bundle(2);
    b.policies.remove(0);
    assert!(matches!(
        refused(&b),
        BundleError::PolicyOrder {
            log_index: 4,
            expected: 1,
            got: 2,
            after: None
        }
    ));
    let mut b = bundle(2);
    b.policies.swap(0, 1);
    (b.policies[0].version, b.policies[1].version) = (1, 2);
    assert!(matches!(
        refused(&b),
        BundleError::PolicyOrder { log_index: 0, .. }
    ));
    // A proven record that is not a policy change: the directory at index 1.
    let mut b = bundle(2);
    b.policies[1] = BundlePolicy {
        version: 2,
        log_index: 1,
        record: log()[1].encode(),
        proof: tree_of(&log())
            .inclusion_proof(1, 8)
            .expect("inside the tree"),
    };
    assert!(matches!(
        refused(&b),
        BundleError::NotAPolicy {
            log_index: 1,
            found: "directory"
        }
    ));
    // Records decided under local policy files only need no policy at all.
    let mut b = bundle(2);
    b.records.retain(|r| r.log_index == 6 || r.log_index == 3);
    b.policies.clear();
    assert!(check_bundle(&b, None).is_ok());
}

#[test]
fn too_few_signatures_are_refused() {
    assert_eq!(
        refused(&bundle(1)),
        BundleError::TooFewSigners {
            required: 2,
            signers: vec!["node-1".into()]
        }
    );
    let mut b = bundle(3);
    b.min_cosigners = 4;
    assert_eq!(refused(&b), BundleError::InvalidThreshold { k: 4, n: 3 });
}

#[test]
fn pinned_keys_replace_the_bundles_own() {
    let b = bundle(2);
    let own = TrustedKeys::from_vkeys(ORIGIN, &b.node_keys, 2).expect("valid keys");
    let report = check_bundle(&b, Some(&own)).expect("signed by the pinned keys");
    assert!(report.keys_pinned);

    // The bundle names keys of its own making: the pinned set does not match.
    let others = TrustedKeys::new(ORIGIN, vec![node(8).verifier(), node(9).verifier()], 1)
        .expect("valid keys");
    assert!(matches!(
        check_bundle(&b, Some(&others)),
        Err(BundleError::Checkpoint(CheckpointError::Note(
            NoteError::NoTrustedSignature { .. }
        )))
    ));
    let stricter = TrustedKeys::from_vkeys(ORIGIN, &b.node_keys, 3).expect("valid keys");
    assert!(matches!(
        check_bundle(&b, Some(&stricter)),
        Err(BundleError::TooFewSigners { required: 3, .. })
    ));
    let elsewhere = TrustedKeys::from_vkeys("other.example/log", &b.node_keys, 2).expect("keys");
    assert!(matches!(
        check_bundle(&b, Some(&elsewhere)),
        Err(BundleError::OriginMismatch { .. })
    ));
    assert_eq!(
        TrustedKeys::new(ORIGIN, vec![node(1).verifier()], 2).err(),
        Some(BundleError::InvalidThreshold { k: 2, n: 1 })
    );
    assert!(matches!(
        TrustedKeys::from_vkeys(ORIGIN, &["node-1+nothex+AA".to_string()], 1),
        Err(BundleError::NodeKey { index: 0, .. })
    ));
}

#[test]
fn department_entries_are_checked() {
    let mut b = bundle(2);
    b.departments[0].keys[0].public_key.pop();
    assert!(matches!(refused(&b), BundleError::Department { .. }));
    let mut b = bundle(2);
    b.departments.push(b.departments[0].clone());
    assert!(matches!(refused(&b), BundleError::Department { .. }));
}

/// A bundle of one log: 0 market-regulation's sealed exchange record, 1 the same unsealed;
/// market-regulation lists its gateway key when `node_keys`.
fn sealed_bundle(node_keys: bool, records: &[u64]) -> EvidenceBundle {
    use crate::record::tests::{gateway_key, gateway_originator};
    let sealed = crate::record::SealedRecord::seal(
        exchange(0, 500),
        gateway_originator("market-regulation"),
        &gateway_key(),
    );
    let log = [Record::Sealed(Box::new(sealed)), exchange(0, 1_000)];
    let mut tree = MemoryTree::new();
    for r in &log {
        tree.push_entry(&r.encode());
    }
    let size = tree.size();
    let text = Checkpoint::new(ORIGIN, size, tree.root())
        .sign(&node(1))
        .expect("valid checkpoint");
    EvidenceBundle {
        version: EVIDENCE_BUNDLE_VERSION,
        created_unix_ms: 5_000,
        query: "exchanges of market-regulation".into(),
        origin: ORIGIN.into(),
        checkpoint: text,
        node_keys: vec![node(1).verifier().to_vkey()],
        min_cosigners: 1,
        departments: vec![BundleDepartment {
            id: "market-regulation".into(),
            name: "贵州省市场监督管理局".into(),
            keys: vec![],
            node_keys: if node_keys {
                vec![DepartmentKey::new(
                    "market-regulation.node",
                    &gateway_key().verifying_key(),
                )]
            } else {
                vec![]
            },
            sealed_from: None,
            retired_keys: vec![],
        }],
        records: records
            .iter()
            .map(|&i| {
                let proof = tree.inclusion_proof(i, size).expect("inside the tree");
                BundleRecord::new(i, log[i as usize].encode(), proof).expect("decodes")
            })
            .collect(),
        policies: vec![],
    }
}

#[test]
fn a_sealed_record_proves_its_gateway_offline() {
    let report = check_bundle(&sealed_bundle(true, &[0]), None).expect("valid bundle");
    assert_eq!(report.origins.len(), 1);
    let (index, originator) = &report.origins[0];
    assert_eq!(*index, 0);
    assert_eq!(originator.department, "market-regulation");
    assert_eq!(originator.key_id, "market-regulation.node");
}

#[test]
fn an_altered_originator_signature_is_refused_with_the_reason() {
    let mut b = sealed_bundle(true, &[0]);
    let Ok(Record::Sealed(mut sealed)) = Record::decode(&b.records[0].record) else {
        panic!("sealed")
    };
    sealed.seal.signature[10] ^= 0x01;
    let altered = Record::Sealed(sealed);
    b.records[0].record = altered.encode();
    b.records[0].record_json = json_view(&altered);
    let err = refused(&b);
    assert!(
        matches!(
            err,
            BundleError::Origin {
                log_index: 0,
                source: crate::record::OriginError::BadSignature { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn a_bundle_must_show_the_key_and_a_listed_departments_records_must_be_sealed() {
    // The bundle does not list the sealing key.
    let mut b = sealed_bundle(true, &[0]);
    b.departments[0].node_keys[0].public_key = vec![9; 32];
    assert!(matches!(
        refused(&b),
        BundleError::Origin {
            source: crate::record::OriginError::UnknownKey { .. },
            ..
        }
    ));
    // An unsealed record of a department that lists node keys.
    assert!(matches!(
        refused(&sealed_bundle(true, &[1])),
        BundleError::Origin {
            source: crate::record::OriginError::Unsealed { .. },
            ..
        }
    ));
    // From a log before seals (no node keys), unsealed records still check; so do those
    // written before the directory made seals compulsory.
    check_bundle(&sealed_bundle(false, &[1]), None).expect("valid bundle");
    let mut b = sealed_bundle(true, &[0, 1]);
    b.departments[0].sealed_from = Some(2);
    check_bundle(&b, None).expect("valid bundle");
    b.departments[0].sealed_from = Some(1);
    assert!(matches!(
        refused(&b),
        BundleError::Origin { log_index: 1, .. }
    ));
}

/// A bundle in the format from before seals (version-1 records, departments without node
/// keys), frozen as exported; the checker of that time accepts it too.
#[test]
fn a_bundle_from_before_seals_still_checks() {
    let frozen = include_str!("../../../testdata/evidence-before-seals.json");
    let b = EvidenceBundle::from_json(frozen).expect("reads");
    assert!(b.departments.iter().all(|d| d.node_keys.is_empty()));
    let report = check_bundle(&b, None).expect("still checks");
    assert_eq!((report.records_checked, report.policies_checked), (4, 2));
    assert!(report.origins.is_empty());
}

/// [`log`] with policy version 2 signed by an operator.
fn log_with_signed_policy() -> Vec<Record> {
    let mut log = log();
    let mut signed = crate::record::AuthorizedRecord::new(log[4].clone(), 1);
    signed.sign("ops", "ops:1", &SigningKey::from_bytes(&[0x51; 32]));
    log[4] = Record::Authorized(Box::new(signed));
    log
}

#[test]
fn an_operators_signature_on_a_policy_is_checked_offline() {
    let b = bundle_of(log_with_signed_policy(), 2);
    let report = check_bundle(&b, None).expect("a signed policy checks");
    assert_eq!(report.policies_checked, 2);

    let mut b = bundle_of(log_with_signed_policy(), 2);
    let Ok(Record::Authorized(mut signed)) = Record::decode(&b.policies[1].record) else {
        panic!("authorized")
    };
    signed.signatures[0].signature[3] ^= 0x01;
    b.policies[1].record = Record::Authorized(signed).encode();
    let err = refused(&b);
    assert!(
        matches!(
            err,
            BundleError::Origin {
                log_index: 4,
                source: crate::record::OriginError::BadSignature { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("ops/ops:1 does not verify"),
        "{err}"
    );
}

#[test]
fn a_key_rotated_out_proves_the_records_it_sealed_while_listed_and_no_others() {
    use crate::record::tests::gateway_key;
    // Market regulation no longer lists the key that sealed record 0.
    let mut b = sealed_bundle(false, &[0]);
    let err = refused(&b);
    assert!(
        matches!(
            err,
            BundleError::Origin {
                source: crate::record::OriginError::UnknownKey { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let retired = |from, until| super::RetiredKey {
        role: crate::record::SignerRole::Gateway,
        key: DepartmentKey::new("market-regulation.node", &gateway_key().verifying_key()),
        from,
        until,
    };
    b.departments[0].retired_keys = vec![retired(0, 1)];
    let report = check_bundle(&b, None).expect("sealed while the key was listed");
    assert_eq!(report.records_checked, 1);
    // Listed only from after the record, or retired before it: not proven.
    for (from, until) in [(1, 2), (0, 0)] {
        b.departments[0].retired_keys = vec![retired(from, until)];
        assert!(matches!(refused(&b), BundleError::Origin { .. }));
    }
    // A retired license key does not stand in for a gateway key.
    let mut as_license = retired(0, 1);
    as_license.role = crate::record::SignerRole::LicenseIssuer;
    b.departments[0].retired_keys = vec![as_license];
    assert!(matches!(refused(&b), BundleError::Origin { .. }));
}

/// A bundle of one log: 0 an unsealed exchange of housing, 1 and 2 market-regulation's
/// exchange records, 3 the batch signature by market-regulation's gateway key over 1 and 2;
/// the bundle holds records 1 and 2, each with the signature that covers it.
fn batch_signed_bundle() -> EvidenceBundle {
    use crate::record::tests::gateway_key;
    let mut log = vec![exchange(0, 100), exchange(0, 500), exchange(0, 600)];
    let leaves: Vec<Hash> = log[1..].iter().map(|r| leaf_hash(&r.encode())).collect();
    log.push(Record::BatchSignature(Box::new(
        crate::record::BatchSignatureRecord::sign(
            SignerRole::Gateway,
            &gateway_key(),
            &leaves,
            700,
        ),
    )));
    let mut b = sealed_bundle(true, &[]);
    let mut tree = MemoryTree::new();
    for r in &log {
        tree.push_entry(&r.encode());
    }
    let size = tree.size();
    b.checkpoint = Checkpoint::new(ORIGIN, size, tree.root())
        .sign(&node(1))
        .expect("valid checkpoint");
    let (_, paths) = crate::tree::root_and_paths(&leaves);
    b.records = [1u64, 2]
        .iter()
        .map(|&i| {
            let proof = tree.inclusion_proof(i, size).expect("inside the tree");
            let mut r = BundleRecord::new(i, log[i as usize].encode(), proof).expect("decodes");
            r.signed_by = Some(super::BundleBatchSignature {
                log_index: 3,
                record: log[3].encode(),
                proof: tree.inclusion_proof(3, size).expect("inside the tree"),
                path: paths[i as usize - 1].clone(),
            });
            r
        })
        .collect();
    b
}

#[test]
fn a_record_under_a_batch_signature_proves_its_gateway_offline() {
    let b = batch_signed_bundle();
    let report = check_bundle(&b, None).expect("valid bundle");
    let origins: Vec<(u64, &str, &str)> = report
        .origins
        .iter()
        .map(|(i, o)| (*i, o.department.as_str(), o.key_id.as_str()))
        .collect();
    assert_eq!(
        origins,
        vec![
            (1, "market-regulation", "market-regulation.node"),
            (2, "market-regulation", "market-regulation.node")
        ]
    );
    let text = b.to_json_pretty();
    assert_eq!(EvidenceBundle::from_json(&text).expect("reads back"), b);

    // The path of another record, a signature claimed over a record it does not cover, and
    // the key no longer listed: each refused as the record's origin not proven.
    let mut swapped = b.clone();
    let other = swapped.records[1].signed_by.clone().expect("signed").path;
    if let Some(s) = swapped.records[0].signed_by.as_mut() {
        s.path = other;
    }
    let mut moved = b.clone();
    if let Some(s) = moved.records[0].signed_by.as_mut() {
        s.log_index = 2;
    }
    let mut unlisted = b.clone();
    unlisted.departments[0].node_keys = vec![DepartmentKey::new(
        "market-regulation.node",
        &SigningKey::from_bytes(&[9; 32]).verifying_key(),
    )];
    for (what, bundle) in [("path", swapped), ("moved", moved), ("unlisted", unlisted)] {
        let err = refused(&bundle);
        assert!(
            matches!(
                err,
                BundleError::Origin { log_index: 1, .. } | BundleError::Inclusion { .. }
            ),
            "{what}: {err:?}"
        );
    }
}
