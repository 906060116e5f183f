//! Audit queries over the notarization log: which access records match a set of filters in a
//! time range, page by page, without scanning the log.
//!
//! The state machine keeps a secondary index of every access record (`Record::Exchange` and
//! `Record::Access`) in the `audit` column family (layout in [`crate::db`]): one posting list
//! per field value, each sorted by `(time_unix_ms, log_index)`, cut into time buckets and
//! written in chunks, one per apply that touched the bucket (so a busy list costs one write per
//! apply, not one per record). A query walks one posting list per filter (the list of every
//! access record when there is none), restricted to the time range by seek bounds, reading one
//! bucket at a time, and intersects them with a leapfrog join on the `(time, index)` positions,
//! so its cost follows the smallest lists, not the log. Posting lists are keyed by a
//! 16-byte digest of the value, so every candidate's record is read and checked again with
//! [`AuditFilter::matches`] before it is returned: a digest collision costs a read, never a
//! wrong answer.
//!
//! Field values as indexed (the digest is of the field tag byte followed by these bytes):
//! - consumer: `caller.department`; provider: `owner`; key: the record key exactly; purpose;
//! - dataset: `<owner>/<dataset>`. The string is ambiguous when a name contains `/`; the
//!   exact check on the decoded record tells such datasets apart;
//! - action (`read`, `write`, `query`), decision (`allow`, `deny`), side (`provider`,
//!   `consumer`; exchange records only);
//! - policy version: decimal for exchange records, the stored string as is for legacy access
//!   records;
//! - subject: each subject hash's 32 bytes (exchange records only);
//! - config: the kind's tag byte ([`ConfigKind::tag`]), for every config record, so the history
//!   of each kind of configuration can be listed.

use std::fmt;

use qianlian_verifier::Hash;
use sha2::{Digest, Sha256};

use crate::record::{Action, ConfigKind, Decision, Record, Side, SubjectHash};

/// Field tags of the audit index: the byte after the generation in every key.
pub(crate) mod field {
    /// Every access record (the time index); the value is empty.
    pub const ALL: u8 = 0;
    pub const CONSUMER: u8 = 1;
    pub const PROVIDER: u8 = 2;
    pub const DATASET: u8 = 3;
    pub const KEY: u8 = 4;
    pub const ACTION: u8 = 5;
    pub const DECISION: u8 = 6;
    pub const PURPOSE: u8 = 7;
    pub const POLICY_VERSION: u8 = 8;
    pub const SUBJECT: u8 = 9;
    pub const SIDE: u8 = 10;
    /// Config records, by kind.
    pub const CONFIG: u8 = 11;
}

/// Length of a value digest in an audit key.
pub(crate) const DIGEST_LEN: usize = 16;

/// The first 16 bytes of SHA-256(`tag` ++ `value`).
pub(crate) fn value_digest(tag: u8, value: &[u8]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update([tag]);
    hasher.update(value);
    let full: Hash = hasher.finalize().into();
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full[..DIGEST_LEN]);
    out
}

fn decision_str(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    }
}

fn side_str(side: Side) -> &'static str {
    match side {
        Side::Provider => "provider",
        Side::Consumer => "consumer",
    }
}

