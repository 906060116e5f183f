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
//! the services on the node's port (and Raft on a port of its own with `[raft] listen`);
//! `limits` bounds each call, `node::connections` each port's connections.

mod assembly;
mod error;
mod limits;
mod local;
mod routes;
mod storage;

use std::future::Future;
use std::sync::Arc;

use qianlian_raft_store::notary::Notary;
use tokio::net::TcpListener;

use self::assembly::Services;
pub use self::error::StartError;
use self::local::LocalConfiguration;
use crate::node::config::{Limits, NodeConfig};
use crate::node::connections::Gate;
use crate::node::metrics::Metrics;
use crate::node::tls::{self, Admits, TlsState};

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
    /// The Raft service's own listener, when `[raft] listen` is set.
    raft_listener: Option<TcpListener>,
    tls: TlsState,
    /// Metrics and the listener they are served on, when `[metrics] listen` is set.
    metrics: Option<(Arc<Metrics>, TcpListener)>,
    services: Services,
    notary: Notary,
}

/// Open everything the node needs; fails with a precise error before any port serves.
pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, StartError> {
    let tls = TlsState::load(&config.tls, &config.trust_domain)?;
    tls::warn_if_expiring(&config.tls);
    let local = LocalConfiguration::read(&config).await?;
    let store = storage::open_records(&config)?;
    let notary = storage::open_log(&config).await?;
    let metrics = bind_metrics(&config).await?;
    let raft_listener = match config.raft.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io {
                    path: format!("raft.listen {addr}"),
                    source,
                })?,
        ),
        None => None,
    };
    let tls = tls.with_metrics(metrics.as_ref().map(|(m, _)| m.clone()));
    local.in_force.refresh(&notary).await;
    let services = Services::assemble(
        &config,
        local,
        store,
        &notary,
        metrics.as_ref().map(|(m, _)| m.clone()),
        &storage::node_key(&config)?,
    )?;
    if config.bootstrap {
        local::seed(&config, &notary, &services.admin).await?;
    }
    Ok(Node {
        config,
        listener,
        raft_listener,
        tls,
        metrics,
        services,
        notary,
    })
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

    /// The address the Raft service is served on, when it has a listener of its own.
    pub fn raft_addr(&self) -> Option<std::net::SocketAddr> {
        self.raft_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
            raft_listener,
            tls,
            metrics,
            services,
            notary,
        } = self;
        let follow_task = tokio::spawn(crate::node::cluster_config::follow(
            notary.clone(),
            services.admin.in_force.clone(),
        ));
        let metrics = metrics.map(|(m, listener)| {
            tokio::spawn(crate::node::metrics::serve(
                listener,
                m.clone(),
                notary.clone(),
            ));
            m
        });
        let tls = Arc::new(tls);
        reload_outgoing_tls(&tls, &config, &notary, &services);
        let reload_task = tokio::spawn(tls::reload_loop(
            tls.clone(),
            config.tls.reload_every,
            [&config.gateway.client_cert, &config.gateway.client_key]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        ));
        let limits = config.limits;
        let gate = |name| {
            let g = Gate::new(
                name,
                limits.max_connections,
                limits.max_connections_per_source,
                metrics.clone(),
            );
            tls.watch_gate(g.clone());
            g
        };
        let incoming = tls::incoming(listener, tls.clone(), gate("main"), Admits::Everyone);
        // Graceful shutdown waits for open connections; clients that keep theirs open must not
        // hold the node forever, so in-flight calls get SHUTDOWN_GRACE and then the node stops.
        let stopping = Arc::new(tokio::sync::Notify::new());
        let (stop_raft, raft_stopped) = tokio::sync::watch::channel(false);
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                let _ = stop_raft.send(true);
                stopping.notify_one();
            }
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let health_task = tokio::spawn(crate::node::health::watch(
            notary.clone(),
            health_reporter,
            ready.clone(),
            tls.clone(),
        ));
        let raft_server = raft_listener.map(|l| {
            let incoming = tls::incoming(l, tls.clone(), gate("raft"), Admits::NodesOnly);
            let mut stopped = raft_stopped;
            with_limits(tonic::transport::Server::builder(), &limits)
                .add_service(routes::raft_service(&notary))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
        });
        let mut routes = routes::routes(
            services,
            &notary,
            health_service,
            ready,
            tls.clone(),
            &config.limits,
            config.grpc_reflection,
        )?;
        if raft_server.is_none() {
            routes = routes.add_service(routes::raft_service(&notary));
        }
        let edge = limits::EdgeLimits::new(&limits, metrics.clone());
        let server = with_limits(tonic::transport::Server::builder(), &limits)
            .accept_http1(true)
            .layer(crate::node::telemetry::RequestTraceLayer)
            .layer(crate::node::metrics::RequestMetricsLayer {
                metrics,
                known: Arc::new(routes::known_paths()),
            })
            .layer(limits::EdgeLayer { limits: edge })
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        let servers = async {
            match raft_server {
                Some(raft) => {
                    let (a, b) = tokio::join!(server, raft);
                    a.and(b)
                }
                None => server.await,
            }
        };
        let result = tokio::select! {
            r = servers => r,
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

/// The connection limits every listener of the node applies: streams per connection, HTTP/2
/// keepalive, and the maximum age after which a connection is told to go away and, at most
/// `request_timeout` later, closed.
fn with_limits(builder: tonic::transport::Server, limits: &Limits) -> tonic::transport::Server {
    builder
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(limits.request_timeout)
}

/// When the TLS files or the CRLs change, connect to Raft peers with the new node certificate
/// and CA bundle, and to other departments' gateways with the new department certificate, CA
/// bundle and CRLs. A file that does not load keeps the previous settings (logged).
fn reload_outgoing_tls(tls: &TlsState, config: &NodeConfig, notary: &Notary, services: &Services) {
    let peers = notary.clone();
    tls.on_reload(Box::new(move |files, _crls| {
        match storage::peer_tls(files) {
            Ok(t) => peers.set_peer_tls(Some(t)),
            Err(e) => {
                tracing::warn!(error = %e, "the node certificate changed but does not load; Raft peers are reached with the previous one")
            }
        }
    }));
    if let (Some(forwarder), Some(cert), Some(key)) = (
        services.exchange.forwarder.clone(),
        config.gateway.client_cert.clone(),
        config.gateway.client_key.clone(),
    ) {
        tls.on_reload(Box::new(move |files, crls| {
            let loaded = tls::load_certs(&files.ca).and_then(|ca| {
                forwarder.reload(&ca, tls::load_certs(&cert)?, tls::load_key(&key)?, crls.ders())
            });
            if let Err(e) = loaded {
                tracing::warn!(error = %e, "the department certificate or CA bundle changed but does not load; other gateways are reached with the previous ones");
            }
        }));
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
