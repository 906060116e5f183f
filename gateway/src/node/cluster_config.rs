//! Cluster-wide configuration in force on this node: the access policy and the department
//! directory, both replicated through the log.
//!
//! An operator's `policy apply` or `directory apply` appends a config record; every node applies
//! it at the same log index and [`follow`] swaps the new version in. Until the cluster has a
//! replicated policy or directory, the node uses its local files as version 0; the first node to
//! initialise the cluster appends them ([`seed`]), so every node soon decides by the same text.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use qianlian_raft_store::notary::Notary;
use qianlian_raft_store::record::{Caller, ConfigChange, ConfigKind, ConfigRecord, Record};

use crate::domain::directory::Directory;
use crate::domain::policy::{Policy, PolicyError};

/// The directory in force and its version (0: the node's local file).
#[derive(Debug, Clone, Default)]
pub struct DirectoryInForce {
    pub version: u64,
    pub directory: Directory,
}

/// Handles on the configuration in force; cheap to clone.
#[derive(Debug, Clone)]
pub struct InForce {
    pub policy: Arc<ArcSwap<Policy>>,
    pub directory: Arc<ArcSwap<DirectoryInForce>>,
}

/// Build policy `version` from a config record's texts.
pub async fn policy_from(model: &str, rules: &str, version: u64) -> Result<Policy, PolicyError> {
    let (m, r) = (
        format!("policy v{version} (model)"),
        format!("policy v{version} (rules)"),
    );
    Policy::from_text(
        model,
        rules,
        version,
        std::path::Path::new(&m),
        std::path::Path::new(&r),
    )
    .await
}

impl InForce {
    /// Bring the handles up to the configuration applied on this node. A replicated document
    /// that does not build (which validation before appending prevents) is logged and the
    /// previous version stays.
    pub async fn refresh(&self, notary: &Notary) {
        match notary.config(ConfigKind::Policy).await {
            Ok(Some((p, record))) if p.version != self.policy.load().version() => {
                if let ConfigChange::Policy { model, rules } = &record.change {
                    match policy_from(model, rules, p.version).await {
                        Ok(policy) => {
                            tracing::info!(
                                version = p.version,
                                log_index = p.log_index,
                                "policy in force"
                            );
                            self.policy.store(Arc::new(policy));
                        }
                        Err(e) => tracing::error!(
                            version = p.version,
                            error = %e,
                            "replicated policy does not build; keeping the previous one"
                        ),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reading the replicated policy"),
        }
        match notary.config(ConfigKind::Directory).await {
            Ok(Some((p, record))) if p.version != self.directory.load().version => {
                if let ConfigChange::Directory { toml } = &record.change {
                    match Directory::from_toml(toml, &format!("directory v{}", p.version)) {
                        Ok(directory) => {
                            tracing::info!(
                                version = p.version,
                                log_index = p.log_index,
                                "directory in force"
                            );
                            self.directory.store(Arc::new(DirectoryInForce {
                                version: p.version,
                                directory,
                            }));
                        }
                        Err(e) => tracing::error!(
                            version = p.version,
                            error = %e,
                            "replicated directory does not parse; keeping the previous one"
                        ),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reading the replicated directory"),
        }
    }

    /// Wait until the policy (or directory) in force here has at least `version`; at once for a
    /// membership change.
    pub async fn wait_for(&self, kind: ConfigKind, version: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = match kind {
                ConfigKind::Policy => self.policy.load().version(),
                ConfigKind::Directory => self.directory.load().version,
                // Raft makes membership changes; a node has nothing to switch.
                ConfigKind::Membership => return true,
            };
            if now >= version {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Follow the configuration applied on this node for as long as the node runs.
pub async fn follow(notary: Notary, in_force: InForce) {
    let mut changes = notary.watch_config();
    loop {
        in_force.refresh(&notary).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Append the node's local policy and directory to the log where the cluster has none yet.
/// Run after the cluster is initialised; a second seeder only adds an identical version.
pub async fn seed(
    notary: &Notary,
    caller: Caller,
    policy: Option<(String, String)>,
    directory: Option<String>,
) -> Result<(), qianlian_raft_store::notary::NotaryError> {
    let mut records = Vec::new();
    if let Some((model, rules)) = policy
        && notary.config(ConfigKind::Policy).await?.is_none()
    {
        records.push(ConfigChange::Policy { model, rules });
    }
    if let Some(toml) = directory
        && notary.config(ConfigKind::Directory).await?.is_none()
    {
        records.push(ConfigChange::Directory { toml });
    }
    for change in records {
        tracing::info!(
            kind = change.kind().as_str(),
            "seeding the cluster's configuration"
        );
        notary.append(config_record(caller.clone(), change)).await?;
    }
    Ok(())
}

/// A config record by `caller`, now.
pub fn config_record(caller: Caller, change: ConfigChange) -> Record {
    Record::Config(ConfigRecord {
        request_id: crate::node::request_id::new_request_id(),
        time_unix_ms: crate::node::time::now_ms(),
        caller,
        change,
    })
}
