//! The origin check as the state machine runs it: what it refuses is not appended on any node,
//! what it accepts is, and every node decides the same.

use openraft::EntryPayload;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::license::DepartmentKey;
use qianlian_verifier::record::{Originator, SealedRecord, SignerRole};

use super::super::StateMachineStore;
use super::super::tests::open;
use crate::record::{
    Action, Caller, ConfigChange, ConfigRecord, Decision, ExchangeRecord, LicenseIssuedRecord,
    LicenseStatusChange, LicenseStatusRecord, Record, Side,
};
use crate::types::{Entry, Request, Response};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MR: &str = "market-regulation";
const HOUSING: &str = "housing";

fn node_key(dept: &str) -> SigningKey {
    SigningKey::from_bytes(&[if dept == MR { 1 } else { 2 }; 32])
}

fn license_key(dept: &str) -> SigningKey {
    SigningKey::from_bytes(&[if dept == MR { 3 } else { 4 }; 32])
}

fn b64(key: &SigningKey) -> String {
    let entry = DepartmentKey::new("k", &key.verifying_key());
    serde_json::to_value(entry).map_or_else(
        |_| String::new(),
        |v| v["public_key"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A directory in which both departments publish a license key and, if `sealed`, a node key.
pub(crate) fn directory(sealed: bool) -> String {
    let mut out = String::new();
    for d in [MR, HOUSING] {
        out.push_str(&format!(
            "[[department]]\nid = \"{d}\"\nname = \"{d}\"\nkeys = [{{ key_id = \"{d}.license\", public_key = \"{}\" }}]\n",
            b64(&license_key(d))
        ));
        if sealed {
            out.push_str(&format!(
                "node_keys = [{{ key_id = \"{d}.node\", public_key = \"{}\" }}]\n",
                b64(&node_key(d))
            ));
        }
    }
    out
}

fn caller(dept: &str) -> Caller {
    Caller {
        department: dept.into(),
        role: "department".into(),
        cert_fingerprint: "ab".repeat(32),
    }
}

fn config(toml: String) -> Record {
    Record::Config(ConfigRecord {
        request_id: "dir".into(),
        time_unix_ms: 1_770_000_000_000,
        caller: Caller {
            department: "ops".into(),
            role: "operator".into(),
            cert_fingerprint: "01".repeat(32),
        },
        change: ConfigChange::Directory { toml },
    })
}

/// Market-regulation's provider record of exchange `i`.
fn exchange(i: u64) -> Record {
    Record::Exchange(ExchangeRecord {
        request_id: format!("x-{i}"),
        time_unix_ms: 1_770_000_000_000 + i,
        caller: caller(HOUSING),
        side: Side::Provider,
        gateway: MR.into(),
        owner: MR.into(),
        dataset: "enterprise-registration".into(),
        action: Action::Read,
        key: "91520100MA6DKJ8X3T".into(),
        purpose: "permit-review".into(),
        decision: Decision::Allow,
        policy_version: 1,
        rule: "p".into(),
        disclosed_fields: vec![],
        result_count: 1,
        subjects: vec![],
        request_digest: [7; 32],
        response_digest: None,
        trace_id: String::new(),
    })
}

fn seal(record: Record, role: SignerRole, dept: &str, key: &SigningKey) -> Record {
    let originator = Originator {
        role,
        department: dept.into(),
        key_id: format!(
            "{dept}.{}",
            if role == SignerRole::Gateway {
                "node"
            } else {
                "license"
            }
        ),
        public_key: [0; 32],
    };
    Record::Sealed(Box::new(SealedRecord::seal(record, originator, key)))
}

fn by_gateway(record: Record, dept: &str) -> Record {
    seal(record, SignerRole::Gateway, dept, &node_key(dept))
}

fn issued(dept: &str) -> Record {
    Record::LicenseIssued(LicenseIssuedRecord {
        request_id: "iss".into(),
        time_unix_ms: 1_770_000_000_500,
        caller: caller(dept),
        license_hash: [0x11; 32],
        license_type: "business-license".into(),
        number: "GZ-1".into(),
        department: dept.into(),
        holder_hash: [0x22; 32],
        valid_from: 1_770_000_000,
        valid_until: None,
    })
}

fn revoked(caller_dept: &str) -> Record {
    Record::LicenseStatus(LicenseStatusRecord {
        request_id: "rev".into(),
        time_unix_ms: 1_770_000_000_600,
        caller: caller(caller_dept),
        license_hash: [0x11; 32],
        change: LicenseStatusChange::Revoked,
        reason: "fraud".into(),
    })
}

fn entry(index: u64, records: Vec<Record>) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Append {
            records: records.into(),
        }),
    }
}

