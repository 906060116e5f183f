//! Logs and traces of a node.
//!
//! - Logs go to stderr: human-readable on a terminal, JSON lines otherwise, or as
//!   `QIANLIAN_LOG_FORMAT=text|json` says; `RUST_LOG` sets the level (default `info`). Spans
//!   follow the same filter: request spans are at `info`.
//! - Traces are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`, nor
//!   `OTEL_TRACES_EXPORTER` `none`). The SDK reads the other standard variables itself:
//!   `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`,
//!   `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_[TRACES_]{TIMEOUT,HEADERS,COMPRESSION}`. An `https://`
//!   collector needs `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` (the image has no system roots)
//!   and, for mutual TLS, `..._CLIENT_CERTIFICATE` and `..._CLIENT_KEY`.
//! - [`RequestTraceLayer`] opens one server span per gRPC call, continuing the caller's W3C
//!   trace context (`traceparent`/`tracestate`); [`inject`] puts the current context into an
//!   outgoing call, [`current_trace_id`] names the trace for records and messages.
//!
//! The span batch processor runs on the tokio runtime ([`init`] must be called inside it), and
//! [`Telemetry::shutdown`] flushes it, so the spans of the last requests leave before the process.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::node::config::NodeConfig;
use crate::node::tls::ConnInfo;

/// The `service.name` of exported spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "qianlian";

/// How long [`Telemetry::shutdown`] waits for the last spans to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Tracing could not be set up. The operator's environment is at fault; the message names the
/// variable and the fix, and the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("OTLP trace exporter: {0}; check OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and friends")]
    Exporter(String),
    #[error("tracing is already set up in this process")]
    AlreadySet,
    #[error("trace export must be set up inside the tokio runtime")]
    NoRuntime,
}

/// What identifies a node in exported spans (OpenTelemetry resource attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeResource {
    /// Raft node id (`qianlian.node.id`).
    pub node_id: Option<u64>,
    /// Node name from its certificate, `spiffe://<trust-domain>/node/<name>`
    /// (`qianlian.node.name` and `service.instance.id`).
    pub node_name: Option<String>,
    /// Trust domain of the cluster (`qianlian.trust_domain`).
    pub trust_domain: Option<String>,
}

impl NodeResource {
    /// The node's identity as its config and certificate state it; the name is left out when
    /// the certificate cannot be read (the node then fails to start with a precise error).
    pub fn of(config: &NodeConfig) -> NodeResource {
        let node_name = crate::node::tls::load_certs(&config.tls.cert)
            .ok()
            .and_then(|certs| certs.into_iter().next())
            .and_then(|der| crate::domain::identity::parse_peer(&der, &config.trust_domain).ok())
            .map(|id| id.department);
        NodeResource {
            node_id: Some(config.node_id),
            node_name,
            trust_domain: Some(config.trust_domain.clone()),
        }
    }

    fn attributes(&self) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new("service.name", SERVICE_NAME),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if let Some(id) = self.node_id {
            attrs.push(KeyValue::new("qianlian.node.id", id as i64));
        }
        if let Some(name) = &self.node_name {
            attrs.push(KeyValue::new("qianlian.node.name", name.clone()));
        }
        let instance = match (&self.node_name, self.node_id) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(id)) => Some(format!("node-{id}")),
            _ => None,
        };
        if let Some(i) = instance {
            attrs.push(KeyValue::new("service.instance.id", i));
        }
        if let Some(td) = &self.trust_domain {
            attrs.push(KeyValue::new("qianlian.trust_domain", td.clone()));
        }
        attrs
    }
}

/// Logging and, when configured, trace export of this process; hold it until the end and call
/// [`Telemetry::shutdown`].
#[derive(Debug)]
#[must_use = "call shutdown() at the end, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export the spans still buffered and stop the exporter, waiting at most
    /// [`FLUSH_TIMEOUT`]. Call it inside the runtime, after the node stopped serving.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks its thread until the batch task, which runs on this
        // runtime, has exported: block a thread of its own, never a runtime worker.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(provider.shutdown());
        });
        match tokio::time::timeout(FLUSH_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export did not shut down cleanly"),
            Ok(Err(_)) => tracing::warn!("trace export stopped without an answer"),
            Err(_) => tracing::warn!(
                "the trace collector did not take the last spans within {FLUSH_TIMEOUT:?}; they are dropped"
            ),
        }
    }
}

