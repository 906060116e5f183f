//! Raft between gateway nodes over gRPC: the client side (`RaftNetworkFactory`/`RaftNetwork`)
//! and the server side ([`RaftService`], the generated `qianlian.v1.Raft` service), plus the two
//! node-to-node calls of the notarization log, `Forward` and `Cosign` (module `node_rpc`).
//!
//! All calls to one peer share one HTTP/2 channel ([`Peers`], module `peers`), so forwarded
//! writes and cosignature requests ride the TLS connection Raft already holds.
//!
//! Wire format (module `wire`): `RaftMessage.data = [WIRE_FORMAT_V1] ++ postcard(T)`, where `T` is
//! openraft's serde request type, or the `Result<response, RaftError>` the remote Raft returned, so
//! remote refusals travel as typed errors. Postcard round-trips every openraft 0.9 message (see the
//! tests) and carries snapshot chunks and batches of records compactly; JSON would write each byte
//! of a snapshot chunk as a decimal number. The format byte changes with openraft's types.
//!
//! Errors map onto what openraft does next: a peer that cannot be reached or refuses us
//! (down, wrong address, certificate, version) is `Unreachable` (back off); a call that failed
//! in flight is `Network` (retry); a call over its time budget is `Timeout`.
//!
//! TLS: the client uses the configured `ClientTlsConfig` (node certificate for mutual TLS); the
//! server side is mounted by the gateway on its own TLS listener, restricted to node certificates.

mod authority;
mod node_rpc;
mod peers;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, RPCTypes, RaftNetwork, RaftNetworkFactory};
use qianlian_proto::v1::RaftMessage;
use qianlian_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::ClientTlsConfig;
use tonic::{Code, Status};

pub use self::authority::{
    AuthorityStats, CallRefusal, CallingNode, authorize_call, may_originate,
};
pub use self::node_rpc::{
    CosignRequest, ForwardRefusal, ForwardRequest, ForwardedReceipt, LocalNode, PeerCallError,
};
pub use self::peers::Peers;
pub use self::wire::{
    MAX_MESSAGE_BYTES, WIRE_FORMAT_V1, WireError, decode_message, encode_message,
};
pub use crate::membership_rule::{MembershipRule, MembershipView, check_membership_entries};
use crate::types::{NodeId, TypeConfig};

/// Makes Raft clients for peers over the node's shared [`Peers`].
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    node_id: NodeId,
    peers: Peers,
}

impl NetworkFactory {
    /// Clients for node `node_id`; `tls = None` speaks plain HTTP/2 (tests only).
    pub fn new(node_id: NodeId, tls: Option<ClientTlsConfig>) -> NetworkFactory {
        NetworkFactory::with_peers(node_id, Peers::new(tls))
    }

    /// Clients for node `node_id` over channels shared with the node's other peer calls.
    pub fn with_peers(node_id: NodeId, peers: Peers) -> NetworkFactory {
        NetworkFactory { node_id, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        if let Err(e) = self.peers.client(&node.addr) {
            tracing::warn!(target_node = target, error = %e, "cannot reach raft peer");
        }
        PeerClient {
            node_id: self.node_id,
            target,
            node: node.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    node_id: NodeId,
    target: NodeId,
    node: BasicNode,
    // The channel is looked up at each call, so that a TLS reload (`Peers::set_tls`) reaches
    // replication streams that openraft keeps for the life of a term.
    peers: Peers,
}

/// A plain error type carrying a message, for openraft's `AnyError`-based wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn status_to_rpc_error<E: std::error::Error>(status: Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        // Down, unreachable, not serving Raft, refusing our certificate, or unable to read
        // our messages: nothing changes by retrying at once.
        Code::Unavailable
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::InvalidArgument
        | Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = match self.peers.client(&self.node.addr) {
            Ok(client) => client,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Message(e)))),
        };
        let data = encode_message(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = RaftMessage { data };
        let sent = tokio::time::timeout(ttl, async {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(message).await,
                RPCTypes::Vote => client.vote(message).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(message).await,
            }
        })
        .await;
        let reply = match sent {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.node_id,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, E> =
            decode_message(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The `qianlian.v1.Raft` gRPC service: hands peers' Raft messages to the local Raft node, and
/// their `Forward`, `Cosign` and `CosignStatus` calls to the local notary ([`LocalNode`]).
///
/// With an authority ([`RaftService::with_authority`]) every call must carry the caller's
/// [`CallingNode`] in its extensions and come from a current member in its own name (module
/// `authority`); refusals are `PERMISSION_DENIED` and counted.
#[derive(Clone)]
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
    // `None`: a bare Raft endpoint (tests); the node calls answer `UNIMPLEMENTED`.
    node: Option<Arc<dyn LocalNode>>,
    // `None`: every caller is served (plain-HTTP tests only).
    authority: Option<Arc<AuthorityStats>>,
}

impl fmt::Debug for RaftService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftService")
            .field("serves_node_calls", &self.node.is_some())
            .finish_non_exhaustive()
    }
}