/// The forgeries a captured node could try in market-regulation's name.
fn forgeries() -> Vec<Record> {
    let mut altered = by_gateway(exchange(2), MR);
    if let Record::Sealed(s) = &mut altered
        && let Record::Exchange(x) = &mut s.record
    {
        x.decision = Decision::Deny;
    }
    vec![
        // No seal although market-regulation publishes node keys.
        exchange(1),
        // A seal over other contents.
        altered,
        // Housing's gateway key, honestly named.
        by_gateway(exchange(3), HOUSING),
        // Housing's gateway key, claiming to be market-regulation's.
        seal(exchange(4), SignerRole::Gateway, MR, &node_key(HOUSING)),
        // Market-regulation's license key, which does not speak for its gateway.
        seal(exchange(5), SignerRole::LicenseIssuer, MR, &license_key(MR)),
    ]
}

async fn apply(
    sm: &mut StateMachineStore,
    entries: Vec<Entry>,
) -> Result<Vec<Response>, Box<dyn std::error::Error>> {
    Ok(sm.apply(entries).await?)
}

#[tokio::test]
async fn forged_or_unsealed_records_are_refused_on_every_node_and_change_nothing() -> TestResult {
    let mut roots = Vec::new();
    for _node in 0..2 {
        let dir = tempfile::tempdir()?;
        let (_db, mut sm) = open(dir.path()).await?;
        let reader = sm.reader();
        let mut batch = forgeries();
        batch.insert(2, by_gateway(exchange(0), MR));
        let responses = apply(
            &mut sm,
            vec![entry(1, vec![config(directory(true))]), entry(2, batch)],
        )
        .await?;
        // The directory and the one honest record; the five forgeries get no index.
        assert_eq!(reader.tree_size(), 2);
        assert_eq!(responses[1].first_index, 1);
        assert_eq!(
            responses[1].hashes,
            vec![by_gateway(exchange(0), MR).hash()]
        );
        let positions: Vec<u32> = responses[1].refused.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![0, 1, 3, 4, 5]);
        let reasons: Vec<&str> = responses[1]
            .refused
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert!(reasons[0].contains("is not signed"), "{reasons:?}");
        assert!(reasons[1].contains("does not verify"), "{reasons:?}");
        assert!(
            reasons[2].contains("must be signed by a gateway key of market-regulation"),
            "{reasons:?}"
        );
        assert!(
            reasons[3].contains("of market-regulation is not among the gateway keys"),
            "{reasons:?}"
        );
        assert!(
            reasons[4].contains("signed as license-issuer"),
            "{reasons:?}"
        );
        assert_eq!(reader.refused(), 5);
        // Nothing of them is readable either.
        assert!(reader.record(2).await?.is_none());
        assert!(reader.index_of(exchange(1).hash()).await?.is_none());
        roots.push(reader.root_at(2).await?);

        // The keys come from the stored directory: a reopened node refuses the same.
        drop(reader);
        drop(sm);
        drop(_db);
        let (_db, mut sm) = open(dir.path()).await?;
        let responses = apply(&mut sm, vec![entry(3, vec![exchange(9)])]).await?;
        assert_eq!(responses[0].refused.len(), 1);
        assert_eq!(sm.reader().tree_size(), 2);
    }
    // Every node decided the same: the same tree.
    assert_eq!(roots[0], roots[1]);
    Ok(())
}