/// Set up logging, and for a node (`Some`) trace export when the environment asks for it (see
/// the module doc); `node` names the node in the spans. Command-line tools pass `None`: logs
/// only. Call once, inside the tokio runtime.
pub fn init(node: Option<&NodeResource>) -> Result<Telemetry, TelemetryError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    init_with_env(node, &env)
}

fn env_get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The OTLP endpoint the environment names, if trace export is wanted.
pub fn export_endpoint(env: &[(String, String)]) -> Result<Option<String>, TelemetryError> {
    if env_get(env, "OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let endpoint = env_get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env_get(env, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    match env_get(env, "OTEL_TRACES_EXPORTER") {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(TelemetryError::Env {
                var: "OTEL_TRACES_EXPORTER",
                message: format!(
                    "`{other}` is not supported; use `otlp` (or `none` to turn export off)"
                ),
            });
        }
    }
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env_get(env, var)
            && p != "grpc"
        {
            return Err(TelemetryError::Env {
                var: if var.contains("TRACES") {
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                } else {
                    "OTEL_EXPORTER_OTLP_PROTOCOL"
                },
                message: format!(
                    "`{p}`: qianlian exports OTLP over gRPC only; set it to `grpc` (the collector's port 4317) or unset it"
                ),
            });
        }
    }
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(TelemetryError::Env {
            var: if env_get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            } else {
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            },
            message: format!(
                "`{endpoint}` must be a URL such as http://otel-collector:4317 or https://otel-collector:4317"
            ),
        });
    }
    Ok(Some(endpoint.to_owned()))
}

/// TLS towards an `https://` collector, from the standard certificate variables.
fn collector_tls(
    env: &[(String, String)],
) -> Result<tonic::transport::ClientTlsConfig, TelemetryError> {
    let pick = |signal: &'static str, generic: &'static str| {
        env_get(env, signal)
            .map(|v| (signal, v))
            .or_else(|| env_get(env, generic).map(|v| (generic, v)))
    };
    let read = |(var, path): (&'static str, &str)| {
        std::fs::read(path).map_err(|e| TelemetryError::Env {
            var,
            message: format!("cannot read {path}: {e}"),
        })
    };
    let Some(ca) = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ) else {
        return Err(TelemetryError::Env {
            var: "OTEL_EXPORTER_OTLP_CERTIFICATE",
            message: "an https:// collector needs the CA bundle that signed its certificate: set this to a PEM file (the node image has no system roots)".into(),
        });
    };
    crate::node::tls::install_crypto_provider();
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    let cert = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    );
    let key = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    );
    match (cert, key) {
        (Some(c), Some(k)) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(read(c)?, read(k)?));
        }
        (None, None) => {}
        (Some((var, _)), None) | (None, Some((var, _))) => {
            return Err(TelemetryError::Env {
                var,
                message: "the collector client certificate and key go together: set both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
            });
        }
    }
    Ok(tls)
}

fn resource(node: &NodeResource, env: &[(String, String)]) -> Resource {
    // Ours first, then OTEL_RESOURCE_ATTRIBUTES over them, then OTEL_SERVICE_NAME over all.
    let mut builder = Resource::builder_empty()
        .with_attributes(node.attributes())
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = env_get(env, "OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(name.to_owned());
    }
    builder.build()
}

fn init_with_env(
    node: Option<&NodeResource>,
    env: &[(String, String)],
) -> Result<Telemetry, TelemetryError> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let text = match env_get(env, "QIANLIAN_LOG_FORMAT") {
        Some("text") => true,
        Some("json") => false,
        _ => std::io::stderr().is_terminal(),
    };
    let fmt_text = text.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let fmt_json = (!text).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });

    let endpoint = match node {
        Some(node) => export_endpoint(env)?.map(|e| (node, e)),
        None => None,
    };
    let provider = match endpoint {
        Some((node, endpoint)) => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(TelemetryError::NoRuntime);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if endpoint.starts_with("https://") {
                builder = builder.with_tls_config(collector_tls(env)?);
            }
            let exporter = builder
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let processor =
                BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
            Some((
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_resource(resource(node, env))
                    .build(),
                endpoint,
            ))
        }
        None => None,
    };
    // The exporter's own gRPC client must not trace itself into the export queue.
    let otel = provider.as_ref().map(|(p, _)| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(SERVICE_NAME))
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::TRACE)
                    .with_target("h2", LevelFilter::OFF)
                    .with_target("hyper", LevelFilter::OFF)
                    .with_target("hyper_util", LevelFilter::OFF)
                    .with_target("tower", LevelFilter::OFF)
                    .with_target("tonic", LevelFilter::OFF)
                    .with_target("opentelemetry", LevelFilter::OFF)
                    .with_target("opentelemetry_sdk", LevelFilter::OFF)
                    .with_target("opentelemetry_otlp", LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_text)
        .with(fmt_json)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;
    let provider = provider.map(|(p, endpoint)| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(p.clone());
        tracing::info!(%endpoint, "exporting traces over OTLP/gRPC");
        p
    });
    Ok(Telemetry { provider })
}

