//! Offline verification: one [`Verdict`] from a license, its evidence and a trust bundle.
//!
//! The checks run from "is this an authentic document" to "does it hold today", and the first
//! that fails names the verdict, so it reports the most serious finding (a revoked license that
//! has also expired says revoked; a forgery that has expired says not on record):
//!
//! 1. parse: a canonical COSE_Sign1 with valid claims, else **Tampered**;
//! 2. issuer known: the `kid` is a department key in the bundle, else **UnknownIssuer**;
//! 3. signature: it verifies with that key, else **Tampered**;
//! 4. authorised: the key's department is the one the claims name and may issue this type, else
//!    **IssuerNotAuthorised**;
//! 5. on record: the evidence's record names the license, its leaf is included in a checkpoint
//!    signed by k of the bundle's n node keys, else **NotOnRecord**;
//! 6. status: listed in the bundle's status list, **Revoked** or **Suspended**;
//! 7. dates: before `valid_from` **NotYetValid**, from `valid_until` on **Expired**;
//! 8. otherwise **Genuine**.
//!
//! Freshness: both ages count from the bundle's status list time. The bundle's checkpoint is
//! bound to that list (same tree size and root), so they are equally old; checkpoints carry no
//! time of their own (C2SP keeps them minimal). A verifier with an old bundle still says
//! Genuine for a license revoked since, but with an age that says how far back it can see.

use serde_json::json;

use super::claims::{LicenseClaims, rfc3339};
use super::cose::{UnverifiedLicense, license_hash, open_license};
use super::evidence::LicenseEvidence;
use super::qr::from_qr_payload;
use super::status::{LicenseState, StatusList};
use super::trust::{DepartmentEntry, TrustBundle};
use crate::hash::{Hash, leaf_hash};
use crate::proof::verify_inclusion;

/// Tells whether a log record's canonical bytes record the issuance of a license. The log's
/// owner (raft-store) supplies it, so this crate needs no record types. It must answer `true`
/// only for an issuance record of exactly that license hash, not for any record that mentions
/// it (a revocation names the hash too).
pub trait RecordCheck {
    /// Whether `record` records the issuance of the license whose hash is `license_hash`.
    fn names_license(&self, record: &[u8], license_hash: &Hash) -> bool;
}

impl<F: Fn(&[u8], &Hash) -> bool> RecordCheck for F {
    fn names_license(&self, record: &[u8], license_hash: &Hash) -> bool {
        self(record, license_hash)
    }
}

/// The one answer about a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictStatus {
    /// Authentic, authorised, on the record, in good standing and within its validity.
    Genuine,
    /// Malformed, or the signature does not verify: not the document its issuer signed.
    Tampered,
    /// Signed with a key the trust bundle does not know.
    UnknownIssuer,
    /// Signed by a known department that may not issue this type, or in another department's
    /// name.
    IssuerNotAuthorised,
    /// No valid evidence that the issuance is in the log.
    NotOnRecord,
    /// Suspended by its issuer.
    Suspended,
    /// Revoked by its issuer.
    Revoked,
    /// Past its validity.
    Expired,
    /// Before its validity.
    NotYetValid,
}

impl VerdictStatus {
    /// The stable lowercase name used in JSON and by the CLI: `genuine`, `tampered`,
    /// `unknown-issuer`, `issuer-not-authorised`, `not-on-record`, `suspended`, `revoked`,
    /// `expired`, `not-yet-valid`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Genuine => "genuine",
            VerdictStatus::Tampered => "tampered",
            VerdictStatus::UnknownIssuer => "unknown-issuer",
            VerdictStatus::IssuerNotAuthorised => "issuer-not-authorised",
            VerdictStatus::NotOnRecord => "not-on-record",
            VerdictStatus::Suspended => "suspended",
            VerdictStatus::Revoked => "revoked",
            VerdictStatus::Expired => "expired",
            VerdictStatus::NotYetValid => "not-yet-valid",
        }
    }
}

/// The verdict on a license, with why and how fresh the knowledge behind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The answer.
    pub status: VerdictStatus,
    /// Why, in a sentence for people.
    pub reason: String,
    /// The license's hash; `None` only when a QR payload did not even decode to bytes.
    pub license_hash: Option<Hash>,
    /// The claims, once the signature verified with a trusted key (never unverified claims).
    pub claims: Option<LicenseClaims>,
    /// Age of the bundle's checkpoint, in seconds at `now_unix` (negative if the clock is behind
    /// the cluster's).
    pub checkpoint_age_seconds: i64,
    /// Age of the bundle's status list, in seconds at `now_unix`.
    pub status_list_age_seconds: i64,
}

