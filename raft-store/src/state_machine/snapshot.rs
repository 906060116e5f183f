//! File-backed snapshots of the state machine: built by streaming a RocksDB snapshot of the live
//! generation into a file, sent by openraft in chunks read from that file, installed by streaming
//! the received file into the next generation and switching generations in one synced write.
//! Nothing holds the whole log in memory.
//!
//! File format (version 2), every integer big-endian:
//! ```text
//! magic    "QLSNAP\0\x02"
//! header   u32 length ++ postcard(Header)         tree size, last applied log id, membership
//! frames   1 ++ u32 length ++ record bytes         records 0..tree_size, in order
//!          2 ++ level u8 ++ index u64 ++ hash[32]   tree nodes, in key order
//!          3 ++ hash[32] ++ log index u64           leaf index: each hash once, with its first
//!                                                  (smallest) log index, in hash order
//!          4 ++ hash[32] ++ log index u64           license index entries, in key order
//!          5 ++ hash[32] ++ log index u64 ++ u32 length ++ value
//!                                                  license changes, in key order
//!          6 ++ hash[32] ++ log index u64           holder index entries, in key order
//! end      0xff ++ SHA-256 of every byte before the 0xff
//! ```
//! Frames come in the order of their types. Version 1 (`"QLSNAP\0\x01"`, frames 1 to 3, from
//! nodes before e-licenses, whose logs hold no license records) is still installed.
//!
//! The audit index is not sent: the installer derives it from the records as they stream in.
//!
//! The digest catches a file damaged in transit or on disk before anything is switched; the
//! installed generation is then checked like a node's own state on open (`integrity`): records
//! against leaves, nodes against their children, the license state against the records. A
//! snapshot from a faulty leader is refused, not installed.
//!
//! Files live in the snapshot directory: `snapshot-<unique>.snap` (the current one, named in
//! `snapshot/current`), `*.part` while being built or received. Anything else there is left
//! over from a crash and deleted on open.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::{BasicNode, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta};
use qianlian_verifier::Hash;
use qianlian_verifier::proof::verify_consistency;
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncSeekExt;

use super::error::IntegrityError;
use super::meta::{
    Applied, Changed, ConfigPointers, KEY_GENERATION, KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP,
    KEY_TREE_SIZE, put_applied,
};
use super::shared::{Files, Shared};
use super::tree::{load_edge, read_node};
use super::{audit_index, integrity};
use crate::db::{
    self, CF_HOLDERS, CF_LEAF_INDEX, CF_LICENSE_CHANGES, CF_LICENSES, CF_RECORDS, CF_SM_META,
    CF_SNAPSHOT, CF_TREE, Db, END_KEY, GENERATION_CFS, StoreError, decode_hash, decode_value,
    encode_value, generation_prefix, get_value, hash_index_key, hash_index_key_parts, license_key,
    node_key, node_key_parts, record_key, record_key_parts,
};
use crate::merkle;
use crate::record::Record;
use crate::types::{LogId, NodeId, RaftStorageError, StoredMembership, TypeConfig};

/// openraft's `SnapshotData` for this store.
pub type SnapshotFile = tokio::fs::File;

const KEY_CURRENT: &[u8] = b"current";
const MAGIC: &[u8; 8] = b"QLSNAP\x00\x02";
/// Version 1, without license state: still read.
const MAGIC_V1: &[u8; 8] = b"QLSNAP\x00\x01";
const TAG_RECORD: u8 = 1;
const TAG_NODE: u8 = 2;
const TAG_LEAF: u8 = 3;
const TAG_LICENSE: u8 = 4;
const TAG_CHANGE: u8 = 5;
const TAG_HOLDER: u8 = 6;
const TAG_END: u8 = 0xff;
/// Largest record accepted from a snapshot: far above any real record, small enough that a
/// damaged length cannot make the installer allocate gigabytes.
const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
/// Write an install's data in batches of about this size, so memory stays bounded.
const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The snapshot header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    tree_size: u64,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// `snapshot/current`: the current snapshot's metadata and file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta<NodeId, BasicNode>,
    file: String,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn raft_err(e: StoreError, verb: ErrorVerb) -> RaftStorageError {
    e.into_raft(ErrorSubject::Snapshot(None), verb)
}

/// Delete leftovers in `dir`: partial files, and snapshots other than the current one.
pub(super) async fn clean_directory(db: &Db, dir: &Path) -> Result<(), StoreError> {
    let current: Option<Current> = db
        .run(|db| get_value(db, CF_SNAPSHOT, KEY_CURRENT, "current snapshot"))
        .await?;
    let keep = current.map(|c| c.file);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || delete_others(&dir, keep.as_deref()))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Delete every file in `dir` but `keep`.
