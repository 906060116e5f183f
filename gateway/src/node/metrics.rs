//! Prometheus metrics, served as text on their own HTTP port (`[metrics] listen`; off unless
//! configured, on in `qianlian dev`).
//!
//! Request counts are taken by a tower layer around every gRPC service (service, method,
//! status code, calling department); decisions and commit latency by the services; Raft,
//! group-commit, cosigning and certificate figures are read at scrape time.
//!
//! Every label set is bounded, whatever callers send: a path that is not a method of a served
//! gRPC service or a served HTTP route is counted under service and method `unknown`
//! ([`KnownPaths`]), departments come only from certificates the CA issued, and codes are gRPC
//! or HTTP status codes. The size of the data folder is measured off the async runtime every
//! [`DATA_SIZE_EVERY`] (15 s), not at scrape time: a scrape reads the last measurement.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use qianlian_raft_store::notary::Notary;
use qianlian_raft_store::notary::group_commit::BATCH_SIZE_BOUNDS;

use crate::node::tls::ConnInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: String,
    pub method: String,
    pub code: String,
    pub department: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrlLabels {
    pub file: String,
}

/// One fixed label: which limit, why a connection was closed, why a CRL was refused. Values
/// come from the code, never from a request, so the label sets stay few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CosignLabels {
    /// `checkpoint` or `status_list`.
    pub head: String,
}

/// How often the data folder's size is measured (on a blocking thread): a walk of a large
/// RocksDB folder takes long enough that doing it per scrape would let scrapers load the node.
pub const DATA_SIZE_EVERY: Duration = Duration::from_secs(15);

/// The label for every path that names no served method or route.
pub const UNKNOWN: &str = "unknown";

/// The request paths a node serves, so that request metrics label only those: gRPC methods
/// (`/package.Service/Method`) and HTTP routes.
#[derive(Debug, Default, Clone)]
pub struct KnownPaths {
    grpc: HashSet<(String, String)>,
    http: HashSet<String>,
}