#[tokio::test]
async fn only_the_issuers_license_key_changes_a_licenses_status() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    let reader = sm.reader();
    let issue = seal(issued(MR), SignerRole::LicenseIssuer, MR, &license_key(MR));
    let responses = apply(
        &mut sm,
        vec![
            entry(1, vec![config(directory(true))]),
            entry(2, vec![issue]),
            // Housing revokes market-regulation's license: with its own key, then with a
            // claim to market-regulation's name, then unsealed in market-regulation's name.
            entry(
                3,
                vec![
                    seal(
                        revoked(HOUSING),
                        SignerRole::LicenseIssuer,
                        HOUSING,
                        &license_key(HOUSING),
                    ),
                    seal(
                        revoked(MR),
                        SignerRole::LicenseIssuer,
                        MR,
                        &license_key(HOUSING),
                    ),
                    revoked(MR),
                ],
            ),
        ],
    )
    .await?;
    assert_eq!(responses[1].refused, vec![]);
    assert_eq!(responses[2].refused.len(), 3, "{:?}", responses[2].refused);
    let view = reader.license([0x11; 32]).await?.ok_or("issued")?;
    assert!(view.changes.is_empty(), "{:?}", view.changes);
    // The issuer's own key revokes it.
    let responses = apply(
        &mut sm,
        vec![entry(
            4,
            vec![seal(
                revoked(MR),
                SignerRole::LicenseIssuer,
                MR,
                &license_key(MR),
            )],
        )],
    )
    .await?;
    assert_eq!(responses[0].refused, vec![]);
    let view = reader.license([0x11; 32]).await?.ok_or("issued")?;
    assert_eq!(view.changes.len(), 1);
    Ok(())
}

#[tokio::test]
async fn without_published_node_keys_old_unsealed_records_still_apply() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    let reader = sm.reader();
    // A log written before seals: no directory, then a directory without node keys.
    let responses = apply(
        &mut sm,
        vec![
            entry(1, vec![exchange(0), issued(MR), revoked(MR)]),
            entry(
                2,
                vec![config(directory(false)), exchange(1), issued(HOUSING)],
            ),
        ],
    )
    .await?;
    assert!(
        responses.iter().all(|r| r.refused.is_empty()),
        "{responses:?}"
    );
    assert_eq!(reader.tree_size(), 6);
    // A seal that does not verify is refused even then.
    let mut bad = by_gateway(exchange(2), MR);
    if let Record::Sealed(s) = &mut bad {
        s.seal.signature[5] ^= 0x40;
    }
    let responses = apply(&mut sm, vec![entry(3, vec![bad])]).await?;
    assert_eq!(responses[0].refused.len(), 1);
    // Once the directory publishes node keys, unsealed records of that department are refused.
    let responses = apply(
        &mut sm,
        vec![entry(
            4,
            vec![
                config(directory(true)),
                exchange(3),
                by_gateway(exchange(4), MR),
            ],
        )],
    )
    .await?;
    let positions: Vec<u32> = responses[0].refused.iter().map(|r| r.position).collect();
    assert_eq!(positions, vec![1]);
    assert_eq!(reader.tree_size(), 8);
    Ok(())
}

fn operator_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// [`directory`] with operators `ops-a` (key 0x51) and `ops-b` (key 0x52), and `housing` only
/// if `with_housing`.
fn directory_with_operators(with_housing: bool) -> String {
    let mut out = directory(false);
    if !with_housing {
        let at = out
            .find("[[department]]\nid = \"housing\"")
            .unwrap_or(out.len());
        out.truncate(at);
    }
    for (id, seed) in [("ops-a", 0x51), ("ops-b", 0x52)] {
        out.push_str(&format!(
            "[[operator]]\nid = \"{id}\"\nkeys = [{{ key_id = \"{id}.sign\", public_key = \"{}\" }}]\n",
            b64(&operator_key(seed))
        ));
    }
    out
}