fn delete_others(dir: &Path, keep: Option<&str>) -> Result<(), StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("reading", dir, e))?;
        let name = entry.file_name();
        if keep.is_some_and(|k| name.to_str() == Some(k)) {
            continue;
        }
        let path = entry.path();
        if path.is_file()
            && let Err(e) = fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "removing an old snapshot file");
        }
    }
    Ok(())
}

/// Delete the snapshot files in `dir` other than `keep`, leaving partial files alone (another
/// build or a receive may be writing them).
fn delete_old_snapshots(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name != keep
            && name.ends_with(".snap")
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::warn!(file = name, error = %e, "removing an old snapshot file");
        }
    }
}

/// Write `file` to disk and make its directory entry durable under `dir/name`.
fn persist(file: fs::File, from: &Path, dir: &Path, name: &str) -> Result<PathBuf, StoreError> {
    file.sync_all().map_err(|e| io_err("syncing", from, e))?;
    drop(file);
    let to = dir.join(name);
    fs::rename(from, &to).map_err(|e| io_err("renaming", from, e))?;
    // The rename is durable once the directory is synced.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))?;
    Ok(to)
}

/// Write `batch` synced, switching `snapshot/current` to `current` in it unless a newer
/// snapshot is current already. Returns whether it switched.
fn write_current(
    db: &DB,
    files: &Files,
    mut batch: WriteBatch,
    current: &Current,
) -> Result<bool, StoreError> {
    let _switching = files.current.lock().unwrap_or_else(|e| e.into_inner());
    let existing: Option<Current> = get_value(db, CF_SNAPSHOT, KEY_CURRENT, "current snapshot")?;
    let switch = existing.is_none_or(|e| e.meta.last_log_id <= current.meta.last_log_id);
    if switch {
        batch.put_cf(
            db::cf(db, CF_SNAPSHOT)?,
            KEY_CURRENT,
            encode_value("current snapshot", current)?,
        );
    }
    // Synced: the Raft log may be purged up to this snapshot right after.
    db.write_opt(batch, &db::synced())?;
    Ok(switch)
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    digest: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds a snapshot of the state as it is when [`RaftSnapshotBuilder::build_snapshot`] runs.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Db,
    shared: std::sync::Arc<Shared>,
}

impl SnapshotBuilder {
    pub(super) fn new(db: Db, shared: std::sync::Arc<Shared>) -> SnapshotBuilder {
        SnapshotBuilder { db, shared }
    }
}