impl Verdict {
    /// Whether the license is [`VerdictStatus::Genuine`].
    pub fn is_genuine(&self) -> bool {
        self.status == VerdictStatus::Genuine
    }

    /// The JSON form: `status`, `reason`, `license_hash` (hex or null), `claims` (the claims'
    /// JSON view or null) and both ages.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "status": self.status.as_str(),
            "reason": self.reason,
            "license_hash": self.license_hash.map(hex::encode),
            "claims": self.claims.as_ref().map(LicenseClaims::to_json),
            "checkpoint_age_seconds": self.checkpoint_age_seconds,
            "status_list_age_seconds": self.status_list_age_seconds,
        })
    }
}

/// Verifies a license offline against `bundle` at time `now_unix` (Unix seconds), in the order
/// the module documentation gives. `evidence` is the holder's proof that the issuance is logged;
/// without it the verdict is at best [`VerdictStatus::NotOnRecord`]. `records` reads log records
/// (see [`RecordCheck`]).
pub fn verify_offline(
    license: &[u8],
    evidence: Option<&LicenseEvidence>,
    bundle: &TrustBundle,
    now_unix: i64,
    records: &dyn RecordCheck,
) -> Verdict {
    let age = now_unix.saturating_sub(bundle.as_of());
    let hash = license_hash(license);
    let verdict = |status, reason: String, claims: Option<&LicenseClaims>| Verdict {
        status,
        reason,
        license_hash: Some(hash),
        claims: claims.cloned(),
        checkpoint_age_seconds: age,
        status_list_age_seconds: age,
    };

    let signed = match authenticate(license, bundle) {
        Ok(signed) => signed,
        Err((status, reason)) => return verdict(status, reason, None),
    };
    let claims = &signed.claims;
    if let Err(reason) = authorised(&signed) {
        return verdict(VerdictStatus::IssuerNotAuthorised, reason, Some(claims));
    }
    let on_record = match on_record(&hash, evidence, bundle, records) {
        Ok(on_record) => on_record,
        Err(reason) => return verdict(VerdictStatus::NotOnRecord, reason, Some(claims)),
    };
    let status = &bundle.status_list().list;
    let as_of = format!(
        "the status list as of {} ({age} s ago)",
        rfc3339(status.time).unwrap_or_else(|| status.time.to_string())
    );
    if let Some((state, reason)) = standing(status, &hash, &as_of) {
        return verdict(state, reason, Some(claims));
    }
    if let Some((state, reason)) = validity(claims, now_unix) {
        return verdict(state, reason, Some(claims));
    }
    let caveat = if on_record.log_index >= status.tree_size {
        format!(
            "; that list reflects the log up to size {}, before this license's record {}, so a later suspension or revocation would not show",
            status.tree_size, on_record.log_index
        )
    } else {
        String::new()
    };
    let department = signed.department;
    verdict(
        VerdictStatus::Genuine,
        format!(
            "signed by {} ({}) with key {:?}, on the record at index {} of a tree of {} cosigned by {}, and neither suspended nor revoked per {as_of}{caveat}",
            department.name,
            department.id,
            signed.license.key_id(),
            on_record.log_index,
            on_record.tree_size,
            on_record.signers.join(", ")
        ),
        Some(claims),
    )
}

/// [`verify_offline`] for a QR payload: a payload that does not decode is
/// [`VerdictStatus::Tampered`], with no license hash.
pub fn verify_qr_offline(
    payload: &str,
    evidence: Option<&LicenseEvidence>,
    bundle: &TrustBundle,
    now_unix: i64,
    records: &dyn RecordCheck,
) -> Verdict {
    match from_qr_payload(payload) {
        Ok(license) => verify_offline(&license, evidence, bundle, now_unix, records),
        Err(e) => {
            let age = now_unix.saturating_sub(bundle.as_of());
            Verdict {
                status: VerdictStatus::Tampered,
                reason: format!("the QR payload does not decode: {e}"),
                license_hash: None,
                claims: None,
                checkpoint_age_seconds: age,
                status_list_age_seconds: age,
            }
        }
    }
}

/// What step 5 established.
struct OnRecord {
    log_index: u64,
    tree_size: u64,
    signers: Vec<String>,
}