fn authorized(record: Record, replaces: u64, by: &[(&str, u8)]) -> Record {
    let mut a = qianlian_verifier::record::AuthorizedRecord::new(record, replaces);
    for (id, seed) in by {
        a.sign(id, &format!("{id}.sign"), &operator_key(*seed));
    }
    Record::Authorized(Box::new(a))
}

fn policy(rules: &str) -> Record {
    Record::Config(ConfigRecord {
        request_id: rules.into(),
        time_unix_ms: 1_770_000_000_001,
        caller: caller("ops-a"),
        change: ConfigChange::Policy {
            model: "m".into(),
            rules: rules.into(),
        },
    })
}

/// What a captured leader could put straight into the Raft log once operators are listed:
/// every node refuses it at apply, whatever the gateway in front would have said.
#[tokio::test]
async fn config_changes_without_the_operators_signatures_are_refused_at_apply() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm) = open(dir.path()).await?;
    let reader = sm.reader();
    // Version 1 of the directory, unsigned: the cluster's first, which names the operators.
    let first = apply(
        &mut sm,
        vec![entry(1, vec![config(directory_with_operators(true))])],
    )
    .await?;
    assert!(first[0].refused.is_empty());
    let removes_housing = config(directory_with_operators(false));
    let batch = vec![
        // Unsigned.
        policy("p, a"),
        // Signed by a key no operator lists.
        authorized(policy("p, b"), 0, &[("ops-a", 0x60)]),
        // Signed, but against a version of the directory that is not in force.
        authorized(
            removes_housing.clone(),
            0,
            &[("ops-a", 0x51), ("ops-b", 0x52)],
        ),
        // Removes a department with one operator's signature.
        authorized(removes_housing.clone(), 1, &[("ops-a", 0x51)]),
        // Honest: a policy signed by one operator, replacing none.
        authorized(policy("p, c"), 0, &[("ops-b", 0x52)]),
        // Honest: the removal signed by both.
        authorized(
            removes_housing.clone(),
            1,
            &[("ops-a", 0x51), ("ops-b", 0x52)],
        ),
        // The honest policy replayed: version 1 is in force now.
        authorized(policy("p, c"), 0, &[("ops-b", 0x52)]),
    ];
    let responses = apply(&mut sm, vec![entry(2, batch)]).await?;
    let reasons: Vec<(u32, &str)> = responses[0]
        .refused
        .iter()
        .map(|r| (r.position, r.reason.as_str()))
        .collect();
    let positions: Vec<u32> = reasons.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, vec![0, 1, 2, 3, 6], "{reasons:?}");
    assert!(reasons[0].1.contains("is not signed"), "{reasons:?}");
    assert!(
        reasons[1]
            .1
            .contains("of ops-a is not among the operator keys"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].1.contains("replace version 0, but version 1"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].1.contains("removes department housing"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].1.contains("replace version 0, but version 1"),
        "{reasons:?}"
    );
    assert_eq!(reader.tree_size(), 3);
    let pointers = reader.config_pointers();
    assert_eq!(
        pointers.policy.map(|p| (p.log_index, p.version)),
        Some((1, 1))
    );
    assert_eq!(
        pointers.directory.map(|p| (p.log_index, p.version)),
        Some((2, 2))
    );
    Ok(())
}

/// A batch signature record by `key` over `records` (their log leaves, in order).
fn batch_signature(records: &[Record], key: &SigningKey) -> Record {
    let leaves: Vec<qianlian_verifier::Hash> = records.iter().map(Record::hash).collect();
    Record::BatchSignature(Box::new(
        qianlian_verifier::record::BatchSignatureRecord::sign(
            SignerRole::Gateway,
            key,
            &leaves,
            1_770_000_001_000,
        ),
    ))
}