fn snapshot_value<T: serde::de::DeserializeOwned>(
    snap: &rocksdb::Snapshot<'_>,
    db: &DB,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, StoreError> {
    match snap.get_cf(db::cf(db, CF_SM_META)?, key)? {
        Some(bytes) => decode_value(what, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Build a snapshot file; returns its metadata and the file, opened for reading before anything
/// else can replace and delete it.
fn build(db: &DB, shared: &Shared) -> Result<(Current, fs::File), StoreError> {
    let started = Instant::now();
    // A consistent view of one moment: applies may go on meanwhile, and an install may even
    // switch generations; the RocksDB snapshot keeps what it saw.
    let snap = db.snapshot();
    let generation: u32 = snapshot_value(&snap, db, KEY_GENERATION, "generation")?.unwrap_or(0);
    let last_applied: Option<Option<LogId>> =
        snapshot_value(&snap, db, KEY_LAST_APPLIED, "last applied log id")?;
    let last_membership: Option<StoredMembership> =
        snapshot_value(&snap, db, KEY_LAST_MEMBERSHIP, "last membership")?;
    let header = Header {
        tree_size: snapshot_value(&snap, db, KEY_TREE_SIZE, "tree size")?.unwrap_or(0),
        last_applied: last_applied.flatten(),
        last_membership: last_membership.unwrap_or_default(),
    };

    let dir = &shared.config.snapshot_dir;
    let part = dir.join(shared.files.unique("build", ".part"));
    let file = fs::File::create(&part).map_err(|e| io_err("creating", &part, e))?;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        digest: Sha256::new(),
    };
    let written = write_snapshot(db, &snap, generation, &header, &mut out);
    let file = written.and_then(|()| {
        let Hashing { inner, digest } = out;
        let mut inner = inner;
        let digest: Hash = digest.finalize().into();
        inner
            .write_all(&[TAG_END])
            .and_then(|()| inner.write_all(&digest))
            .and_then(|()| inner.into_inner().map_err(io::IntoInnerError::into_error))
            .map_err(|e| io_err("writing", &part, e))
    });
    let file = match file {
        Ok(file) => file,
        Err(e) => {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
    };
    let name = shared.files.unique("snapshot", ".snap");
    let path = persist(file, &part, dir, &name)?;
    let reader = fs::File::open(&path).map_err(|e| io_err("opening", &path, e))?;

    let snapshot_id = match &header.last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id, id.index, header.tree_size),
        None => format!("none-{}", header.tree_size),
    };
    let current = Current {
        meta: SnapshotMeta {
            last_log_id: header.last_applied,
            last_membership: header.last_membership,
            snapshot_id,
        },
        file: name,
    };
    if write_current(db, &shared.files, WriteBatch::default(), &current)? {
        delete_old_snapshots(dir, &current.file);
    }
    tracing::info!(
        tree_size = header.tree_size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot built"
    );
    Ok((current, reader))
}

fn write_failed(e: io::Error) -> StoreError {
    StoreError::Io(format!("writing a snapshot: {e}"))
}

/// Write the snapshot of `generation` as `snap` sees it, up to the end frame: the magic and the
/// header, then the frames of each kind in the order of their types.
fn write_snapshot(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    generation: u32,
    header: &Header,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    out.write_all(MAGIC).map_err(write_failed)?;
    let header_bytes = encode_value("snapshot header", header)?;
    let len = u32::try_from(header_bytes.len())
        .map_err(|_| StoreError::Task("snapshot header too large".into()))?;
    out.write_all(&len.to_be_bytes()).map_err(write_failed)?;
    out.write_all(&header_bytes).map_err(write_failed)?;

    write_records(db, snap, generation, header.tree_size, out)?;
    let prefix = generation_prefix(generation);
    write_tree(db, snap, &prefix, out)?;
    write_leaf_index(db, snap, &prefix, out)?;
    write_license_state(db, snap, &prefix, out)
}

/// Record frames: records `0..tree_size` of `generation`, each of which must be stored.
fn write_records(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    generation: u32,
    tree_size: u64,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let prefix = generation_prefix(generation);
    let records = snap.iterator_cf_opt(
        db::cf(db, CF_RECORDS)?,
        db::scan_options(),
        IteratorMode::From(&record_key(generation, 0), Direction::Forward),
    );
    let mut expected = 0u64;
    for item in records {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let (_, index) = record_key_parts(&key)?;
        if index >= tree_size {
            break;
        }
        if index != expected {
            return Err(StoreError::corrupt(
                "records",
                format!("record {expected} is missing"),
            ));
        }
        let len = u32::try_from(value.len())
            .map_err(|_| StoreError::corrupt(format!("record {index}"), "larger than 4 GiB"))?;
        out.write_all(&[TAG_RECORD]).map_err(write_failed)?;
        out.write_all(&len.to_be_bytes()).map_err(write_failed)?;
        out.write_all(&value).map_err(write_failed)?;
        expected += 1;
    }
    if expected != tree_size {
        return Err(StoreError::corrupt(
            "records",
            format!("tree size {tree_size} but {expected} records"),
        ));
    }
    Ok(())
}

/// Tree node frames: every stored node of the generation of `prefix`, in key order.
fn write_tree(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    prefix: &[u8],
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let nodes = snap.iterator_cf_opt(
        db::cf(db, CF_TREE)?,
        db::scan_options(),
        IteratorMode::From(prefix, Direction::Forward),
    );
    for item in nodes {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        let (_, level, index) = node_key_parts(&key)?;
        let hash = decode_hash(
            || format!("tree node at level {level} index {index}"),
            &value,
        )?;
        out.write_all(&[TAG_NODE, level]).map_err(write_failed)?;
        out.write_all(&index.to_be_bytes()).map_err(write_failed)?;
        out.write_all(&hash).map_err(write_failed)?;
    }
    Ok(())
}

/// Leaf index frames: one per hash, with its first record (the smallest log index, listed
/// first).
fn write_leaf_index(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    prefix: &[u8],
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let leaves = snap.iterator_cf_opt(
        db::cf(db, CF_LEAF_INDEX)?,
        db::scan_options(),
        IteratorMode::From(prefix, Direction::Forward),
    );
    let mut last: Option<Hash> = None;
    for item in leaves {
        let (key, _) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        let (_, hash, index) = hash_index_key_parts("leaf index key", &key)?;
        if last == Some(hash) {
            continue;
        }
        last = Some(hash);
        out.write_all(&[TAG_LEAF]).map_err(write_failed)?;
        out.write_all(&hash).map_err(write_failed)?;
        out.write_all(&index.to_be_bytes()).map_err(write_failed)?;
    }
    Ok(())
}

/// The license state's frames: every frame is the key without its generation, then the value
/// (license index entries, license changes, holder index entries, in that order).
fn write_license_state(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    prefix: &[u8],
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let licenses = snap.iterator_cf_opt(
        db::cf(db, CF_LICENSES)?,
        db::scan_options(),
        IteratorMode::From(prefix, Direction::Forward),
    );
    for item in licenses {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        let index: [u8; 8] = value.as_ref().try_into().map_err(|_| {
            StoreError::corrupt("license index entry", format!("{} bytes", value.len()))
        })?;
        out.write_all(&[TAG_LICENSE]).map_err(write_failed)?;
        out.write_all(&key[4..]).map_err(write_failed)?;
        out.write_all(&index).map_err(write_failed)?;
    }
    for (cf_name, tag) in [(CF_LICENSE_CHANGES, TAG_CHANGE), (CF_HOLDERS, TAG_HOLDER)] {
        let entries = snap.iterator_cf_opt(
            db::cf(db, cf_name)?,
            db::scan_options(),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in entries {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            hash_index_key_parts(cf_name, &key)?;
            out.write_all(&[tag]).map_err(write_failed)?;
            out.write_all(&key[4..]).map_err(write_failed)?;
            if tag == TAG_CHANGE {
                let len = u32::try_from(value.len())
                    .map_err(|_| StoreError::corrupt("license change", "larger than 4 GiB"))?;
                out.write_all(&len.to_be_bytes()).map_err(write_failed)?;
                out.write_all(&value).map_err(write_failed)?;
            }
        }
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let shared = self.shared.clone();
        let (current, file) = self
            .db
            .run(move |db| build(db, &shared))
            .await
            .map_err(|e| raft_err(e, ErrorVerb::Write))?;
        Ok(Snapshot {
            meta: current.meta,
            snapshot: Box::new(SnapshotFile::from_std(file)),
        })
    }
}

/// The current snapshot, opened for reading; `None` before the first.
pub(super) async fn current(
    db: &Db,
    shared: &Shared,
) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
    let current: Option<Current> = db
        .run(|db| get_value(db, CF_SNAPSHOT, KEY_CURRENT, "current snapshot"))
        .await
        .map_err(|e| raft_err(e, ErrorVerb::Read))?;
    let Some(current) = current else {
        return Ok(None);
    };
    let path = shared.config.snapshot_dir.join(&current.file);
    let file = SnapshotFile::open(&path).await.map_err(|e| {
        raft_err(
            StoreError::corrupt("current snapshot", format!("{}: {e}", path.display())),
            ErrorVerb::Read,
        )
    })?;
    Ok(Some(Snapshot {
        meta: current.meta,
        snapshot: Box::new(file),
    }))
}

/// A fresh file for openraft to write a received snapshot into.
pub(super) async fn begin_receiving(
    shared: &Shared,
) -> Result<Box<SnapshotFile>, RaftStorageError> {
    let path = shared
        .config
        .snapshot_dir
        .join(shared.files.unique("receiving", ".part"));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| raft_err(io_err("creating", &path, e), ErrorVerb::Write))?;
    let previous = shared
        .files
        .receiving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(path);
    if let Some(previous) = previous {
        // An abandoned transfer.
        let _ = tokio::fs::remove_file(previous).await;
    }
    Ok(Box::new(file))
}

/// Replace the whole state with the snapshot in `data`.
pub(super) async fn install(
    db: &Db,
    shared: &std::sync::Arc<Shared>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Box<SnapshotFile>,
) -> Result<(), RaftStorageError> {
    let signature = meta.signature();
    let fail = |e: StoreError| {
        e.into_raft(
            ErrorSubject::Snapshot(Some(signature.clone())),
            ErrorVerb::Write,
        )
    };
    let mut file = *data;
    file.rewind()
        .await
        .map_err(|e| fail(StoreError::Io(format!("rewinding received snapshot: {e}"))))?;
    let file = file.into_std().await;
    let installer = shared.clone();
    let installed = db
        .run(move |db| install_blocking(db, &installer, meta, file))
        .await;
    let received = shared
        .files
        .receiving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(received) = received {
        // The installer kept its own copy.
        let _ = tokio::fs::remove_file(received).await;
    }
    installed.map_err(fail)
}

/// A reader that hashes what it reads (except the end frame) and copies every byte it reads
/// to `copy`, so the installed snapshot's file is byte for byte the one received.
struct Input<R, W> {
    inner: R,
    digest: Sha256,
    copy: W,
}

impl<R: Read, W: Write> Input<R, W> {
    fn raw<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(truncated)?;
        self.copy.write_all(&buf).map_err(copy_failed)?;
        Ok(buf)
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let buf = self.raw::<N>()?;
        self.digest.update(buf);
        Ok(buf)
    }

    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf).map_err(truncated)?;
        self.copy.write_all(&buf).map_err(copy_failed)?;
        self.digest.update(&buf);
        Ok(buf)
    }
}

