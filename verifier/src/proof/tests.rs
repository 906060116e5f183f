use proptest::prelude::*;

use super::*;
use crate::hash::leaf_hash;
use crate::test_vectors::{self as tv, h};
use crate::tree::MemoryTree;

/// Every way `corrupt` can damage a proof that must then fail: each hash bit-flipped, one
/// hash dropped, one inserted, one appended, one prepended.
fn damaged(proof: &[Hash]) -> Vec<(String, Vec<Hash>)> {
    let mut out = Vec::new();
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i][0] ^= 8;
        out.push((format!("flipped bit in proof[{i}]"), p));
        let mut p = proof.to_vec();
        p.remove(i);
        out.push((format!("removed proof[{i}]"), p));
    }
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let mut p = proof.to_vec();
    p.push(some);
    out.push(("trailing hash".into(), p));
    let mut p = vec![some];
    p.extend_from_slice(proof);
    out.push(("preceding hash".into(), p));
    if proof.len() > 1 {
        let mut p = proof.to_vec();
        p.insert(1, some);
        out.push(("inserted hash".into(), p));
    }
    out
}

#[test]
fn published_inclusion_proofs_verify_and_their_corruptions_fail() {
    let leaves = tv::leaf_hashes();
    for (index, size, hashes) in tv::INCLUSION {
        let proof = tv::proof(hashes);
        let leaf = leaves[index as usize];
        let root = tv::root(size);
        assert_eq!(inclusion_proof_len(index, size), proof.len());
        assert_eq!(root_from_inclusion(&leaf, index, size, &proof), Ok(root));
        verify_inclusion(&leaf, index, size, &proof, &root).expect("published proof verifies");

        for (what, bad) in damaged(&proof) {
            assert!(
                verify_inclusion(&leaf, index, size, &bad, &root).is_err(),
                "{what}"
            );
        }
        let wrong_indices = [index.wrapping_sub(1), index + 1, index ^ 2];
        for wrong in wrong_indices {
            assert!(
                verify_inclusion(&leaf, wrong, size, &proof, &root).is_err(),
                "index {wrong}"
            );
        }
        for wrong in [size * 2, size / 2] {
            assert!(
                verify_inclusion(&leaf, index, wrong, &proof, &root).is_err(),
                "size {wrong}"
            );
        }
        let wrong_leaf = leaf_hash(b"WrongLeaf");
        assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &root).is_err());
        for wrong_root in [tv::root(0), h(tv::ROOTS[size as usize - 1])] {
            assert!(matches!(
                verify_inclusion(&leaf, index, size, &proof, &wrong_root),
                Err(ProofError::RootMismatch { .. })
            ));
        }
    }
}

#[test]
fn published_consistency_proofs_verify_and_their_corruptions_fail() {
    for (old, new, hashes) in tv::CONSISTENCY {
        let proof = tv::proof(hashes);
        let (old_root, new_root) = (tv::root(old), tv::root(new));
        assert_eq!(consistency_proof_len(old, new), proof.len());
        verify_consistency(old, new, &old_root, &new_root, &proof)
            .expect("published proof verifies");
        if proof.is_empty() {
            continue;
        }
        for (what, bad) in damaged(&proof) {
            assert!(
                verify_consistency(old, new, &old_root, &new_root, &bad).is_err(),
                "{what}"
            );
        }
        for (o, n) in [
            (old - 1, new),
            (old + 1, new),
            (old ^ 2, new),
            (old, new * 2),
            (old, new / 2),
        ] {
            assert!(
                verify_consistency(o, n, &old_root, &new_root, &proof).is_err(),
                "{o} {n}"
            );
        }
        assert!(verify_consistency(old, new, &new_root, &old_root, &proof).is_err());
        assert!(verify_consistency(old, new, &old_root, &new_root, &[]).is_err());
    }
}

#[test]
fn inclusion_outside_the_tree_is_refused_by_name() {
    let leaf = leaf_hash(b"x");
    for (index, size) in [(0, 0), (1, 0), (1, 1), (2, 1), (u64::MAX, u64::MAX)] {
        assert_eq!(
            verify_inclusion(&leaf, index, size, &[], &leaf),
            Err(ProofError::IndexOutOfRange {
                index,
                tree_size: size
            })
        );
    }
    // A one-leaf tree's root is its leaf hash and the proof is empty.
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(ProofError::WrongProofLength {
            expected: 0,
            got: 1
        })
    );
}

#[test]
fn inclusion_proof_length_is_checked_before_hashing() {
    let leaves = tv::leaf_hashes();
    let err = verify_inclusion(&leaves[5], 5, 8, &[leaves[4]], &tv::root(8));
    assert_eq!(
        err,
        Err(ProofError::WrongProofLength {
            expected: 3,
            got: 1
        })
    );
    assert_eq!(
        err.expect_err("too short").to_string(),
        "proof has 1 hashes, but these tree sizes need exactly 3"
    );
}

#[test]
fn consistency_edge_cases() {
    let (a, b) = (tv::root(3), tv::root(4));
    let empty = crate::hash::empty_root();
    // Backwards in time.
    assert_eq!(
        verify_consistency(4, 3, &b, &a, &[]),
        Err(ProofError::SizesOutOfOrder {
            old_size: 4,
            new_size: 3
        })
    );
    // Equal sizes: equal roots, no proof.
    assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &a, &b, &[]),
        Err(ProofError::SameSizeDifferentRoots {
            size: 3,
            old_root: a,
            new_root: b
        })
    );
    assert_eq!(
        verify_consistency(3, 3, &a, &a, &[a]),
        Err(ProofError::WrongProofLength {
            expected: 0,
            got: 1
        })
    );
    // The empty tree is a prefix of every tree, but its root must be the empty root.
    assert_eq!(verify_consistency(0, 0, &empty, &empty, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 4, &empty, &b, &[]), Ok(()));
    assert!(matches!(
        verify_consistency(0, 4, &a, &b, &[]),
        Err(ProofError::OldRootMismatch { .. })
    ));
    assert_eq!(
        verify_consistency(0, 4, &empty, &b, &[empty]),
        Err(ProofError::WrongProofLength {
            expected: 0,
            got: 1
        })
    );
}

