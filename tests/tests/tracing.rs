//! Traces over OTLP: a node exports the spans of a request to a collector (here an in-process
//! OTLP/gRPC receiver), continuing the caller's W3C trace, and exports nothing unless told to.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RecordRef};
use support::*;

/// The caller's trace: a gateway in another department that already started it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP trace receiver on 127.0.0.1: keeps every export request it gets.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got
            .lock()
            .expect("receiver lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serve on `listener` until the test ends.
    fn start(listener: tokio::net::TcpListener) -> Receiver {
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        receiver
    }

    /// Every span received so far, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<KeyValue>, opentelemetry_proto::tonic::trace::v1::Span)> {
        let got = self.got.lock().expect("receiver lock");
        let mut out = Vec::new();
        for req in got.iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn enterprise(key: &str) -> Option<RecordRef> {
    Some(RecordRef {
        department: "market-regulation".into(),
        dataset: "enterprise-registration".into(),
        key: key.into(),
    })
}

/// Put a record as its owner, then read it as housing with the caller's `traceparent`.
async fn traced_read(env: &Env, node: &Node) {
    let key = uscc(7);
    exchange(env, node, "market-regulation")
        .await
        .put_record(PutRecordRequest {
            record: enterprise(&key),
            payload: br#"{"name":"traced enterprise"}"#.to_vec(),
        })
        .await
        .expect("owner writes");
    let mut req = tonic::Request::new(GetRecordRequest {
        record: enterprise(&key),
        purpose: "permit-review".into(),
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .expect("metadata value"),
    );
    let got = exchange(env, node, "housing")
        .await
        .get_record(req)
        .await
        .expect("housing reads for permit-review")
        .into_inner();
    assert_eq!(got.payload, br#"{"name":"traced enterprise"}"#);
}

#[tokio::test]
async fn a_read_is_traced_end_to_end_in_the_callers_trace_and_flushed_when_the_node_stops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let collector = format!("http://{}", listener.local_addr().expect("addr"));
    let receiver = Receiver::start(listener);

    let env = Env::new();
    let config = env.write_config(&policies().join("policy.csv"), "");
    // A schedule far beyond the test: the spans can only arrive through the flush at shutdown.
    let node = Node::spawn_with_env(
        &config,
        &env.path().join("node.log"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    traced_read(&env, &node).await;
    let log_before_stop = node.log_text();
    let status = tokio::task::spawn_blocking(move || node.stop())
        .await
        .expect("stop");
    assert!(status.success(), "node exits cleanly: {status:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let in_trace = loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|(_, s)| hex(&s.trace_id) == TRACE_ID)
            .collect();
        let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
        if names.contains(&"qianlian.v1.Exchange/GetRecord") && names.contains(&"notary.append") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not get the read's spans (got {names:?} in the trace, {} spans in all); node log:\n{log_before_stop}",
            receiver.spans().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let find = |name: &str| {
        in_trace
            .iter()
            .find(|(_, s)| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no `{name}` span in the caller's trace; got {:?}",
                    in_trace.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
                )
            })
    };
    // The server span continues the caller's span.
    let (resource, server) = find("qianlian.v1.Exchange/GetRecord");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(attr_str(&server.attributes, "rpc.system"), Some("grpc"));
    assert_eq!(
        attr_str(&server.attributes, "peer.department"),
        Some("housing")
    );
    assert_eq!(attr_str(resource, "service.name"), Some("qianlian"));
    assert_eq!(
        attr(resource, "qianlian.node.id"),
        Some(&Value::IntValue(1))
    );
    assert_eq!(attr_str(resource, "qianlian.node.name"), Some("node-1"));

    // Below it: who called, the Raft commit of the access record, the record store.
    let (_, identity) = find("tls.identity");
    assert_eq!(identity.parent_span_id, server.span_id);
    assert_eq!(
        attr_str(&identity.attributes, "peer.role"),
        Some("department")
    );
    let (_, commit) = find("notary.append");
    assert!(
        matches!(attr(&commit.attributes, "log_index"), Some(Value::IntValue(i)) if *i >= 1),
        "the commit span names the log index: {:?}",
        commit.attributes
    );
    let (_, store) = find("store.get");
    assert_eq!(
        attr(&store.attributes, "found"),
        Some(&Value::BoolValue(true))
    );
    for (_, s) in &in_trace {
        assert!(
            s.start_time_unix_nano >= server.start_time_unix_nano
                && s.end_time_unix_nano <= server.end_time_unix_nano,
            "`{}` lies within the request",
            s.name
        );
    }

    // The owner's write came without a trace context: a trace of its own, rooted at the node.
    let put = receiver
        .spans()
        .into_iter()
        .find(|(_, s)| s.name == "qianlian.v1.Exchange/PutRecord")
        .expect("the write's server span");
    assert_ne!(hex(&put.1.trace_id), TRACE_ID);
    assert!(put.1.parent_span_id.is_empty(), "a root span");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_the_node_serves_as_usual() {
    // A receiver on the SDK's default endpoint, if the port is free here: export switched on
    // by mistake would land there.
    let default = "127.0.0.1:4317".parse::<SocketAddr>().expect("addr");
    let on_default = match tokio::net::TcpListener::bind(default).await {
        Ok(l) => Some(Receiver::start(l)),
        Err(e) => {
            eprintln!("127.0.0.1:4317 is taken ({e}); checking the disabled case only");
            None
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let collector = format!("http://{}", listener.local_addr().expect("addr"));
    let receiver = Receiver::start(listener);

    // No endpoint at all, then an endpoint with the SDK switched off.
    let cases: [&[(&str, &str)]; 2] = [
        &[("OTEL_SERVICE_NAME", "should-not-appear")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    ];
    for vars in cases {
        let env = Env::new();
        let config = env.write_config(&policies().join("policy.csv"), "");
        let node = Node::spawn_with_env(&config, &env.path().join("node.log"), vars);
        traced_read(&env, &node).await;
        let log = node.log_text();
        assert!(
            !log.contains("exporting traces"),
            "no exporter with {vars:?}: {log}"
        );
        let status = tokio::task::spawn_blocking(move || node.stop())
            .await
            .expect("stop");
        assert!(status.success(), "node exits cleanly: {status:?}");
    }
    // Give a wrongly started exporter the time to deliver before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.spans().len(), 0, "nothing reached the collector");
    if let Some(r) = on_default {
        assert_eq!(r.spans().len(), 0, "nothing reached the default endpoint");
    }
}

/// A read forwarded from housing's gateway to market regulation's: one trace across both
/// gateways, and its id in both sides' access records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_read_is_one_trace_across_both_gateways_and_in_both_records() {
    use qianlian_proto::v1::exchange_client::ExchangeClient;
    use qianlian_proto::v1::notary_client::NotaryClient;
    use support::cluster::{Cluster, GATEWAY_CONFIG};

    const CROSS_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let collector = format!("http://{}", listener.local_addr().expect("addr"));
    let receiver = Receiver::start(listener);
    let c = Cluster::start_with_env(
        3,
        GATEWAY_CONFIG,
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
    );
    c.leader(Duration::from_secs(20)).await;
    c.apply_gateways();
    let key = uscc(9);
    ExchangeClient::new(c.channel(1, "market-regulation").await.expect("connect"))
        .put_record(PutRecordRequest {
            record: enterprise(&key),
            payload: br#"{"name":"traced"}"#.to_vec(),
        })
        .await
        .expect("owner writes");
    let mut req = tonic::Request::new(GetRecordRequest {
        record: enterprise(&key),
        purpose: "permit-review".into(),
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{CROSS_TRACE}-{PARENT_SPAN_ID}-01")
            .parse()
            .expect("metadata value"),
    );
    let got = ExchangeClient::new(c.channel(3, "housing").await.expect("connect"))
        .get_record(req)
        .await
        .expect("forwarded read")
        .into_inner();

    // Both sides' records carry the trace id.
    let mut notary = NotaryClient::new(c.channel(3, "audit-office").await.expect("connect"));
    for receipt in [got.receipt, got.consumer_receipt] {
        let index = receipt.expect("receipt").log_index;
        let e = applied_entry(&mut notary, index).await;
        let json: serde_json::Value = serde_json::from_str(&e.record_json).expect("json");
        let record = unsealed(&json);
        assert_eq!(record["Exchange"]["trace_id"], CROSS_TRACE, "{json}");
    }

    // Spans of both gateways arrive in that trace: housing's server and client spans, and
    // market regulation's server span as the child of housing's client span.
    let node_of = |r: &[KeyValue]| match attr(r, "qianlian.node.id") {
        Some(Value::IntValue(i)) => *i,
        Some(Value::StringValue(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|(_, s)| hex(&s.trace_id) == CROSS_TRACE)
            .collect();
        let forward = spans.iter().find(|(r, s)| {
            node_of(r) == 3
                && s.kind == SpanKind::Client as i32
                && s.name.ends_with("Exchange/GetRecord")
        });
        let owner_server = spans.iter().find(|(r, s)| {
            node_of(r) == 1
                && s.kind == SpanKind::Server as i32
                && s.name.ends_with("Exchange/GetRecord")
        });
        let consumer_server = spans.iter().find(|(r, s)| {
            node_of(r) == 3
                && s.kind == SpanKind::Server as i32
                && s.name.ends_with("Exchange/GetRecord")
        });
        if let (Some((_, f)), Some((_, o)), Some(_)) = (forward, owner_server, consumer_server) {
            assert_eq!(
                hex(&o.parent_span_id),
                hex(&f.span_id),
                "the owner's span continues the forward"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans of both gateways in trace {CROSS_TRACE}; got {:?}",
            spans
                .iter()
                .map(|(r, s)| (node_of(r), s.name.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
