//! A running node: load configuration, open storage, join the log, serve gRPC over TLS.
//!
//! [`run`] is what `qianlian serve` and `qianlian dev` call, and what tests start on
//! `127.0.0.1:0`. It returns when `shutdown` completes, after in-flight calls finish and the
//! log has been closed cleanly.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_proto::v1::admin_server::AdminServer;
use qianlian_proto::v1::audit_server::AuditServer;
use qianlian_proto::v1::exchange_server::ExchangeServer;
use qianlian_proto::v1::licenses_server::LicensesServer;
use qianlian_proto::v1::notary_server::NotaryServer;
use qianlian_raft_store::notary::{Notary, NotaryConfig, NotaryError};
use qianlian_verifier::NoteSigner;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::domain::identity::Role;
use crate::domain::policy::{Policy, PolicyError};
use crate::domain::subject::SubjectKey;
use crate::node::cluster_config::{DirectoryInForce, InForce};
use crate::node::config::NodeConfig;
use crate::node::records::{RecordStore, StoreError};
use crate::node::tls::{self, ConnInfo, TlsError};
use crate::services::admin::AdminService;
use crate::services::audit::AuditService;
use crate::services::exchange::ExchangeService;
use crate::services::license::LicenseService;
use crate::services::notary::NotaryService;