fn copy_failed(e: io::Error) -> StoreError {
    StoreError::Io(format!("copying the received snapshot: {e}"))
}

fn truncated(e: io::Error) -> StoreError {
    StoreError::corrupt("snapshot", format!("truncated or unreadable: {e}"))
}

fn install_blocking(
    db: &DB,
    shared: &Shared,
    meta: SnapshotMeta<NodeId, BasicNode>,
    file: fs::File,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let part = shared
        .config
        .snapshot_dir
        .join(shared.files.unique("install", ".part"));
    let copy = fs::File::create(&part).map_err(|e| io_err("creating", &part, e))?;
    let installed = (|| {
        let mut input = Input {
            inner: BufReader::new(file),
            digest: Sha256::new(),
            copy: BufWriter::new(copy),
        };
        let staged = read_into_generation(db, shared, &meta, &mut input)?;
        let copy = input
            .copy
            .into_inner()
            .map_err(|e| io_err("writing", &part, e.into_error()))?;
        persist_and_switch(db, shared, meta, copy, &part, staged)
    })();
    match installed {
        Ok(tree_size) => {
            tracing::info!(
                tree_size,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "snapshot installed"
            );
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(e)
        }
    }
}

/// A snapshot written into a generation beside the live one, checked, not yet switched to.
#[derive(Debug, Clone)]
struct Staged {
    generation: u32,
    live: u32,
    tree_size: u64,
    config: ConfigPointers,
    governance: super::governance::Governance,
}

