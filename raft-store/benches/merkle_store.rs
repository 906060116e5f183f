//! The notarization log's Merkle tree as the state machine stores it, at 1M and 10M leaves:
//! `merkle::Edge` appends leaf hashes and emits every node it completes, each node is a 32-byte
//! value under `db::node_key` in a RocksDB column family, and proofs fold stored nodes through
//! `merkle::inclusion_proof` / `merkle::consistency_proof` with point reads, as
//! `StateReader` does. Only the tree is written here (no record bytes, leaf index or license
//! state), so the figures are the tree's share of an apply and of a proof request.
//!
//! - `proof/inclusion/<size>`: one inclusion proof of a pseudo-random leaf in the tree of
//!   `size` leaves (⌈log2 size⌉ hashes), from a warm block cache.
//! - `proof/consistency/<size>`: from the tree 4,321 leaves smaller to the tree of `size`.
//! - `append/<size>`: 1,024 leaves appended in one unsynced write batch (the apply of one full
//!   group-commit entry; the Raft log write carries the fsync), from `size` leaves on. The tree
//!   grows while it is measured (by 1,024 leaves per iteration).
//!
//! Setup builds both trees in a temporary RocksDB database in 1,024-leaf batches (about a
//! minute for 10M leaves on two cores; the time is printed) and is not measured.
//! `QIANLIAN_BENCH_MAX_LEAVES=1000000` skips the 10M tree.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qianlian_raft_store::db::node_key;
use qianlian_raft_store::merkle::{self, Edge, Subtree};
use qianlian_verifier::{Hash, leaf_hash};
use rocksdb::{DB, Options, WriteBatch, WriteOptions};

const CF_TREE: &str = "tree";
const BATCH: u64 = 1024;
const CONSISTENCY_GAP: u64 = 4_321;

struct Tree {
    _dir: tempfile::TempDir,
    db: DB,
    edge: Edge,
    size: u64,
    label: &'static str,
}

fn open() -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = DB::open_cf(&opts, dir.path(), [CF_TREE]).expect("open rocksdb");
    (dir, db)
}

fn leaf(i: u64) -> Hash {
    leaf_hash(&i.to_be_bytes())
}

/// Append leaves `edge.size() .. edge.size() + count` in one write batch, as an apply does.
fn append(db: &DB, edge: &mut Edge, count: u64) {
    let cf = db.cf_handle(CF_TREE).expect("tree column family");
    let mut batch = WriteBatch::default();
    for _ in 0..count {
        let i = edge.size();
        edge.append(leaf(i), |id, node| {
            batch.put_cf(cf, node_key(0, id.level, id.index), node)
        })
        .expect("tree not full");
    }
    let mut w = WriteOptions::default();
    w.set_sync(false);
    db.write_opt(batch, &w).expect("write batch");
}

fn node(db: &DB) -> impl FnMut(Subtree) -> Result<Hash, String> + '_ {
    let cf = db.cf_handle(CF_TREE).expect("tree column family");
    move |id| {
        let v = db
            .get_pinned_cf(cf, node_key(0, id.level, id.index))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("missing node {id:?}"))?;
        <[u8; 32]>::try_from(&v[..]).map_err(|_| "bad node length".to_owned())
    }
}

fn build(size: u64, label: &'static str) -> Tree {
    let started = Instant::now();
    let (dir, db) = open();
    let mut edge = Edge::default();
    while edge.size() < size {
        let count = BATCH.min(size - edge.size());
        append(&db, &mut edge, count);
    }
    db.flush_cf(db.cf_handle(CF_TREE).expect("tree column family"))
        .expect("flush");
    eprintln!(
        "merkle_store setup: {label} leaves stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Tree {
        _dir: dir,
        db,
        edge,
        size,
        label,
    }
}

fn trees() -> Vec<Tree> {
    let max: u64 = std::env::var("QIANLIAN_BENCH_MAX_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    [(1_000_000, "1M"), (10_000_000, "10M")]
        .into_iter()
        .filter(|(n, _)| *n <= max)
        .map(|(n, label)| build(n, label))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut trees = trees();
    let mut group = c.benchmark_group("merkle_store");
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for tree in &trees {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        group.bench_function(BenchmarkId::new("proof/inclusion", tree.label), |b| {
            let mut lookup = node(&tree.db);
            b.iter(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let index = x % tree.size;
                black_box(merkle::inclusion_proof(index, tree.size, &mut lookup).expect("proof"))
            })
        });
        group.bench_function(BenchmarkId::new("proof/consistency", tree.label), |b| {
            let mut lookup = node(&tree.db);
            b.iter(|| {
                black_box(
                    merkle::consistency_proof(tree.size - CONSISTENCY_GAP, tree.size, &mut lookup)
                        .expect("proof"),
                )
            })
        });
    }
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    for tree in &mut trees {
        let label = tree.label;
        group.bench_function(BenchmarkId::new("append", label), |b| {
            b.iter(|| append(&tree.db, &mut tree.edge, BATCH))
        });
        // The tree is still a tree: its root matches one folded from the stored nodes.
        let root = merkle::root(tree.edge.size(), &mut node(&tree.db)).expect("root");
        assert_eq!(root, tree.edge.root(), "stored tree and edge agree");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
