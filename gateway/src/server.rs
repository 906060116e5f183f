//! A running node: load configuration, open storage, join the log, serve gRPC over TLS.
//!
//! [`run`] is what tests start on `127.0.0.1:0`. `qianlian serve` and `qianlian dev` call its
//! two halves, [`start`] and [`Node::serve`], to report the node's addresses in between. `run`
//! returns when `shutdown` completes, after in-flight calls finish and the log has been closed
//! cleanly.
//!
//! Start-up, in order: the server's TLS, the local policy and directory (`local`), the record
//! store and the notarization log (`storage`), the metrics listener, the services (`assembly`),
//! and for a bootstrapping node the seeding of its configuration into the log. `routes` puts
//! the services on the node's one port.

mod assembly;
mod error;
mod local;
mod routes;
mod storage;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::notary::Notary;
use tokio::net::TcpListener;

use self::assembly::Services;
pub use self::error::StartError;
use self::local::LocalConfiguration;
use crate::node::config::{NodeConfig, TlsFiles};
use crate::node::metrics::Metrics;
use crate::node::tls;

/// How long in-flight calls may run after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Start the node on `listener` and serve until `shutdown` completes.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    start(config, listener).await?.serve(shutdown).await
}

/// A node whose storage, log and policy are open, ready to serve.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    listener: TcpListener,
    server_tls: rustls::ServerConfig,
    /// Metrics and the listener they are served on, when `[metrics] listen` is set.
    metrics: Option<(Arc<Metrics>, TcpListener)>,
    services: Services,
    notary: Notary,
}

/// Open everything the node needs; fails with a precise error before any port serves.
pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, StartError> {
    let server_tls = server_tls(&config.tls)?;
    let local = LocalConfiguration::read(&config).await?;
    let store = storage::open_records(&config)?;
    let notary = storage::open_log(&config).await?;
    let metrics = bind_metrics(&config).await?;
    local.in_force.refresh(&notary).await;
    let services = Services::assemble(
        &config,
        local,
        store,
        &notary,
        metrics.as_ref().map(|(m, _)| m.clone()),
    )?;
    if config.bootstrap {
        local::seed(&config, &notary, &services.admin).await?;
    }
    Ok(Node {
        config,
        listener,
        server_tls,
        metrics,
        services,
        notary,
    })
}

/// The server side of TLS; warns when a certificate is about to expire.
fn server_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, StartError> {
    tls::install_crypto_provider();
    let server_tls = tls::load_server_config(files)?;
    tls::warn_if_expiring(files);
    Ok(server_tls)
}

/// Bind `[metrics] listen`, if set; the metrics count down to the expiry of the node's and the
/// CA's certificates.
async fn bind_metrics(
    config: &NodeConfig,
) -> Result<Option<(Arc<Metrics>, TcpListener)>, StartError> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Io {
            path: format!("metrics.listen {addr}"),
            source,
        })?;
    let mut certs = Vec::new();
    for (name, path) in [("node", &config.tls.cert), ("ca", &config.tls.ca)] {
        if let Some(t) = tls::not_after(path) {
            certs.push((name.to_owned(), t));
        }
    }
    Ok(Some((
        Arc::new(Metrics::new(&config.data_dir, certs)),
        listener,
    )))
}

impl Node {
    /// The address the node serves on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The address metrics are served on, if enabled.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|(_, l)| l.local_addr().ok())
    }

    /// Number of records in the notarization log.
    pub fn log_size(&self) -> u64 {
        self.notary.tree_size()
    }

    /// Serve until `shutdown` completes, then close the log.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let Node {
            config,
            listener,
            server_tls,
            metrics,
            services,
            notary,
        } = self;
        let follow_task = tokio::spawn(crate::node::cluster_config::follow(
            notary.clone(),
            services.admin.in_force.clone(),
        ));
        let server_tls = Arc::new(ArcSwap::from_pointee(server_tls));
        let reload_task = tokio::spawn(tls::reload_loop(
            config.tls.clone(),
            server_tls.clone(),
            config.tls.reload_every,
        ));
        let incoming = tls::incoming(listener, server_tls, config.trust_domain.clone());
        // Graceful shutdown waits for open connections; clients that keep theirs open must not
        // hold the node forever, so in-flight calls get SHUTDOWN_GRACE and then the node stops.
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.notify_one();
            }
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let health_task = tokio::spawn(crate::node::health::watch(
            notary.clone(),
            health_reporter,
            ready.clone(),
        ));
        let routes = routes::routes(
            services,
            &notary,
            health_service,
            ready,
            &config.limits,
            config.grpc_reflection,
        )?;
        let metrics = metrics.map(|(m, listener)| {
            tokio::spawn(crate::node::metrics::serve(
                listener,
                m.clone(),
                notary.clone(),
            ));
            m
        });
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(crate::node::telemetry::RequestTraceLayer)
            .layer(crate::node::metrics::RequestMetricsLayer { metrics })
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        let result = tokio::select! {
            r = server => r,
            _ = async {
                stopping.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("clients still connected after {SHUTDOWN_GRACE:?}; closing their connections");
                Ok(())
            }
        };
        health_task.abort();
        reload_task.abort();
        follow_task.abort();
        if let Err(e) = notary.shutdown().await {
            tracing::warn!(error = %e, "notarization log did not shut down cleanly");
        }
        result?;
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