/// The node could not start. Each variant names the part at fault; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a checkpoint signing key ({reason}); `qianlian pki init` writes one per node as nodes/<id>.note.key (config key checkpoint.signing_key)"
    )]
    SigningKey { path: String, reason: String },
    #[error("licenses: {0}")]
    License(String),
    #[error("audit: {0}")]
    Audit(#[from] crate::services::audit::token::TokenKeyError),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("opening the record store: {0}")]
    Store(#[from] StoreError),
    #[error("opening the notarization log: {0}")]
    Notary(#[from] NotaryError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Largest gRPC message accepted: the payload limit plus room for the envelope.
fn max_message(config: &NodeConfig) -> usize {
    config.limits.max_payload_bytes + 64 * 1024
}

/// How long in-flight calls may run after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Raft RPCs are for gateway nodes only.
#[allow(clippy::result_large_err)]
fn nodes_only(req: Request<()>) -> Result<Request<()>, Status> {
    match req.extensions().get::<ConnInfo>().map(|c| &c.peer) {
        Some(Some(Ok(id))) if id.role == Role::Node => Ok(req),
        Some(Some(Ok(id))) => Err(Status::permission_denied(format!(
            "Raft traffic is for gateway nodes; {id} is not a node certificate"
        ))),
        _ => Err(Status::unauthenticated(
            "Raft traffic needs a node client certificate",
        )),
    }
}

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
    metrics: Option<(Arc<crate::node::metrics::Metrics>, TcpListener)>,
    config: NodeConfig,
    listener: TcpListener,
    server_tls: rustls::ServerConfig,
    exchange: ExchangeService,
    licenses: LicenseService,
    admin: AdminService,
    audit: AuditService,
    notary: Notary,
}

/// Open everything the node needs; fails with a precise error before any port serves.
pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, StartError> {
    tls::install_crypto_provider();
    let server_tls = tls::load_server_config(&config.tls)?;
    tls::warn_if_expiring(&config.tls);
    let policy = Policy::load(&config.policy.model, &config.policy.rules).await?;
    tracing::info!(
        "local policy files loaded (version 0 until the cluster has a replicated policy)"
    );
    let local_policy = Some((
        String::from_utf8_lossy(&read(&config.policy.model)?).into_owned(),
        String::from_utf8_lossy(&read(&config.policy.rules)?).into_owned(),
    ));
    let (local_directory, directory) = match &config.licenses.directory {
        Some(p) => {
            let text = String::from_utf8_lossy(&read(p)?).into_owned();
            let d = crate::domain::directory::Directory::from_toml(&text, &p.display().to_string())
                .map_err(|e| StartError::License(e.to_string()))?;
            (Some(text), d)
        }
        None => (None, crate::domain::directory::Directory::default()),
    };

    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = RecordStore::open(&config.data_dir.join("records"))?;

    let peer_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.tls.ca)?))
        .identity(Identity::from_pem(
            read(&config.tls.cert)?,
            read(&config.tls.key)?,
        ));
    let skey = std::fs::read_to_string(&config.checkpoint.signing_key).map_err(|source| {
        StartError::Io {
            path: config.checkpoint.signing_key.display().to_string(),
            source,
        }
    })?;
    let signer = NoteSigner::from_skey(skey.trim()).map_err(|e| StartError::SigningKey {
        path: config.checkpoint.signing_key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut notary_config = NotaryConfig::new(
        config.node_id,
        config.data_dir.clone(),
        config.advertise.clone(),
    );
    notary_config.bootstrap_single = config.bootstrap;
    notary_config.peer_tls = Some(peer_tls);
    notary_config.signer = Some(signer);
    notary_config.origin = config.checkpoint.origin.clone();
    notary_config.commit_timeout = config.raft.commit_timeout;
    notary_config.snapshot_every = config.raft.snapshot_every;
    notary_config.log_kept_after_snapshot = config.raft.log_kept_after_snapshot;
    let notary = Notary::open(notary_config).await?;
    tracing::info!(
        node_id = config.node_id,
        log_size = notary.tree_size(),
        "notarization log open"
    );

    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io {
                    path: format!("metrics.listen {addr}"),
                    source,
                })?;
            let mut certs = Vec::new();
            for (name, path) in [("node", &config.tls.cert), ("ca", &config.tls.ca)] {
                if let Some(t) = crate::node::tls::not_after(path) {
                    certs.push((name.to_owned(), t));
                }
            }
            Some((
                Arc::new(crate::node::metrics::Metrics::new(&config.data_dir, certs)),
                listener,
            ))
        }
        None => None,
    };
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let in_force = InForce {
        policy: policy.clone(),
        directory: Arc::new(ArcSwap::from_pointee(DirectoryInForce {
            version: 0,
            directory,
        })),
    };
    in_force.refresh(&notary).await;
    let licenses = license_service(
        &config,
        notary.clone(),
        policy.clone(),
        in_force.directory.clone(),
    )?;
    let forwarder = match (&config.gateway.client_cert, &config.gateway.client_key) {
        (Some(cert), Some(key)) => Some(Arc::new(crate::node::forward::Forwarder::new(
            &crate::node::tls::load_certs(&config.tls.ca)?,
            crate::node::tls::load_certs(cert)?,
            crate::node::tls::load_key(key)?,
            config.gateway.forward_timeout,
        )?)),
        _ => None,
    };
    let adapters = config
        .gateway
        .adapters
        .iter()
        .map(|a| {
            (
                a.dataset.clone(),
                crate::node::forward::HttpAdapter::new(&a.url, config.gateway.forward_timeout),
            )
        })
        .collect();
    let exchange = ExchangeService {
        metrics: metrics.as_ref().map(|(m, _)| m.clone()),
        in_force: in_force.clone(),
        store,
        notary: notary.clone(),
        limits: config.limits,
        department: config.gateway.department.clone(),
        forwarder,
        adapters,
        subject_key: licenses.subject_key.as_ref().map(|k| SubjectKey::new(**k)),
    };
    let audit = AuditService {
        notary: notary.clone(),
        in_force: in_force.clone(),
        subject_key: exchange.subject_key.clone(),
        tokens: crate::services::audit::token::TokenVerifier::from_settings(&config.audit)?
            .map(Arc::new),
        trust_node_keys: licenses.trust_node_keys.clone(),
        min_cosigners: licenses.min_cosigners,
    };
    let admin = AdminService {
        notary: notary.clone(),
        in_force,
        local_policy,
        local_directory,
    };
    if config.bootstrap {
        // A single-node cluster initialised by its own config seeds its configuration before it
        // serves, so its first decisions already name a replicated policy version.
        if notary
            .wait_for_leader(std::time::Duration::from_secs(10))
            .await
            .is_ok()
        {
            let caller = qianlian_raft_store::record::Caller {
                department: format!("node-{}", config.node_id),
                role: Role::Node.as_str().to_owned(),
                cert_fingerprint: String::new(),
            };
            crate::node::cluster_config::seed(
                &notary,
                caller,
                admin.local_policy.clone(),
                admin.local_directory.clone(),
            )
            .await?;
            admin.in_force.refresh(&notary).await;
        } else {
            tracing::warn!(
                "no leader after 10 s; the replicated policy is seeded by `cluster init`"
            );
        }
    }
    Ok(Node {
        admin,
        audit,
        metrics,
        config,
        listener,
        server_tls,
        exchange,
        licenses,
        notary,
    })
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
            metrics,
            config,
            listener,
            server_tls,
            exchange,
            licenses,
            admin,
            audit,
            notary,
        } = self;
        let follow_task = tokio::spawn(crate::node::cluster_config::follow(
            notary.clone(),
            admin.in_force.clone(),
        ));
        let max = max_message(&config);
        let server_tls = Arc::new(arc_swap::ArcSwap::from_pointee(server_tls));
        let reload_task = tokio::spawn(tls::reload_loop(
            config.tls.clone(),
            server_tls.clone(),
            config.tls.reload_every,
        ));
        let incoming = tls::incoming(listener, server_tls, config.trust_domain.clone());
        let raft = notary.raft_service();
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
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(qianlian_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartError::Reflection(e.to_string()))?;
        // gRPC services and the HTTP/JSON routes share one port.
        let http = crate::services::license::http_routes(licenses.clone())
            .merge(crate::services::audit::http_routes(audit.clone()))
            .merge(crate::node::health::http_routes(ready));
        let routes = tonic::service::Routes::from(http)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                ExchangeServer::new(exchange)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(NotaryServer::new(NotaryService {
                notary: notary.clone(),
            }))
            .add_service(AdminServer::new(admin))
            .add_service(
                AuditServer::new(audit)
                    .max_encoding_message_size(crate::services::audit::evidence::MAX_BUNDLE_BYTES),
            )
            .add_service(LicensesServer::new(licenses))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                raft, nodes_only,
            ));
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

