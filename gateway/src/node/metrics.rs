//! Prometheus metrics, served as text on their own HTTP port (`[metrics] listen`; off unless
//! configured, on in `qianlian dev`).
//!
//! Request counts are taken by a tower layer around every gRPC service (service, method,
//! status code, calling department); decisions and commit latency by the services; Raft,
//! group-commit, storage and certificate figures are read at scrape time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
    cert_expiry: Family<CertLabels, Gauge>,
    data_dir: PathBuf,
    certificates: Vec<(String, i64)>,
    /// Edge limits hit, by limit; connections closed for their certificate; CRL files refused.
    limit_hits: Family<ReasonLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
    crl_refused: Family<ReasonLabels, Counter>,
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
            cert_expiry: Family::default(),
            data_dir: data_dir.to_owned(),
            certificates,
            limit_hits: Family::default(),
            connections_closed: Family::default(),
            crl_refused: Family::default(),
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
            "Bytes on disk under the data folder (RocksDB and record store)",
            m.data_bytes.clone(),
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
        self.data_bytes.set(dir_size(&self.data_dir) as i64);
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

/// Serve `/metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, notary: Notary) {
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
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

/// A tower layer counting every gRPC call by service, method, status and department.
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer {
    pub metrics: Option<Arc<Metrics>>,
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RequestMetricsLayer`] wraps around.
#[derive(Clone, Debug)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
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
        // gRPC paths are /<package.Service>/<Method>; anything else is HTTP (JSON, probes).
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = match path.split_once('/') {
            Some((s, m)) if s.contains('.') => (s.to_owned(), m.to_owned()),
            _ => ("http".to_owned(), path.to_owned()),
        };
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
                    if service == "http" {
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