impl KnownPaths {
    /// The methods of every service in `descriptor_sets` (encoded `FileDescriptorSet`s, as
    /// tonic-build writes them) and the HTTP routes `http_routes`. A set that does not decode
    /// is a build fault: it is logged and adds nothing, so its calls count as `unknown`.
    pub fn new(descriptor_sets: &[&[u8]], http_routes: &[&str]) -> KnownPaths {
        let mut grpc = HashSet::new();
        for set in descriptor_sets {
            let files = match prost_types::FileDescriptorSet::decode(*set) {
                Ok(s) => s.file,
                Err(e) => {
                    tracing::error!(error = %e, "a service descriptor set does not decode");
                    continue;
                }
            };
            for file in files {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    for method in service.method {
                        grpc.insert((full.clone(), method.name.unwrap_or_default()));
                    }
                }
            }
        }
        KnownPaths {
            grpc,
            http: http_routes.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// The (service, method) labels of a request path: a served gRPC method, `http` and the
    /// route for a served HTTP route, [`UNKNOWN`] for both otherwise.
    pub fn labels(&self, path: &str) -> (String, String) {
        if self.http.contains(path) {
            return ("http".to_owned(), path.to_owned());
        }
        if let Some((service, method)) = path.trim_start_matches('/').split_once('/')
            && self.grpc.contains(&(service.to_owned(), method.to_owned()))
        {
            return (service.to_owned(), method.to_owned());
        }
        (UNKNOWN.to_owned(), UNKNOWN.to_owned())
    }
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds from handing a record to the log to its receipt (commit on a majority).
    pub commit_seconds: Histogram,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_last_index: Gauge,
    raft_applied_index: Gauge,
    log_records: Gauge,
    replication_lag: Family<FollowerLabels, Gauge>,
    batches: Gauge,
    batched_records: Gauge,
    answered_at_commit: Gauge,
    records_refused: Gauge,
    batch_size_le: Family<BatchBucket, Gauge>,
    data_bytes: Gauge,
    cosign_sent: Family<CosignLabels, Gauge>,
    cosign_served: Family<CosignLabels, Gauge>,
    cert_expiry: Family<CertLabels, Gauge>,
    data_dir: PathBuf,
    certificates: Vec<(String, i64)>,
    /// Edge limits hit, by limit; connections closed for their certificate; CRL files refused.
    limit_hits: Family<ReasonLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
    crl_refused: Family<ReasonLabels, Counter>,
    /// Peer calls and snapshots refused by node authority, by reason.
    peer_refused: Family<ReasonLabels, Gauge>,
    /// The CRL file in force and its `nextUpdate` (Unix seconds), if any.
    crl_next_update: std::sync::Mutex<Option<(String, i64)>>,
    crl_next_update_seconds: Family<CrlLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchBucket {
    pub le: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Register every metric. `certificates` are (name, not-after in Unix seconds).
    pub fn new(data_dir: &Path, certificates: Vec<(String, i64)>) -> Metrics {
        let mut registry = Registry::with_prefix("qianlian");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC calls by service, method, status code and calling department",
            requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Access decisions by action and outcome",
            decisions.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 14));
        registry.register(
            "commit_seconds",
            "Time from appending a record to its receipt",
            commit_seconds.clone(),
        );
        let m = Metrics {
            requests,
            decisions,
            commit_seconds,
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_last_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            log_records: Gauge::default(),
            replication_lag: Family::default(),
            batches: Gauge::default(),
            batched_records: Gauge::default(),
            answered_at_commit: Gauge::default(),
            records_refused: Gauge::default(),
            batch_size_le: Family::default(),
            data_bytes: Gauge::default(),
            cosign_sent: Family::default(),
            cosign_served: Family::default(),
            cert_expiry: Family::default(),
            data_dir: data_dir.to_owned(),
            certificates,
            limit_hits: Family::default(),
            connections_closed: Family::default(),
            crl_refused: Family::default(),
            peer_refused: Family::default(),
            crl_next_update: std::sync::Mutex::new(None),
            crl_next_update_seconds: Family::default(),
            registry,
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register("raft_term", "Current Raft term", m.raft_term.clone());
        r.register(
            "raft_leader",
            "Node id of the known leader (0: none)",
            m.raft_leader.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Index of the last Raft entry",
            m.raft_last_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Index of the last applied Raft entry",
            m.raft_applied_index.clone(),
        );
        r.register(
            "log_records",
            "Records in the notarization log on this node",
            m.log_records.clone(),
        );
        r.register(
            "raft_replication_lag_entries",
            "On the leader: Raft entries each member is behind",
            m.replication_lag.clone(),
        );
        r.register(
            "group_commit_batches",
            "Batches formed by group commit on this node",
            m.batches.clone(),
        );
        r.register(
            "group_commit_records",
            "Records in those batches",
            m.batched_records.clone(),
        );
        r.register(
            "group_commit_answered_at_commit",
            "Batches whose callers got their receipts at commit, before this node applied them",
            m.answered_at_commit.clone(),
        );
        r.register(
            "records_refused",
            "Records this node's state machine refused since it started: their originator signature or authority did not hold, so no node appended them",
            m.records_refused.clone(),
        );
        r.register(
            "group_commit_batch_size",
            "Batches with at most `le` records (cumulative)",
            m.batch_size_le.clone(),
        );
        r.register(
            "data_bytes",
            "Bytes on disk under the data folder (RocksDB and record store), measured every 15 s",
            m.data_bytes.clone(),
        );
        r.register(
            "cosign_requests_sent",
            "Cosignature requests this node sent to members (retries included), by head",
            m.cosign_sent.clone(),
        );
        r.register(
            "cosign_requests_served",
            "Cosignature requests members sent this node, by head",
            m.cosign_served.clone(),
        );
        r.register(
            "certificate_expiry_seconds",
            "Seconds until each certificate expires (negative: expired)",
            m.cert_expiry.clone(),
        );
        r.register(
            "limit_hits",
            "Connections and calls refused by a limit (connections, connections_per_source, anonymous_rate, request_timeout)",
            m.limit_hits.clone(),
        );
        r.register(
            "connections_closed",
            "Open connections closed because their client certificate was revoked or expired, or the CRL expired",
            m.connections_closed.clone(),
        );
        r.register(
            "crl_refused",
            "CRL files refused on reload (empty, unparsable, bad_signature, expired, older, missing_issuer); the previous CRLs stay in force",
            m.crl_refused.clone(),
        );
        r.register(
            "peer_refused",
            "Peer calls refused since start: not_member (not a current member's node certificate), wrong_sender (a message in another member's name), forward_not_permitted (a forwarded record the sending node may not originate), membership_not_signed (a membership change the operators did not sign), snapshot_not_extending (a snapshot that does not extend this node's signed tree, or whose membership no operator signed)",
            m.peer_refused.clone(),
        );
        r.register(
            "crl_next_update_seconds",
            "Seconds until the CRLs in force pass their nextUpdate (negative: expired, client certificates other than nodes' are refused); absent without a CRL",
            m.crl_next_update_seconds.clone(),
        );
        m
    }

    /// Count a connection or call refused by `limit`.
    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits
            .get_or_create(&ReasonLabels {
                reason: limit.to_owned(),
            })
            .inc();
    }

