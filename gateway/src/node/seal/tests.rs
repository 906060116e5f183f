//! Whether a record is sealed, and as whom: only where the directory in force lists this
//! node's key for the record's department.

use std::sync::Arc;

use arc_swap::ArcSwap;
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::license::DepartmentKey;
use qianlian_verifier::record::SignerRole;

use super::NodeSeal;
use crate::domain::directory::{Directory, DirectoryEntry};
use crate::node::cluster_config::DirectoryInForce;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn seal(node: u8) -> NodeSeal {
    let directory = Directory {
        department: vec![DirectoryEntry {
            id: "market-regulation".into(),
            name: "market-regulation".into(),
            keys: vec![],
            node_keys: vec![DepartmentKey::new("mr.node", &key(0x21).verifying_key())],
            gateway: None,
            cert_fingerprint: None,
            datasets: vec![],
        }],
        operator: vec![],
    };
    NodeSeal::new(
        key(node).verifying_key().to_bytes(),
        Arc::new(ArcSwap::from_pointee(DirectoryInForce {
            version: 1,
            directory,
        })),
    )
}

#[test]
fn a_record_is_sealed_by_this_node_only_where_the_directory_lists_its_key() {
    let listed = seal(0x21);
    let o = listed
        .originator("market-regulation")
        .expect("listed for market-regulation");
    assert_eq!(o.role, SignerRole::Gateway);
    assert_eq!(o.key_id, "mr.node");
    assert_eq!(o.public_key, key(0x21).verifying_key().to_bytes());
    // Another department, or another node's key: nobody seals.
    assert!(listed.originator("housing").is_none());
    assert!(seal(0x22).originator("market-regulation").is_none());
}
