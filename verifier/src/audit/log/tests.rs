//! Streaming against checkpoints, and locating the first altered leaf: exactly, and with
//! O(log n) proofs, for random trees and random alterations.

use std::convert::Infallible;

use proptest::prelude::*;

use super::*;
use crate::record::tests::{sample, sample_exchange};
use crate::tree::MemoryTree;

/// Records 0..n, distinct by request id.
fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let Record::Exchange(mut r) = sample_exchange() else {
                panic!("not an exchange record")
            };
            r.request_id = format!("request-{i}");
            Record::Exchange(r).encode()
        })
        .collect()
}

fn tree_of(entries: &[Vec<u8>]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    entries.iter().for_each(|e| {
        tree.push_entry(e);
    });
    tree
}

fn trusted(tree: &MemoryTree, size: u64) -> TrustedRoot {
    TrustedRoot {
        tree_size: size,
        root: tree.root_at(size).expect("size within the tree"),
    }
}

/// Locates against the committed `tree`, counting fetches.
fn locate(tree: &MemoryTree, leaves: &[Hash]) -> (Option<u64>, usize) {
    let size = tree.size();
    let mut fetches = 0;
    let found = locate_first_bad(leaves, size, tree.root(), |i| {
        fetches += 1;
        let proof = tree
            .inclusion_proof(i, size)
            .expect("index within the tree");
        Ok::<_, Infallible>((tree.leaf_hashes()[i as usize], proof))
    })
    .expect("the committed tree answers honestly");
    (found, fetches)
}

#[test]
fn an_intact_log_matches_every_checkpoint() {
    let entries = records(20);
    let tree = tree_of(&entries);
    let checkpoints = [5, 20, 13, 5].map(|s| trusted(&tree, s)).to_vec();
    let mut verifier = LogVerifier::new(checkpoints).expect("consistent checkpoints");
    let mut matched = Vec::new();
    for e in &entries {
        if let Some(m) = verifier.push(e).expect("roots match") {
            matched.push(m.tree_size);
        }
    }
    assert_eq!(matched, [5, 13, 20]);
    let summary = verifier.finish();
    assert!(summary.is_intact());
    assert_eq!((summary.size, summary.root), (20, tree.root()));
    assert_eq!(summary.leaves, tree.leaf_hashes());
}

#[test]
fn an_altered_record_breaks_the_next_root_and_is_located() {
    let entries = records(40);
    let tree = tree_of(&entries);
    let mut verifier =
        LogVerifier::new(vec![trusted(&tree, 10), trusted(&tree, 40)]).expect("checkpoints");
    let mut altered = entries.clone();
    altered[17] = sample().encode();
    let mut mismatches = Vec::new();
    for e in &altered {
        if let Err(e) = verifier.push(e) {
            mismatches.push(e);
        }
    }
    assert!(matches!(
        mismatches[..],
        [LogError::RootMismatch { tree_size: 40, .. }]
    ));
    let summary = verifier.finish();
    assert_eq!(summary.matched.len(), 1);
    assert!(!summary.is_intact());
    assert_eq!(locate(&tree, &summary.leaves).0, Some(17));
}

#[test]
fn undecodable_records_are_noted_and_missing_ones_leave_checkpoints_unreached() {
    let mut entries = records(8);
    entries[3] = vec![1, 0xff, 0xff];
    let tree = tree_of(&entries);
    let mut verifier =
        LogVerifier::new(vec![trusted(&tree, 8), (12, [0; 32]).into()]).expect("checkpoints");
    for e in &entries {
        verifier
            .push(e)
            .expect("the root commits to the undecodable bytes too");
    }
    let summary = verifier.finish();
    assert_eq!(summary.undecodable.len(), 1);
    assert_eq!(summary.undecodable[0].log_index, 3);
    assert_eq!(summary.unreached, [TrustedRoot::from((12, [0; 32]))]);
    assert_eq!(summary.matched.len(), 1);
}

#[test]
fn conflicting_or_bogus_checkpoints_are_refused() {
    assert!(matches!(
        LogVerifier::new(vec![(4, [1; 32]).into(), (4, [2; 32]).into()]),
        Err(LogError::ConflictingCheckpoints { tree_size: 4, .. })
    ));
    assert!(matches!(
        LogVerifier::new(vec![(0, [1; 32]).into()]),
        Err(LogError::RootMismatch { tree_size: 0, .. })
    ));
    assert!(LogVerifier::new(vec![(0, empty_root()).into()]).is_ok());
}

#[test]
fn a_node_whose_tree_disagrees_with_the_checkpoint_cannot_mislead() {
    let entries = records(9);
    let tree = tree_of(&entries);
    let mut leaves = tree.leaf_hashes().to_vec();
    leaves[2] = [0; 32];
    // The node serves proofs from a tree altered at the same place.
    let mut forged = tree.leaf_hashes().to_vec();
    forged[2] = [0; 32];
    let forged = MemoryTree::from_leaf_hashes(forged);
    let result = locate_first_bad(&leaves, 9, tree.root(), |i| {
        let proof = forged.inclusion_proof(i, 9).expect("inside");
        Ok::<_, Infallible>((forged.leaf_hashes()[i as usize], proof))
    });
    assert!(matches!(
        result,
        Err(LocateError::Proof { leaf_index: 8, .. })
    ));
    let failed = locate_first_bad(&leaves, 9, tree.root(), |_| Err("node unreachable"));
    assert_eq!(
        failed,
        Err(LocateError::Fetch {
            leaf_index: 8,
            error: "node unreachable"
        })
    );
    assert!(matches!(
        locate_first_bad(&leaves, 10, tree.root(), |_| Err(())),
        Err(LocateError::TooFewLeaves {
            leaves: 9,
            tree_size: 10
        })
    ));
}

#[test]
fn consistency_between_checkpoints() {
    let tree = tree_of(&records(30));
    let (old, new) = ((11, tree.root_at(11).expect("size")), (30, tree.root()));
    let proof = tree.consistency_proof(11, 30).expect("sizes");
    assert_eq!(check_consistency(old, new, &proof), Ok(()));
    let rewritten = (11, [3; 32]);
    let error = check_consistency(rewritten, new, &proof).expect_err("not a prefix");
    assert!(matches!(
        error,
        LogError::Inconsistent {
            old_size: 11,
            new_size: 30,
            ..
        }
    ));
    assert!(error.to_string().contains("does not extend"), "{error}");
}

fn ceil_log2(n: u64) -> usize {
    (u64::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

proptest! {
    #[test]
    fn locates_exactly_the_first_altered_leaf_with_few_proofs(
        size in 1usize..300,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        seed in any::<u8>(),
    ) {
        let committed: Vec<Hash> = (0..size).map(|i| leaf_hash(&[seed, i as u8, (i >> 8) as u8])).collect();
        let tree = MemoryTree::from_leaf_hashes(committed.clone());
        let mut leaves = committed;
        let altered: Vec<usize> = picks.iter().map(|p| p.index(size)).collect();
        for &i in &altered {
            leaves[i] = leaf_hash(&[seed, 0xaa, i as u8, (i >> 8) as u8]);
        }
        let (found, fetches) = locate(&tree, &leaves);
        prop_assert_eq!(found, altered.iter().min().map(|&i| i as u64));
        prop_assert!(fetches <= ceil_log2(size as u64), "{} fetches for {} leaves", fetches, size);
    }
}
