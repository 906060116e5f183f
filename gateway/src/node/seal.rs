//! This node's seal on the records its gateway writes for its department's side of an exchange.
//!
//! The key is the node's checkpoint note key (it already stands for this node, and seal
//! messages are domain-separated from notes). A record is sealed only when the directory in
//! force lists that key as a node key of the record's department: every node checks seals
//! against the replicated directory, and a seal by an unlisted key would be refused, while an
//! unsealed record is still accepted from a department that lists no node keys.
//!
//! Records are sealed in batches with one signature ([`qianlian_verifier::record::batch`]): one
//! task signs whatever records are waiting when it gets to them, so a lone record is signed at
//! once (a batch of one) and records arriving together under load share a signature, which
//! every node then verifies once.

use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_raft_store::record::Record;
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::record::{BatchSealedRecord, Originator, SignerRole};
use tokio::sync::{mpsc, oneshot};

use crate::node::cluster_config::DirectoryInForce;

/// Most records under one signature: each record carries its path in the batch, one hash per
/// doubling, so this bounds what a seal adds to a record (6 hashes, 192 bytes).
const MAX_BATCH: usize = 64;

/// Records waiting for the signing task; callers wait when it is full.
const QUEUE: usize = 4096;

/// A record waiting to be sealed, and where its sealed form goes.
struct Pending {
    record: Record,
    originator: Originator,
    reply: oneshot::Sender<Record>,
}

/// Seals records with this node's key where the directory in force publishes it.
pub struct NodeSeal {
    key: SigningKey,
    public_key: [u8; 32],
    directory: Arc<ArcSwap<DirectoryInForce>>,
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for NodeSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeal")
            .field("public_key", &hex::encode(self.public_key))
            .finish_non_exhaustive()
    }
}

impl NodeSeal {
    /// A seal with `key`, looked up in `directory` at every record; starts the signing task
    /// (on the current Tokio runtime), which ends when the seal is dropped.
    pub fn new(key: SigningKey, directory: Arc<ArcSwap<DirectoryInForce>>) -> NodeSeal {
        let public_key = key.verifying_key().to_bytes();
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(sign_batches(key.clone(), waiting));
        NodeSeal {
            key,
            public_key,
            directory,
            queue,
        }
    }

    /// `record` sealed as written by `department`'s gateway, if the directory in force lists
    /// this node's key for it; otherwise `record` as it is.
    pub async fn seal(&self, record: Record, department: &str) -> Record {
        let originator = {
            let in_force = self.directory.load();
            let Some(key_id) = in_force.directory.node_key_id(department, &self.public_key) else {
                return record;
            };
            Originator {
                role: SignerRole::Gateway,
                department: department.to_owned(),
                key_id: key_id.to_owned(),
                public_key: self.public_key,
            }
        };
        let (reply, sealed) = oneshot::channel();
        let pending = Pending {
            record,
            originator,
            reply,
        };
        match self.queue.send(pending).await {
            Ok(()) => match sealed.await {
                Ok(record) => record,
                // The task ended with the record: it is gone, and so is the task.
                Err(_) => unreachable_task(),
            },
            // The task is gone: seal this one here, alone.
            Err(mpsc::error::SendError(p)) => {
                let mut one =
                    BatchSealedRecord::seal_batch(vec![(p.record, p.originator)], &self.key);
                Record::BatchSealed(Box::new(one.remove(0)))
            }
        }
    }
}

/// The signing task only ends when every sender is gone, and answers every record it takes
/// (sealing a batch cannot fail).
fn unreachable_task() -> ! {
    panic!("the record-sealing task dropped a record it had taken")
}

/// Sign what is waiting, batch by batch, until every [`NodeSeal`] is dropped.
async fn sign_batches(key: SigningKey, mut waiting: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<Pending> = std::mem::take(&mut batch);
        let mut replies = Vec::with_capacity(items.len());
        let records = items
            .into_iter()
            .map(|p| {
                replies.push(p.reply);
                (p.record, p.originator)
            })
            .collect();
        for (sealed, reply) in BatchSealedRecord::seal_batch(records, &key)
            .into_iter()
            .zip(replies)
        {
            // A caller that gave up (its request was cancelled) no longer needs its record.
            let _ = reply.send(Record::BatchSealed(Box::new(sealed)));
        }
    }
}

#[cfg(test)]
mod tests;