/// The posting lists `record` belongs to, as `(field tag, value digest)`, without repeats.
/// Empty for license records.
pub(crate) fn terms(record: &Record) -> Vec<(u8, [u8; DIGEST_LEN])> {
    let mut out = Vec::new();
    let mut push = |tag: u8, value: &[u8]| out.push((tag, value_digest(tag, value)));
    match record.content() {
        Record::Exchange(r) => {
            push(field::ALL, b"");
            push(field::CONSUMER, r.caller.department.as_bytes());
            push(field::PROVIDER, r.owner.as_bytes());
            push(
                field::DATASET,
                format!("{}/{}", r.owner, r.dataset).as_bytes(),
            );
            push(field::KEY, r.key.as_bytes());
            push(field::ACTION, r.action.as_str().as_bytes());
            push(field::DECISION, decision_str(r.decision).as_bytes());
            push(field::PURPOSE, r.purpose.as_bytes());
            push(
                field::POLICY_VERSION,
                r.policy_version.to_string().as_bytes(),
            );
            for subject in &r.subjects {
                push(field::SUBJECT, &subject.0);
            }
            push(field::SIDE, side_str(r.side).as_bytes());
        }
        Record::Access(r) => {
            push(field::ALL, b"");
            push(field::CONSUMER, r.caller.department.as_bytes());
            push(field::PROVIDER, r.owner.as_bytes());
            push(
                field::DATASET,
                format!("{}/{}", r.owner, r.dataset).as_bytes(),
            );
            push(field::KEY, r.key.as_bytes());
            push(field::ACTION, r.action.as_str().as_bytes());
            push(field::DECISION, decision_str(r.decision).as_bytes());
            push(field::PURPOSE, r.purpose.as_bytes());
            push(field::POLICY_VERSION, r.policy_version.as_bytes());
        }
        Record::Config(r) => push(field::CONFIG, &[r.change.kind().tag()]),
        Record::LicenseIssued(_)
        | Record::LicenseStatus(_)
        | Record::Sealed(_)
        | Record::Authorized(_)
        | Record::BatchSealed(_)
        | Record::BatchSignature(_)
        | Record::Governance(_) => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The posting list of config records of `kind`.
pub(crate) fn config_term(kind: ConfigKind) -> (u8, [u8; DIGEST_LEN]) {
    (field::CONFIG, value_digest(field::CONFIG, &[kind.tag()]))
}

/// One condition on an access record. A query's filters must all hold; two filters on the same
/// field with different values match nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFilter {
    /// The calling (consumer) department: `caller.department`.
    Consumer(String),
    /// The owner (provider) department of the data.
    Provider(String),
    /// One dataset of one owner.
    Dataset {
        owner: String,
        dataset: String,
    },
    /// The record key exactly as recorded (for queries: with identifiers hashed).
    Key(String),
    Action(Action),
    Decision(Decision),
    /// The declared purpose code.
    Purpose(String),
    /// The policy version that decided (for legacy access records: their version string is
    /// this number in decimal).
    PolicyVersion(u64),
    /// A data subject named by an exchange (legacy access records name none).
    Subject(SubjectHash),
    /// A data subject named by any of these hashes: the forms under which the log may name
    /// one person (records written before identifiers were folded carry the hash of the form
    /// written). None matches nothing.
    AnySubject(Vec<SubjectHash>),
    /// Which gateway wrote an exchange record (legacy access records have no side).
    Side(Side),
}

impl AuditFilter {
    /// Whether `record` is an access record that meets this condition: the exact check that
    /// follows every index lookup.
    pub fn matches(&self, record: &Record) -> bool {
        match record.content() {
            Record::Exchange(r) => match self {
                AuditFilter::Consumer(d) => r.caller.department == *d,
                AuditFilter::Provider(o) => r.owner == *o,
                AuditFilter::Dataset { owner, dataset } => {
                    r.owner == *owner && r.dataset == *dataset
                }
                AuditFilter::Key(k) => r.key == *k,
                AuditFilter::Action(a) => r.action == *a,
                AuditFilter::Decision(d) => r.decision == *d,
                AuditFilter::Purpose(p) => r.purpose == *p,
                AuditFilter::PolicyVersion(v) => r.policy_version == *v,
                AuditFilter::Subject(s) => r.subjects.contains(s),
                AuditFilter::AnySubject(any) => any.iter().any(|s| r.subjects.contains(s)),
                AuditFilter::Side(s) => r.side == *s,
            },
            Record::Access(r) => match self {
                AuditFilter::Consumer(d) => r.caller.department == *d,
                AuditFilter::Provider(o) => r.owner == *o,
                AuditFilter::Dataset { owner, dataset } => {
                    r.owner == *owner && r.dataset == *dataset
                }
                AuditFilter::Key(k) => r.key == *k,
                AuditFilter::Action(a) => r.action == *a,
                AuditFilter::Decision(d) => r.decision == *d,
                AuditFilter::Purpose(p) => r.purpose == *p,
                AuditFilter::PolicyVersion(v) => r.policy_version == v.to_string(),
                AuditFilter::Subject(_) | AuditFilter::AnySubject(_) | AuditFilter::Side(_) => {
                    false
                }
            },
            Record::Config(_)
            | Record::Sealed(_)
            | Record::Authorized(_)
            | Record::BatchSealed(_)
            | Record::BatchSignature(_)
            | Record::Governance(_)
            | Record::LicenseIssued(_)
            | Record::LicenseStatus(_) => false,
        }
    }

    /// The posting lists this filter reads: a record meets it if it is in any of them (one
    /// list for every filter but [`AuditFilter::AnySubject`]).
    pub(crate) fn terms(&self) -> Vec<(u8, [u8; DIGEST_LEN])> {
        let (tag, value): (u8, Vec<u8>) = match self {
            AuditFilter::AnySubject(any) => {
                return any
                    .iter()
                    .map(|s| (field::SUBJECT, value_digest(field::SUBJECT, &s.0)))
                    .collect();
            }
            AuditFilter::Consumer(d) => (field::CONSUMER, d.as_bytes().to_vec()),
            AuditFilter::Provider(o) => (field::PROVIDER, o.as_bytes().to_vec()),
            AuditFilter::Dataset { owner, dataset } => {
                (field::DATASET, format!("{owner}/{dataset}").into_bytes())
            }
            AuditFilter::Key(k) => (field::KEY, k.as_bytes().to_vec()),
            AuditFilter::Action(a) => (field::ACTION, a.as_str().as_bytes().to_vec()),
            AuditFilter::Decision(d) => (field::DECISION, decision_str(*d).as_bytes().to_vec()),
            AuditFilter::Purpose(p) => (field::PURPOSE, p.as_bytes().to_vec()),
            AuditFilter::PolicyVersion(v) => (field::POLICY_VERSION, v.to_string().into_bytes()),
            AuditFilter::Subject(s) => (field::SUBJECT, s.0.to_vec()),
            AuditFilter::Side(s) => (field::SIDE, side_str(*s).as_bytes().to_vec()),
        };
        vec![(tag, value_digest(tag, &value))]
    }
}

/// The order of a query's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditOrder {
    /// Latest `(time_unix_ms, log_index)` first: what an inspector usually wants first.
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Where the next page starts: just after (in the query's order) the last record returned.
/// Bound to the tree size of the first page, so that paging neither repeats nor skips records
/// while the log grows: every page is read as of that tree size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub tree_size: u64,
    pub time_unix_ms: u64,
    pub log_index: u64,
}

/// A page token this server did not issue: the caller sent a damaged or foreign token. No
/// retry helps; start again from the first page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the page token is not one this server issued: {0}")]
pub struct CursorError(&'static str);

const CURSOR_VERSION: u8 = 1;

impl AuditCursor {
    /// An opaque, URL-safe token (lowercase hex of a version byte and the three numbers).
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.tree_size.to_be_bytes());
        bytes.extend_from_slice(&self.time_unix_ms.to_be_bytes());
        bytes.extend_from_slice(&self.log_index.to_be_bytes());
        hex::encode(bytes)
    }

    /// Inverse of [`AuditCursor::to_token`]. [`CursorError`] for anything else.
    pub fn from_token(s: &str) -> Result<AuditCursor, CursorError> {
        if s.len() != 50 {
            return Err(CursorError("wrong length"));
        }
        let bytes = hex::decode(s).map_err(|_| CursorError("not hexadecimal"))?;
        let (&version, rest) = bytes.split_first().ok_or(CursorError("wrong length"))?;
        if version != CURSOR_VERSION {
            return Err(CursorError("unknown token version"));
        }
        let number = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let cursor = AuditCursor {
            tree_size: number(0),
            time_unix_ms: number(8),
            log_index: number(16),
        };
        if cursor.log_index >= cursor.tree_size {
            return Err(CursorError("position beyond its tree size"));
        }
        Ok(cursor)
    }
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_token())
    }
}

