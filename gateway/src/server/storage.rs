//! The node's storage under `data_dir`: the record store and the notarization log.

use std::path::Path;

use qianlian_raft_store::notary::{Notary, NotaryConfig};
use qianlian_verifier::NoteSigner;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::{StartError, read, read_to_string};
use crate::node::config::{NodeConfig, TlsFiles};
use crate::node::records::RecordStore;

/// Create `data_dir` if needed and open the record store in it.
pub(super) fn open_records(config: &NodeConfig) -> Result<RecordStore, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(StartError::io(&config.data_dir))?;
    Ok(RecordStore::open(&config.data_dir.join("records"))?)
}

/// Open the notarization log: this node's Raft member, reaching its peers with the node
/// certificate and signing checkpoints with the node's note key.
pub(super) async fn open_log(config: &NodeConfig) -> Result<Notary, StartError> {
    let peer_tls = peer_tls(&config.tls)?;
    let signer = checkpoint_signer(&config.checkpoint.signing_key)?;
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
    Ok(notary)
}

/// How this node reaches its Raft peers: its node certificate, trusting the CA bundle.
pub(super) fn peer_tls(files: &TlsFiles) -> Result<ClientTlsConfig, StartError> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?)))
}

/// The node's Ed25519 key (its checkpoint note key), which also seals the records its gateway
/// writes.
pub(super) fn node_key(
    config: &NodeConfig,
) -> Result<qianlian_verifier::ed25519_dalek::SigningKey, StartError> {
    Ok(checkpoint_signer(&config.checkpoint.signing_key)?
        .signing_key()
        .clone())
}

fn checkpoint_signer(path: &Path) -> Result<NoteSigner, StartError> {
    let skey = read_to_string(path)?;
    NoteSigner::from_skey(skey.trim()).map_err(|e| StartError::SigningKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
