//! Channels to peers: one HTTP/2 channel per peer address, shared by every call this node makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qianlian_proto::v1::raft_client::RaftClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::wire::MAX_MESSAGE_BYTES;

/// How long to wait for a TCP (and TLS) connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings notice a silently dead peer link between heartbeats.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to peers, one HTTP/2 channel per peer address, shared by every caller on this node:
/// Raft replication, forwarded writes and cosignature requests all reuse one TLS connection.
#[derive(Debug, Clone)]
pub struct Peers {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tls: Option<ClientTlsConfig>,
    // Channels reconnect by themselves; caching them spares a TLS handshake per election.
    channels: HashMap<String, Channel>,
}

impl Peers {
    /// Channels that speak TLS with `tls`; `None` speaks plain HTTP/2 (tests only).
    pub fn new(tls: Option<ClientTlsConfig>) -> Peers {
        Peers {
            inner: Arc::new(Mutex::new(Inner {
                tls,
                channels: HashMap::new(),
            })),
        }
    }

    /// Use `tls` (a renewed node certificate, a new CA bundle) from now on: the open channels
    /// are dropped, so each peer's next call connects with it, and the old connections close
    /// once their calls in flight end.
    pub fn set_tls(&self, tls: Option<ClientTlsConfig>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tls = tls;
        inner.channels.clear();
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        // Poisoned only by a panic inside `insert`: the map is still whole.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = inner.channels.get(addr) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        if let Some(tls) = &inner.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for peer {addr:?}: {e}"))?;
        }
        // Lazy: a peer that is down now must not stop this node from starting.
        let channel = endpoint.connect_lazy();
        inner.channels.insert(addr.to_string(), channel.clone());
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
