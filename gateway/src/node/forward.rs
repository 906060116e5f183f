//! Reaching other systems: the owner department's gateway (over mutual TLS, with this
//! department's client certificate) and HTTP/JSON backends that serve a dataset.
//!
//! The owner's server must hold a certificate from the CA for the directory's address, be the
//! node certificate of the owner department's gateway (its subject names that department, see
//! `domain::identity`) and, where the directory pins one, be exactly the pinned certificate; both
//! are checked after the handshake and before any request is written.
//!
//! Every call is bounded by the gateway's forward timeout, connection included, so an owner
//! that does not answer costs the caller at most that long.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{
    GetRecordRequest, GetRecordResponse, QueryRecordsRequest, QueryRecordsResponse,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tracing::Instrument;

use crate::node::tls::TlsError;
use qianlian_proto::contract::REQUEST_ID_HEADER;

/// An owner department's gateway, as the replicated directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerGateway {
    /// The owner department's id.
    pub department: String,
    /// `https://host:port`.
    pub url: String,
    /// SHA-256 of the gateway's TLS certificate (DER), when the directory pins one: then only
    /// a gateway presenting exactly that certificate is sent a request.
    pub cert_fingerprint: Option<[u8; 32]>,
}

/// Why a request was not forwarded, or what the owner's gateway answered.
#[derive(Debug)]
pub enum ForwardError {
    /// The call was made: the owner's status, or the transport's (unreachable, too slow).
    Status(Status),
    /// The server at the owner's address is not the gateway the directory pins for it; the
    /// connection was closed after the handshake and no request was sent.
    WrongGateway(String),
}

type ChannelKey = (String, Option<[u8; 32]>, String);

/// One channel and the last pin refusal of its connector, if the latest connection had one.
#[derive(Debug, Clone)]
struct Pinned {
    channel: Channel,
    refused: Arc<Mutex<Option<String>>>,
}

/// Channels to other departments' gateways, one per address and pin, opened on first use.
#[derive(Debug)]
pub struct Forwarder {
    tls: Arc<ArcSwap<rustls::ClientConfig>>,
    timeout: Duration,
    /// The trust domain the owner gateways' certificates are read in.
    trust_domain: String,
    channels: Mutex<HashMap<ChannelKey, Pinned>>,
}