/// Read the snapshot into the generation after the live one and check it.
fn read_into_generation<R: Read, W: Write>(
    db: &DB,
    shared: &Shared,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    input: &mut Input<R, W>,
) -> Result<Staged, StoreError> {
    let magic = input.exact::<8>()?;
    if &magic != MAGIC && &magic != MAGIC_V1 {
        return Err(StoreError::corrupt(
            "snapshot",
            "not a Qianlian snapshot (version 1 or 2)",
        ));
    }
    let len = u32::from_be_bytes(input.exact::<4>()?);
    if len > MAX_RECORD_BYTES {
        return Err(StoreError::corrupt("snapshot", "header too large"));
    }
    let header: Header = decode_value("snapshot header", &input.bytes(len as usize)?)?;
    if header.last_applied != meta.last_log_id {
        return Err(StoreError::corrupt(
            "snapshot",
            format!(
                "file is of log id {:?} but the transfer said {:?}",
                header.last_applied, meta.last_log_id
            ),
        ));
    }

    let live = shared.applied().generation;
    let generation = live
        .checked_add(1)
        .ok_or_else(|| StoreError::Task("out of state machine generations".into()))?;
    // Whatever an earlier, failed install left in the generation we are about to fill.
    let mut batch = WriteBatch::default();
    for name in GENERATION_CFS {
        let above = match generation.checked_add(1) {
            Some(next) => generation_prefix(next).to_vec(),
            None => END_KEY.to_vec(),
        };
        batch.delete_range_cf(
            db::cf(db, name)?,
            generation_prefix(generation).to_vec(),
            above,
        );
    }

    let (config, governance) = stream_into(db, input, &mut batch, generation, &header)?;
    db.write_opt(batch, &db::unsynced())?;

    // Check what was written as a node checks its own state on open; only then switch.
    integrity::check_generation(db, generation, header.tree_size).map_err(|e| match e {
        IntegrityError::Damaged { detail, .. } => StoreError::corrupt("snapshot", detail),
        IntegrityError::Store(e) => e,
        e @ IntegrityError::AuditIndex { .. } => StoreError::corrupt("snapshot", e),
    })?;
    extends_signed(db, shared, generation, header.tree_size)?;
    membership_signed(db, shared, generation, &config, meta)?;
    Ok(Staged {
        generation,
        live,
        tree_size: header.tree_size,
        config,
        governance,
    })
}