    /// Count a connection closed for `reason` (revoked, certificate_expired, crl_expired).
    pub fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Count a CRL file refused for `reason`.
    pub fn crl_refused(&self, reason: &str) {
        self.crl_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The CRL file now in force and its `nextUpdate` (Unix seconds).
    pub fn set_crl_next_update(&self, file: &Path, next_update: i64) {
        *self
            .crl_next_update
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((file.display().to_string(), next_update));
    }

    /// Refresh the figures read at scrape time, then render the text format.
    pub fn render(&self, notary: &Notary) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let s = notary.status();
        self.raft_term.set(s.term as i64);
        self.raft_leader.set(s.leader.unwrap_or(0) as i64);
        let last = s.last_raft_index.unwrap_or(0);
        self.raft_last_index.set(last as i64);
        self.raft_applied_index
            .set(s.applied_raft_index.unwrap_or(0) as i64);
        self.log_records.set(s.tree_size as i64);
        for (id, matched) in &s.replication {
            let lag = last.saturating_sub(matched.unwrap_or(0));
            self.replication_lag
                .get_or_create(&FollowerLabels {
                    node: id.to_string(),
                })
                .set(lag as i64);
        }
        let a = notary.authority_stats();
        for (reason, n) in [
            ("not_member", a.not_member.load(Relaxed)),
            ("wrong_sender", a.wrong_sender.load(Relaxed)),
            ("forward_not_permitted", a.forward_refused.load(Relaxed)),
            ("membership_not_signed", a.membership_refused.load(Relaxed)),
            ("snapshot_not_extending", notary.snapshots_refused()),
        ] {
            self.peer_refused
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .set(n as i64);
        }
        let b = notary.batch_stats();
        self.batches.set(b.batches.load(Relaxed) as i64);
        self.batched_records.set(b.records.load(Relaxed) as i64);
        self.answered_at_commit
            .set(b.answered_at_commit.load(Relaxed) as i64);
        self.records_refused.set(notary.records_refused() as i64);
        let mut cumulative = 0;
        for (i, bucket) in b.size_buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = BATCH_SIZE_BOUNDS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            self.batch_size_le
                .get_or_create(&BatchBucket { le })
                .set(cumulative as i64);
        }
        let c = notary.cosign_stats();
        for (head, sent, served) in [
            (
                "checkpoint",
                &c.checkpoint_requests_sent,
                &c.checkpoint_requests_served,
            ),
            (
                "status_list",
                &c.status_list_requests_sent,
                &c.status_list_requests_served,
            ),
        ] {
            let labels = CosignLabels { head: head.into() };
            self.cosign_sent
                .get_or_create(&labels)
                .set(sent.load(Relaxed) as i64);
            self.cosign_served
                .get_or_create(&labels)
                .set(served.load(Relaxed) as i64);
        }
        let now = crate::node::time::now_unix();
        for (name, not_after) in &self.certificates {
            self.cert_expiry
                .get_or_create(&CertLabels {
                    certificate: name.clone(),
                })
                .set(not_after - now);
        }
        let crl = self
            .crl_next_update
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((file, next_update)) = crl {
            self.crl_next_update_seconds
                .get_or_create(&CrlLabels { file })
                .set(next_update - now);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Measure the data folder every [`DATA_SIZE_EVERY`], on a blocking thread; never returns.
async fn measure_data_folder(metrics: Arc<Metrics>) {
    loop {
        let dir = metrics.data_dir.clone();
        match tokio::task::spawn_blocking(move || dir_size(&dir)).await {
            Ok(bytes) => {
                metrics.data_bytes.set(bytes as i64);
            }
            Err(e) => tracing::warn!(error = %e, "measuring the data folder failed"),
        }
        tokio::time::sleep(DATA_SIZE_EVERY).await;
    }
}

/// Serve `/metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, notary: Notary) {
    let measuring = measure_data_folder(metrics.clone());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            let notary = notary.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(&notary),
                )
            }
        }),
    );
    tokio::select! {
        served = axum::serve(listener, app) => {
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        }
        () = measuring => {}
    }
}

