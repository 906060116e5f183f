//! What can go wrong with the notary, in terms the gateway can act on.

use std::fmt;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, RaftError};

use crate::db::StoreError;
use crate::state_machine::integrity::IntegrityError;
use crate::state_machine::{RangeError, ReadError};
use crate::types::NodeId;

/// Why a notary call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotaryError {
    /// This node's storage failed or holds data it cannot read. The operator must act (disk,
    /// permissions, restore from peers); retrying the same call does not help.
    #[error("notary storage: {0}")]
    Storage(#[from] StoreError),
    /// The notarization log cannot take or confirm the write now: there is no leader, the
    /// leader cannot be reached (the payload names it if known), or the commit did not complete
    /// in time. A retry later may help. After [`UnavailableReason::CommitTimedOut`] the outcome
    /// is unknown: the record may still be committed.
    #[error("notarization log unavailable: {0}")]
    Unavailable(Unavailability),
    /// A tree size or log index beyond what this node has applied, or not a valid pair; the
    /// message names the valid range. The caller is at fault, or asked a node that has not
    /// caught up yet: for a tree size, a retry once the log has grown may help.
    #[error("out of range: {0}")]
    Range(RangeError),
    /// This node's stored log contradicts itself or its own signed checkpoint: its files were
    /// altered or damaged. Reported by [`crate::Notary::open`], which refuses to start. No retry
    /// helps; the operator moves the data directory away (keep it as evidence) and lets the
    /// node catch up from its peers.
    #[error("notarization log integrity: {detail}")]
    Integrity {
        /// The first log index found inconsistent, when the check can tell.
        first_bad_index: Option<u64>,
        /// What disagrees.
        detail: String,
    },
    /// This node has no checkpoint to give: it has no signing key configured, or its tree is
    /// not as large as the size asked for. The operator must configure a key, or the caller
    /// retry once the node caught up.
    #[error("no checkpoint: {0}")]
    NoCheckpoint(String),
    /// A record was refused before it entered the log (nothing was recorded): it breaks a rule
    /// of [`crate::record::Record::check`], named in the message. The caller built it wrongly;
    /// no retry helps.
    #[error("record refused: {0}")]
    InvalidRecord(String),
    /// The record's originator signature or authority does not hold (see
    /// `state_machine::origin`): its submitter sent a record it may not write, or one whose
    /// signing key the directory no longer lists. No retry helps: the refused records are not
    /// in the log (no index, no leaf, no state); `appended` others of the same request are.
    #[error("record refused by every node's origin check: {reason}")]
    Refused {
        reason: String,
        /// Records of the same request that were appended all the same.
        appended: usize,
    },
    /// The notary configuration was refused; the operator must fix the named setting.
    #[error("invalid notary configuration: {0}")]
    Config(String),
    /// A cluster membership change was refused (already initialised, unknown learner, another
    /// change still in progress). The operator's request is at fault; retry once it is fixed or
    /// the other change has finished.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The notary was shut down; open it again to continue.
    #[error("notary is shut down")]
    ShutDown,
    /// A broken invariant or a panic in the Raft node: a bug here. No retry helps.
    #[error("internal notary error: {0}")]
    Internal(String),
}

/// Why the log is unavailable, and where the leader is if this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailability {
    pub reason: UnavailableReason,
    pub leader: Option<LeaderHint>,
}

impl fmt::Display for Unavailability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        match &self.leader {
            None => Ok(()),
            Some(LeaderHint {
                node_id,
                addr: Some(addr),
            }) => {
                write!(f, " (leader: node {node_id} at {addr})")
            }
            Some(LeaderHint {
                node_id,
                addr: None,
            }) => write!(f, " (leader: node {node_id})"),
        }
    }
}

