//! RFC 6962 §2.1 hashing: `leaf = SHA-256(0x00 || data)`, `node = SHA-256(0x01 || left || right)`.
//! The domain-separation prefixes make a leaf impossible to pass off as an inner node.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Root hash of the empty tree: `SHA-256()` of no bytes (RFC 6962 §2.1, `MTH({})`).
pub fn empty_root() -> Hash {
    Sha256::new().finalize().into()
}

/// Leaf hash of one log entry's canonical bytes.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Hash of an inner node from its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_leaf_matches_rfc6962_test_vector() {
        // SHA-256 of the single byte 0x00, as in the CT test vectors for the empty leaf.
        assert_eq!(
            leaf_hash(b""),
            [
                0x6e, 0x34, 0x0b, 0x9c, 0xff, 0xb3, 0x7a, 0x98, 0x9c, 0xa5, 0x44, 0xe6, 0xbb, 0x78,
                0x0a, 0x2c, 0x78, 0x90, 0x1d, 0x3f, 0xb3, 0x37, 0x38, 0x76, 0x85, 0x11, 0xa3, 0x06,
                0x17, 0xaf, 0xa0, 0x1d
            ]
        );
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaf_and_node_are_domain_separated() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concat = Vec::new();
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }
}