impl RaftService {
    /// The service for `raft` alone: the node calls (Forward, Cosign, CosignStatus) answer
    /// `UNIMPLEMENTED`.
    pub fn new(raft: openraft::Raft<TypeConfig>) -> RaftService {
        RaftService {
            raft,
            node: None,
            authority: None,
        }
    }

    /// The service for `raft` that also serves the node calls from `node`.
    pub fn with_node(raft: openraft::Raft<TypeConfig>, node: Arc<dyn LocalNode>) -> RaftService {
        RaftService {
            raft,
            node: Some(node),
            authority: None,
        }
    }

    /// Serve only current members calling in their own name, counting refusals in `stats`.
    pub fn with_authority(mut self, stats: Arc<AuthorityStats>) -> RaftService {
        self.authority = Some(stats);
        self
    }

    /// Check the caller of `call` (see module `authority`); `sender` is the node the message
    /// names, if it names one. Without an authority, every caller is served.
    #[allow(clippy::result_large_err)]
    fn authorize(
        &self,
        call: &'static str,
        caller: Option<&CallingNode>,
        sender: Option<NodeId>,
    ) -> Result<(), Status> {
        let Some(stats) = &self.authority else {
            return Ok(());
        };
        let members: std::collections::BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        authorize_call(call, caller, &members, sender)
            .map(|_| ())
            .map_err(|refusal| {
                let counter = match refusal {
                    CallRefusal::WrongSender { .. } => &stats.wrong_sender,
                    _ => &stats.not_member,
                };
                AuthorityStats::count(counter);
                tracing::warn!(call, caller = ?caller.map(|c| &c.name), "peer call refused: {refusal}");
                Status::permission_denied(refusal.to_string())
            })
    }

    /// Check a Raft message's caller before decoding it, and its sender after.
    #[allow(clippy::result_large_err)]
    fn decode_from<T: DeserializeOwned>(
        &self,
        call: &'static str,
        request: tonic::Request<RaftMessage>,
        sender: impl FnOnce(&T) -> Option<NodeId>,
    ) -> Result<T, Status> {
        let caller = request.extensions().get::<CallingNode>().cloned();
        self.authorize(call, caller.as_ref(), None)?;
        let rpc: T = decode_request(request)?;
        // A message naming no sender (a vote of no candidate) cannot be anyone's.
        let named = sender(&rpc).unwrap_or(NodeId::MAX);
        self.authorize(call, caller.as_ref(), Some(named))?;
        Ok(rpc)
    }

    /// The service wrapped as a tonic server with [`MAX_MESSAGE_BYTES`] limits, ready to mount.
    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn node(&self) -> Result<&Arc<dyn LocalNode>, Status> {
        self.node
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this endpoint serves Raft only"))
    }
}

fn is_membership(entry: &crate::types::Entry) -> bool {
    matches!(entry.payload, EntryPayload::Membership(_))
}

/// How long an `AppendEntries` with a membership entry waits for this node to apply what the
/// leader committed before it (where the signed change is).
const MEMBERSHIP_APPLY_WAIT: Duration = Duration::from_secs(2);

