//! Health for orchestrators and generic tools: the standard gRPC health service, and
//! `/livez` and `/readyz` over HTTP on the same port.
//!
//! A node is ready (SERVING) while it knows a Raft leader, that is, while it can commit; a node
//! cut off from its majority turns NOT_SERVING within about an election timeout. A node whose
//! stored log fails its integrity check never starts, so it is never reported healthy.
//!
//! While the CRLs in force are past their nextUpdate, the node refuses client certificates
//! other than nodes': the services that need one (Exchange, Admin) report NOT_SERVING, and
//! `/readyz` still answers 200 (public calls and Raft work) but says why in its text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qianlian_raft_store::notary::Notary;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::node::tls::TlsState;

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

/// The services that only callers with a client certificate can use.
const NEED_CLIENT_CERTIFICATE: [&str; 2] = ["qianlian.v1.Exchange", "qianlian.v1.Admin"];

/// Keep the health service and the readiness flag up to date until the process ends.
pub async fn watch(
    notary: Notary,
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    tls: Arc<TlsState>,
) {
    let mut last = None;
    loop {
        let now = (can_commit(&notary), tls.crl_expired_since().is_some());
        if last != Some(now) {
            let (commit, crl_expired) = now;
            let status = |serving| {
                if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                }
            };
            // Readiness first: whoever sees the new gRPC status sees the same `/readyz`.
            ready.store(commit, Ordering::SeqCst);
            reporter.set_service_status("", status(commit)).await;
            for s in SERVICES {
                let needs_cert = NEED_CLIENT_CERTIFICATE.contains(&s);
                reporter
                    .set_service_status(s, status(commit && !(crl_expired && needs_cert)))
                    .await;
            }
            tracing::info!(serving = commit, crl_expired, "health changed");
            last = Some(now);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The probe paths: `/livez` (the process answers) and `/readyz` (it can commit).
pub const HTTP_PATHS: [&str; 2] = ["/livez", "/readyz"];

/// `/livez` (the process answers) and `/readyz` (it can commit; the text says so when client
/// certificates are refused for an expired CRL).
pub fn http_routes(ready: Arc<AtomicBool>, tls: Arc<TlsState>) -> axum::Router {
    use axum::http::StatusCode;
    let [livez, readyz] = HTTP_PATHS;
    axum::Router::new()
        .route(
            livez,
            axum::routing::get(|| async { (StatusCode::OK, "ok\n") }),
        )
        .route(
            readyz,
            axum::routing::get(move || {
                let ready = ready.load(Ordering::SeqCst);
                let crl = tls.crl_expired_since();
                async move {
                    match (ready, crl) {
                        (true, None) => (StatusCode::OK, "ready\n".to_owned()),
                        (true, Some(since)) => (
                            StatusCode::OK,
                            format!("ready for calls without a client certificate; but the CRL expired at {since}: client certificates other than nodes' are refused until a current CRL is loaded (tls.crl)\n"),
                        ),
                        (false, _) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no Raft leader known, writes cannot commit\n".to_owned(),
                        ),
                    }
                }
            }),
        )
}