impl Forwarder {
    /// A forwarder presenting `cert_chain` and `key`, trusting the CA certificates `ca` and
    /// refusing gateways whose certificate `crls` revoke (TLS 1.3, ALPN h2, like the gateways'
    /// servers).
    pub fn new(
        ca: &[CertificateDer<'static>],
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        timeout: Duration,
        trust_domain: String,
    ) -> Result<Forwarder, TlsError> {
        let config = crate::node::tls::client_config(ca, cert_chain, key, crls)?;
        Ok(Forwarder {
            tls: Arc::new(ArcSwap::from_pointee(config)),
            timeout,
            trust_domain,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// Use a new certificate, CA bundle or CRLs from now on: the open channels are dropped, so
    /// the next request to each gateway connects with the new settings.
    pub fn reload(
        &self,
        ca: &[CertificateDer<'static>],
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), TlsError> {
        let config = crate::node::tls::client_config(ca, cert_chain, key, crls)?;
        self.tls.store(Arc::new(config));
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// The forward timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn channel(&self, owner: &OwnerGateway) -> Result<Pinned, ForwardError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (
            owner.url.clone(),
            owner.cert_fingerprint,
            owner.department.clone(),
        );
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let bad = |e: String| {
            ForwardError::Status(Status::failed_precondition(format!(
                "gateway address `{}` of `{}`: {e}",
                owner.url, owner.department
            )))
        };
        // The connector does TCP and TLS itself (to check the pin), so the endpoint's own
        // address is plain `http://`; the origin keeps `https` in each request's `:scheme`.
        let origin: Uri = owner.url.parse().map_err(|e| bad(format!("{e}")))?;
        let authority = origin
            .authority()
            .ok_or_else(|| bad("no host:port".into()))?
            .clone();
        let refused = Arc::new(Mutex::new(None));
        let connector = PinnedTls {
            tls: self.tls.clone(),
            department: owner.department.clone(),
            trust_domain: self.trust_domain.clone(),
            pin: owner.cert_fingerprint,
            refused: refused.clone(),
        };
        let channel = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| bad(e.to_string()))?
            .origin(origin)
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_with_connector_lazy(connector);
        let pinned = Pinned { channel, refused };
        channels.insert(key, pinned.clone());
        Ok(pinned)
    }

    /// A request carrying the exchange's request id and the current trace context.
    fn request<T>(&self, msg: T, request_id: &str) -> Request<T> {
        let mut req = Request::new(msg);
        crate::node::telemetry::inject(req.metadata_mut());
        if let Ok(v) = request_id.parse() {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        req.set_timeout(self.timeout);
        req
    }

    /// The outcome of a call on `pinned`: a failure to connect that the pin caused is a
    /// [`ForwardError::WrongGateway`], whatever status the transport turned it into.
    async fn finish<T>(
        &self,
        pinned: &Pinned,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ForwardError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer in time")),
        };
        result.map_err(|status| {
            let refused = pinned
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match refused {
                Some(why) if status.code() == tonic::Code::Unavailable => {
                    ForwardError::WrongGateway(why)
                }
                _ => ForwardError::Status(status),
            }
        })
    }

    /// Forward a read to the owner's gateway.
    pub async fn get(
        &self,
        owner: &OwnerGateway,
        msg: GetRecordRequest,
        request_id: &str,
    ) -> Result<GetRecordResponse, ForwardError> {
        let pinned = self.channel(owner)?;
        let mut client = ExchangeClient::new(pinned.channel.clone());
        let span = forward_span(&owner.url, "GetRecord");
        let call =
            async { client.get_record(self.request(msg, request_id)).await }.instrument(span);
        self.finish(&pinned, call).await
    }

    /// Forward a query to the owner's gateway.
    pub async fn query(
        &self,
        owner: &OwnerGateway,
        msg: QueryRecordsRequest,
        request_id: &str,
    ) -> Result<QueryRecordsResponse, ForwardError> {
        let pinned = self.channel(owner)?;
        let mut client = ExchangeClient::new(pinned.channel.clone());
        let span = forward_span(&owner.url, "QueryRecords");
        let call =
            async { client.query_records(self.request(msg, request_id)).await }.instrument(span);
        self.finish(&pinned, call).await
    }
}

/// Opens a connection to an owner's gateway: TCP, then TLS with this department's client
/// certificate, the server's chain checked against the CA and its name against the address,
/// then, when the directory pins one, the server's certificate against the pin.
#[derive(Debug, Clone)]
struct PinnedTls {
    /// Read at each connection, so a reconnect uses the settings in force.
    tls: Arc<ArcSwap<rustls::ClientConfig>>,
    department: String,
    trust_domain: String,
    pin: Option<[u8; 32]>,
    refused: Arc<Mutex<Option<String>>>,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for PinnedTls {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("`{uri}` names no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("`{uri}` names no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("`{host}` is not a server name: {e}")))?;
            let tls = TlsConnector::from(this.tls.load_full())
                .connect(name, tcp)
                .await?;
            let verdict = this
                .check_owner(&host, port, &tls)
                .and_then(|()| this.check_pin(&host, port, &tls));
            *this.refused.lock().unwrap_or_else(|e| e.into_inner()) = verdict.clone().err();
            match verdict {
                Ok(()) => Ok(TokioIo::new(tls)),
                Err(why) => {
                    tracing::warn!(department = %this.department, "{why}");
                    Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        why,
                    ))
                }
            }
        })
    }
}

impl PinnedTls {
    /// The server's certificate must be a node certificate naming the owner department: a
    /// valid certificate of another department's gateway (or of no department's) is refused.
    fn check_owner(
        &self,
        host: &str,
        port: u16,
        tls: &tokio_rustls::client::TlsStream<TcpStream>,
    ) -> Result<(), String> {
        let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        owner_identity_matches(
            cert.map(|c| c.as_ref()),
            &self.trust_domain,
            &self.department,
        )
        .map_err(|why| {
            format!(
                "the server at {host}:{port} is not the gateway of `{}`: {why}; nothing was sent to it. The directory's gateway address for `{}` must reach that department's node, whose certificate names it (`qianlian pki init --node <name>={}`)",
                self.department, self.department, self.department
            )
        })
    }

    fn check_pin(
        &self,
        host: &str,
        port: u16,
        tls: &tokio_rustls::client::TlsStream<TcpStream>,
    ) -> Result<(), String> {
        let Some(want) = self.pin else {
            return Ok(());
        };
        let got = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| <[u8; 32]>::from(Sha256::digest(c)));
        if got == Some(want) {
            return Ok(());
        }
        Err(format!(
            "the server at {host}:{port} presented a certificate with SHA-256 {} but the directory pins {} for the gateway of `{}`; nothing was sent to it. If that gateway's certificate was renewed, an operator must update its cert_fingerprint with `qianlian directory apply`",
            got.map(hex::encode).unwrap_or_else(|| "(none)".into()),
            hex::encode(want),
            self.department
        ))
    }
}

