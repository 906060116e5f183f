use super::*;
use crate::test_vectors::{self as tv, h};

fn vector_tree() -> MemoryTree {
    MemoryTree::from_leaf_hashes(tv::leaf_hashes())
}

#[test]
fn roots_match_the_published_vectors_at_every_size() {
    let tree = vector_tree();
    for size in 0..=8 {
        assert_eq!(tree.root_at(size), Ok(tv::root(size)), "size {size}");
    }
    assert_eq!(tree.root(), tv::root(8));
    assert_eq!(MemoryTree::new().root(), crate::hash::empty_root());
}

#[test]
fn proofs_match_the_published_vectors() {
    let tree = vector_tree();
    for (index, size, hashes) in tv::INCLUSION {
        assert_eq!(
            tree.inclusion_proof(index, size),
            Ok(tv::proof(hashes)),
            "{index} {size}"
        );
    }
    for (old, new, hashes) in tv::CONSISTENCY {
        assert_eq!(
            tree.consistency_proof(old, new),
            Ok(tv::proof(hashes)),
            "{old} {new}"
        );
    }
}

#[test]
fn questions_beyond_the_tree_are_refused() {
    let tree = vector_tree();
    assert_eq!(
        tree.root_at(9),
        Err(TreeError::SizeBeyondTree { size: 9, leaves: 8 })
    );
    assert_eq!(
        tree.inclusion_proof(0, u64::MAX),
        Err(TreeError::SizeBeyondTree {
            size: u64::MAX,
            leaves: 8
        })
    );
    assert_eq!(
        tree.inclusion_proof(3, 3),
        Err(TreeError::IndexOutOfRange { index: 3, size: 3 })
    );
    assert_eq!(
        tree.consistency_proof(5, 4),
        Err(TreeError::SizesOutOfOrder {
            old_size: 5,
            new_size: 4
        })
    );
    assert_eq!(tree.consistency_proof(0, 8), Ok(vec![]));
    assert_eq!(tree.consistency_proof(8, 8), Ok(vec![]));
}

#[test]
fn push_returns_indices_in_log_order() {
    let mut tree = MemoryTree::new();
    for (i, input) in tv::LEAF_INPUTS.iter().enumerate() {
        let entry = hex::decode(input).expect("hex");
        assert_eq!(tree.push_entry(&entry), i as u64);
    }
    assert_eq!(tree, vector_tree());
}

#[test]
fn frontier_nodes_match_the_published_compact_ranges() {
    // `CompactTrees()` in transparency-dev/merkle testonly/constants.go: the perfect-subtree
    // roots of each size, largest first.
    let leaves = tv::leaf_hashes();
    let (n1_0, n1_2) = (
        tv::ROOTS[2],
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    );
    let n2_0 = tv::ROOTS[4];
    let expected: [Vec<Hash>; 9] = [
        vec![],
        vec![leaves[0]],
        vec![h(n1_0)],
        vec![h(n1_0), leaves[2]],
        vec![h(n2_0)],
        vec![h(n2_0), leaves[4]],
        vec![h(n2_0), h(n1_2)],
        vec![h(n2_0), h(n1_2), leaves[6]],
        vec![tv::root(8)],
    ];
    let mut frontier = Frontier::new();
    for (size, nodes) in expected.iter().enumerate() {
        assert_eq!(frontier.nodes(), nodes.as_slice(), "size {size}");
        assert_eq!(frontier.root(), tv::root(size as u64), "size {size}");
        if size < 8 {
            assert_eq!(frontier.append(leaves[size]), size as u64);
        }
    }
}

/// Appends `0..last` as entries to a frontier and a reference tree and compares their roots at
/// every size in `first..=last`. The reference costs O(size) per root, so the range is split in
/// two tests of equal work that the harness runs in parallel.
fn frontier_matches_reference(first: u64, last: u64) {
    let mut frontier = Frontier::new();
    let mut tree = MemoryTree::new();
    assert_eq!(frontier.root(), tree.root());
    for i in 0..last {
        let entry = i.to_le_bytes();
        assert_eq!(frontier.append_entry(&entry), tree.push_entry(&entry));
        let size = i + 1;
        assert_eq!(frontier.size(), size);
        if size >= first {
            assert_eq!(frontier.root(), tree.root(), "size {size}");
        }
    }
}

#[test]
fn frontier_root_equals_reference_root_at_every_size_to_1448() {
    frontier_matches_reference(1, 1448);
}

#[test]
fn frontier_root_equals_reference_root_at_every_size_from_1449_to_2048() {
    frontier_matches_reference(1449, 2048);
}

#[test]
fn frontier_survives_a_round_trip_through_its_parts() {
    let mut frontier = Frontier::new();
    for leaf in tv::leaf_hashes().into_iter().take(7) {
        frontier.append(leaf);
    }
    let restored = Frontier::from_parts(frontier.size(), frontier.nodes().to_vec());
    assert_eq!(restored.as_ref(), Ok(&frontier));
    let mut restored = restored.expect("valid parts");
    restored.append(tv::leaf_hashes()[7]);
    assert_eq!(restored.root(), tv::root(8));

    assert_eq!(
        Frontier::from_parts(7, vec![[0; 32]; 2]),
        Err(TreeError::FrontierShape {
            size: 7,
            expected: 3,
            got: 2
        })
    );
    assert_eq!(Frontier::from_parts(0, vec![]), Ok(Frontier::new()));
}

#[test]
fn every_path_at_once_is_every_path_one_by_one() {
    for n in 0..=70u64 {
        let tree =
            MemoryTree::from_leaf_hashes((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect());
        let (root, paths) = root_and_paths(tree.leaf_hashes());
        assert_eq!(root, tree.root(), "root of {n}");
        assert_eq!(paths.len() as u64, n);
        for (m, p) in paths.iter().enumerate() {
            assert_eq!(
                p,
                &tree.inclusion_proof(m as u64, n).expect("inside"),
                "path {m} of {n}"
            );
        }
    }
}