#[test]
fn error_messages_name_the_fault() {
    let e = ProofError::IndexOutOfRange {
        index: 9,
        tree_size: 9,
    };
    assert_eq!(
        e.to_string(),
        "leaf index 9 is outside a tree of size 9: ask for the proof against a checkpoint with more than 9 entries"
    );
    let e = ProofError::SameSizeDifferentRoots {
        size: 2,
        old_root: [0; 32],
        new_root: [1; 32],
    };
    assert!(e.to_string().contains("forked"), "{e}");
}

/// Leaf hashes for the property tests, computed once.
fn leaves(n: usize) -> &'static [Hash] {
    static LEAVES: std::sync::OnceLock<Vec<Hash>> = std::sync::OnceLock::new();
    &LEAVES.get_or_init(|| {
        (0..MAX_LEAVES as u64)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect()
    })[..n]
}

const MAX_LEAVES: usize = 2048;

/// A tree size in `1..=MAX_LEAVES` with a point below it and a position to damage.
fn size_and_point() -> impl Strategy<Value = (u64, u64, usize, usize)> {
    (1..=MAX_LEAVES as u64).prop_flat_map(|n| (Just(n), 0..n, any::<usize>(), 0..32usize))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The reference tree's inclusion proofs verify; a flipped byte, a wrong leaf, a wrong index
    /// or another tree head (size and its root) makes them fail.
    #[test]
    fn reference_inclusion_proofs_verify_and_damage_is_caught(
        (n, index, pick, byte) in size_and_point(),
        other in 0..MAX_LEAVES as u64,
    ) {
        let tree = MemoryTree::from_leaf_hashes(leaves(n as usize).to_vec());
        let root = tree.root();
        let leaf = tree.leaf_hashes()[index as usize];
        let proof = tree.inclusion_proof(index, n).expect("index is in the tree");
        prop_assert_eq!(proof.len(), inclusion_proof_len(index, n));
        prop_assert_eq!(verify_inclusion(&leaf, index, n, &proof, &root), Ok(()));

        if !proof.is_empty() {
            let mut bad = proof.clone();
            bad[pick % proof.len()][byte] ^= 0x01;
            prop_assert!(verify_inclusion(&leaf, index, n, &bad, &root).is_err());
        }
        let mut bad_root = root;
        bad_root[byte] ^= 0x80;
        prop_assert!(verify_inclusion(&leaf, index, n, &proof, &bad_root).is_err());
        let mut bad_leaf = leaf;
        bad_leaf[byte] ^= 0x80;
        prop_assert!(verify_inclusion(&bad_leaf, index, n, &proof, &root).is_err());

        let wrong_index = other % n;
        if wrong_index != index {
            prop_assert!(verify_inclusion(&leaf, wrong_index, n, &proof, &root).is_err());
        }
        // A checkpoint binds a size to its root, so a wrong size comes with that size's root.
        // (The same root under another size can verify when both trees share the leaf's path
        // shape, e.g. leaf 0 of sizes 3 and 4; no honest log signs such a pair.)
        let wrong_size = other + 1;
        if wrong_size != n {
            let wrong_tree = MemoryTree::from_leaf_hashes(leaves(wrong_size as usize).to_vec());
            let wrong_root = wrong_tree.root();
            prop_assert!(verify_inclusion(&leaf, index, wrong_size, &proof, &wrong_root).is_err());
        }
    }

    /// The reference tree's consistency proofs verify; a flipped byte in the proof or either
    /// root, or another old or new tree head, makes them fail.
    #[test]
    fn reference_consistency_proofs_verify_and_damage_is_caught(
        (n, m, pick, byte) in size_and_point(),
        other in 1..MAX_LEAVES as u64,
    ) {
        let tree = MemoryTree::from_leaf_hashes(leaves(n as usize).to_vec());
        let m = m + 1; // 1..=n: non-empty old trees, including m == n.
        let (old_root, new_root) = (tree.root_at(m).expect("m <= n"), tree.root());
        let proof = tree.consistency_proof(m, n).expect("m <= n");
        prop_assert_eq!(proof.len(), consistency_proof_len(m, n));
        prop_assert_eq!(verify_consistency(m, n, &old_root, &new_root, &proof), Ok(()));

        if !proof.is_empty() {
            let mut bad = proof.clone();
            bad[pick % proof.len()][byte] ^= 0x01;
            prop_assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
        }
        let mut bad_old = old_root;
        bad_old[byte] ^= 0x80;
        prop_assert!(verify_consistency(m, n, &bad_old, &new_root, &proof).is_err());
        let mut bad_new = new_root;
        bad_new[byte] ^= 0x80;
        prop_assert!(verify_consistency(m, n, &old_root, &bad_new, &proof).is_err());

        let other_tree = MemoryTree::from_leaf_hashes(leaves(other as usize).to_vec());
        if other != m && other <= n {
            let wrong_old = other_tree.root();
            prop_assert!(verify_consistency(other, n, &wrong_old, &new_root, &proof).is_err());
        }
        if other != n && other >= m {
            let wrong_new = other_tree.root();
            prop_assert!(verify_consistency(m, other, &old_root, &wrong_new, &proof).is_err());
        }
    }
}