/// Records sealed as a batch stay as small as unsealed ones and apply on every node with the
/// signature record after them; a signature that does not hold, by a key not listed for one of
/// the records' departments, or reaching over another's group, is refused with nothing of it
/// counted as sealed: its records are judged on their own (unsealed, so refused where their
/// department publishes keys).
#[tokio::test]
async fn a_batch_signature_record_seals_the_records_before_it_or_none() -> TestResult {
    let mut roots = Vec::new();
    for _node in 0..2 {
        let dir = tempfile::tempdir()?;
        let (_db, mut sm) = open(dir.path()).await?;
        let reader = sm.reader();
        let group = vec![exchange(1), exchange(2), exchange(3)];
        let mut good = group.clone();
        good.push(batch_signature(&group, &node_key(MR)));
        let responses = apply(
            &mut sm,
            vec![entry(1, vec![config(directory(true))]), entry(2, good)],
        )
        .await?;
        assert!(
            responses[1].refused.is_empty(),
            "{:?}",
            responses[1].refused
        );
        assert_eq!(
            reader.tree_size(),
            5,
            "the directory, three records, the signature"
        );

        // Housing's key over market-regulation's records; a signature over other records; one
        // covering more records than the entry holds before it.
        let group = vec![exchange(4), exchange(5)];
        let mut foreign = group.clone();
        foreign.push(batch_signature(&group, &node_key(HOUSING)));
        let mut altered = vec![exchange(6), exchange(7)];
        altered.push(batch_signature(&[exchange(6), exchange(8)], &node_key(MR)));
        let mut reaching = vec![exchange(9)];
        reaching.push(batch_signature(&[exchange(0), exchange(9)], &node_key(MR)));
        let responses = apply(
            &mut sm,
            vec![entry(3, foreign), entry(4, altered), entry(5, reaching)],
        )
        .await?;
        for (r, expected) in responses.iter().zip([
            "not among the gateway keys",
            "does not verify",
            "may not be covered",
        ]) {
            assert!(r.hashes.is_empty(), "{r:?}");
            assert!(
                r.refused.iter().any(|x| x.reason.contains(expected)),
                "{expected}: {:?}",
                r.refused
            );
            assert!(
                r.refused
                    .iter()
                    .filter(|x| x.reason.contains("is not signed"))
                    .count()
                    == r.refused.len() - 1,
                "the records are refused as unsealed: {:?}",
                r.refused
            );
        }
        assert_eq!(reader.tree_size(), 5, "nothing of them appended");
        roots.push(reader.root_at(5).await?);
    }
    assert_eq!(roots[0], roots[1]);
    Ok(())
}

/// The directory of [`directory`] (sealed) in which market-regulation owns
/// enterprise-registration and housing owns construction-permit.
fn directory_with_datasets() -> String {
    directory(true)
        .split("[[department]]")
        .filter(|d| !d.is_empty())
        .map(|d| {
            let dataset = if d.contains(&format!("id = \"{MR}\"")) {
                "enterprise-registration"
            } else {
                "construction-permit"
            };
            format!("[[department]]{d}[[department.dataset]]\nid = \"{dataset}\"\n")
        })
        .collect()
}

/// Version `version` of `dataset`'s catalog entry, as `dept` publishes it.
fn catalog(dept: &str, dataset: &str, version: u64) -> Record {
    use qianlian_verifier::record::{
        CatalogEntry, CatalogField, FieldClass, GovernanceRecord, GovernanceStep, SharingClass,
        UpdateFrequency,
    };
    Record::Governance(GovernanceRecord {
        time_unix_ms: 1_770_000_002_000 + version,
        department: dept.into(),
        step: GovernanceStep::Catalog(CatalogEntry {
            dataset: dataset.into(),
            version,
            title_zh: "企业登记信息".into(),
            title_en: "Enterprise registration".into(),
            description: format!("version {version}"),
            fields: vec![CatalogField {
                name: "name".into(),
                class: FieldClass::Public,
                shareable: true,
            }],
            sharing: SharingClass::Unconditional,
            purposes: vec!["permit-review".into()],
            update_frequency: UpdateFrequency::Daily,
            legal_basis: "《政务信息资源共享管理暂行办法》".into(),
        }),
    })
}

/// `records` and a batch signature over them by `key`.
fn signed(records: Vec<Record>, key: &SigningKey) -> Vec<Record> {
    let signature = batch_signature(&records, key);
    records.into_iter().chain([signature]).collect()
}

