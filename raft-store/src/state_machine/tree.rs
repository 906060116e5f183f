//! The stored Merkle tree and the leaf index of one generation: reading nodes and the edge,
//! staging appended records with the nodes they complete, looking a leaf hash up, and bringing
//! a leaf index of the older layout to the current one.

use qianlian_verifier::{Hash, leaf_hash};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

use super::meta::{KEY_LEAF_LAYOUT, layout_is_current};
use crate::db::{
    self, CF_LEAF_INDEX, CF_RECORDS, CF_SM_META, CF_TREE, END_KEY, StoreError, decode_hash,
    encode_value, hash_index_key, hash_index_key_parts, leaf_key, node_key, node_key_parts,
    record_key,
};
use crate::merkle::{self, Edge, Subtree};

/// The leaf index layout this version writes: one entry per record (hash ++ log index). Layout 1
/// (hash → first log index, no marker) is rebuilt on open.
const LEAF_LAYOUT: u32 = 2;
/// Leaves indexed per write when the leaf index is rebuilt.
const LEAF_REBUILD_BATCH: u64 = 20_000;

/// Stored tree node `id` of `generation`; a node that must exist but does not is corruption.
pub(crate) fn read_node(db: &DB, generation: u32, id: Subtree) -> Result<Hash, StoreError> {
    let what = || format!("tree node at level {} index {}", id.level, id.index);
    match db.get_pinned_cf(
        db::cf(db, CF_TREE)?,
        node_key(generation, id.level, id.index),
    )? {
        Some(bytes) => decode_hash(what, &bytes),
        None => Err(StoreError::corrupt(what(), "missing below the tree size")),
    }
}

/// The edge of the tree of `size` leaves in `generation`, from its stored nodes.
pub(super) fn load_edge(db: &DB, generation: u32, size: u64) -> Result<Edge, StoreError> {
    let mut nodes = Vec::new();
    for id in merkle::pieces(0, size) {
        nodes.push(read_node(db, generation, id)?);
    }
    Edge::from_parts(size, nodes)
        .ok_or_else(|| StoreError::corrupt("tree", format!("no edge for tree size {size}")))
}

/// Appends records to one generation: their bytes, the tree nodes they complete and their leaf
/// index entries, staged into write batches.
pub(super) struct Appender<'a> {
    db: &'a DB,
    generation: u32,
    pub(super) edge: Edge,
    // Tree nodes completed so far, staged in key order by `stage_nodes` (see there).
    nodes: Vec<([u8; 13], Hash)>,
}

impl<'a> Appender<'a> {
    pub(super) fn new(db: &'a DB, generation: u32, edge: Edge) -> Appender<'a> {
        Appender {
            db,
            generation,
            edge,
            nodes: Vec::new(),
        }
    }

    /// Stage the tree nodes of the records appended so far, in key order: a memtable insert
    /// starts from where the previous one ended, so nodes of one level that follow each other
    /// cost a few comparisons instead of a search from the top of the skip list each.
    pub(super) fn stage_nodes(&mut self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        let tree = db::cf(self.db, CF_TREE)?;
        self.nodes.sort_unstable_by_key(|(key, _)| *key);
        for (key, node) in self.nodes.drain(..) {
            batch.put_cf(tree, key, node);
        }
        Ok(())
    }

    /// Stage record `bytes` as the next log index; returns its leaf hash. Its tree nodes wait in
    /// `nodes` for [`Appender::stage_nodes`].
    pub(super) fn append(
        &mut self,
        batch: &mut WriteBatch,
        bytes: Vec<u8>,
    ) -> Result<Hash, StoreError> {
        let hash = leaf_hash(&bytes);
        self.append_hashed(batch, bytes, hash)
    }

    /// [`Appender::append`] of `bytes` whose leaf hash `hash` the caller computed.
    pub(super) fn append_hashed(
        &mut self,
        batch: &mut WriteBatch,
        bytes: Vec<u8>,
        hash: Hash,
    ) -> Result<Hash, StoreError> {
        let index = self.edge.size();
        let generation = self.generation;
        let nodes = &mut self.nodes;
        self.edge
            .append(hash, |id, node| {
                nodes.push((node_key(generation, id.level, id.index), node));
            })
            .ok_or_else(|| StoreError::Task("the tree is full (2^64 records)".into()))?;
        batch.put_cf(
            db::cf(self.db, CF_RECORDS)?,
            record_key(generation, index),
            bytes,
        );
        // A record repeated later gets an entry after the first one's: readers take the first.
        batch.put_cf(
            db::cf(self.db, CF_LEAF_INDEX)?,
            hash_index_key(generation, &hash, index),
            [],
        );
        Ok(hash)
    }
}

/// The smallest log index the leaf index lists for `hash` in `generation`: its first record.
pub(super) fn first_leaf_entry(
    db: &DB,
    generation: u32,
    hash: &Hash,
) -> Result<Option<u64>, StoreError> {
    let prefix = leaf_key(generation, hash);
    let mut iter = db.raw_iterator_cf(db::cf(db, CF_LEAF_INDEX)?);
    iter.seek(hash_index_key(generation, hash, 0));
    iter.status()?;
    let Some(key) = iter.key().filter(|k| k.starts_with(&prefix)) else {
        return Ok(None);
    };
    let (_, _, index) = hash_index_key_parts("leaf index key", key)?;
    if iter.value().is_some_and(|v| !v.is_empty()) {
        return Err(StoreError::corrupt(
            format!("leaf index entry of {}", hex::encode(hash)),
            "a value where none is written",
        ));
    }
    Ok(Some(index))
}

/// Bring a leaf index of the older layout (hash → first log index) to the current one (hash ++
/// log index → empty) by rebuilding it from the stored leaves (level 0 of the tree), in batches;
/// an interrupted rebuild starts again.
pub(super) fn upgrade_leaf_index(
    db: &DB,
    generation: u32,
    tree_size: u64,
) -> Result<(), StoreError> {
    if layout_is_current(db, KEY_LEAF_LAYOUT, LEAF_LAYOUT, "leaf index layout")? {
        return Ok(());
    }
    let leaf_cf = db::cf(db, CF_LEAF_INDEX)?;
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(leaf_cf, &[][..], &END_KEY[..]);
    if tree_size > 0 {
        tracing::info!(tree_size, "rebuilding the leaf index in its current layout");
    }
    let iter = db.iterator_cf_opt(
        db::cf(db, CF_TREE)?,
        db::scan_options(),
        IteratorMode::From(&node_key(generation, 0, 0), Direction::Forward),
    );
    let mut next = 0u64;
    for item in iter {
        if next >= tree_size {
            break;
        }
        let (key, value) = item?;
        if node_key_parts(&key)? != (generation, 0, next) {
            return Err(StoreError::corrupt(
                format!("leaf {next}"),
                "missing below the tree size",
            ));
        }
        let hash = decode_hash(|| format!("leaf {next}"), &value)?;
        batch.put_cf(leaf_cf, hash_index_key(generation, &hash, next), []);
        next += 1;
        if next.is_multiple_of(LEAF_REBUILD_BATCH) {
            db.write_opt(std::mem::take(&mut batch), &db::unsynced())?;
        }
    }
    if next != tree_size {
        return Err(StoreError::corrupt(
            format!("leaf {next}"),
            "missing below the tree size",
        ));
    }
    batch.put_cf(
        db::cf(db, CF_SM_META)?,
        KEY_LEAF_LAYOUT,
        encode_value("leaf index layout", &LEAF_LAYOUT)?,
    );
    db.write_opt(batch, &db::synced())?;
    Ok(())
}