/// Build the license service from the `[licenses]` settings; every file is checked now, so a
/// bad one stops the node with its path.
fn license_service(
    config: &NodeConfig,
    notary: Notary,
    policy: Arc<ArcSwap<Policy>>,
    directory_in_force: Arc<ArcSwap<DirectoryInForce>>,
) -> Result<LicenseService, StartError> {
    let l = &config.licenses;
    let directory = match &l.directory {
        Some(p) => Some(Arc::new(
            crate::domain::directory::Directory::load(p)
                .map_err(|e| StartError::License(e.to_string()))?,
        )),
        None => None,
    };
    let mut signing_keys = std::collections::HashMap::new();
    for p in &l.signing_keys {
        let key = crate::node::pki::read_license_key(p)
            .map_err(|e| StartError::License(e.to_string()))?;
        let public = key.verifying_key();
        let dept = directory
            .as_ref()
            .and_then(|d| {
                d.department
                    .iter()
                    .find(|e| e.keys.iter().any(|k| k.public_key == public.as_bytes()))
            })
            .ok_or_else(|| {
                StartError::License(format!(
                    "{}: this key is not in the department directory (licenses.directory); run `qianlian pki init` for the department or fix the path",
                    p.display()
                ))
            })?;
        let key_id = crate::node::pki::license_key_id(&dept.id, &public);
        signing_keys.insert(dept.id.clone(), (key, key_id));
    }
    let subject_key = match &l.subject_key {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| StartError::Io {
                path: p.display().to_string(),
                source,
            })?;
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    StartError::License(format!(
                        "{}: a subject key is 64 hex digits (licenses.subject_key)",
                        p.display()
                    ))
                })?;
            Some(Arc::new(bytes))
        }
        None => None,
    };
    let mut trust_node_keys = Vec::new();
    for p in &l.trust_node_keys {
        let text = std::fs::read_to_string(p).map_err(|source| StartError::Io {
            path: p.display().to_string(),
            source,
        })?;
        qianlian_verifier::NoteVerifier::from_vkey(text.trim()).map_err(|e| {
            StartError::License(format!("{}: not a node verifier key: {e}", p.display()))
        })?;
        trust_node_keys.push(text.trim().to_owned());
    }
    Ok(LicenseService {
        notary,
        policy,
        directory: directory_in_force,
        signing_keys: Arc::new(signing_keys),
        subject_key,
        trust_node_keys,
        min_cosigners: l.min_cosigners,
        verified: Arc::new(qianlian_verifier::license::VerifiedLicenses::new(
            crate::services::license::VERIFIED_LICENSES,
        )),
        evidence_cache: Arc::default(),
    })
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Io {
        path: path.display().to_string(),
        source,
    })
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
