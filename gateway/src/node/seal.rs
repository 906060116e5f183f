//! This node's seal on the records its gateway writes for its department's side of an exchange.
//!
//! The key is the node's checkpoint note key (it already stands for this node, and seal
//! messages are domain-separated from notes). A record is sealed only when the directory in
//! force lists that key as a node key of the record's department: every node checks seals
//! against the replicated directory, and a seal by an unlisted key would be refused, while an
//! unsealed record is still accepted from a department that lists no node keys.
//!
//! The seal itself is made by the notary when the record joins a group-commit batch
//! ([`qianlian_raft_store::notary::Notary::append_sealed`]): every record sealed in one batch
//! shares one signature ([`qianlian_verifier::record::batch`]), which every node verifies once.
//! Here the gateway decides whether a record is sealed, and as whom.

use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::notary::{Notary, NotaryError, Receipt};
use qianlian_raft_store::record::Record;
use qianlian_verifier::record::{Originator, SignerRole};

use crate::node::cluster_config::DirectoryInForce;

/// Seals records with this node's key where the directory in force publishes it.
pub struct NodeSeal {
    public_key: [u8; 32],
    directory: Arc<ArcSwap<DirectoryInForce>>,
}

impl std::fmt::Debug for NodeSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeal")
            .field("public_key", &hex::encode(self.public_key))
            .finish_non_exhaustive()
    }
}

impl NodeSeal {
    /// A seal by the node whose checkpoint key is `public_key`, looked up in `directory` at
    /// every record.
    pub fn new(public_key: [u8; 32], directory: Arc<ArcSwap<DirectoryInForce>>) -> NodeSeal {
        NodeSeal {
            public_key,
            directory,
        }
    }

    /// Who seals a record written by `department`'s gateway: this node, if the directory in
    /// force lists its key for that department; otherwise nobody.
    pub fn originator(&self, department: &str) -> Option<Originator> {
        let in_force = self.directory.load();
        let key_id = in_force
            .directory
            .node_key_id(department, &self.public_key)?;
        Some(Originator {
            role: SignerRole::Gateway,
            department: department.to_owned(),
            key_id: key_id.to_owned(),
            public_key: self.public_key,
        })
    }

    /// Append `record`, written by `department`'s gateway, sealed by this node where the
    /// directory in force says so.
    pub async fn append(
        &self,
        notary: &Notary,
        record: Record,
        department: &str,
    ) -> Result<Receipt, NotaryError> {
        match self.originator(department) {
            Some(originator) => notary.append_sealed(record, originator).await,
            None => notary.append(record).await,
        }
    }
}

#[cfg(test)]
mod tests;
