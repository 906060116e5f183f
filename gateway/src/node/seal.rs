//! This node's seal on the records its gateway writes for its department's side of an exchange.
//!
//! The key is the node's checkpoint note key (it already stands for this node, and seal
//! messages are domain-separated from notes). A record is sealed only when the directory in
//! force lists that key as a node key of the record's department: every node checks seals
//! against the replicated directory, and a seal by an unlisted key would be refused, while an
//! unsealed record is still accepted from a department that lists no node keys.

use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::record::Record;
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::record::{Originator, SealedRecord, SignerRole};

use crate::node::cluster_config::DirectoryInForce;

/// Seals records with this node's key where the directory in force publishes it.
pub struct NodeSeal {
    key: SigningKey,
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
    /// A seal with `key`, looked up in `directory` at every record.
    pub fn new(key: SigningKey, directory: Arc<ArcSwap<DirectoryInForce>>) -> NodeSeal {
        let public_key = key.verifying_key().to_bytes();
        NodeSeal {
            key,
            public_key,
            directory,
        }
    }

    /// `record` sealed as written by `department`'s gateway, if the directory in force lists
    /// this node's key for it; otherwise `record` as it is.
    pub fn seal(&self, record: Record, department: &str) -> Record {
        let in_force = self.directory.load();
        let Some(key_id) = in_force.directory.node_key_id(department, &self.public_key) else {
            return record;
        };
        let originator = Originator {
            role: SignerRole::Gateway,
            department: department.to_owned(),
            key_id: key_id.to_owned(),
            public_key: self.public_key,
        };
        Record::Sealed(Box::new(SealedRecord::seal(record, originator, &self.key)))
    }
}