/// Most records one page returns: the contract's largest page.
pub use qianlian_proto::contract::MAX_PAGE;

/// One page of an audit query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Conditions that must all hold; none: every access record.
    pub filters: Vec<AuditFilter>,
    /// Earliest record time, inclusive.
    pub since_unix_ms: Option<u64>,
    /// Latest record time, exclusive.
    pub until_unix_ms: Option<u64>,
    pub order: AuditOrder,
    /// The previous page's [`AuditPage::next`]; `None` for the first page.
    pub after: Option<AuditCursor>,
    /// Records per page, clamped to `1..=`[`MAX_PAGE`].
    pub limit: usize,
}

impl Default for AuditQuery {
    fn default() -> AuditQuery {
        AuditQuery {
            filters: Vec::new(),
            since_unix_ms: None,
            until_unix_ms: None,
            order: AuditOrder::NewestFirst,
            after: None,
            limit: 100,
        }
    }
}

impl AuditQuery {
    /// Whether `record`, an access record, is an answer to this query (all filters and the time
    /// range; paging aside).
    pub fn matches(&self, record: &Record) -> bool {
        let access = matches!(record.content(), Record::Exchange(_) | Record::Access(_));
        let time = record.time_unix_ms();
        access
            && self.since_unix_ms.is_none_or(|s| time >= s)
            && self.until_unix_ms.is_none_or(|u| time < u)
            && self.filters.iter().all(|f| f.matches(record))
    }
}

