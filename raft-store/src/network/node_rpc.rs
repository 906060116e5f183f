//! The calls nodes make of each other on behalf of the notarization log rather than of Raft:
//! `Forward` (a follower hands a batch of records to the leader), `Cosign` (a node signs the
//! checkpoint of a tree size it has applied) and `CosignStatus` (a node signs the license status
//! list of a tree size it has applied).
//!
//! Both travel in the same `RaftMessage` envelope as Raft ([`encode_message`]); a reply is
//! `Result<answer, refusal>` so a refusal reaches the caller typed, never as a bare status. The
//! serving side is a [`LocalNode`], implemented by the notary, so this module knows nothing of
//! group commit or of the state machine.

use std::time::Duration;

use qianlian_proto::v1::RaftMessage;
use qianlian_verifier::Hash;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use super::authority::CallingNode;
use super::peers::Peers;
use super::wire::{decode_message, encode_message};
use crate::checkpoint::{CosignRefusal, Cosignature};
use crate::record::Record;
use crate::types::NodeId;

/// `Forward` request: the records of one batch, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub records: Vec<Record>,
}

/// The receipt of one forwarded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedReceipt {
    pub log_index: u64,
    pub record_hash: Hash,
}

/// Why the node asked did not append a forwarded batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardRefusal {
    /// The node asked is not the leader (it names the one it knows of, if any). Nothing was
    /// recorded: the forwarding node retries at the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader took longer than its commit timeout; the outcome is unknown.
    #[error("not committed within {after_ms} ms; the outcome is unknown")]
    TimedOut { after_ms: u64 },
    /// The leader failed the write (storage, shut down, bug); its log says why. A retry helps
    /// only once another leader is elected or the operator fixed the node.
    #[error("the leader failed the write: {reason}")]
    Failed { reason: String },
    /// The leader refused the batch: a record breaks `Record::check`, or the sending node may
    /// not originate it (see `may_originate`). Nothing was recorded; no retry helps.
    #[error("the leader refused the forwarded batch: {reason}")]
    NotPermitted { reason: String },
}

/// `Cosign` request: sign the checkpoint of the tree of this many records. `CosignStatus` sends
/// the same message: sign the license status list as of this many records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignRequest {
    pub tree_size: u64,
}

/// What a node serves to its peers besides Raft. Implemented by the notary.
#[tonic::async_trait]
pub trait LocalNode: Send + Sync + 'static {
    /// Append a batch forwarded by `from` (`None`: a service without authority, in tests)
    /// through this node's group commit, if it leads.
    async fn forwarded(
        &self,
        from: Option<&CallingNode>,
        records: Vec<Record>,
    ) -> Result<Vec<ForwardedReceipt>, ForwardRefusal>;

    /// Which membership changes this node lets into its Raft log, as of its applied state.
    /// By default, every change (a node without operators).
    async fn membership_rule(&self) -> Result<super::MembershipRule, String> {
        Ok(super::MembershipRule::Open)
    }

    /// Sign the checkpoint of the first `tree_size` records, if this node has applied them.
    async fn cosign(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal>;

    /// Sign the license status list as of the first `tree_size` records, if this node has
    /// applied them. By default a node serves no status lists.
    async fn cosign_status(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        let _ = tree_size;
        Err(CosignRefusal::Failed {
            reason: "this node does not serve license status lists".into(),
        })
    }
}

/// Why a call to a peer produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCallError {
    /// The request surely did not run there: no connection, the peer refused our certificate or
    /// message, or it does not serve the call. A retry (later, or at another node) may help.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The call failed after it may have run, or did not answer within its time budget: the
    /// outcome is unknown.
    #[error("no answer: {0}")]
    OutcomeUnknown(String),
}

fn classify(status: &Status) -> PeerCallError {
    match status.code() {
        // Refused before the handler ran: transport down, TLS or size limits, unknown call,
        // or a message the peer could not decode.
        Code::Unavailable
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::InvalidArgument
        | Code::ResourceExhausted => PeerCallError::NotDelivered(status.to_string()),
        _ => PeerCallError::OutcomeUnknown(status.to_string()),
    }
}

/// Which call, for [`Peers::call_node`].
#[derive(Debug, Clone, Copy)]
enum NodeCall {
    Forward,
    Cosign,
    CosignStatus,
}

impl Peers {
    async fn call_node<Req, Resp>(
        &self,
        addr: &str,
        call: NodeCall,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, PeerCallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut client = self.client(addr).map_err(PeerCallError::NotDelivered)?;
        let data = encode_message(request)
            .map_err(|e| PeerCallError::NotDelivered(format!("encoding: {e}")))?;
        let message = RaftMessage { data };
        let sent = tokio::time::timeout(ttl, async {
            match call {
                NodeCall::Forward => client.forward(message).await,
                NodeCall::Cosign => client.cosign(message).await,
                NodeCall::CosignStatus => client.cosign_status(message).await,
            }
        })
        .await;
        let reply = match sent {
            Err(_) => {
                return Err(PeerCallError::OutcomeUnknown(format!(
                    "no answer from {addr} within {} ms",
                    ttl.as_millis()
                )));
            }
            Ok(Err(status)) => return Err(classify(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        // An answer we cannot read came after the call ran.
        decode_message(&reply.data).map_err(|e| PeerCallError::OutcomeUnknown(e.to_string()))
    }

    /// Forward `records` to the node at `addr` (the leader), waiting at most `ttl`.
    pub async fn forward(
        &self,
        addr: &str,
        records: Vec<Record>,
        ttl: Duration,
    ) -> Result<Result<Vec<ForwardedReceipt>, ForwardRefusal>, PeerCallError> {
        self.call_node(addr, NodeCall::Forward, &ForwardRequest { records }, ttl)
            .await
    }

    /// Ask the node at `addr` to cosign the checkpoint of `tree_size` records within `ttl`.
    pub async fn cosign(
        &self,
        addr: &str,
        tree_size: u64,
        ttl: Duration,
    ) -> Result<Result<Cosignature, CosignRefusal>, PeerCallError> {
        self.call_node(addr, NodeCall::Cosign, &CosignRequest { tree_size }, ttl)
            .await
    }

    /// Ask the node at `addr` to cosign the license status list as of `tree_size` records
    /// within `ttl`. A node of a version without status lists answers `UNIMPLEMENTED`:
    /// [`PeerCallError::NotDelivered`].
    pub async fn cosign_status(
        &self,
        addr: &str,
        tree_size: u64,
        ttl: Duration,
    ) -> Result<Result<Cosignature, CosignRefusal>, PeerCallError> {
        self.call_node(
            addr,
            NodeCall::CosignStatus,
            &CosignRequest { tree_size },
            ttl,
        )
        .await
    }
}
