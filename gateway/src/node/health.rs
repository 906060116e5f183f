//! Health for orchestrators and generic tools: the standard gRPC health service, and
//! `/livez` and `/readyz` over HTTP on the same port.
//!
//! A node is ready (SERVING) while it knows a Raft leader, that is, while it can commit; a node
//! cut off from its majority turns NOT_SERVING within about an election timeout. A node whose
//! stored log fails its integrity check never starts, so it is never reported healthy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qianlian_raft_store::notary::Notary;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The gRPC services whose health is reported (besides the overall status, name "").
pub const SERVICES: [&str; 4] = [
    "qianlian.v1.Exchange",
    "qianlian.v1.Notary",
    "qianlian.v1.Licenses",
    "qianlian.v1.Admin",
];

/// How often readiness is re-evaluated.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Whether this node can commit: it is a member, a leader is known, and if that leader is this
/// node, a quorum acknowledged it within an election timeout.
pub fn can_commit(notary: &Notary) -> bool {
    let s = notary.status();
    let member = s.voters.contains_key(&s.node_id) || s.learners.contains_key(&s.node_id);
    let quorum = match s.leader {
        None => false,
        Some(l) if l == s.node_id => s
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= s.election_timeout_max_ms),
        Some(_) => true,
    };
    member && quorum
}

/// Keep the health service and the readiness flag up to date until the process ends.
pub async fn watch(notary: Notary, reporter: HealthReporter, ready: Arc<AtomicBool>) {
    let mut last = None;
    loop {
        let now = can_commit(&notary);
        if last != Some(now) {
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            // Readiness first: whoever sees the new gRPC status sees the same `/readyz`.
            ready.store(now, Ordering::SeqCst);
            reporter.set_service_status("", status).await;
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
            tracing::info!(serving = now, "health changed");
            last = Some(now);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// `/livez` (the process answers) and `/readyz` (it can commit).
pub fn http_routes(ready: Arc<AtomicBool>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new()
        .route(
            "/livez",
            axum::routing::get(|| async { (StatusCode::OK, "ok\n") }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no Raft leader known, writes cannot commit\n",
                        )
                    }
                }
            }),
        )
}
