//! What checking a Merkle proof costs a verifier, in logs of 1M and 10M leaves.
//!
//! The proofs are real: setup builds one `MemoryTree` of 10,000,000 leaf hashes (320 MB, about
//! five seconds, not measured) and takes the 1M-leaf proofs from its first 1,000,000 leaves.
//! Making proofs at these sizes from storage is raft-store's job and is not measured here.
//!
//! - `inclusion/<size>`: a leaf 3/4 of the way in, off the tree's right border, so the proof
//!   has the full ⌈log2 size⌉ hashes (20 at 1M, 24 at 10M).
//! - `consistency/<size>`: from the tree 4,321 leaves smaller (a witness's previous checkpoint)
//!   to the tree of `size` leaves.
//!
//! Each benchmark reports elements per second: one element is one proof checked.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qianlian_verifier::{Hash, MemoryTree, leaf_hash, verify_consistency, verify_inclusion};

const SIZES: [(u64, &str); 2] = [(1_000_000, "1M"), (10_000_000, "10M")];
/// How far behind the new tree head the old one is, in leaves.
const CONSISTENCY_GAP: u64 = 4_321;

struct Inclusion {
    leaf: Hash,
    index: u64,
    size: u64,
    proof: Vec<Hash>,
    root: Hash,
}

struct Consistency {
    old_size: u64,
    new_size: u64,
    old_root: Hash,
    new_root: Hash,
    proof: Vec<Hash>,
}

fn setup() -> Vec<(&'static str, Inclusion, Consistency)> {
    let largest = SIZES.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let tree =
        MemoryTree::from_leaf_hashes((0..largest).map(|i| leaf_hash(&i.to_be_bytes())).collect());
    SIZES
        .iter()
        .map(|&(size, label)| {
            let index = size / 4 * 3 + 17;
            let root = tree.root_at(size).expect("size within tree");
            let inclusion = Inclusion {
                leaf: tree.leaf_hashes()[index as usize],
                index,
                size,
                proof: tree.inclusion_proof(index, size).expect("index in tree"),
                root,
            };
            let old_size = size - CONSISTENCY_GAP;
            let consistency = Consistency {
                old_size,
                new_size: size,
                old_root: tree.root_at(old_size).expect("size within tree"),
                new_root: root,
                proof: tree
                    .consistency_proof(old_size, size)
                    .expect("sizes in order"),
            };
            eprintln!(
                "merkle setup: {label} leaves: inclusion proof of {} hashes, consistency proof of {} hashes",
                inclusion.proof.len(),
                consistency.proof.len()
            );
            (label, inclusion, consistency)
        })
        .collect()
}

fn proofs(c: &mut Criterion) {
    let cases = setup();
    let mut group = c.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    for (label, inc, con) in &cases {
        verify_inclusion(&inc.leaf, inc.index, inc.size, &inc.proof, &inc.root)
            .expect("valid inclusion proof");
        verify_consistency(
            con.old_size,
            con.new_size,
            &con.old_root,
            &con.new_root,
            &con.proof,
        )
        .expect("valid consistency proof");

        group.bench_function(BenchmarkId::new("inclusion", label), |b| {
            b.iter(|| {
                verify_inclusion(
                    black_box(&inc.leaf),
                    inc.index,
                    inc.size,
                    black_box(&inc.proof),
                    &inc.root,
                )
                .expect("valid inclusion proof")
            })
        });
        group.bench_function(BenchmarkId::new("consistency", label), |b| {
            b.iter(|| {
                verify_consistency(
                    con.old_size,
                    con.new_size,
                    &con.old_root,
                    &con.new_root,
                    black_box(&con.proof),
                )
                .expect("valid consistency proof")
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = proofs
}
criterion_main!(benches);
