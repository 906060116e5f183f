//! The etcd side of the comparison: etcd v3 `KV.Put` over plain HTTP/2 gRPC, one connection per
//! client, spread over the members like the gateway's clients over the nodes. Every put is a Raft
//! proposal committed on a majority and fsynced: the same durability as a notarized record.

use std::time::Duration;

use tonic::transport::Channel;

/// etcd's own messages for `KV.Put` (see `gateway/build.rs` for why they are compiled here).
#[allow(missing_debug_implementations, clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdserverpb::PutRequest;
use etcdserverpb::kv_client::KvClient;

/// One client's handle on one etcd member.
#[derive(Debug, Clone)]
pub(super) struct EtcdClient {
    kv: KvClient<Channel>,
    endpoint: String,
}

/// Parse `--etcd http://127.0.0.1:2379,http://…` into member URLs.
pub fn parse_endpoints(list: &str) -> anyhow::Result<Vec<String>> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        !endpoints.is_empty(),
        "--etcd needs at least one client URL, e.g. http://127.0.0.1:2379"
    );
    for e in &endpoints {
        anyhow::ensure!(
            e.starts_with("http://"),
            "etcd endpoint `{e}` must be a plain client URL like http://127.0.0.1:2379 (the bench speaks to etcd without TLS)"
        );
    }
    Ok(endpoints)
}

impl EtcdClient {
    /// Connect to `endpoint` and check it answers a put, so that a wrong port or a server that
    /// is not etcd is reported before the clock starts.
    pub(super) async fn connect(endpoint: &str, probe_key: &[u8]) -> anyhow::Result<EtcdClient> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| anyhow::anyhow!("bad etcd endpoint `{endpoint}`: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach etcd at {endpoint}: {e}; is etcd running with --listen-client-urls {endpoint}?"
                )
            })?;
        let mut client = EtcdClient {
            kv: KvClient::new(channel),
            endpoint: endpoint.to_owned(),
        };
        client
            .put(probe_key.to_vec(), Vec::new())
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "etcd at {endpoint} refused a put ({:?}: {}); is it an etcd v3 member?",
                    s.code(),
                    s.message()
                )
            })?;
        Ok(client)
    }

    /// One put; `Ok` once etcd has committed it.
    pub(super) async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        self.kv
            .put(PutRequest {
                key,
                value,
                ..PutRequest::default()
            })
            .await
            .map(|_| ())
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_urls() {
        let e = parse_endpoints("http://127.0.0.1:2379, http://127.0.0.1:2381").ok();
        assert_eq!(e.map(|e| e.len()), Some(2));
        assert!(parse_endpoints("").is_err());
        let https = parse_endpoints("https://127.0.0.1:2379")
            .err()
            .map(|e| e.to_string());
        assert!(https.is_some_and(|e| e.contains("without TLS")));
    }

    #[tokio::test]
    async fn an_unreachable_etcd_is_named_in_the_error() {
        // Port 9 (discard) on loopback: nobody listens there on a test machine.
        let e = EtcdClient::connect("http://127.0.0.1:9", b"k").await.err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cannot reach etcd at http://127.0.0.1:9"), "{e}");
    }
}
