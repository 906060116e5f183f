//! TLS 1.3 with optional client certificates, and the accept loop that turns each connection
//! into a stream tonic can serve, carrying the caller's [`PeerIdentity`] parsed once.
//!
//! Client certificates are validated by rustls against the configured CA bundle and CRLs
//! (expired, revoked and foreign certificates fail the handshake). A connection without a
//! client certificate is accepted so that public services (license verification) can share the
//! port; data services refuse such calls with UNAUTHENTICATED.
//!
//! [`TlsState`] holds what is in force and [`reload_loop`] replaces it when the files change.
//! A CRL file is put in force only if `node::crl` accepts it; a connection whose certificate a
//! new CRL revokes, or that expires, is closed (`node::connections`). While the CRLs in force
//! are past their nextUpdate, every client certificate but a node's is refused (fail closed);
//! node certificates stay accepted, still checked against the last CRLs, so that a lapse in
//! CRL publishing cannot stop consensus or make a cut-off node call elections.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::domain::identity::{IdentityError, PeerIdentity, Role, parse_peer};
use crate::node::config::TlsFiles;
use crate::node::connections::{Gate, Slot};
use crate::node::crl::{CertId, CrlError, CrlSet};
use crate::node::metrics::Metrics;

/// A TLS file could not be used. The operator's configuration is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no PEM {what}; expected a `-----BEGIN {what}-----` block")]
    Empty { path: String, what: &'static str },
    #[error("{path} is not valid PEM: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
    #[error("tls.crl: {0}")]
    Crl(#[from] CrlError),
}

/// Read every certificate from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Read the first private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.display().to_string(),
            what: "PRIVATE KEY",
        },
        other => TlsError::Pem {
            path: path.display().to_string(),
            reason: other.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Install ring as the process-wide rustls provider (idempotent). Must run before any TLS
/// configuration is built, so that a second provider in the tree can never cause a panic.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Server-side TLS: TLS 1.3 only, ALPN h2, client certificates optional but verified when sent.
pub fn server_config(
    ca: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let verifier = WebPkiClientVerifier::builder(Arc::new(root_store(ca)?))
        .with_crls(crls)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config =
        rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert_chain, key)
            .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client-side TLS, to other gateways: TLS 1.3 only, ALPN h2, presenting `cert_chain`,
/// trusting the CA certificates `ca` and refusing servers whose certificate `crls` revoke.
pub fn client_config(
    ca: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let verifier = WebPkiServerVerifier::builder(Arc::new(root_store(ca)?))
        .with_crls(crls)
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(cert_chain, key)
            .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn root_store(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What tonic learns about a connection; available in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: SocketAddr,
    /// `None`: no client certificate was presented. `Some(Err)`: one was, chained to our CA,
    /// but it carries no usable identity.
    pub peer: Option<Result<PeerIdentity, IdentityError>>,
}

/// One accepted TLS connection, ready for tonic. Its place under the listener's caps is freed
/// when it is dropped; once told to close (revoked certificate), its I/O fails.
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
    slot: Slot,
}

fn closed_by_node() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed by the node: the client certificate is no longer acceptable",
    )
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper always has a read pending, so this is where a closing connection notices.
        if self.slot.kill().poll_fired(cx) {
            return Poll::Ready(Err(closed_by_node()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.slot.kill().poll_fired(cx) {
            return Poll::Ready(Err(closed_by_node()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// No: TLS copies every write into its records anyway, so handing it a chain of buffers
    /// saves no copy. Told "yes", HTTP/2 chains a DATA payload of more than 256 bytes instead of
    /// copying it, and the frames after it (a unary answer's trailers) wait for the next
    /// flush: every such answer left in two TLS records and two `writev` calls. Told "no", it
    /// copies payloads up to 1 KiB, and headers, data and trailers leave in one.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// How long a client may take to finish the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which connections a listener keeps after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    /// Anyone: calls are decided per service.
    Everyone,
    /// Node certificates only (the Raft listener); others are closed after the handshake.
    NodesOnly,
}

/// Accept TCP connections within `gate`'s caps, run each TLS handshake in its own task (a slow
/// client cannot stall the others) and yield the established connections. Refused handshakes
/// are logged with the reason rustls gives (unknown CA, expired, revoked, …).
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsState>,
    gate: Arc<Gate>,
    admits: Admits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server stopped and dropped the stream: stop accepting.
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over a cap: closed before the handshake it would cost (counted and logged).
            let Ok(slot) = gate.admit(remote_addr.ip()) else {
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            // The configuration current now: a reload applies to every new connection.
            let acceptor = TlsAcceptor::from(tls.server.load_full());
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(remote = %remote_addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(remote = %remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec());
                let mut peer = leaf
                    .as_deref()
                    .map(|leaf| parse_peer(leaf, &tls.trust_domain));
                let node = matches!(&peer, Some(Ok(id)) if id.role == Role::Node);
                if admits == Admits::NodesOnly && !node {
                    tracing::warn!(remote = %remote_addr, "connection to the Raft listener without a node certificate closed");
                    return;
                }
                if let Some(since) = tls.crl_expired_since()
                    && matches!(peer, Some(Ok(_)))
                    && !node
                {
                    peer = Some(Err(IdentityError::RevocationUnknown { since }));
                }
                match &peer {
                    Some(Err(e)) => {
                        tracing::warn!(remote = %remote_addr, error = %e, "client certificate carries no usable identity; its calls will be refused")
                    }
                    Some(Ok(id)) => {
                        tracing::debug!(remote = %remote_addr, peer = %id, "TLS connection")
                    }
                    None => {
                        tracing::debug!(remote = %remote_addr, "TLS connection without client certificate")
                    }
                }
                if let (Some(leaf), Some(Ok(id))) = (&leaf, &peer)
                    && let Some(cert) = CertId::from_der(leaf)
                {
                    slot.watch(cert, node, format!("{id} from {remote_addr}"));
                }
                let conn = TlsConn {
                    inner: stream,
                    info: ConnInfo { remote_addr, peer },
                    slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Load the node's certificate, key and CA bundle into a server configuration checking client
/// certificates against `crls`: TLS 1.3, client certificates optional but verified, ALPN h2
/// (gRPC) and http/1.1 (JSON, probes).
pub fn load_server_config(
    files: &TlsFiles,
    crls: &CrlSet,
) -> Result<rustls::ServerConfig, TlsError> {
    let ca = load_certs(&files.ca)?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = server_config(&ca, chain, key, crls.ders())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A digest of the contents of `paths`, to notice a rotation.
fn files_digest<'a>(paths: impl IntoIterator<Item = &'a std::path::PathBuf>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().to_vec()
}

/// How soon before expiry a certificate is reported in the log.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Log a warning if the node certificate expires within [`EXPIRY_WARNING`].
pub fn warn_if_expiring(files: &TlsFiles) {
    if let Some(not_after) = not_after(&files.cert) {
        let now = crate::node::time::now_unix();
        let left = not_after - now;
        if left < EXPIRY_WARNING.as_secs() as i64 {
            tracing::warn!(
                certificate = %files.cert.display(),
                days_left = left / 86_400,
                "the node certificate expires soon: issue a new one and replace the file (it is reloaded without a restart)"
            );
        }
    }
}

/// Called with the TLS files and the CRLs in force whenever either changes, so that outgoing
/// connections (Raft peers, other departments' gateways) use them too.
pub type OnReload = Box<dyn Fn(&TlsFiles, &CrlSet) + Send + Sync>;

/// The node's TLS in force: the server configuration, the CRLs, the listeners' connections,
/// and what to tell when they change.
pub struct TlsState {
    files: TlsFiles,
    trust_domain: String,
    server: ArcSwap<rustls::ServerConfig>,
    crls: ArcSwap<CrlSet>,
    metrics: Option<Arc<Metrics>>,
    gates: std::sync::Mutex<Vec<Arc<Gate>>>,
    on_reload: std::sync::Mutex<Vec<OnReload>>,
    /// Digests of the certificate, key and CA files and of the CRL file, taken before they
    /// were loaded: a change made after that is noticed by the first check.
    loaded: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Load the TLS files. An empty, unparsable or wrongly signed CRL file stops the node (there
    /// is no previous one to keep); an expired one is loaded and the node runs fail closed
    /// until a current one arrives.
    pub fn load(files: &TlsFiles, trust_domain: &str) -> Result<TlsState, TlsError> {
        install_crypto_provider();
        let loaded = (
            files_digest([&files.ca, &files.cert, &files.key]),
            files_digest(files.crl.iter()),
        );
        let crls = match &files.crl {
            Some(p) => CrlSet::load(p, &load_certs(&files.ca)?)?,
            None => CrlSet::none(),
        };
        let server = load_server_config(files, &crls)?;
        let state = TlsState {
            files: files.clone(),
            trust_domain: trust_domain.to_owned(),
            server: ArcSwap::from_pointee(server),
            crls: ArcSwap::from_pointee(crls),
            metrics: None,
            gates: Default::default(),
            on_reload: Default::default(),
            loaded,
        };
        state.report_crl_expiry(None);
        Ok(state)
    }

    /// Count limits, closed connections and refused CRLs in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> TlsState {
        self.metrics = metrics;
        self.publish_crl_metric();
        self
    }

    /// Close `gate`'s connections whose certificates stop being acceptable.
    pub fn watch_gate(&self, gate: Arc<Gate>) {
        self.gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(gate);
    }

    /// Call `f` whenever the files or the CRLs in force change.
    pub fn on_reload(&self, f: OnReload) {
        self.on_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    /// The CRLs in force.
    pub fn crls(&self) -> Arc<CrlSet> {
        self.crls.load_full()
    }

    /// When the CRLs in force stopped being current, if they have: client certificates other
    /// than nodes' are refused meanwhile.
    pub fn crl_expired_since(&self) -> Option<String> {
        self.crls
            .load()
            .expired_since(crate::node::time::now_unix())
    }

    fn publish_crl_metric(&self) {
        if let (Some(m), Some(p), Some(t)) = (
            &self.metrics,
            &self.files.crl,
            self.crls.load().next_update(),
        ) {
            m.set_crl_next_update(p, t);
        }
    }

    /// Log the CRLs' expiry when it starts (`was` is the previous state).
    fn report_crl_expiry(&self, was: Option<&str>) -> Option<String> {
        let now = self.crl_expired_since();
        if let (Some(since), None) = (&now, was) {
            tracing::error!(
                crl = ?self.files.crl,
                expired_at = %since,
                "the CRL in force is past its nextUpdate: client certificates other than node certificates are refused until a current CRL is loaded (tls.crl)"
            );
        }
        now
    }

    /// Close connections whose certificates are no longer acceptable.
    fn sweep(&self) {
        let crls = self.crls.load();
        let now = crate::node::time::now_unix();
        for gate in self.gates.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            gate.sweep(&crls, now);
        }
    }

    fn notify(&self) {
        let crls = self.crls.load();
        for f in self
            .on_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(&self.files, &crls);
        }
    }

    /// Try a changed CRL file; `true` if it is now in force.
    fn reload_crl(&self, path: &Path) -> bool {
        let now = crate::node::time::now_unix();
        let checked = load_certs(&self.files.ca)
            .map_err(|e| e.to_string())
            .and_then(|ca| {
                CrlSet::load(path, &ca)
                    .and_then(|c| self.crls.load().replace(c, path, &ca, now))
                    .map_err(|e| {
                        if let Some(m) = &self.metrics {
                            m.crl_refused(e.kind());
                        }
                        e.to_string()
                    })
            });
        match checked {
            Ok(crls) => {
                self.crls.store(Arc::new(crls));
                self.publish_crl_metric();
                tracing::info!(crl = %path.display(), "CRL loaded; open connections with certificates it revokes are closed");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "CRL file refused; the previous CRLs stay in force");
                false
            }
        }
    }
}

/// Watch the TLS files and put changes in force: a changed certificate, key or CA bundle for new
/// connections (a file that does not load keeps the old configuration: it may be mid-copy); a
/// changed CRL file only if it is acceptable (see `node::crl`), and then open connections whose
/// certificate it revokes are closed. Every `every`, connections whose certificate expired, and
/// while the CRLs are out of date those without a node certificate, are closed too.
/// `extra` are further files whose change calls the [`TlsState::on_reload`] callbacks (the
/// department's client certificate for forwarding).
pub async fn reload_loop(state: Arc<TlsState>, every: Duration, extra: Vec<std::path::PathBuf>) {
    let files = state.files.clone();
    let identity_digest = || files_digest([&files.ca, &files.cert, &files.key]);
    let extra_digest = || files_digest(&extra);
    let crl_digest = || files_digest(files.crl.iter());
    let (mut seen, mut seen_crl) = state.loaded.clone();
    let mut seen_extra = extra_digest();
    let mut expired = state.crl_expired_since();
    loop {
        tokio::time::sleep(every).await;
        let now = identity_digest();
        let now_extra = extra_digest();
        let now_crl = crl_digest();
        let mut changed = false;
        if now_crl != seen_crl
            && let Some(path) = &files.crl
        {
            // Refused or not, this content has been judged: it is logged once, and a file that
            // was mid-copy changes again when complete.
            seen_crl = now_crl;
            changed |= state.reload_crl(path);
        }
        if now != seen || now_extra != seen_extra || changed {
            match load_server_config(&files, &state.crls.load()) {
                Ok(config) => {
                    state.server.store(Arc::new(config));
                    if now != seen {
                        tracing::info!("TLS certificates reloaded; new connections use them");
                        warn_if_expiring(&files);
                    }
                    seen = now;
                    seen_extra = now_extra;
                    state.notify();
                }
                Err(e) => {
                    // Files may be mid-copy; try again on the next tick, keep serving meanwhile.
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                }
            }
        }
        expired = state.report_crl_expiry(expired.as_deref());
        state.sweep();
    }
}

/// Not-after (Unix seconds) of the first certificate in a PEM file.
pub fn not_after(path: &Path) -> Option<i64> {
    let certs = load_certs(path).ok()?;
    let first = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first).ok()?;
    Some(cert.validity().not_after.timestamp())
}
