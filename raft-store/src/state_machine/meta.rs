//! The applied state and its home in `sm_meta`: the keys, the layout this version writes, the
//! in-memory mirror of what was applied ([`Applied`]) with the configuration pointers in it, and
//! the staging of its changes into the write batch of the apply (or install) that made them.

use std::time::Instant;

use rocksdb::{DB, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::checkpoint::SignedCheckpoint;
use crate::db::{self, CF_SM_META, StoreError, encode_value, get_value};
use crate::merkle::Edge;
use crate::record::{ConfigKind, Record};
use crate::types::{LogId, StoredMembership};

pub(super) const KEY_LAYOUT: &[u8] = b"layout";
pub(crate) const KEY_GENERATION: &[u8] = b"generation";
pub(super) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(super) const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const KEY_TREE_SIZE: &[u8] = b"tree_size";
pub(crate) const KEY_CHECKPOINT: &[u8] = b"checkpoint";
pub(super) const KEY_CONFIG: &[u8] = b"config";
/// The tree size the audit index covers.
pub(super) const KEY_AUDIT_INDEXED: &[u8] = b"audit_indexed";
/// The layout of the audit index (see `audit_index::upgrade_layout`).
pub(super) const KEY_AUDIT_LAYOUT: &[u8] = b"audit_layout";
/// The layout of the leaf index (see `tree::upgrade_leaf_index`).
pub(super) const KEY_LEAF_LAYOUT: &[u8] = b"leaf_layout";

/// The state machine storage layout this version writes (`sm_meta/layout`). Layout 1 (no
/// generations, no tree) was the walking skeleton's and is refused.
pub(super) const LAYOUT: u32 = 2;

/// What the state machine has applied so far. Kept in memory, mirrored in `sm_meta`.
#[derive(Debug, Clone, Default)]
pub(super) struct Applied {
    pub(super) last_applied: Option<LogId>,
    pub(super) last_membership: StoredMembership,
    pub(super) tree_size: u64,
    /// The live generation of records, tree and leaf index.
    pub(super) generation: u32,
    /// The right edge of the tree at `tree_size`: what the next append builds on.
    pub(super) edge: Edge,
    /// The latest tree head this node signed and stored (none without a key).
    pub(super) checkpoint: Option<SignedCheckpoint>,
    /// When `checkpoint` was signed by this process (`None`: before this process, or never).
    pub(super) signed_at: Option<Instant>,
    /// Where the current version of each kind of cluster configuration is.
    pub(super) config: ConfigPointers,
    /// The keys of the directory `config` names, which records are checked against
    /// (`origin`); `None` without a replicated directory. Derived, not stored.
    pub(super) origin: Option<std::sync::Arc<qianlian_verifier::record::OriginKeys>>,
    /// The catalog entries in force.
    pub(super) governance: std::sync::Arc<super::governance::Governance>,
}

/// The log index and version of one kind of cluster configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPointer {
    /// Log index of the config record in force.
    pub log_index: u64,
    /// Number of config records of this kind up to and including it (1 for the first).
    pub version: u64,
}

/// The configuration in force, per kind (none until the first record of the kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPointers {
    pub policy: Option<ConfigPointer>,
    pub directory: Option<ConfigPointer>,
    /// The last authorised membership change (added after the first two: see [`load_config`]).
    pub membership: Option<ConfigPointer>,
}

/// The pointers as versions before membership changes were recorded stored them.
#[derive(Deserialize)]
struct ConfigPointersV1 {
    policy: Option<ConfigPointer>,
    directory: Option<ConfigPointer>,
}

/// The stored configuration pointers, in either stored form (none stored: the default).
pub(super) fn load_config(db: &DB) -> Result<ConfigPointers, StoreError> {
    match db.get_pinned_cf(db::cf(db, CF_SM_META)?, KEY_CONFIG)? {
        Some(bytes) => decode_config(&bytes),
        None => Ok(ConfigPointers::default()),
    }
}

/// Stored configuration pointers, in either stored form.
fn decode_config(bytes: &[u8]) -> Result<ConfigPointers, StoreError> {
    const WHAT: &str = "configuration pointers";
    match db::decode_value::<ConfigPointers>(WHAT, bytes) {
        Ok(pointers) => Ok(pointers),
        Err(current) => match db::decode_value::<ConfigPointersV1>(WHAT, bytes) {
            Ok(v1) => Ok(ConfigPointers {
                policy: v1.policy,
                directory: v1.directory,
                membership: None,
            }),
            Err(_) => Err(current),
        },
    }
}

impl ConfigPointers {
    /// The pointer of `kind`.
    pub fn get(&self, kind: ConfigKind) -> Option<ConfigPointer> {
        match kind {
            ConfigKind::Policy => self.policy,
            ConfigKind::Directory => self.directory,
            ConfigKind::Membership => self.membership,
        }
    }