/// Check that the tree staged in `generation` extends every tree head this node signed (its
/// stored checkpoint and the head it last signed on demand), with an RFC 6962 consistency
/// proof computed from the staged tree and checked as any verifier would. Whatever its leader
/// sends, a node never replaces the log it vouched for. A node that signed nothing accepts
/// any internally consistent snapshot.
fn extends_signed(
    db: &DB,
    shared: &Shared,
    generation: u32,
    tree_size: u64,
) -> Result<(), StoreError> {
    let stored = shared.applied().checkpoint.clone();
    let on_demand = shared
        .on_demand
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for signed in [stored, on_demand].into_iter().flatten() {
        let old_size = signed.size;
        let refused = |why: String| {
            shared.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            let e = StoreError::corrupt(
                "snapshot",
                format!(
                    "it does not extend the tree this node signed ({old_size} records, root {}): {why}; refused, nothing installed",
                    hex::encode(signed.root)
                ),
            );
            tracing::error!(
                signed_size = old_size,
                snapshot_size = tree_size,
                "snapshot refused: {e}"
            );
            e
        };
        if old_size == 0 {
            continue;
        }
        if old_size > tree_size {
            return Err(refused(format!(
                "the snapshot holds {tree_size} records, fewer than the {old_size} signed"
            )));
        }
        let mut node = |id| read_node(db, generation, id);
        let new_root = merkle::root(tree_size, &mut node)?;
        let proof = merkle::consistency_proof(old_size, tree_size, &mut node)?;
        verify_consistency(old_size, tree_size, &signed.root, &new_root, &proof)
            .map_err(|e| refused(e.to_string()))?;
    }
    Ok(())
}

/// Check that the snapshot's membership is one its own state's last signed membership change
/// allows ([`crate::membership_rule::check_snapshot_membership`]): a leader cannot hand a node
/// a membership the operators never signed inside a snapshot either.
fn membership_signed(
    db: &DB,
    shared: &Shared,
    generation: u32,
    config: &ConfigPointers,
    meta: &SnapshotMeta<NodeId, BasicNode>,
) -> Result<(), StoreError> {
    use crate::membership_rule::{MembershipRule, MembershipView, check_snapshot_membership};
    let keys = super::origin::load(db, generation, config)?;
    let authority = super::origin::membership_authority(db, generation, keys.as_deref(), config)?;
    let rule = match authority.operators_sign {
        false => MembershipRule::Open,
        true => MembershipRule::Signed(authority.last_signed),
    };
    let current = MembershipView::of(shared.applied().last_membership.membership());
    let snapshot = MembershipView::of(meta.last_membership.membership());
    check_snapshot_membership(&rule, &current, &snapshot).map_err(|why| {
        shared.snapshots_refused.fetch_add(1, Ordering::Relaxed);
        let e = StoreError::corrupt("snapshot", format!("{why}; refused, nothing installed"));
        tracing::error!("snapshot refused: {e}");
        e
    })
}

/// Keep the received file as the current snapshot and switch the state to the staged
/// generation. Returns the new tree size.
fn persist_and_switch(
    db: &DB,
    shared: &Shared,
    meta: SnapshotMeta<NodeId, BasicNode>,
    copy: fs::File,
    part: &Path,
    staged: Staged,
) -> Result<u64, StoreError> {
    let Staged {
        generation,
        live,
        tree_size,
        config,
        governance,
    } = staged;
    let dir = &shared.config.snapshot_dir;
    let edge = load_edge(db, generation, tree_size)?;
    let name = shared.files.unique("snapshot", ".snap");
    persist(copy, part, dir, &name)?;

    let root = edge.root();
    let checkpoint = match shared.config.signer.sign(tree_size, root) {
        Ok(Some(signed)) => Some(signed),
        // Without a key the old head stays if the installed log covers it (Raft installs only
        // logs that extend what this node applied).
        Ok(None) => shared
            .applied()
            .checkpoint
            .clone()
            .filter(|cp| cp.size <= tree_size),
        Err(e) => return Err(StoreError::Task(e.to_string())),
    };
    let applied = Applied {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
        tree_size,
        generation,
        edge,
        checkpoint,
        signed_at: Some(std::time::Instant::now()),
        config,
        origin: super::origin::load(db, generation, &config)?,
        governance: std::sync::Arc::new(governance),
    };
    let mut batch = WriteBatch::default();
    put_applied(db, &mut batch, &applied, Changed::EVERYTHING)?;
    let current = Current {
        meta,
        file: name.clone(),
    };
    {
        // Readers finish with the old generation before it goes.
        let _switch = shared
            .generation_lock
            .write()
            .unwrap_or_else(|e| e.into_inner());
        write_current(db, &shared.files, batch, &current)?;
        shared.set(applied);
        let mut old = WriteBatch::default();
        for cf_name in GENERATION_CFS {
            old.delete_range_cf(
                db::cf(db, cf_name)?,
                generation_prefix(live).to_vec(),
                generation_prefix(generation).to_vec(),
            );
        }
        // Unsynced: after a crash, generations other than the live one are deleted on open.
        db.write_opt(old, &db::unsynced())?;
    }
    delete_old_snapshots(dir, &name);
    Ok(tree_size)
}

