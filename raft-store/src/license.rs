//! E-license state as the notarization log defines it: pure rules and the views the notary
//! answers with. Storage of the state lives in `state_machine::licenses`.
//!
//! Rules, applied in log order on every node alike:
//! - a license exists from its first `LicenseIssued` record; a later issuance record of the same
//!   license hash stays in the log (and in its holder's index) but changes nothing;
//! - a status record of a license that does not exist (yet) at its log index stays in the log and
//!   is ignored by the state;
//! - `Revoked` is final; `Suspended` lasts until a later `Reinstated`; a second suspension of a
//!   suspended license keeps the first one's index, time and reason; `Reinstated` of a valid or
//!   revoked license changes nothing.

use qianlian_verifier::license::{LicenseState, StatusEntry};

use crate::record::{LicenseIssuedRecord, LicenseStatusChange, LicenseStatusRecord};

/// A license's status as of the state applied on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseCurrentStatus {
    /// Issued and neither suspended nor revoked.
    Valid,
    /// Suspended by the record at log index `index`, written at `since_unix` (seconds).
    Suspended {
        index: u64,
        since_unix: i64,
        reason: String,
    },
    /// Revoked, for good, by the record at log index `index`, written at `since_unix` (seconds).
    Revoked {
        index: u64,
        since_unix: i64,
        reason: String,
    },
}

impl LicenseCurrentStatus {
    /// The status after the status record `change` at log index `index`, written at
    /// `time_unix_ms`, with `reason` (see the module's rules).
    pub fn then(
        self,
        index: u64,
        change: LicenseStatusChange,
        time_unix_ms: u64,
        reason: &str,
    ) -> LicenseCurrentStatus {
        let since_unix = unix_seconds(time_unix_ms);
        match (self, change) {
            (revoked @ LicenseCurrentStatus::Revoked { .. }, _) => revoked,
            (_, LicenseStatusChange::Revoked) => LicenseCurrentStatus::Revoked {
                index,
                since_unix,
                reason: reason.to_owned(),
            },
            (LicenseCurrentStatus::Valid, LicenseStatusChange::Suspended) => {
                LicenseCurrentStatus::Suspended {
                    index,
                    since_unix,
                    reason: reason.to_owned(),
                }
            }
            (
                suspended @ LicenseCurrentStatus::Suspended { .. },
                LicenseStatusChange::Suspended,
            ) => suspended,
            (_, LicenseStatusChange::Reinstated) => LicenseCurrentStatus::Valid,
        }
    }

    /// The status list's entry for this status: none for a valid license. A reason that is not
    /// a reason code (only possible for a record that entered the log without
    /// [`crate::record::Record::check`]) is listed as `unspecified`, the same on every node, so
    /// one bad record cannot stop the cluster from signing status lists.
    pub fn status_entry(&self, license_hash: qianlian_verifier::Hash) -> Option<StatusEntry> {
        let (state, since, reason) = match self {
            LicenseCurrentStatus::Valid => return None,
            LicenseCurrentStatus::Suspended {
                since_unix, reason, ..
            } => (LicenseState::Suspended, *since_unix, reason),
            LicenseCurrentStatus::Revoked {
                since_unix, reason, ..
            } => (LicenseState::Revoked, *since_unix, reason),
        };
        let reason = if crate::record::is_reason_code(reason) {
            reason.clone()
        } else {
            UNSPECIFIED_REASON.to_owned()
        };
        Some(StatusEntry {
            license_hash,
            state,
            since,
            reason,
        })
    }
}

/// The reason listed for a status record whose reason is not a reason code.
pub const UNSPECIFIED_REASON: &str = "unspecified";

/// Whole seconds of a record time in milliseconds. Cannot overflow: `u64::MAX / 1000` is below
/// `i64::MAX`.
pub fn unix_seconds(time_unix_ms: u64) -> i64 {
    i64::try_from(time_unix_ms / 1000).unwrap_or(i64::MAX)
}

/// One license as the log knows it on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseView {
    /// Log index of the license's (first) issuance record.
    pub issued_index: u64,
    /// That issuance record.
    pub issued: LicenseIssuedRecord,
    /// The status after every status record applied on this node.
    pub status: LicenseCurrentStatus,
    /// Every status record of the license after its issuance, in log order, with its log index,
    /// including those that changed nothing (a reinstatement of a revoked license).
    pub changes: Vec<(u64, LicenseStatusRecord)>,
}

/// The status list of one tree size, signed by this node and cosigned by the members that
/// computed the same body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignedStatusList {
    /// The signed note: the status list body (`qianlian_verifier::license::StatusList`), a
    /// blank line, one signature line per signer (this node's first). Open it with
    /// `qianlian_verifier::license::open_status_list`.
    pub note: String,
    /// The tree size whose state the list reflects.
    pub tree_size: u64,
    /// Key names of the signers, in note order (this node's first).
    pub signers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use LicenseStatusChange::{Reinstated, Revoked, Suspended};

    fn fold(changes: &[(u64, LicenseStatusChange)]) -> LicenseCurrentStatus {
        changes
            .iter()
            .fold(LicenseCurrentStatus::Valid, |status, (index, change)| {
                status.then(*index, *change, index * 1000 + 999, "r")
            })
    }

    fn suspended(index: u64) -> LicenseCurrentStatus {
        LicenseCurrentStatus::Suspended {
            index,
            since_unix: index as i64,
            reason: "r".into(),
        }
    }

    fn revoked(index: u64) -> LicenseCurrentStatus {
        LicenseCurrentStatus::Revoked {
            index,
            since_unix: index as i64,
            reason: "r".into(),
        }
    }

    #[test]
    fn revocation_is_final_and_suspension_lasts_until_reinstated() {
        assert_eq!(fold(&[]), LicenseCurrentStatus::Valid);
        assert_eq!(fold(&[(1, Suspended)]), suspended(1));
        assert_eq!(fold(&[(1, Suspended), (2, Suspended)]), suspended(1));
        assert_eq!(
            fold(&[(1, Suspended), (2, Reinstated)]),
            LicenseCurrentStatus::Valid
        );
        assert_eq!(
            fold(&[(1, Reinstated), (2, Reinstated)]),
            LicenseCurrentStatus::Valid
        );
        assert_eq!(fold(&[(1, Suspended), (2, Revoked)]), revoked(2));
        assert_eq!(
            fold(&[(1, Revoked), (2, Reinstated), (3, Suspended), (4, Revoked)]),
            revoked(1)
        );
        assert_eq!(
            fold(&[(1, Suspended), (2, Reinstated), (3, Suspended)]),
            suspended(3)
        );
    }

    #[test]
    fn status_entries_list_only_licenses_not_in_good_standing() {
        assert_eq!(LicenseCurrentStatus::Valid.status_entry([1; 32]), None);
        let entry = revoked(4).status_entry([1; 32]);
        assert_eq!(
            entry.map(|e| (e.state, e.since, e.reason)),
            Some((LicenseState::Revoked, 4, "r".into()))
        );
        let odd = LicenseCurrentStatus::Suspended {
            index: 1,
            since_unix: 1,
            reason: "Not A Code".into(),
        };
        assert_eq!(
            odd.status_entry([1; 32]).map(|e| e.reason),
            Some(UNSPECIFIED_REASON.into())
        );
        assert_eq!(unix_seconds(1_999), 1);
        assert_eq!(unix_seconds(u64::MAX), (u64::MAX / 1000) as i64);
    }
}
