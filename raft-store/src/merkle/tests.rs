use std::collections::HashMap;
use std::convert::Infallible;

use proptest::prelude::*;
use qianlian_verifier::{MemoryTree, leaf_hash, verify_consistency, verify_inclusion};

use super::*;

/// The stored tree of `n` leaves (`leaf i` = hash of `seed ++ i`) as the store would hold it,
/// and the reference tree over the same leaves.
fn trees(n: u64, seed: u64) -> (HashMap<Subtree, Hash>, Edge, MemoryTree) {
    let mut stored = HashMap::new();
    let mut edge = Edge::default();
    let mut reference = MemoryTree::new();
    for i in 0..n {
        let leaf = leaf_hash(format!("{seed}:{i}").as_bytes());
        reference.push(leaf);
        let appended = edge.append(leaf, |id, hash| {
            assert!(stored.insert(id, hash).is_none(), "{id:?} written twice");
        });
        assert_eq!(appended, Some(()));
    }
    (stored, edge, reference)
}

/// A lookup that counts its calls and fails the test on a node that is not stored.
fn lookup<'a>(
    stored: &'a HashMap<Subtree, Hash>,
    calls: &'a mut usize,
) -> impl FnMut(Subtree) -> Result<Hash, Infallible> + 'a {
    move |id| {
        *calls += 1;
        match stored.get(&id) {
            Some(h) => Ok(*h),
            None => panic!("{id:?} is not a stored node"),
        }
    }
}

fn ok<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Bits needed for `n`: a bound on the depth of a tree of `n` leaves, plus one.
fn log2_ceil(n: u64) -> usize {
    (64 - n.leading_zeros()) as usize
}

fn flip(hashes: &[Hash], which: usize, byte: usize) -> Vec<Hash> {
    let mut out = hashes.to_vec();
    out[which][byte] ^= 0x01;
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stored_tree_answers_like_the_reference(
        n in 1u64..3000,
        seed in any::<u64>(),
        picks in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<usize>(), any::<usize>()), 4),
    ) {
        let (stored, edge, reference) = trees(n, seed);
        prop_assert_eq!(edge.root(), reference.root());
        prop_assert_eq!(stored.len() as u64, 2 * n - u64::from(n.count_ones()));
        for (a, b, which, byte) in picks {
            let size = 1 + a % n;
            let index = b % size;
            let old = b % (size + 1);
            let budget = 4 * log2_ceil(size) + 4;

            let mut calls = 0;
            let root = ok(root(size, &mut lookup(&stored, &mut calls)));
            prop_assert_eq!(Some(root), reference.root_at(size).ok());
            prop_assert!(calls <= log2_ceil(size), "{} lookups for a root of {}", calls, size);

            let mut calls = 0;
            let path = ok(inclusion_proof(index, size, &mut lookup(&stored, &mut calls)));
            prop_assert_eq!(Some(path.clone()), reference.inclusion_proof(index, size).ok());
            prop_assert!(calls <= budget, "{} lookups for PATH({}, {})", calls, index, size);
            let leaf = reference.leaf_hashes()[index as usize];
            prop_assert!(verify_inclusion(&leaf, index, size, &path, &root).is_ok());
            if !path.is_empty() {
                let bad = flip(&path, which % path.len(), byte % 32);
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            prop_assert!(verify_inclusion(&flip(&[leaf], 0, byte % 32)[0], index, size, &path, &root).is_err());

            let mut calls = 0;
            let proof = ok(consistency_proof(old, size, &mut lookup(&stored, &mut calls)));
            prop_assert_eq!(Some(proof.clone()), reference.consistency_proof(old, size).ok());
            prop_assert!(calls <= budget, "{} lookups for PROOF({}, {})", calls, old, size);
            let old_root = ok(root_of(old, &stored));
            prop_assert!(verify_consistency(old, size, &old_root, &root, &proof).is_ok());
            if !proof.is_empty() {
                let bad = flip(&proof, which % proof.len(), byte % 32);
                prop_assert!(verify_consistency(old, size, &old_root, &root, &bad).is_err());
            }
            if old > 0 {
                let bad_old = flip(&[old_root], 0, byte % 32)[0];
                prop_assert!(verify_consistency(old, size, &bad_old, &root, &proof).is_err());
            }
        }
    }
}

fn root_of(size: u64, stored: &HashMap<Subtree, Hash>) -> Result<Hash, Infallible> {
    let mut calls = 0;
    root(size, &mut lookup(stored, &mut calls))
}

#[test]
fn every_stored_node_is_the_root_of_its_leaves() {
    let (stored, _, reference) = trees(300, 7);
    for (id, hash) in &stored {
        let leaves = id.leaves();
        let sub = MemoryTree::from_leaf_hashes(
            reference.leaf_hashes()[leaves.start as usize..leaves.end as usize].to_vec(),
        );
        assert_eq!(&sub.root(), hash, "{id:?}");
    }
}

#[test]
fn the_empty_tree_and_edges() {
    let stored = HashMap::new();
    assert_eq!(
        root_of(0, &stored).ok(),
        Some(qianlian_verifier::empty_root())
    );
    assert_eq!(Edge::default().root(), qianlian_verifier::empty_root());
    assert!(pieces(5, 5).is_empty());
    assert_eq!(
        pieces(0, 13),
        [Subtree::new(3, 0), Subtree::new(2, 2), Subtree::new(0, 12)]
    );
    assert_eq!(Subtree::new(2, 3).leaves(), 12..16);
    assert!(Edge::from_parts(3, vec![[0; 32]]).is_none());
    let (_, edge, _) = trees(6, 1);
    let rebuilt = Edge::from_parts(6, edge.nodes.clone());
    assert_eq!(rebuilt.as_ref(), Some(&edge));
}