/// One access record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHit {
    pub log_index: u64,
    /// RFC 6962 leaf hash of `bytes`.
    pub record_hash: Hash,
    /// The record's canonical bytes, as stored.
    pub bytes: Vec<u8>,
    pub record: Record,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub hits: Vec<AuditHit>,
    /// Where the next page starts; `None` when there are no more results.
    pub next: Option<AuditCursor>,
    /// The tree size the page was read at: only records below it are answers.
    pub tree_size: u64,
    /// Index chunks read to answer (a measure of the query's cost).
    pub examined: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_tokens_round_trip_and_garbage_is_refused() {
        let cursor = AuditCursor {
            tree_size: 1_000_000,
            time_unix_ms: 1_764_000_000_123,
            log_index: 999_999,
        };
        let token = cursor.to_token();
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(AuditCursor::from_token(&token), Ok(cursor));
        assert!(AuditCursor::from_token("").is_err());
        assert!(AuditCursor::from_token("hello").is_err());
        assert!(AuditCursor::from_token(&"zz".repeat(25)).is_err());
        let mut other_version = token.clone();
        other_version.replace_range(0..2, "02");
        assert!(AuditCursor::from_token(&other_version).is_err());
        let beyond = AuditCursor {
            tree_size: 5,
            time_unix_ms: 0,
            log_index: 5,
        };
        assert!(AuditCursor::from_token(&beyond.to_token()).is_err());
        assert!(AuditCursor::from_token(&format!("{token}00")).is_err());
    }

    fn access(policy_version: &str) -> Record {
        use crate::record::{AccessRecord, Caller};
        Record::Access(AccessRecord {
            request_id: "r".into(),
            time_unix_ms: 5,
            caller: Caller {
                department: "housing".into(),
                role: "department".into(),
                cert_fingerprint: String::new(),
            },
            owner: "market/regulation".into(),
            dataset: "permits".into(),
            key: "k1".into(),
            action: Action::Read,
            purpose: "credit-check".into(),
            decision: Decision::Deny,
            policy_version: policy_version.into(),
            rule: String::new(),
            request_digest: [0; 32],
            response_digest: None,
        })
    }

    #[test]
    fn filters_check_the_decoded_record_exactly() {
        let record = access("1");
        for yes in [
            AuditFilter::Consumer("housing".into()),
            AuditFilter::Provider("market/regulation".into()),
            AuditFilter::Dataset {
                owner: "market/regulation".into(),
                dataset: "permits".into(),
            },
            AuditFilter::Key("k1".into()),
            AuditFilter::Action(Action::Read),
            AuditFilter::Decision(Decision::Deny),
            AuditFilter::Purpose("credit-check".into()),
            AuditFilter::PolicyVersion(1),
        ] {
            assert!(yes.matches(&record), "{yes:?}");
            // Whatever a filter matches is in the posting list it reads.
            assert!(
                yes.terms().iter().all(|t| terms(&record).contains(t)),
                "{yes:?}"
            );
        }
        for no in [
            AuditFilter::Consumer("tax".into()),
            // The same `<owner>/<dataset>` string, another dataset.
            AuditFilter::Dataset {
                owner: "market".into(),
                dataset: "regulation/permits".into(),
            },
            AuditFilter::Key("k".into()),
            AuditFilter::Action(Action::Write),
            AuditFilter::Decision(Decision::Allow),
            AuditFilter::PolicyVersion(2),
            // Legacy access records have neither subjects nor sides.
            AuditFilter::Subject(SubjectHash([0; 32])),
            AuditFilter::AnySubject(vec![SubjectHash([0; 32])]),
            AuditFilter::Side(Side::Provider),
        ] {
            assert!(!no.matches(&record), "{no:?}");
        }
        // A legacy version string that is not the decimal number does not match it.
        assert!(!AuditFilter::PolicyVersion(1).matches(&access("01")));
        let q = AuditQuery {
            since_unix_ms: Some(5),
            until_unix_ms: Some(6),
            ..AuditQuery::default()
        };
        assert!(q.matches(&record));
        let later = AuditQuery {
            since_unix_ms: Some(6),
            ..AuditQuery::default()
        };
        assert!(!later.matches(&record));
        let earlier = AuditQuery {
            until_unix_ms: Some(5),
            ..AuditQuery::default()
        };
        assert!(!earlier.matches(&record));
    }

    #[test]
    fn digests_separate_fields() {
        assert_ne!(
            value_digest(field::CONSUMER, b"housing"),
            value_digest(field::PROVIDER, b"housing")
        );
        assert_eq!(
            AuditFilter::Consumer("housing".into()).terms(),
            vec![(field::CONSUMER, value_digest(field::CONSUMER, b"housing"))]
        );
    }
}
