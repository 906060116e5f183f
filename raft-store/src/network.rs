//! Raft between gateway nodes over gRPC: the client side (`RaftNetworkFactory`/`RaftNetwork`)
//! and the server side ([`RaftService`], the generated `qianlian.v1.Raft` service), plus the two
//! node-to-node calls of the notarization log, `Forward` and `Cosign` (module `node_rpc`).
//!
//! All calls to one peer share one HTTP/2 channel ([`Peers`]), so forwarded writes and
//! cosignature requests ride the TLS connection Raft already holds.
//!
//! Wire format: `RaftMessage.data = [WIRE_FORMAT_V1] ++ postcard(T)`, where `T` is openraft's
//! serde request type, or the `Result<response, RaftError>` the remote Raft returned, so remote
//! refusals travel as typed errors. Postcard round-trips every openraft 0.9 message (see the
//! tests) and carries snapshot chunks and batches of records compactly; JSON would write each
//! byte of a snapshot chunk as a decimal number. The format byte changes with openraft's types.
//!
//! Errors map onto what openraft does next: a peer that cannot be reached or refuses us
//! (down, wrong address, certificate, version) is `Unreachable` (back off); a call that failed
//! in flight is `Network` (retry); a call over its time budget is `Timeout`.
//!
//! TLS: the client uses the configured `ClientTlsConfig` (node certificate for mutual TLS); the
//! server side is mounted by the gateway on its own TLS listener, restricted to node certificates.

mod node_rpc;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use qianlian_proto::v1::RaftMessage;
use qianlian_proto::v1::raft_client::RaftClient;
use qianlian_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

pub use self::node_rpc::{
    CosignRequest, ForwardRefusal, ForwardRequest, ForwardedReceipt, LocalNode, PeerCallError,
};
use crate::types::{NodeId, TypeConfig};

/// First byte of every `RaftMessage.data`.
pub const WIRE_FORMAT_V1: u8 = 1;

/// Largest Raft message sent or accepted, both ways. A full AppendEntries carries up to
/// `max_payload_entries` batches of up to `max_batch` records each; see `notary`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long to wait for a TCP (and TLS) connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings notice a silently dead peer link between heartbeats.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Raft message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Serialising failed: a bug here, not the peer's fault. No retry helps.
    #[error("encoding raft message: {0}")]
    Encode(String),
    /// The peer speaks a newer wire format: upgrade this node. No retry helps.
    #[error("raft message has unknown wire format {0}")]
    UnknownFormat(u8),
    /// The bytes are not a message of the expected type: a mismatched or faulty peer.
    #[error("malformed raft message: {0}")]
    Malformed(String),
}

/// `[WIRE_FORMAT_V1] ++ postcard(value)`.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_FORMAT_V1];
    postcard::to_io(value, &mut out).map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(out)
}

/// Inverse of [`encode_message`]; refuses other formats and trailing bytes.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (&format, body) = bytes
        .split_first()
        .ok_or_else(|| WireError::Malformed("empty message".into()))?;
    if format != WIRE_FORMAT_V1 {
        return Err(WireError::UnknownFormat(format));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Channels to peers, one HTTP/2 channel per peer address, shared by every caller on this node:
/// Raft replication, forwarded writes and cosignature requests all reuse one TLS connection.
#[derive(Debug, Clone)]
pub struct Peers {
    tls: Option<ClientTlsConfig>,
    // Channels reconnect by themselves; caching them spares a TLS handshake per election.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// Channels that speak TLS with `tls`; `None` speaks plain HTTP/2 (tests only).
    pub fn new(tls: Option<ClientTlsConfig>) -> Peers {
        Peers {
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        // Poisoned only by a panic inside `insert`: the map is still whole.
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for peer {addr:?}: {e}"))?;
        }
        // Lazy: a peer that is down now must not stop this node from starting.
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client of the peer at `addr` with [`MAX_MESSAGE_BYTES`] limits.
    pub(crate) fn client(&self, addr: &str) -> Result<RaftClient<Channel>, String> {
        self.channel(addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        })
    }
}

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
        let client = self.peers.client(&node.addr);
        if let Err(e) = &client {
            tracing::warn!(target_node = target, error = %e, "cannot reach raft peer");
        }
        PeerClient {
            node_id: self.node_id,
            target,
            node: node.clone(),
            client,
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    node_id: NodeId,
    target: NodeId,
    node: BasicNode,
    // `Err` if the peer's address or TLS settings are unusable: every call reports it.
    client: Result<RaftClient<Channel>, String>,
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
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Message(e.clone())))),
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
#[derive(Clone)]
pub struct RaftService {
    raft: openraft::Raft<TypeConfig>,
    // `None`: a bare Raft endpoint (tests); the node calls answer `UNIMPLEMENTED`.
    node: Option<Arc<dyn LocalNode>>,
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
        RaftService { raft, node: None }
    }

    /// The service for `raft` that also serves the node calls from `node`.
    pub fn with_node(raft: openraft::Raft<TypeConfig>, node: Arc<dyn LocalNode>) -> RaftService {
        RaftService {
            raft,
            node: Some(node),
        }
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
        let rpc: AppendEntriesRequest<TypeConfig> = decode_request(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode_request(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode_request(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let rpc: ForwardRequest = decode_request(request)?;
        reply(&node.forwarded(rpc.records).await)
    }

    async fn cosign(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let rpc: CosignRequest = decode_request(request)?;
        reply(&node.cosign(rpc.tree_size).await)
    }

    async fn cosign_status(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let node = self.node()?;
        let rpc: CosignRequest = decode_request(request)?;
        reply(&node.cosign_status(rpc.tree_size).await)
    }
}

#[cfg(test)]
mod tests;