/// Whether the leaf certificate `cert` (DER) is the node certificate of `department`'s gateway;
/// `Err` says what it is instead.
pub fn owner_identity_matches(
    cert: Option<&[u8]>,
    trust_domain: &str,
    department: &str,
) -> Result<(), String> {
    let cert = cert.ok_or_else(|| "it presented no certificate".to_owned())?;
    let id = crate::domain::identity::parse_peer(cert, trust_domain)
        .map_err(|e| format!("its certificate carries no usable identity ({e})"))?;
    match (&id.role, id.node_department.as_deref()) {
        (crate::domain::identity::Role::Node, Some(d)) if d == department => Ok(()),
        (crate::domain::identity::Role::Node, Some(d)) => Err(format!(
            "its certificate is node `{}`'s, the gateway of `{d}`",
            id.department
        )),
        (crate::domain::identity::Role::Node, None) => Err(format!(
            "its certificate is node `{}`'s, which names no department",
            id.department
        )),
        (role, _) => Err(format!(
            "its certificate is a {role} certificate of `{}`, not a gateway node's",
            id.department
        )),
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
///
/// Over `http://`, or `https://` (TLS 1.3) trusting only the CA bundle configured for it.
#[derive(Debug, Clone)]
pub struct HttpAdapter {
    url: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// Why a backend gave no usable answer. The backend (or the network to it) is at fault; a
/// retry may help when it is [`BackendError::Unreachable`] or [`BackendError::Timeout`].
///
/// The `Display` form names the backend's address and the cause: it is for this gateway's
/// log. The calling department is told only [`BackendError::kind`], since addresses, query
/// strings and a backend's own error pages are internal to the owner (and a query string
/// may hold a citizen's identifier).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No connection, TLS refused, or the connection broke.
    #[error("backend {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// No answer within the forward timeout.
    #[error("backend {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// An HTTP status other than 200 (and 404 for a read).
    #[error("backend {url} answered {status}: {excerpt}")]
    Status {
        url: String,
        status: http::StatusCode,
        excerpt: String,
    },
    /// An answer that is not the adapter protocol's JSON.
    #[error("backend {url} answered with {detail}")]
    Malformed { url: String, detail: String },
}

impl BackendError {
    /// What went wrong, in words that reveal nothing of the backend: for the caller.
    pub fn kind(&self) -> String {
        match self {
            BackendError::Unreachable { .. } => "could not be reached".into(),
            BackendError::Timeout { timeout, .. } => format!("did not answer within {timeout:?}"),
            BackendError::Status { status, .. } => {
                format!("answered HTTP {}", status.as_u16())
            }
            BackendError::Malformed { .. } => "answered with something other than a record".into(),
        }
    }
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
    /// An adapter for the backend at `url`; `ca`, the CA certificates an `https://` backend's
    /// certificate must chain to (none for `http://`).
    pub fn new(
        url: &str,
        timeout: Duration,
        ca: &[CertificateDer<'static>],
    ) -> Result<HttpAdapter, TlsError> {
        crate::node::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::Config(format!("backend CA certificate: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(HttpAdapter {
            url: url.trim_end_matches('/').to_owned(),
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// GET `uri`; `shown` is how errors name it: the base URL and the path, never a query
    /// string's values.
    async fn fetch(&self, uri: String, shown: &str) -> Result<Option<Bytes>, BackendError> {
        let unreachable = |detail: String| BackendError::Unreachable {
            url: shown.to_owned(),
            detail,
        };
        let uri: http::Uri = uri.parse().map_err(|e| unreachable(format!("{e}")))?;
        let call = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            if status == http::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BACKEND_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(BackendError::Status {
                    url: shown.to_owned(),
                    status,
                    excerpt: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                });
            }
            Ok(Some(body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| BackendError::Timeout {
                url: shown.to_owned(),
                timeout: self.timeout,
            })?
    }

    /// The record `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let uri = format!("{}/records/{}", self.url, utf8_percent_encode(key, ENCODED));
        let shown = format!("{}/records/<key>", self.url);
        let Some(body) = self.fetch(uri, &shown).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(_)) => Ok(Some(body.to_vec())),
            _ => Err(BackendError::Malformed {
                url: shown,
                detail: "something other than a JSON object".into(),
            }),
        }
    }

    /// Records matching every `(field, value)`, at most `limit`.
    pub async fn query(
        &self,
        matches: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
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
        let fields: Vec<&str> = matches.iter().map(|(f, _)| f.as_str()).collect();
        let shown = format!("{}/records?{}", self.url, fields.join("&"));
        let body = self.fetch(uri, &shown).await?.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Hit {
            key: String,
            record: serde_json::Map<String, serde_json::Value>,
        }
        let hits: Vec<Hit> =
            serde_json::from_slice(&body).map_err(|e| BackendError::Malformed {
                url: shown,
                detail: format!("something other than [{{\"key\", \"record\"}}]: {e}"),
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

/// An error and its causes, `: `-separated: hyper's own message ("client error (Connect)")
/// says little without them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
