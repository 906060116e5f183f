//! Shared helpers for the notary tests: sample records and node start-up.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use qianlian_raft_store::notary::{Notary, NotaryConfig, NotaryError};
use qianlian_raft_store::record::{
    AccessRecord, Action, Caller, Decision, LicenseIssuedRecord, LicenseStatusChange,
    LicenseStatusRecord, Record,
};
use qianlian_verifier::Hash;

/// A distinct, valid access record per `i`.
pub fn record(i: u64) -> Record {
    Record::Access(AccessRecord {
        request_id: format!("00000000-0000-4000-8000-{i:012}"),
        time_unix_ms: 1_764_000_000_000 + i,
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
        decision: if i.is_multiple_of(7) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policy_version: "1".into(),
        rule: "p, housing, market-regulation, enterprise-registration, read, permit-review".into(),
        request_digest: [(i % 251) as u8; 32],
        response_digest: Some([9; 32]),
    })
}

/// Bounded wait for test steps.
pub const STEP: Duration = Duration::from_secs(15);

/// A single-node notary in `dir`, bootstrapped if new.
pub async fn open_single(dir: &Path) -> Result<Notary, NotaryError> {
    let mut config = NotaryConfig::new(1, dir, "http://127.0.0.1:7400");
    config.bootstrap_single = true;
    Notary::open(config).await
}

/// The issuance of license `license` to holder `holder`, written at second `second` after a
/// fixed epoch.
pub fn issued(second: u64, license: Hash, holder: Hash) -> Record {
    Record::LicenseIssued(LicenseIssuedRecord {
        request_id: format!("00000000-0000-4000-9000-{second:012}"),
        time_unix_ms: 1_764_000_000_000 + second * 1000,
        caller: market_regulation(),
        license_hash: license,
        license_type: "business-license".into(),
        number: format!("GZ-2026-{second:06}"),
        department: "market-regulation".into(),
        holder_hash: holder,
        valid_from: 1_764_000_000,
        valid_until: Some(1_925_000_000),
    })
}

/// A status change of license `license`, written at second `second` after a fixed epoch.
pub fn status(second: u64, license: Hash, change: LicenseStatusChange, reason: &str) -> Record {
    Record::LicenseStatus(LicenseStatusRecord {
        request_id: format!("00000000-0000-4000-a000-{second:012}"),
        time_unix_ms: 1_764_000_000_000 + second * 1000,
        caller: market_regulation(),
        license_hash: license,
        change,
        reason: reason.into(),
    })
}

/// Unix seconds of a record made by [`issued`] or [`status`] at `second`.
pub fn unix(second: u64) -> i64 {
    1_764_000_000 + second as i64
}

fn market_regulation() -> Caller {
    Caller {
        department: "market-regulation".into(),
        role: "department".into(),
        cert_fingerprint: "cd".repeat(32),
    }
}