    /// Account for `record` at `log_index`: a config record becomes the one in force.
    pub(crate) fn observe(&mut self, log_index: u64, record: &Record) {
        let Record::Config(c) = record.content() else {
            return;
        };
        let slot = match c.change.kind() {
            ConfigKind::Policy => &mut self.policy,
            ConfigKind::Directory => &mut self.directory,
            ConfigKind::Membership => &mut self.membership,
        };
        let version = slot.map_or(1, |p| p.version + 1);
        *slot = Some(ConfigPointer { log_index, version });
    }
}

/// The parts of the applied state a write stores besides the last applied log id, which
/// every write stores.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Changed {
    /// The layout and the generation: set only by [`Changed::EVERYTHING`].
    pub(super) layout: bool,
    pub(super) membership: bool,
    /// The tree size, and with it the size the audit index covers.
    pub(super) tree: bool,
    pub(super) checkpoint: bool,
    pub(super) config: bool,
    pub(super) governance: bool,
}

impl Changed {
    /// The first write to a database, and the switch to an installed snapshot.
    pub(super) const EVERYTHING: Changed = Changed {
        layout: true,
        membership: true,
        tree: true,
        checkpoint: true,
        config: true,
        governance: true,
    };
}

/// Stage `applied` into `batch`: the last applied log id and the parts `changed` names. An
/// apply that changes only the tree writes three small values instead of eight, the
/// checkpoint note among those skipped: fewer memtable inserts and fewer bytes for the next
/// fsync of the write-ahead log.
pub(super) fn put_applied(
    db: &DB,
    batch: &mut WriteBatch,
    applied: &Applied,
    changed: Changed,
) -> Result<(), StoreError> {
    let cf = db::cf(db, CF_SM_META)?;
    batch.put_cf(
        cf,
        KEY_LAST_APPLIED,
        encode_value("last applied log id", &applied.last_applied)?,
    );
    if changed.layout {
        batch.put_cf(cf, KEY_LAYOUT, encode_value("layout", &LAYOUT)?);
        batch.put_cf(
            cf,
            KEY_GENERATION,
            encode_value("generation", &applied.generation)?,
        );
    }
    if changed.membership {
        batch.put_cf(
            cf,
            KEY_LAST_MEMBERSHIP,
            encode_value("last membership", &applied.last_membership)?,
        );
    }
    if changed.tree {
        batch.put_cf(
            cf,
            KEY_TREE_SIZE,
            encode_value("tree size", &applied.tree_size)?,
        );
        // Every write of the applied state indexes the records it covers in the same batch.
        batch.put_cf(
            cf,
            KEY_AUDIT_INDEXED,
            encode_value("audit index size", &applied.tree_size)?,
        );
    }
    if changed.checkpoint {
        match &applied.checkpoint {
            Some(cp) => batch.put_cf(cf, KEY_CHECKPOINT, encode_value("checkpoint", &cp.note)?),
            None => batch.delete_cf(cf, KEY_CHECKPOINT),
        }
    }
    if changed.config {
        batch.put_cf(
            cf,
            KEY_CONFIG,
            encode_value("configuration pointers", &applied.config)?,
        );
    }
    if changed.governance {
        super::governance::stage(db, batch, &applied.governance)?;
    }
    Ok(())
}

/// Whether the index layout stored under `sm_meta/key` is `current`; a missing marker is an
/// older layout, a larger one [`StoreError::UnknownFormat`] (written by a newer version).
pub(super) fn layout_is_current(
    db: &DB,
    key: &[u8],
    current: u32,
    what: &str,
) -> Result<bool, StoreError> {
    match get_value::<u32>(db, CF_SM_META, key, what)? {
        Some(layout) if layout == current => Ok(true),
        Some(layout) if layout > current => Err(StoreError::UnknownFormat {
            what: what.into(),
            version: u8::try_from(layout).unwrap_or(u8::MAX),
        }),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct OldPointers {
        policy: Option<ConfigPointer>,
        directory: Option<ConfigPointer>,
    }

    #[test]
    fn pointers_stored_before_membership_changes_still_load() -> Result<(), StoreError> {
        let p = |log_index, version| Some(ConfigPointer { log_index, version });
        let old = encode_value(
            "old",
            &OldPointers {
                policy: p(4, 2),
                directory: p(3, 1),
            },
        )?;
        let loaded = decode_config(&old)?;
        assert_eq!(
            loaded,
            ConfigPointers {
                policy: p(4, 2),
                directory: p(3, 1),
                membership: None,
            }
        );
        let new = ConfigPointers {
            membership: p(9, 3),
            ..loaded
        };
        assert_eq!(decode_config(&encode_value("new", &new)?)?, new);
        assert!(
            decode_config(&[1, 2, 3]).is_err(),
            "garbage is not read as pointers"
        );
        Ok(())
    }
}