fn on_record(
    hash: &Hash,
    evidence: Option<&LicenseEvidence>,
    bundle: &TrustBundle,
    records: &dyn RecordCheck,
) -> Result<OnRecord, String> {
    let evidence = evidence.ok_or(
        "no log evidence came with the license: ask the holder for the full bundle, or verify online",
    )?;
    let checkpoint = bundle
        .open_checkpoint(&evidence.checkpoint)
        .map_err(|e| format!("the evidence's checkpoint is refused: {e}"))?;
    if evidence.tree_size != checkpoint.checkpoint.size {
        return Err(format!(
            "the evidence's proof is for a tree of size {}, but its checkpoint is of size {}",
            evidence.tree_size, checkpoint.checkpoint.size
        ));
    }
    if !records.names_license(&evidence.record, hash) {
        return Err(
            "the evidence's log record does not record the issuance of this license".to_owned(),
        );
    }
    verify_inclusion(
        &leaf_hash(&evidence.record),
        evidence.log_index,
        evidence.tree_size,
        &evidence.inclusion_proof,
        &checkpoint.checkpoint.root,
    )
    .map_err(|e| format!("the evidence's inclusion proof does not hold: {e}"))?;
    Ok(OnRecord {
        log_index: evidence.log_index,
        tree_size: evidence.tree_size,
        signers: checkpoint.signers,
    })
}

/// A license whose signature verified with a key of the trust bundle.
struct Signed<'b> {
    department: &'b DepartmentEntry,
    /// The license as opened; its key id names the department's key.
    license: UnverifiedLicense,
    /// The claims the signature covers.
    claims: LicenseClaims,
}

/// Steps 1 to 3: the license parses, names a key the bundle knows, and verifies with it.
fn authenticate<'b>(
    license: &[u8],
    bundle: &'b TrustBundle,
) -> Result<Signed<'b>, (VerdictStatus, String)> {
    let unverified = open_license(license).map_err(|e| {
        (
            VerdictStatus::Tampered,
            format!("the license is malformed: {e}"),
        )
    })?;
    let key_id = unverified.key_id();
    let Some((department, key)) = bundle.issuer_key(key_id) else {
        return Err((
            VerdictStatus::UnknownIssuer,
            format!(
                "the license is signed with key {key_id:?}, which the trust bundle does not know (it claims to come from department {:?})",
                unverified.unverified_claims().department
            ),
        ));
    };
    let claims = unverified.verify_signature(key).map_err(|e| {
        (
            VerdictStatus::Tampered,
            format!("{e}: the document was altered after it was signed"),
        )
    })?;
    Ok(Signed {
        department,
        license: unverified,
        claims,
    })
}

/// Step 4: the signing key's department is the one the claims name, and may issue this type.
fn authorised(signed: &Signed<'_>) -> Result<(), String> {
    let (department, claims) = (signed.department, &signed.claims);
    let key_id = signed.license.key_id();
    if claims.department != department.id {
        return Err(format!(
            "key {key_id:?} belongs to {} ({}), which signed a license in the name of department {:?}",
            department.name, department.id, claims.department
        ));
    }
    if !department.may_issue.contains(&claims.license_type) {
        return Err(format!(
            "{} ({}) may not issue {} ({})",
            department.name,
            department.id,
            claims.license_type.name_zh(),
            claims.license_type.slug()
        ));
    }
    Ok(())
}

/// Step 6: revoked or suspended, per the status list (`as_of` names it).
fn standing(status: &StatusList, hash: &Hash, as_of: &str) -> Option<(VerdictStatus, String)> {
    let entry = status.lookup(hash)?;
    let state = match entry.state {
        LicenseState::Revoked => VerdictStatus::Revoked,
        LicenseState::Suspended => VerdictStatus::Suspended,
    };
    Some((
        state,
        format!(
            "{} since {} (reason: {}), per {as_of}",
            entry.state.as_str(),
            rfc3339(entry.since).unwrap_or_else(|| entry.since.to_string()),
            entry.reason
        ),
    ))
}

/// Step 7: not yet valid or expired at `now_unix`.
fn validity(claims: &LicenseClaims, now_unix: i64) -> Option<(VerdictStatus, String)> {
    if now_unix < claims.valid_from {
        return Some((
            VerdictStatus::NotYetValid,
            format!(
                "valid only from {}",
                rfc3339(claims.valid_from).unwrap_or_default()
            ),
        ));
    }
    match claims.valid_until {
        Some(until) if now_unix >= until => Some((
            VerdictStatus::Expired,
            format!("expired at {}", rfc3339(until).unwrap_or_default()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
