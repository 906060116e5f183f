//! TLS 1.3 with optional client certificates, and the accept loop that turns each connection
//! into a stream tonic can serve, carrying the caller's [`PeerIdentity`] parsed once.
//!
//! Client certificates are validated by rustls against the configured CA bundle and CRLs
//! (expired, revoked and foreign certificates fail the handshake). A connection without a
//! client certificate is accepted so that public services (license verification) can share the
//! port; data services refuse such calls with UNAUTHENTICATED.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::domain::identity::{IdentityError, PeerIdentity, parse_peer};

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

/// Read every CRL from a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
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

/// Client-side TLS, to other gateways: TLS 1.3 only, ALPN h2, presenting `cert_chain` and
/// trusting the CA certificates `ca`.
pub fn client_config(
    ca: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(root_store(ca)?)
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

/// One accepted TLS connection, ready for tonic.
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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

/// Accept TCP connections, run each TLS handshake in its own task (a slow client cannot stall
/// the others) and yield the established connections. Refused handshakes are logged with the
/// reason rustls gives (unknown CA, expired, revoked, …).
pub fn incoming(
    listener: TcpListener,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    trust_domain: String,
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
            let _ = tcp.set_nodelay(true);
            // The configuration current now: a reload applies to every new connection.
            let acceptor = TlsAcceptor::from(config.load_full());
            let tx = tx.clone();
            let trust_domain = trust_domain.clone();
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
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|leaf| parse_peer(leaf.as_ref(), &trust_domain));
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
                let conn = TlsConn {
                    inner: stream,
                    info: ConnInfo { remote_addr, peer },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Load the node's TLS files into a server configuration: TLS 1.3, client certificates
/// optional but verified, ALPN h2 (gRPC) and http/1.1 (JSON, probes).
pub fn load_server_config(
    files: &crate::node::config::TlsFiles,
) -> Result<rustls::ServerConfig, TlsError> {
    let ca = load_certs(&files.ca)?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let crls = match &files.crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    let mut config = server_config(&ca, chain, key, crls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A digest of the TLS files' contents, to notice a rotation.
fn files_digest(files: &crate::node::config::TlsFiles) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in [
        Some(&files.ca),
        Some(&files.cert),
        Some(&files.key),
        files.crl.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        h.update(std::fs::read(p).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().to_vec()
}

/// How soon before expiry a certificate is reported in the log.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Log a warning if the node certificate expires within [`EXPIRY_WARNING`].
pub fn warn_if_expiring(files: &crate::node::config::TlsFiles) {
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

/// Watch the TLS files and swap in a new configuration when they change (certificate rotation,
/// a new CA bundle, new CRLs). A file that does not load keeps the old configuration in place.
pub async fn reload_loop(
    files: crate::node::config::TlsFiles,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    every: Duration,
) {
    let mut seen = files_digest(&files);
    loop {
        tokio::time::sleep(every).await;
        let now = files_digest(&files);
        if now == seen {
            continue;
        }
        match load_server_config(&files) {
            Ok(config) => {
                current.store(Arc::new(config));
                seen = now;
                tracing::info!("TLS certificates reloaded; new connections use them");
                warn_if_expiring(&files);
            }
            Err(e) => {
                // Files may be mid-copy; try again on the next tick, keep serving meanwhile.
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
            }
        }
    }
}

/// Not-after (Unix seconds) of the first certificate in a PEM file.
pub fn not_after(path: &Path) -> Option<i64> {
    let certs = load_certs(path).ok()?;
    let first = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first).ok()?;
    Some(cert.validity().not_after.timestamp())
}
