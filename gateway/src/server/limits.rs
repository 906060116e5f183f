//! Per-call limits at the node's edge, as a tower layer around every route: a rate per source
//! address for calls on connections without a client certificate, and a time limit on every
//! call but Raft's.
//!
//! Anonymous callers (citizens' apps, probes, anyone on the network) can only reach public
//! calls, but those read the log and sign nothing, so without a rate a single host could keep
//! the node busy. Callers with a certificate are known and accountable: they are bounded by the
//! connection and stream limits, not by a rate. Raft calls are exempt from the time limit:
//! openraft gives each its own budget (a snapshot chunk may take a minute).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode};
use tonic::Status;

use crate::node::config::Limits;
use crate::node::connections::SourceKey;
use crate::node::metrics::Metrics;
use crate::node::tls::ConnInfo;
use crate::services::error::ServiceError;

/// How often the rate limiter forgets sources that have been quiet, so that its memory stays
/// bounded by the sources of the last minute or so.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The paths of the Raft service (peers only).
pub(super) const RAFT_PATH_PREFIX: &str = "/qianlian.v1.Raft/";

/// The limits and the state they need, shared by every connection.
#[derive(Debug)]
pub(super) struct EdgeLimits {
    anonymous: Option<DefaultKeyedRateLimiter<SourceKey>>,
    per_second: u32,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl EdgeLimits {
    /// The per-call limits of `limits`; starts the task that forgets quiet sources.
    pub fn new(limits: &Limits, metrics: Option<Arc<Metrics>>) -> Arc<EdgeLimits> {
        let anonymous = NonZeroU32::new(limits.anonymous_calls_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.anonymous_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let edge = Arc::new(EdgeLimits {
            anonymous,
            per_second: limits.anonymous_calls_per_second,
            timeout: limits.request_timeout,
            metrics,
        });
        if edge.anonymous.is_some() {
            let weak = Arc::downgrade(&edge);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FORGET_EVERY).await;
                    let Some(edge) = weak.upgrade() else { return };
                    if let Some(l) = &edge.anonymous {
                        l.retain_recent();
                        l.shrink_to_fit();
                    }
                }
            });
        }
        edge
    }

    fn hit(&self, limit: &str) {
        if let Some(m) = &self.metrics {
            m.limit_hit(limit);
        }
    }

    /// Whether a call on a connection described by `conn` is over its source's rate.
    fn over_rate(&self, conn: Option<&ConnInfo>) -> bool {
        let (Some(limiter), Some(conn)) = (&self.anonymous, conn) else {
            return false;
        };
        conn.peer.is_none()
            && limiter
                .check_key(&SourceKey::of(conn.remote_addr.ip()))
                .is_err()
    }
}

/// Wraps every route in [`Edge`].
#[derive(Debug, Clone)]
pub(super) struct EdgeLayer {
    pub limits: Arc<EdgeLimits>,
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service [`EdgeLayer`] wraps around.
#[derive(Debug, Clone)]
pub(super) struct Edge<S> {
    inner: S,
    limits: Arc<EdgeLimits>,
}

type Body = tonic::body::Body;

impl<S, B> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let limits = self.limits.clone();
        if limits.over_rate(req.extensions().get::<ConnInfo>()) {
            limits.hit("anonymous_rate");
            let message = format!(
                "too many calls without a client certificate from your address (limit {} per second, limits.anonymous_calls_per_second); slow down and retry in a second",
                limits.per_second
            );
            return Box::pin(std::future::ready(Ok(refusal(
                grpc,
                ServiceError::ResourceExhausted(message),
                StatusCode::TOO_MANY_REQUESTS,
            ))));
        }
        if req.uri().path().starts_with(RAFT_PATH_PREFIX) {
            return Box::pin(self.inner.call(req));
        }
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limits.timeout, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    limits.hit("request_timeout");
                    let message = format!(
                        "the call took longer than this node allows ({} ms, limits.request_timeout_ms); if it was a write, check the log before retrying",
                        limits.timeout.as_millis()
                    );
                    Ok(refusal(
                        grpc,
                        ServiceError::DeadlineExceeded(message),
                        StatusCode::GATEWAY_TIMEOUT,
                    ))
                }
            }
        })
    }
}

/// A refusal as the caller speaks: a gRPC status, or for the HTTP routes `http` with
/// `{"error": "..."}`.
fn refusal(grpc: bool, error: ServiceError, http: StatusCode) -> http::Response<Body> {
    if grpc {
        return Status::from(error).into_http();
    }
    let body = serde_json::json!({ "error": error.to_string() }).to_string();
    let mut resp = http::Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from(
        body,
    ))));
    *resp.status_mut() = http;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if http == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
