//! Reaching other systems: the owner department's gateway (over mutual TLS, with this
//! department's client certificate) and HTTP/JSON backends that serve a dataset.
//!
//! Every call is bounded by the gateway's forward timeout, connection included, so an owner
//! that does not answer costs the caller at most that long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{
    GetRecordRequest, GetRecordResponse, QueryRecordsRequest, QueryRecordsResponse,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tracing::Instrument;

/// Metadata key carrying the exchange's request id from the consumer's gateway to the owner's.
pub const REQUEST_ID_HEADER: &str = "x-qianlian-request-id";

/// Channels to other departments' gateways, one per address, opened on first use.
#[derive(Debug)]
pub struct Forwarder {
    tls: ClientTlsConfig,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    /// A forwarder presenting `identity` (PEM certificate and key) and trusting `ca` (PEM).
    pub fn new(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>, timeout: Duration) -> Forwarder {
        Forwarder {
            tls: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The forward timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map_err(|e| Status::failed_precondition(format!("gateway address `{url}`: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy();
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A request carrying the exchange's request id and the current trace context.
    fn request<T>(&self, msg: T, request_id: &str) -> Request<T> {
        let mut req = Request::new(msg);
        crate::telemetry::inject(req.metadata_mut());
        if let Ok(v) = request_id.parse() {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        req.set_timeout(self.timeout);
        req
    }

    /// Forward a read to the gateway at `url`.
    pub async fn get(
        &self,
        url: &str,
        msg: GetRecordRequest,
        request_id: &str,
    ) -> Result<GetRecordResponse, Status> {
        let mut client = ExchangeClient::new(self.channel(url)?);
        let span = forward_span(url, "GetRecord");
        let call =
            async { client.get_record(self.request(msg, request_id)).await }.instrument(span);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer in time")),
        }
    }

    /// Forward a query to the gateway at `url`.
    pub async fn query(
        &self,
        url: &str,
        msg: QueryRecordsRequest,
        request_id: &str,
    ) -> Result<QueryRecordsResponse, Status> {
        let mut client = ExchangeClient::new(self.channel(url)?);
        let span = forward_span(url, "QueryRecords");
        let call =
            async { client.query_records(self.request(msg, request_id)).await }.instrument(span);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer in time")),
        }
    }
}

/// The client span of a call to another gateway; the trace context injected inside it makes
/// the owner's server span its child.
fn forward_span(url: &str, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "gateway.forward",
        otel.kind = "client",
        otel.name = format!("qianlian.v1.Exchange/{method}"),
        rpc.system = "grpc",
        rpc.service = "qianlian.v1.Exchange",
        rpc.method = method,
        server.address = %url,
    )
}

/// A dataset served by an HTTP/JSON backend:
/// - `GET <url>/records/<key>`: 200 with the record (a JSON object), or 404;
/// - `GET <url>/records?<field>=<value>&...&limit=<n>`: 200 with
///   `[{"key": "...", "record": {...}}, ...]`.
#[derive(Debug, Clone)]
pub struct HttpAdapter {
    url: String,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Everything but RFC 3986's unreserved characters is percent-encoded in paths and queries.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest backend answer read, in bytes.
const MAX_BACKEND_BYTES: usize = 8 * 1024 * 1024;

impl HttpAdapter {
    pub fn new(url: &str, timeout: Duration) -> HttpAdapter {
        HttpAdapter {
            url: url.trim_end_matches('/').to_owned(),
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn fetch(&self, uri: String) -> Result<Option<Bytes>, String> {
        let uri: http::Uri = uri
            .parse()
            .map_err(|e| format!("backend URL `{uri}`: {e}"))?;
        let call = async {
            let resp = self
                .client
                .get(uri.clone())
                .await
                .map_err(|e| format!("backend {uri}: {e}"))?;
            let status = resp.status();
            if status == http::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BACKEND_BYTES)
                .collect()
                .await
                .map_err(|e| format!("backend {uri}: reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "backend {uri} answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
            }
            Ok(Some(body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                format!(
                    "backend {} did not answer within {:?}",
                    self.url, self.timeout
                )
            })?
    }

    /// The record `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let uri = format!("{}/records/{}", self.url, utf8_percent_encode(key, ENCODED));
        let Some(body) = self.fetch(uri).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(_)) => Ok(Some(body.to_vec())),
            _ => Err(format!(
                "backend {} answered for `{key}` with something other than a JSON object",
                self.url
            )),
        }
    }

    /// Records matching every `(field, value)`, at most `limit`.
    pub async fn query(
        &self,
        matches: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut query: Vec<String> = matches
            .iter()
            .map(|(f, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(f, ENCODED),
                    utf8_percent_encode(v, ENCODED)
                )
            })
            .collect();
        query.push(format!("limit={limit}"));
        let uri = format!("{}/records?{}", self.url, query.join("&"));
        let body = self.fetch(uri).await?.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Hit {
            key: String,
            record: serde_json::Map<String, serde_json::Value>,
        }
        let hits: Vec<Hit> = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "backend {} answered a query with something other than [{{\"key\", \"record\"}}]: {e}",
                self.url
            )
        })?;
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|h| {
                let bytes = serde_json::to_vec(&h.record).unwrap_or_default();
                (h.key, bytes)
            })
            .collect())
    }
}