/// Read frames from `input` into generation `generation` (through `batch`, flushed as it
/// grows) while copying them to `copy`; checks order, counts and the final digest.
fn stream_into<R: Read, W: Write>(
    db: &DB,
    input: &mut Input<R, W>,
    batch: &mut WriteBatch,
    generation: u32,
    header: &Header,
) -> Result<(ConfigPointers, super::governance::Governance), StoreError> {
    let mut frames = Frames::new(db, generation, header.tree_size)?;
    loop {
        // The end tag is outside the digest; every other tag is inside.
        let [tag] = input.raw::<1>()?;
        if tag != TAG_END {
            input.digest.update([tag]);
        }
        if tag < TAG_LICENSE && frames.last_license_frame.is_some() {
            return Err(StoreError::corrupt(
                "snapshot",
                "a record or tree frame after the license state",
            ));
        }
        match tag {
            TAG_RECORD => frames.record(input, batch)?,
            TAG_NODE => frames.node(input, batch)?,
            TAG_LEAF => frames.leaf(input, batch)?,
            TAG_LICENSE | TAG_CHANGE | TAG_HOLDER => frames.license_state(tag, input, batch)?,
            TAG_END => return frames.end(input),
            other => {
                return Err(StoreError::corrupt(
                    "snapshot",
                    format!("unknown frame type {other}"),
                ));
            }
        }
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            let full = std::mem::take(batch);
            db.write_opt(full, &db::unsynced())?;
        }
    }
}

/// The frames of a snapshot read so far, for [`stream_into`]: where each kind goes, what the
/// next frame of each kind must follow, and what the records give besides themselves.
struct Frames<'a> {
    db: &'a DB,
    generation: u32,
    tree_size: u64,
    records_cf: &'a ColumnFamily,
    tree_cf: &'a ColumnFamily,
    leaf_cf: &'a ColumnFamily,
    // The audit index is not in the file: it is rebuilt from the records as they arrive.
    audit: audit_index::AuditStager<'a>,
    config: ConfigPointers,
    governance: super::governance::Governance,
    records: u64,
    last_node: Option<(u8, u64)>,
    last_leaf: Option<Hash>,
    // The license frames: the last type seen and the last key (without generation) within it.
    last_license_frame: Option<(u8, Vec<u8>)>,
}

