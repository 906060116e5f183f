//! The node's own policy and department directory, named by its config: the configuration in
//! force until the log has replicated ones, and what a cluster initialised from this node
//! starts with. Each file is read once.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::notary::Notary;

use super::error::{StartError, read};
use crate::domain::directory::{Directory, DirectoryError};
use crate::domain::identity::Role;
use crate::domain::policy::{Policy, PolicyError};
use crate::node::cluster_config::{DirectoryInForce, InForce};
use crate::node::config::NodeConfig;
use crate::services::admin::AdminService;

/// `[policy]` and `licenses.directory`, read and checked.
pub(super) struct LocalConfiguration {
    /// Version 0 of the policy and the local directory, until the log's replace them.
    pub in_force: InForce,
    /// The policy's model and rule texts.
    pub policy_texts: (String, String),
    /// The local directory, empty without `licenses.directory`: the departments this node
    /// issues licenses for must be in it.
    pub directory: Directory,
    /// The directory's text, when `licenses.directory` is set.
    pub directory_text: Option<String>,
}

impl LocalConfiguration {
    /// Read the policy files and the directory; a bad file stops the node with its path.
    pub async fn read(config: &NodeConfig) -> Result<LocalConfiguration, StartError> {
        let (model_path, rules_path) = (&config.policy.model, &config.policy.rules);
        let model = read_policy_file(model_path)?;
        let rules = read_policy_file(rules_path)?;
        let policy = Policy::from_text(&model, &rules, 0, model_path, rules_path).await?;
        tracing::info!(
            "local policy files loaded (version 0 until the cluster has a replicated policy)"
        );
        let (directory, directory_text) = match &config.licenses.directory {
            Some(p) => {
                let text = read_directory(p)?;
                let d = Directory::from_toml(&text, &p.display().to_string())
                    .map_err(|e| StartError::License(e.to_string()))?;
                (d, Some(text))
            }
            None => (Directory::default(), None),
        };
        if let Some(p) = &config.licenses.directory {
            policy.check_departments(
                directory.department.iter().map(|d| d.id.as_str()),
                &p.display().to_string(),
            )?;
        }
        let in_force = InForce {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            directory: Arc::new(ArcSwap::from_pointee(DirectoryInForce {
                version: 0,
                directory: directory.clone(),
            })),
        };
        Ok(LocalConfiguration {
            in_force,
            policy_texts: (model, rules),
            directory,
            directory_text,
        })
    }
}

fn read_policy_file(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The directory's text; one that is not UTF-8 is refused as the directory loader refuses it.
fn read_directory(path: &Path) -> Result<String, StartError> {
    String::from_utf8(read(path)?).map_err(|_| {
        let source = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        );
        StartError::License(
            DirectoryError::Read {
                path: path.display().to_string(),
                source,
            }
            .to_string(),
        )
    })
}

/// A single-node cluster initialised by its own config seeds its configuration before it
/// serves, so its first decisions already name a replicated policy version.
pub(super) async fn seed(
    config: &NodeConfig,
    notary: &Notary,
    admin: &AdminService,
) -> Result<(), StartError> {
    if notary
        .wait_for_leader(std::time::Duration::from_secs(10))
        .await
        .is_err()
    {
        tracing::warn!("no leader after 10 s; the replicated policy is seeded by `cluster init`");
        return Ok(());
    }
    let caller = qianlian_raft_store::record::Caller {
        department: format!("node-{}", config.node_id),
        role: Role::Node.as_str().to_owned(),
        cert_fingerprint: String::new(),
    };
    crate::node::cluster_config::seed(
        notary,
        caller,
        admin.local_policy.clone(),
        admin.local_directory.clone(),
    )
    .await?;
    admin.in_force.refresh(notary).await;
    Ok(())
}
