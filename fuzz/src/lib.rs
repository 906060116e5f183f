//! What the fuzz targets and the seed corpus share: one sample world with fixed keys.
//!
//! A market-regulation department key, three node keys (k = 2), a small log holding one
//! business license's issuance record, and from them a license, its QR payload, the holder's
//! bundle and a trust bundle. The target verifies every input against this trust bundle, and the
//! seeds are made from the same world, so mutations of a seed reach the deepest checks (known
//! issuer, good signature, evidence that holds) instead of stopping at "unknown key".

#![forbid(unsafe_code)]

use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::license::{
    DepartmentEntry, DepartmentKey, HolderBundle, LicenseClaims, LicenseEvidence, LicenseState,
    LicenseType, StatusEntry, StatusList, TRUST_BUNDLE_VERSION, TrustBundle, TrustBundleFile,
    license_hash, sign_license, to_qr_payload,
};
use qianlian_verifier::{Checkpoint, Hash, MemoryTree, NoteSigner, SignedNote};

/// The log's origin line.
pub const ORIGIN: &str = "qianlian.fuzz/notary";
/// 2026-05-28T20:26:40Z: the time every verdict is reached at.
pub const NOW: i64 = 1_780_000_000;
const ISSUED: i64 = 1_768_435_200;
const MARKET: &str = "market-regulation";
const MARKET_KEY_ID: &str = "market-regulation-2026";
const ISSUED_PREFIX: &[u8] = b"fuzz-record/license-issued/";

/// The sample world, built by [`Samples::new`].
#[derive(Debug)]
pub struct Samples {
    /// A business license's COSE_Sign1 bytes.
    pub license: Vec<u8>,
    /// Its QR payload.
    pub qr: String,
    /// The holder's bundle: the license and its evidence in a log of 8 records.
    pub holder: HolderBundle,
    /// The trust bundle that makes the license genuine at [`NOW`].
    pub trust: TrustBundle,
}

/// The stand-in for raft-store's issuance record check: the record is a prefix and the hash.
pub fn names_license(record: &[u8], hash: &Hash) -> bool {
    record.strip_prefix(ISSUED_PREFIX) == Some(hash.as_slice())
}

fn cosign(body: String, signers: &[NoteSigner]) -> String {
    let mut note = SignedNote::new(body).expect("valid note text");
    for signer in signers {
        note.add_signature(signer).expect("room for signatures");
    }
    note.to_string()
}

impl Samples {
    /// Builds the world; deterministic (Ed25519 signing is), so the seeds are reproducible.
    ///
    /// # Panics
    /// Never with the fixed inputs here: every `expect` guards a constant.
    pub fn new() -> Self {
        let key = SigningKey::from_bytes(&[0x11; 32]);
        let claims = LicenseClaims {
            license_type: LicenseType::BusinessLicense,
            number: "52011500012345".into(),
            holder_name: "贵州黔链数据服务有限公司".into(),
            holder_id: "91520115MA6DKXQ43E".into(),
            department: MARKET.into(),
            issuer_key_id: MARKET_KEY_ID.into(),
            issued_at: ISSUED,
            valid_from: ISSUED,
            valid_until: Some(ISSUED + 5 * 365 * 86_400),
            fields: [
                ("legal-representative", "张明"),
                ("registered-capital", "500万元人民币"),
                ("address", "贵州省贵阳市观山湖区长岭北路55号"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let license = sign_license(&claims, &key).expect("valid claims");
        let hash = license_hash(&license);
        let record = [ISSUED_PREFIX, hash.as_slice()].concat();

        let mut tree = MemoryTree::new();
        for i in 0..5u8 {
            tree.push_entry(&[b'x', i]);
        }
        let index = tree.push_entry(&record);
        tree.push_entry(b"later");
        tree.push_entry(b"records");
        let (size, root) = (tree.size(), tree.root());

        let nodes = ["node-a", "node-b", "node-c"].map(|name| {
            let seed = [name.as_bytes()[5]; 32];
            NoteSigner::from_seed(name, &seed).expect("valid key name")
        });
        let checkpoint = cosign(Checkpoint::new(ORIGIN, size, root).to_body(), &nodes[..2]);
        let revoked = StatusEntry {
            license_hash: license_hash(b"another license"),
            state: LicenseState::Revoked,
            since: ISSUED + 86_400,
            reason: "fraud".into(),
        };
        let status = StatusList::new(ORIGIN, size, root, NOW - 3600, vec![revoked]);
        let trust = TrustBundle::open(TrustBundleFile {
            version: TRUST_BUNDLE_VERSION,
            origin: ORIGIN.into(),
            departments: vec![DepartmentEntry {
                id: MARKET.into(),
                name: "贵州省市场监督管理局".into(),
                keys: vec![DepartmentKey::new(MARKET_KEY_ID, &key.verifying_key())],
                may_issue: vec![LicenseType::BusinessLicense],
            }],
            node_keys: nodes.iter().map(|n| n.verifier().to_vkey()).collect(),
            min_cosigners: 2,
            checkpoint: checkpoint.clone(),
            status_list: cosign(status.to_body(), &nodes[1..]),
        })
        .expect("sample trust bundle is valid");
        let evidence = LicenseEvidence {
            log_index: index,
            tree_size: size,
            inclusion_proof: tree.inclusion_proof(index, size).expect("index in tree"),
            checkpoint,
            record,
        };
        Self {
            qr: to_qr_payload(&license),
            holder: HolderBundle::new(license.clone(), Some(evidence)),
            license,
            trust,
        }
    }
}

impl Default for Samples {
    fn default() -> Self {
        Self::new()
    }
}