impl<'a> Frames<'a> {
    fn new(db: &'a DB, generation: u32, tree_size: u64) -> Result<Frames<'a>, StoreError> {
        Ok(Frames {
            db,
            generation,
            tree_size,
            records_cf: db::cf(db, CF_RECORDS)?,
            tree_cf: db::cf(db, CF_TREE)?,
            leaf_cf: db::cf(db, CF_LEAF_INDEX)?,
            audit: audit_index::AuditStager::new(db)?,
            config: ConfigPointers::default(),
            governance: Default::default(),
            records: 0,
            last_node: None,
            last_leaf: None,
            last_license_frame: None,
        })
    }

    /// A record frame: the next record, before any tree frame.
    fn record<R: Read, W: Write>(
        &mut self,
        input: &mut Input<R, W>,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        if self.last_node.is_some() || self.last_leaf.is_some() {
            return Err(StoreError::corrupt("snapshot", "a record after the tree"));
        }
        let records = self.records;
        let len = u32::from_be_bytes(input.exact::<4>()?);
        if len > MAX_RECORD_BYTES {
            return Err(StoreError::corrupt(
                "snapshot",
                format!("record {records} claims {len} bytes"),
            ));
        }
        let bytes = input.bytes(len as usize)?;
        if records >= self.tree_size {
            return Err(StoreError::corrupt(
                "snapshot",
                format!("more than the {} records announced", self.tree_size),
            ));
        }
        let record = Record::decode(&bytes)
            .map_err(|e| StoreError::corrupt(format!("snapshot record {records}"), e))?;
        self.config.observe(records, &record);
        self.governance.observe(records, &record);
        self.audit.collect(records, &record);
        self.audit.stage(batch, self.generation);
        batch.put_cf(self.records_cf, record_key(self.generation, records), bytes);
        self.records += 1;
        Ok(())
    }

    /// A tree node frame: nodes in key order, before the leaf index.
    fn node<R: Read, W: Write>(
        &mut self,
        input: &mut Input<R, W>,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let [level] = input.exact::<1>()?;
        let index = u64::from_be_bytes(input.exact::<8>()?);
        let hash = input.exact::<32>()?;
        if self.last_leaf.is_some() || self.last_node.is_some_and(|last| last >= (level, index)) {
            return Err(StoreError::corrupt("snapshot", "tree nodes out of order"));
        }
        self.last_node = Some((level, index));
        batch.put_cf(self.tree_cf, node_key(self.generation, level, index), hash);
        Ok(())
    }

    /// A leaf index frame: hashes in order, each with a log index below the tree size.
    fn leaf<R: Read, W: Write>(
        &mut self,
        input: &mut Input<R, W>,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let hash = input.exact::<32>()?;
        let index = input.exact::<8>()?;
        if self.last_leaf.is_some_and(|last| last >= hash)
            || u64::from_be_bytes(index) >= self.tree_size
        {
            return Err(StoreError::corrupt(
                "snapshot",
                "leaf index out of order or out of range",
            ));
        }
        self.last_leaf = Some(hash);
        batch.put_cf(
            self.leaf_cf,
            hash_index_key(self.generation, &hash, u64::from_be_bytes(index)),
            [],
        );
        Ok(())
    }

    /// A frame of the license state (`tag`): the license index, license changes, the holder
    /// index, each in key order and in that order.
    fn license_state<R: Read, W: Write>(
        &mut self,
        tag: u8,
        input: &mut Input<R, W>,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let hash = input.exact::<32>()?;
        let index = input.exact::<8>()?;
        let mut key = hash.to_vec();
        key.extend_from_slice(&index);
        if self
            .last_license_frame
            .as_ref()
            .is_some_and(|(last_tag, last_key)| (*last_tag, last_key) >= (tag, &key))
        {
            return Err(StoreError::corrupt(
                "snapshot",
                "license state frames out of order",
            ));
        }
        // The integrity check that follows compares every entry with the records; here only
        // the length, so a damaged one cannot make the installer allocate gigabytes.
        let (cf_name, value) = match tag {
            TAG_LICENSE => (CF_LICENSES, index.to_vec()),
            TAG_CHANGE => {
                let len = u32::from_be_bytes(input.exact::<4>()?);
                if len > MAX_RECORD_BYTES {
                    return Err(StoreError::corrupt(
                        "snapshot",
                        format!("a license change claims {len} bytes"),
                    ));
                }
                (CF_LICENSE_CHANGES, input.bytes(len as usize)?)
            }
            _ => (CF_HOLDERS, Vec::new()),
        };
        let stored_key = if tag == TAG_LICENSE {
            license_key(self.generation, &hash).to_vec()
        } else {
            hash_index_key(self.generation, &hash, u64::from_be_bytes(index)).to_vec()
        };
        batch.put_cf(db::cf(self.db, cf_name)?, stored_key, value);
        self.last_license_frame = Some((tag, key));
        Ok(())
    }

    /// The end frame: the digest of everything before it, and nothing after it. Returns the
    /// configuration pointers and the governance the records give.
    fn end<R: Read, W: Write>(
        self,
        input: &mut Input<R, W>,
    ) -> Result<(ConfigPointers, super::governance::Governance), StoreError> {
        let computed: Hash = std::mem::take(&mut input.digest).finalize().into();
        let stated = input.raw::<32>()?;
        let mut rest = [0u8; 1];
        if input.inner.read(&mut rest).map_err(truncated)? != 0 {
            return Err(StoreError::corrupt("snapshot", "bytes after the end"));
        }
        if computed != stated {
            return Err(StoreError::corrupt(
                "snapshot",
                "SHA-256 digest does not match the content",
            ));
        }
        if self.records != self.tree_size {
            return Err(StoreError::corrupt(
                "snapshot",
                format!("{} records, {} announced", self.records, self.tree_size),
            ));
        }
        Ok((self.config, self.governance))
    }
}