/// Put the current span's trace context (`traceparent`, `tracestate`) into the metadata of an
/// outgoing call, so the gateway called continues this trace. Does nothing when traces are not
/// exported.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
}

/// The current span's trace id: 32 lowercase hex digits, as collectors and UIs show it. `None`
/// when traces are not exported or there is no valid trace context.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C trace context a caller sent in its request headers (empty when none, or when traces
/// are not exported).
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Calls that run all the time in the background (Raft replication and votes, health checks,
/// reflection) get a span only when the caller sent a trace context: a root span for each
/// heartbeat would bury the requests in noise.
fn background(service: &str) -> bool {
    matches!(
        service,
        "qianlian.v1.Raft" | "grpc.health.v1.Health" | "grpc.reflection.v1.ServerReflection"
    )
}

/// Paths on the gRPC port that orchestrators poll; never traced.
const PROBES: &[&str] = &["livez", "readyz", "healthz"];

/// The server span of one call, or `None` when the call is not traced.
fn request_span<B>(req: &http::Request<B>) -> Option<tracing::Span> {
    let path = req.uri().path().trim_start_matches('/');
    let has_context = req.headers().contains_key("traceparent");
    let span = match path.split_once('/') {
        Some((service, method)) if service.contains('.') => {
            if background(service) && !has_context {
                return None;
            }
            tracing::info_span!(
                "grpc.request",
                otel.name = %path,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
                peer.department = tracing::field::Empty,
                peer.role = tracing::field::Empty,
            )
        }
        _ if PROBES.contains(&path) => return None,
        _ => tracing::info_span!(
            "http.request",
            otel.name = %format!("{} /{path}", req.method()),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %req.method(),
            url.path = %req.uri().path(),
            http.response.status_code = tracing::field::Empty,
            peer.department = tracing::field::Empty,
            peer.role = tracing::field::Empty,
        ),
    };
    // Without an exporting layer there is nothing to continue: the error is expected then.
    let _ = span.set_parent(extract(req.headers()));
    Some(span)
}

/// The caller as the TLS handshake established it, recorded on the request span and in a
/// `tls.identity` child span.
fn record_identity<B>(req: &http::Request<B>, span: &tracing::Span) {
    let conn = req.extensions().get::<ConnInfo>();
    let identity = tracing::info_span!(
        parent: span,
        "tls.identity",
        peer.department = tracing::field::Empty,
        peer.role = tracing::field::Empty,
        peer.cert_fingerprint = tracing::field::Empty,
        peer.address = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let _in = identity.enter();
    if let Some(c) = conn {
        identity.record("peer.address", tracing::field::display(c.remote_addr));
    }
    match conn.map(|c| &c.peer) {
        Some(Some(Ok(id))) => {
            for s in [span, &identity] {
                s.record("peer.department", id.department.as_str());
                s.record("peer.role", id.role.as_str());
            }
            identity.record("peer.cert_fingerprint", id.fingerprint_hex());
        }
        Some(Some(Err(e))) => {
            identity.record("error", tracing::field::display(e));
        }
        _ => {
            identity.record("error", "no client certificate");
        }
    }
}

/// A tower layer that opens the server span of every gRPC call (continuing the caller's trace)
/// and records the caller's identity and the outcome on it.
#[derive(Clone, Debug, Default)]
pub struct RequestTraceLayer;

impl<S> tower::Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace { inner }
    }
}

/// The service [`RequestTraceLayer`] wraps around.
#[derive(Clone, Debug)]
pub struct RequestTrace<S> {
    inner: S,
}

/// gRPC codes that mean the server failed (OpenTelemetry RPC conventions); the others are the
/// caller's to answer for.
fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