/// A catalog entry applies only under its department's batch signature, for a dataset the
/// directory lists under that department, as the next version of the entry; a step that fails
/// takes only its own group with it, never another caller's records in the same entry; the
/// catalog in force survives a restart.
#[tokio::test]
async fn catalog_entries_apply_only_from_the_datasets_owner_in_version_order() -> TestResult {
    let er = "enterprise-registration";
    let dir = tempfile::tempdir()?;
    {
        let (_db, mut sm) = open(dir.path()).await?;
        let reader = sm.reader();
        let first = signed(vec![catalog(MR, er, 1)], &node_key(MR));
        let others = signed(vec![exchange(1), exchange(2)], &node_key(MR));
        let responses = apply(
            &mut sm,
            vec![
                entry(1, vec![config(directory_with_datasets())]),
                entry(2, first.into_iter().chain(others).collect()),
            ],
        )
        .await?;
        assert!(responses[1].refused.is_empty(), "{:?}", responses[1]);
        assert_eq!(reader.tree_size(), 6);
        assert_eq!(reader.governance().catalog_version(er), 1);

        let attempts = [
            // Housing's gateway, honestly named, over market-regulation's dataset.
            (
                signed(vec![catalog(HOUSING, er, 2)], &node_key(HOUSING)),
                "does not own dataset",
            ),
            // Market-regulation's key speaking for housing.
            (
                signed(vec![catalog(HOUSING, er, 2)], &node_key(MR)),
                "not among the gateway keys",
            ),
            // A replay of version 1.
            (
                signed(vec![catalog(MR, er, 1)], &node_key(MR)),
                "does not follow version 1",
            ),
            // No signature at all.
            (vec![catalog(MR, er, 2)], "only under a batch signature"),
            // A dataset nobody owns.
            (
                signed(vec![catalog(MR, "no-such-dataset", 1)], &node_key(MR)),
                "does not list it",
            ),
        ];
        for (records, expected) in attempts {
            let bystanders = signed(vec![exchange(3)], &node_key(MR));
            let responses = apply(
                &mut sm,
                vec![entry(3, records.into_iter().chain(bystanders).collect())],
            )
            .await?;
            let r = &responses[0];
            assert!(
                r.refused.iter().any(|x| x.reason.contains(expected)),
                "{expected}: {:?}",
                r.refused
            );
            assert_eq!(
                r.hashes.len(),
                2,
                "the other group (a record and its signature) still applies: {r:?}"
            );
        }
        assert_eq!(reader.governance().catalog_version(er), 1);
        assert_eq!(reader.tree_size(), 6 + 5 * 2);

        let second = signed(vec![catalog(MR, er, 2)], &node_key(MR));
        let responses = apply(&mut sm, vec![entry(4, second)]).await?;
        assert!(responses[0].refused.is_empty(), "{:?}", responses[0]);
        let catalog_in_force = reader.catalog().await?;
        assert_eq!(catalog_in_force.len(), 1);
        assert_eq!(catalog_in_force[0].0, 6 + 5 * 2, "the entry's log index");
    }
    let (_db, sm) = open(dir.path()).await?;
    assert_eq!(
        sm.reader().governance().catalog_version(er),
        2,
        "the catalog in force is stored with the applied state"
    );
    Ok(())
}

/// A dataset the directory lists under two departments has no owner, and the directory's keys
/// stay in force (a directory never switches the origin check off).
#[test]
fn a_dataset_listed_twice_has_no_owner_and_the_keys_stay() -> TestResult {
    let twice = directory_with_datasets().replace("construction-permit", "enterprise-registration");
    let keys = super::keys_from_directory(&twice)?;
    assert_eq!(keys.owner_of("enterprise-registration"), None);
    assert!(keys.is_sealed(MR) && keys.is_sealed(HOUSING));
    let once = super::keys_from_directory(&directory_with_datasets())?;
    assert_eq!(once.owner_of("enterprise-registration"), Some(MR));
    assert_eq!(once.owner_of("construction-permit"), Some(HOUSING));
    Ok(())
}
