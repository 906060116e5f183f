//! An independent RFC 6962 / RFC 9162 proof checker, written from the RFC text for the tests
//! (it shares no code with the `verifier` crate), so the log's proofs are checked by a second
//! implementation.

use sha2::{Digest, Sha256};

type H = [u8; 32];

fn node(l: &H, r: &H) -> H {
    let mut s = Sha256::new();
    s.update([1u8]);
    s.update(l);
    s.update(r);
    s.finalize().into()
}

pub fn leaf(data: &[u8]) -> H {
    let mut s = Sha256::new();
    s.update([0u8]);
    s.update(data);
    s.finalize().into()
}

/// RFC 9162 §2.1.3.2, step by step.
pub fn inclusion_ok(leaf_index: u64, tree_size: u64, leaf_hash: &H, path: &[H], root: &H) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut f_n, mut s_n) = (leaf_index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// RFC 9162 §2.1.4.2, step by step.
pub fn consistency_ok(
    first: u64,
    second: u64,
    first_hash: &H,
    second_hash: &H,
    proof: &[H],
) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_hash == second_hash;
    }
    if first == 0 || proof.is_empty() {
        return false;
    }
    let mut path: Vec<H> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_hash);
    }
    let Some((&first_elem, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (first_elem, first_elem);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    fr == *first_hash && sr == *second_hash && s_n == 0
}