impl<S, B, RB> tower::Service<http::Request<B>> for RequestTrace<S>
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
        let Some(span) = request_span(&req) else {
            return Box::pin(self.inner.call(req));
        };
        let grpc = span.metadata().map(|m| m.name()) == Some("grpc.request");
        record_identity(&req, &span);
        let fut = {
            let _in = span.enter();
            self.inner.call(req)
        };
        let outer = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
                if let Ok(resp) = &result {
                    if grpc {
                        // Errors are answered trailers-only, with grpc-status in the headers;
                        // a success carries it in the trailers.
                        let code = resp
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|c| c.parse::<i32>().ok())
                            .map(tonic::Code::from_i32)
                            .unwrap_or(tonic::Code::Ok);
                        outer.record("rpc.grpc.status_code", code as i64);
                        if server_fault(code) {
                            outer.record("otel.status_code", "ERROR");
                        }
                    } else {
                        let status = resp.status();
                        outer.record("http.response.status_code", status.as_u16() as i64);
                        if status.is_server_error() {
                            outer.record("otel.status_code", "ERROR");
                        }
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn export_is_on_only_with_an_endpoint_and_names_the_variable_at_fault() {
        assert_eq!(export_endpoint(&env(&[])).expect("ok"), None);
        assert_eq!(
            export_endpoint(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]))
                .expect("ok")
                .as_deref(),
            Some("http://c:4317")
        );
        // The signal-specific variable wins, as the specification says.
        assert_eq!(
            export_endpoint(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"),
            ]))
            .expect("ok")
            .as_deref(),
            Some("http://t:4317")
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                export_endpoint(&env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    off
                ]))
                .expect("ok"),
                None
            );
        }
        let cases = [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                "OTEL_EXPORTER_OTLP_PROTOCOL: `http/protobuf`",
            ),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
        ];
        for (extra, needle) in cases {
            let err = export_endpoint(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                extra,
            ]))
            .expect_err(needle)
            .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = export_endpoint(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]))
            .expect_err("no scheme")
            .to_string();
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"), "{err}");
    }

    #[test]
    fn https_collector_needs_a_ca_and_a_complete_client_identity() {
        let err = collector_tls(&env(&[])).expect_err("no CA").to_string();
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE:"), "{err}");
        let err = collector_tls(&env(&[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/ca.pem",
        )]))
        .expect_err("unreadable")
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").expect("write");
        let ca = ca.display().to_string();
        let err = collector_tls(&env(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &ca),
        ]))
        .expect_err("key without certificate")
        .to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn resource_names_the_service_and_node_and_lets_the_environment_override() {
        let node = NodeResource {
            node_id: Some(2),
            node_name: Some("housing".into()),
            trust_domain: Some("gov.example".into()),
        };
        let get = |r: &Resource, k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        let r = resource(&node, &env(&[]));
        assert_eq!(get(&r, "service.name").as_deref(), Some("qianlian"));
        assert_eq!(get(&r, "qianlian.node.id").as_deref(), Some("2"));
        assert_eq!(get(&r, "qianlian.node.name").as_deref(), Some("housing"));
        assert_eq!(get(&r, "service.instance.id").as_deref(), Some("housing"));
        let r = resource(&node, &env(&[("OTEL_SERVICE_NAME", "gateway-b")]));
        assert_eq!(get(&r, "service.name").as_deref(), Some("gateway-b"));
    }

    #[test]
    fn metadata_injector_writes_valid_grpc_metadata() {
        let mut m = tonic::metadata::MetadataMap::new();
        let mut inj = MetadataInjector(&mut m);
        inj.set(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        inj.set("bad key\n", "x".into());
        assert_eq!(
            m.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn trace_context_round_trips_through_headers_and_metadata() {
        // The propagator itself, without a global: what the layer and `inject` use.
        let p = TraceContextPropagator::new();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let cx = p.extract(&HeaderExtractor(&headers));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let mut m = tonic::metadata::MetadataMap::new();
        p.inject_context(&cx, &mut MetadataInjector(&mut m));
        assert_eq!(
            m.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn a_span_continuing_a_callers_trace_names_it_and_passes_it_on() {
        use tracing_subscriber::layer::SubscriberExt;
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            );
            let span = tracing::info_span!("grpc.request");
            span.set_parent(extract(&headers)).expect("parent set");
            let _in = span.enter();
            assert_eq!(
                current_trace_id().as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let mut out = tonic::metadata::MetadataMap::new();
            inject(&mut out);
            let tp = out
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent injected")
                .to_owned();
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "{tp}");
            // The callee's parent is this span, not the caller's.
            assert_ne!(parts[2], "b7ad6b7169203331", "{tp}");
            assert_eq!(parts[2].len(), 16, "{tp}");
        });
        let _ = provider.shutdown();
    }

    #[test]
    fn without_export_there_is_no_trace_id() {
        assert_eq!(current_trace_id(), None);
    }
}