impl RaftService {
    /// Whether this node lets in the membership entries of `entries` (see
    /// [`crate::membership_rule`]); why not otherwise.
    async fn membership_verdict(
        &self,
        node: &Arc<dyn LocalNode>,
        entries: &[crate::types::Entry],
    ) -> Result<Result<(), String>, Status> {
        let rule = node
            .membership_rule()
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the membership rule: {e}")))?;
        let before =
            MembershipView::of(self.raft.metrics().borrow().membership_config.membership());
        let changes: Vec<MembershipView> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some(MembershipView::of(m)),
                _ => None,
            })
            .collect();
        Ok(check_membership_entries(&rule, &before, &changes))
    }

    /// Append `rpc`, which holds membership entries, only if they are signed changes. The
    /// signed change may be earlier in this request, or in this node's log and not yet applied:
    /// then the entries before the first membership entry are appended first, this node waits
    /// (at most [`MEMBERSHIP_APPLY_WAIT`]) until it applied what the leader committed before
    /// it, and looks again.
    async fn gated_append(
        &self,
        node: &Arc<dyn LocalNode>,
        stats: &AuthorityStats,
        mut rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let mut verdict = self.membership_verdict(node, &rpc.entries).await?;
        if verdict.is_err() {
            let first = rpc.entries.iter().position(is_membership).unwrap_or(0);
            let before_first = rpc.entries[first].log_id.index.saturating_sub(1);
            let committed = rpc.leader_commit.map_or(0, |l| l.index).min(before_first);
            let applied = self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            if committed > applied {
                let rest = rpc.entries.split_off(first);
                let prefix_end = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
                let (vote, leader_commit) = (rpc.vote, rpc.leader_commit);
                match self.raft.append_entries(rpc).await {
                    Ok(AppendEntriesResponse::Success) => {}
                    other => return reply(&other),
                }
                let _ = self
                    .raft
                    .wait(Some(MEMBERSHIP_APPLY_WAIT))
                    .applied_index_at_least(
                        Some(committed),
                        "the entries before a membership change applied",
                    )
                    .await;
                rpc = AppendEntriesRequest {
                    vote,
                    prev_log_id: prefix_end,
                    entries: rest,
                    leader_commit,
                };
                verdict = self.membership_verdict(node, &rpc.entries).await?;
            }
        }
        if let Err(reason) = verdict {
            AuthorityStats::count(&stats.membership_refused);
            tracing::warn!(leader = ?rpc.vote.leader_id.voted_for(), "membership change refused: {reason}");
            return Err(Status::permission_denied(reason));
        }
        reply(&self.raft.append_entries(rpc).await)
    }
}

fn decode_request<T: DeserializeOwned>(request: tonic::Request<RaftMessage>) -> Result<T, Status> {
    decode_message(&request.into_inner().data).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(result: &T) -> Result<tonic::Response<RaftMessage>, Status> {
    let data = encode_message(result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftMessage { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode_from(
            "AppendEntries",
            request,
            |r: &AppendEntriesRequest<TypeConfig>| r.vote.leader_id.voted_for(),
        )?;
        if let (Some(node), Some(stats)) = (&self.node, &self.authority)
            && rpc.entries.iter().any(is_membership)
        {
            return self.gated_append(node, stats, rpc).await;
        }
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> =
            self.decode_from("Vote", request, |r: &VoteRequest<NodeId>| {
                r.vote.leader_id.voted_for()
            })?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.decode_from(
            "InstallSnapshot",
            request,
            |r: &InstallSnapshotRequest<TypeConfig>| r.vote.leader_id.voted_for(),
        )?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let caller = request.extensions().get::<CallingNode>().cloned();
        self.authorize("Forward", caller.as_ref(), None)?;
        let rpc: ForwardRequest = decode_request(request)?;
        reply(&node.forwarded(caller.as_ref(), rpc.records).await)
    }

    async fn cosign(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let caller = request.extensions().get::<CallingNode>();
        self.authorize("Cosign", caller, None)?;
        let rpc: CosignRequest = decode_request(request)?;
        reply(&node.cosign(rpc.tree_size).await)
    }

    async fn cosign_status(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let caller = request.extensions().get::<CallingNode>();
        self.authorize("CosignStatus", caller, None)?;
        let rpc: CosignRequest = decode_request(request)?;
        reply(&node.cosign_status(rpc.tree_size).await)
    }
}

#[cfg(test)]
mod tests;
