//! The parts of the wire contract that the `.proto` files cannot state: the metadata keys
//! Qianlian sends beside its messages and the limits every node enforces. Servers, clients and
//! the log's storage read them from here.

/// Metadata key carrying the exchange's request id from the consumer's gateway to the owner's,
/// and in every Exchange response (and error status) the request id of its access record.
pub const REQUEST_ID_HEADER: &str = "x-qianlian-request-id";
/// Metadata key of a caller's own id for a call (at most 128 visible ASCII characters): echoed
/// in the response metadata and the gateway's log, never recorded or forwarded.
pub const CORRELATION_ID_HEADER: &str = "x-qianlian-correlation-id";
/// Status metadata key holding the log index of a notarized refusal.
pub const LOG_INDEX_HEADER: &str = "x-qianlian-log-index";
/// Status metadata key holding the record hash (hex) of a notarized refusal.
pub const RECORD_HASH_HEADER: &str = "x-qianlian-record-hash";
/// Status metadata key holding the version of the policy that refused.
pub const POLICY_VERSION_HEADER: &str = "x-qianlian-policy-version";
/// Status metadata key naming the leader's address when a node refuses a leader-only call.
pub const LEADER_HEADER: &str = "x-qianlian-leader";

/// Most records one page of an audit query returns (and of an exchange query).
pub const MAX_PAGE: usize = 1000;
/// Records an audit query page holds when the request says 0.
pub const DEFAULT_PAGE: usize = 100;
/// Most documents one `VerifyLicenses` call takes.
pub const MAX_VERIFY_BATCH: usize = 1000;