/// Why the log is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableReason {
    /// No leader is known (election in progress, or no quorum).
    NoLeader,
    /// This node is not the leader and did not forward the write. Seen by a leader that lost
    /// its leadership while a forwarded batch waited: the forwarding node retries.
    NotLeader,
    /// The leader (named in the hint) could not be reached to forward the write to, within the
    /// commit timeout. Nothing was recorded.
    LeaderUnreachable,
    /// The write was not committed within this long; it may still be.
    CommitTimedOut(Duration),
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnavailableReason::NoLeader => f.write_str("no leader is known"),
            UnavailableReason::NotLeader => f.write_str("this node is not the leader"),
            UnavailableReason::LeaderUnreachable => f.write_str("the leader cannot be reached"),
            UnavailableReason::CommitTimedOut(t) => {
                write!(
                    f,
                    "not committed within {} ms; the outcome is unknown",
                    t.as_millis()
                )
            }
        }
    }
}

/// Where the leader is, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub node_id: NodeId,
    /// The leader's advertised gRPC address, if this node knows it.
    pub addr: Option<String>,
}

impl NotaryError {
    pub(crate) fn no_leader() -> NotaryError {
        NotaryError::Unavailable(Unavailability {
            reason: UnavailableReason::NoLeader,
            leader: None,
        })
    }

    pub(crate) fn commit_timed_out(after: Duration) -> NotaryError {
        NotaryError::Unavailable(Unavailability {
            reason: UnavailableReason::CommitTimedOut(after),
            leader: None,
        })
    }
}

impl From<RangeError> for NotaryError {
    fn from(e: RangeError) -> NotaryError {
        NotaryError::Range(e)
    }
}

impl From<ReadError> for NotaryError {
    fn from(e: ReadError) -> NotaryError {
        match e {
            ReadError::Range(e) => NotaryError::Range(e),
            ReadError::Store(e) => NotaryError::Storage(e),
        }
    }
}

impl From<IntegrityError> for NotaryError {
    fn from(e: IntegrityError) -> NotaryError {
        match e {
            IntegrityError::Damaged {
                first_bad_index,
                detail,
            } => NotaryError::Integrity {
                first_bad_index,
                detail,
            },
            // Damage RocksDB itself found on open is integrity too: say so, not "storage".
            IntegrityError::Store(StoreError::Corrupt { what, detail }) => NotaryError::Integrity {
                first_bad_index: None,
                detail: format!("corrupt {what}: {detail}"),
            },
            e @ IntegrityError::AuditIndex { .. } => NotaryError::Integrity {
                first_bad_index: None,
                detail: e.to_string(),
            },
            IntegrityError::Store(e) => NotaryError::Storage(e),
        }
    }
}

impl From<Fatal<NodeId>> for NotaryError {
    fn from(fatal: Fatal<NodeId>) -> NotaryError {
        match fatal {
            Fatal::StorageError(e) => NotaryError::Storage(StoreError::Halted(e.to_string())),
            Fatal::Panicked => NotaryError::Internal("the raft node panicked".into()),
            Fatal::Stopped => NotaryError::ShutDown,
        }
    }
}

impl From<ForwardToLeader<NodeId, BasicNode>> for NotaryError {
    fn from(f: ForwardToLeader<NodeId, BasicNode>) -> NotaryError {
        match f.leader_id {
            None => NotaryError::no_leader(),
            Some(node_id) => NotaryError::Unavailable(Unavailability {
                reason: UnavailableReason::NotLeader,
                leader: Some(LeaderHint {
                    node_id,
                    addr: f.leader_node.map(|n| n.addr),
                }),
            }),
        }
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> for NotaryError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> NotaryError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NotaryError::Membership(e.to_string())
            }
            RaftError::Fatal(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_names_the_leader() {
        let e: NotaryError = ForwardToLeader {
            leader_id: Some(3),
            leader_node: Some(BasicNode::new("https://10.0.0.3:7400")),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "notarization log unavailable: this node is not the leader \
             (leader: node 3 at https://10.0.0.3:7400)"
        );
        let e: NotaryError = ForwardToLeader::<NodeId, BasicNode>::empty().into();
        assert_eq!(e, NotaryError::no_leader());
    }
}
