//! Why a node could not start.

use std::path::Path;

use qianlian_raft_store::notary::NotaryError;

use crate::domain::policy::PolicyError;
use crate::node::records::StoreError;
use crate::node::tls::TlsError;

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

impl StartError {
    /// An IO error on `path`.
    pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.display().to_string();
        move |source| StartError::Io { path, source }
    }
}

/// A file's bytes; the error names the file.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(StartError::io(path))
}

/// A file's text; the error names the file.
pub(super) fn read_to_string(path: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(StartError::io(path))
}
