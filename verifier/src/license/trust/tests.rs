use super::*;
use crate::license::fixtures::{Log, MARKET_KEY_ID, ORIGIN, STATUS_TIME, nodes};

#[test]
fn fixture_bundle_opens_and_round_trips_through_json() {
    let log = Log::new();
    let bundle = log.bundle(vec![]);
    assert_eq!(bundle.origin(), ORIGIN);
    assert_eq!(bundle.min_cosigners(), 2);
    assert_eq!(bundle.as_of(), STATUS_TIME);
    assert_eq!(bundle.checkpoint().checkpoint.size, 5);
    assert_eq!(bundle.checkpoint().signers, ["node-a", "node-b"]);
    let (dept, _) = bundle.issuer_key(MARKET_KEY_ID).expect("known key");
    assert_eq!(dept.name, "贵州省市场监督管理局");
    assert!(bundle.issuer_key("nobody-2026").is_none());

    let json = bundle.to_json();
    assert!(json.contains("\"may_issue\": [\n        \"business-license\"\n      ]"));
    assert!(
        json.contains("贵州省市场监督管理局"),
        "Chinese stays readable"
    );
    let again = TrustBundle::from_json(&json).expect("own JSON reads back");
    assert_eq!(again.file(), bundle.file());
}

fn refused(edit: impl FnOnce(&mut TrustBundleFile)) -> TrustBundleError {
    let mut file = Log::new().bundle_file(vec![]);
    edit(&mut file);
    TrustBundle::open(file).expect_err("the edited bundle is refused")
}

#[test]
fn bad_bundles_are_refused_with_the_reason() {
    assert_eq!(
        refused(|f| f.version = 2),
        TrustBundleError::UnsupportedVersion { version: 2 }
    );
    assert_eq!(
        refused(|f| f.min_cosigners = 0),
        TrustBundleError::InvalidThreshold { k: 0, n: 3 }
    );
    assert_eq!(
        refused(|f| f.min_cosigners = 4),
        TrustBundleError::InvalidThreshold { k: 4, n: 3 }
    );
    assert_eq!(
        refused(|f| {
            let dup = f.node_keys[0].clone();
            f.node_keys = vec![dup.clone(), dup];
            f.min_cosigners = 2;
        }),
        TrustBundleError::InvalidThreshold { k: 2, n: 1 }
    );
    assert!(matches!(
        refused(|f| f.node_keys[1] = "node-b+00000000+AQ==".into()),
        TrustBundleError::NodeKey { index: 1, .. }
    ));
    assert_eq!(
        refused(|f| {
            let key = f.departments[0].keys[0].clone();
            f.departments[1].keys.push(key);
        }),
        TrustBundleError::DuplicateKeyId {
            key_id: MARKET_KEY_ID.into()
        }
    );
    assert_eq!(
        refused(|f| f.departments.push(f.departments[0].clone())),
        TrustBundleError::DuplicateDepartment {
            id: "market-regulation".into()
        }
    );
    assert!(matches!(
        refused(|f| {
            f.departments[0].keys[0].public_key.pop();
        }),
        TrustBundleError::InvalidKey { .. }
    ));
    assert!(matches!(
        refused(|f| f.departments[0].keys[0].public_key = vec![0; 32]),
        TrustBundleError::InvalidKey { .. }
    ));
    assert!(matches!(
        refused(|f| f.departments[0].id = "market regulation".into()),
        TrustBundleError::InvalidDepartment { .. }
    ));
    assert!(matches!(
        refused(|f| f.origin = "other.example/log".into()),
        TrustBundleError::Checkpoint(CheckpointError::WrongOrigin { .. })
    ));
}

#[test]
fn checkpoint_and_status_list_need_k_signers_and_must_match() {
    let mut log = Log::new();
    let [a, b, _] = nodes();
    let one_signer = log.checkpoint(&[&a]);
    assert!(matches!(
        refused(|f| f.checkpoint = one_signer),
        TrustBundleError::Checkpoint(CheckpointError::Note(NoteError::NotEnoughSigners { .. }))
    ));
    let one_signer = log.status_list(STATUS_TIME, vec![], &[&b]);
    assert!(matches!(
        refused(|f| f.status_list = one_signer),
        TrustBundleError::StatusList(StatusListError::Note(NoteError::NotEnoughSigners { .. }))
    ));

    // A status list of a later tree head than the checkpoint.
    log.tree.push_entry(b"later");
    let later = log.status_list(STATUS_TIME, vec![], &[&a, &b]);
    assert_eq!(
        refused(|f| f.status_list = later),
        TrustBundleError::StatusListMismatch {
            checkpoint_size: 5,
            status_size: 6
        }
    );
}

#[test]
fn json_errors_and_versions_are_named() {
    let json = Log::new().bundle(vec![]).to_json();
    assert!(matches!(
        TrustBundle::from_json("{"),
        Err(TrustBundleError::Json { .. })
    ));
    assert_eq!(
        TrustBundle::from_json(&json.replacen("\"version\": 1", "\"version\": 7", 1))
            .expect_err("future version"),
        TrustBundleError::UnsupportedVersion { version: 7 }
    );
    let unknown_field = json.replacen('{', "{\"comment\": \"x\",", 1);
    assert!(matches!(
        TrustBundle::from_json(&unknown_field),
        Err(TrustBundleError::Json { .. })
    ));
    let unknown_type = json.replacen("\"business-license\"", "\"fishing-license\"", 1);
    let err = TrustBundle::from_json(&unknown_type).expect_err("unknown license type");
    assert!(err.to_string().contains("fishing-license"), "{err}");
}