/// A tower layer counting every gRPC call by service, method, status and department; paths
/// not in `known` count as [`UNKNOWN`].
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer {
    pub metrics: Option<Arc<Metrics>>,
    pub known: Arc<KnownPaths>,
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
        }
    }
}

/// The service [`RequestMetricsLayer`] wraps around.
#[derive(Clone, Debug)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
    known: Arc<KnownPaths>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RequestMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(metrics) = self.metrics.clone() else {
            return Box::pin(self.inner.call(req));
        };
        let (service, method) = self.known.labels(req.uri().path());
        let department = match req.extensions().get::<ConnInfo>().map(|c| &c.peer) {
            Some(Some(Ok(id))) => id.department.clone(),
            Some(Some(Err(_))) => "(invalid certificate)".to_owned(),
            _ => "(none)".to_owned(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // An error is answered trailers-only, with grpc-status in the headers; a success
            // carries it in the trailers, after the body.
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(|c| format!("{:?}", tonic::Code::from_i32(c.parse().unwrap_or(2))))
                .unwrap_or_else(|| {
                    if service == "http" || service == UNKNOWN {
                        resp.status().as_u16().to_string()
                    } else {
                        "Ok".to_owned()
                    }
                });
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    service,
                    method,
                    code,
                    department,
                })
                .inc();
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_and_routes_keep_their_labels_and_everything_else_is_unknown() {
        let known = KnownPaths::new(
            &[
                qianlian_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            &["/livez"],
        );
        let labels = |p: &str| known.labels(p);
        let owned = |s: &str, m: &str| (s.to_owned(), m.to_owned());
        assert_eq!(
            labels("/qianlian.v1.Notary/GetCheckpoint"),
            owned("qianlian.v1.Notary", "GetCheckpoint")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            owned("grpc.health.v1.Health", "Check")
        );
        assert_eq!(labels("/livez"), owned("http", "/livez"));
        for unknown in [
            "/qianlian.v1.Notary/Nope",
            "/qianlian.v1.Nope/GetCheckpoint",
            "/qianlian.v1.Notary/GetCheckpoint/extra",
            "/livez/",
            "/",
            "",
            "/a.b/c",
        ] {
            assert_eq!(labels(unknown), owned(UNKNOWN, UNKNOWN), "{unknown:?}");
        }
    }

    #[test]
    fn a_descriptor_set_that_does_not_decode_adds_nothing() {
        let known = KnownPaths::new(&[b"\xff\xff\xff"], &[]);
        assert_eq!(
            known.labels("/qianlian.v1.Notary/GetCheckpoint"),
            (UNKNOWN.to_owned(), UNKNOWN.to_owned())
        );
    }
}
