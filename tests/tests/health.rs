//! Generic tools see the node: gRPC health and reflection, `/livez` and `/readyz`; a node cut off
//! from its majority says NOT_SERVING.

mod support;

use std::time::Duration;

use support::cluster::Cluster;
use support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn health(node: &Node, ca: &std::path::Path, service: &str) -> Option<i32> {
    let ch = channel(node, tls(ca, None)).await.ok()?;
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

fn http(ca: &std::path::Path, url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca.display().to_string(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ])
        .output()
        .expect("curl");
    stdout(&out)
}

#[tokio::test]
async fn health_and_reflection_answer_generic_clients() {
    let env = Env::new();
    let node = env.start();
    let ca = env.pki().join("ca.crt");
    for service in ["", "qianlian.v1.Exchange", "qianlian.v1.Licenses"] {
        let mut status = None;
        for _ in 0..40 {
            status = health(&node, &ca, service).await;
            if status == Some(ServingStatus::Serving as i32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            status,
            Some(ServingStatus::Serving as i32),
            "service `{service}`"
        );
    }

    // Reflection lists our services, as grpcurl `list` would.
    let ch = channel(&node, tls(&ca, None)).await.expect("connect");
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream_once(req))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "qianlian.v1.Exchange",
        "qianlian.v1.Notary",
        "qianlian.v1.Licenses",
        "qianlian.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
    }

    let base = node.endpoint().replace("127.0.0.1", "localhost");
    assert_eq!(http(&ca, &format!("{base}/livez")), "200");
    assert_eq!(http(&ca, &format!("{base}/readyz")), "200");
}

#[tokio::test]
async fn reflection_turned_off_answers_unimplemented() {
    let env = Env::new();
    let config = env.write_config(&policies().join("policy.csv"), "");
    let node = Node::spawn_with_env(
        &config,
        &env.path().join("node.log"),
        &[("QIANLIAN_GRPC_REFLECTION", "false")],
    );
    let ca = env.pki().join("ca.crt");
    let ch = channel(&node, tls(&ca, None)).await.expect("connect");
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let answer = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream_once(req))
        .await;
    let status = match answer {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.expect_err("no reflection"),
    };
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // The node itself serves as before.
    let mut serving = None;
    for _ in 0..40 {
        serving = health(&node, &ca, "").await;
        if serving == Some(ServingStatus::Serving as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));
}

fn tokio_stream_once(
    req: ServerReflectionRequest,
) -> impl tonic::codegen::tokio_stream::Stream<Item = ServerReflectionRequest> {
    tonic::codegen::tokio_stream::iter(vec![req])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_its_majority_is_not_serving() {
    let mut cluster = Cluster::start(3, "");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let ca = cluster.env.pki().join("ca.crt");
    // First SERVING with its majority, so that what follows is the change, not the start-up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while health(cluster.node(leader), &ca, "").await != Some(ServingStatus::Serving as i32) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never SERVING with a majority"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The survivor is the leader itself: it keeps naming itself leader, but has no quorum.
    for i in (1..=3).filter(|i| *i != leader) {
        cluster.stop(i);
    }
    let node = cluster.node(leader);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if health(node, &ca, "").await == Some(ServingStatus::NotServing as i32) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still SERVING without a majority"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base = node.endpoint().replace("127.0.0.1", "localhost");
    assert_eq!(http(&ca, &format!("{base}/readyz")), "503");
    assert_eq!(http(&ca, &format!("{base}/livez")), "200");
}
