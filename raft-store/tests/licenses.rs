//! E-license state on one node: status after each record, the holder index, the signed status
//! list of any tree size, and a restart.

mod support;

use std::path::Path;

use qianlian_raft_store::notary::{
    LicenseCurrentStatus, LicenseView, Notary, NotaryConfig, NotaryError,
};
use qianlian_raft_store::record::{LicenseStatusChange, Record};
use qianlian_verifier::NoteSigner;
use qianlian_verifier::license::{LicenseState, open_status_list};
use support::{issued, record, status, unix};

use LicenseStatusChange::{Reinstated, Revoked, Suspended};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const LICENSE: [u8; 32] = [0x11; 32];
const OTHER: [u8; 32] = [0x05; 32];
const UNKNOWN: [u8; 32] = [0x77; 32];
const HOLDER: [u8; 32] = [0x22; 32];
const OTHER_HOLDER: [u8; 32] = [0x33; 32];

fn key() -> NoteSigner {
    match NoteSigner::from_seed("node-1", &[1; 32]) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

async fn open(dir: &Path) -> Result<Notary, NotaryError> {
    let mut config = NotaryConfig::new(1, dir, "http://127.0.0.1:7400");
    config.bootstrap_single = true;
    config.signer = Some(key());
    Notary::open(config).await
}

async fn view(
    notary: &Notary,
    license: &[u8; 32],
) -> Result<LicenseView, Box<dyn std::error::Error>> {
    Ok(notary
        .license(license)
        .await?
        .ok_or_else(|| format!("license {} unknown", hex::encode(license)))?)
}

/// Append `record`; its log index.
async fn append(notary: &Notary, record: Record) -> Result<u64, NotaryError> {
    Ok(notary.append(record).await?.log_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_suspension_reinstatement_and_revocation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open(dir.path()).await?;
    append(&notary, record(0)).await?;
    assert_eq!(notary.license(&LICENSE).await?, None);

    let at_issue = append(&notary, issued(10, LICENSE, HOLDER)).await?;
    let got = view(&notary, &LICENSE).await?;
    assert_eq!(got.issued_index, at_issue);
    assert_eq!(
        Record::LicenseIssued(got.issued),
        issued(10, LICENSE, HOLDER)
    );
    assert_eq!(got.status, LicenseCurrentStatus::Valid);
    assert!(got.changes.is_empty());

    let at_suspend = append(&notary, status(20, LICENSE, Suspended, "court-order")).await?;
    let suspended = LicenseCurrentStatus::Suspended {
        index: at_suspend,
        since_unix: unix(20),
        reason: "court-order".into(),
    };
    assert_eq!(view(&notary, &LICENSE).await?.status, suspended);
    // Suspended again: still suspended since the first.
    append(&notary, status(25, LICENSE, Suspended, "audit")).await?;
    assert_eq!(view(&notary, &LICENSE).await?.status, suspended);

    append(&notary, status(30, LICENSE, Reinstated, "court-ruling")).await?;
    assert_eq!(
        view(&notary, &LICENSE).await?.status,
        LicenseCurrentStatus::Valid
    );

    let at_revoke = append(&notary, status(40, LICENSE, Revoked, "fraud")).await?;
    let revoked = LicenseCurrentStatus::Revoked {
        index: at_revoke,
        since_unix: unix(40),
        reason: "fraud".into(),
    };
    assert_eq!(view(&notary, &LICENSE).await?.status, revoked);
    // Revocation is final.
    let at_late = append(&notary, status(50, LICENSE, Reinstated, "mistake")).await?;
    append(&notary, status(55, LICENSE, Suspended, "audit")).await?;
    let got = view(&notary, &LICENSE).await?;
    assert_eq!(got.status, revoked);
    // Every status record is listed, also those that changed nothing.
    let indices: Vec<u64> = got.changes.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (at_suspend..=at_late + 1).collect::<Vec<_>>());
    assert_eq!(
        Record::LicenseStatus(got.changes[0].1.clone()),
        status(20, LICENSE, Suspended, "court-order")
    );
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_licenses_repeats_and_the_holder_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open(dir.path()).await?;
    // A change of a license nobody issued: in the log, not in the state.
    let early = append(&notary, status(1, UNKNOWN, Revoked, "fraud")).await?;
    assert_eq!(
        notary.entry(early).await?.map(|(_, h)| h),
        Some(status(1, UNKNOWN, Revoked, "fraud").hash())
    );
    assert_eq!(notary.license(&UNKNOWN).await?, None);
    // Issued after that change: valid, the earlier change does not count.
    let receipts = notary
        .append_batch(vec![
            issued(2, UNKNOWN, OTHER_HOLDER),
            issued(3, LICENSE, HOLDER),
            record(4),
            issued(5, OTHER, OTHER_HOLDER),
            // The same license again (a retry, or a forgery naming another holder).
            issued(6, LICENSE, OTHER_HOLDER),
            status(7, LICENSE, Suspended, "audit"),
            status(8, OTHER, Revoked, "holder-request"),
        ])
        .await?;
    let at: Vec<u64> = receipts.iter().map(|r| r.log_index).collect();
    let got = view(&notary, &UNKNOWN).await?;
    assert_eq!(
        (got.issued_index, got.status, got.changes.len()),
        (at[0], LicenseCurrentStatus::Valid, 0)
    );
    // The first issuance wins.
    let got = view(&notary, &LICENSE).await?;
    assert_eq!(got.issued_index, at[1]);
    assert_eq!(got.issued.holder_hash, HOLDER);
    assert!(matches!(got.status, LicenseCurrentStatus::Suspended { index, .. } if index == at[5]));

    // Issuance and status records of the holder's licenses, ascending; the repeated issuance
    // is listed under the holder it names.
    assert_eq!(notary.holder_records(&HOLDER).await?, [at[1], at[5]]);
    assert_eq!(
        notary.holder_records(&OTHER_HOLDER).await?,
        [at[0], at[3], at[4], at[6]]
    );
    assert!(notary.holder_records(&[0x99; 32]).await?.is_empty());

    // A reason that is not a reason code never enters the log.
    let before = notary.tree_size();
    let refused = notary.append(status(9, LICENSE, Revoked, "Fraud!")).await;
    assert!(
        matches!(refused, Err(NotaryError::InvalidRecord(_))),
        "{refused:?}"
    );
    assert_eq!(notary.tree_size(), before);

    // The state survives a restart, which checks it against the records.
    notary.shutdown().await?;
    let notary = open(dir.path()).await?;
    assert_eq!(view(&notary, &LICENSE).await?.issued_index, at[1]);
    assert_eq!(notary.holder_records(&HOLDER).await?, [at[1], at[5]]);
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_list_of_an_older_size_leaves_later_changes_out() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = open(dir.path()).await?;
    let trusted = [key().verifier()];
    notary
        .append_batch(vec![
            issued(1, LICENSE, HOLDER),
            issued(2, OTHER, HOLDER),
            status(3, LICENSE, Suspended, "court-order"),
            status(4, OTHER, Revoked, "fraud"),
        ])
        .await?;
    let old_size = notary.tree_size();
    notary
        .append_batch(vec![
            status(5, LICENSE, Reinstated, "court-ruling"),
            status(6, LICENSE, Revoked, "fraud"),
            record(7),
        ])
        .await?;

    // The latest: as of this node's checkpoint, which covers everything applied.
    let latest = notary.status_list().await?;
    assert_eq!(latest.tree_size, notary.checkpoint().await?.size);
    assert_eq!(latest.tree_size, 7);
    assert_eq!(latest.signers, ["node-1"]);
    let opened = open_status_list(&latest.note, &trusted)?
        .require_origin("gov.example/qianlian")?
        .require_signers(1)?;
    let list = opened.list;
    assert_eq!(list.tree_size, 7);
    assert_eq!(list.root, notary.root_at(7).await?);
    // The time of the last record below the size: record(7) was written at its own time.
    assert_eq!(list.time, (1_764_000_000_000u64 + 7) as i64 / 1000);
    let states: Vec<_> = list
        .entries
        .iter()
        .map(|e| (e.license_hash, e.state, e.since, e.reason.as_str()))
        .collect();
    // Sorted by hash: OTHER (0x05…) before LICENSE (0x11…).
    assert_eq!(
        states,
        [
            (OTHER, LicenseState::Revoked, unix(4), "fraud"),
            (LICENSE, LicenseState::Revoked, unix(6), "fraud"),
        ]
    );

    // As of the older size: the reinstatement and the revocation came later.
    let older = notary.status_list_at(old_size).await?;
    assert_eq!(older.tree_size, old_size);
    let list = open_status_list(&older.note, &trusted)?.list;
    assert_eq!((list.tree_size, list.time), (old_size, unix(4)));
    assert_eq!(list.root, notary.root_at(old_size).await?);
    let states: Vec<_> = list
        .entries
        .iter()
        .map(|e| (e.license_hash, e.state, e.since))
        .collect();
    assert_eq!(
        states,
        [
            (OTHER, LicenseState::Revoked, unix(4)),
            (LICENSE, LicenseState::Suspended, unix(3)),
        ]
    );
    // Before any license: an empty list; the empty tree has time 0.
    let empty = open_status_list(&notary.status_list_at(1).await?.note, &trusted)?.list;
    assert!(empty.entries.is_empty());
    assert_eq!(empty.time, unix(1));
    let none = open_status_list(&notary.status_list_at(0).await?.note, &trusted)?.list;
    assert_eq!((none.tree_size, none.time), (0, 0));

    let beyond = notary.status_list_at(8).await;
    assert!(matches!(beyond, Err(NotaryError::Range(_))), "{beyond:?}");
    notary.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_without_a_key_signs_no_status_list() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notary = support::open_single(dir.path()).await?;
    notary.append(issued(1, LICENSE, HOLDER)).await?;
    assert!(notary.license(&LICENSE).await?.is_some());
    let res = notary.status_list().await;
    assert!(matches!(res, Err(NotaryError::NoCheckpoint(_))), "{res:?}");
    notary.shutdown().await?;
    Ok(())
}
