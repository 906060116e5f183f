//! Test fixtures: departments with fixed keys, three nodes (k = 2), sample licenses with
//! generated identifiers (valid check characters, no real ones), and a small in-memory log that
//! produces evidence, cosigned checkpoints, status lists and trust bundles.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use super::claims::{LicenseClaims, LicenseType};
use super::cose::{license_hash, sign_license};
use super::evidence::LicenseEvidence;
use super::status::{StatusEntry, StatusList};
use super::trust::{
    DepartmentEntry, DepartmentKey, TRUST_BUNDLE_VERSION, TrustBundle, TrustBundleFile,
};
use crate::checkpoint::Checkpoint;
use crate::hash::Hash;
use crate::note::{NoteSigner, SignedNote};
use crate::tree::MemoryTree;

pub(crate) const ORIGIN: &str = "qianlian.test/notary";
/// 2026-05-28T20:26:40Z: inside the sample licenses' validity.
pub(crate) const NOW: i64 = 1_780_000_000;
/// 2026-01-15T00:00:00Z.
pub(crate) const ISSUED: i64 = 1_768_435_200;
/// When the fixture's status lists say their state was current: an hour before [`NOW`].
pub(crate) const STATUS_TIME: i64 = NOW - 3600;

pub(crate) const MARKET: &str = "market-regulation";
pub(crate) const MARKET_KEY_ID: &str = "market-regulation-2026";
pub(crate) const HOUSING: &str = "housing";
pub(crate) const HOUSING_KEY_ID: &str = "housing-2026";

pub(crate) fn market_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

pub(crate) fn housing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

/// A key no bundle lists.
pub(crate) fn rogue_key() -> SigningKey {
    SigningKey::from_bytes(&[0x66; 32])
}

pub(crate) fn nodes() -> [NoteSigner; 3] {
    ["node-a", "node-b", "node-c"].map(|name| {
        let seed = [name.as_bytes()[5]; 32];
        NoteSigner::from_seed(name, &seed).expect("valid key name")
    })
}

/// A typical business license (营业执照) of a limited company, without end of validity.
pub(crate) fn business_license() -> LicenseClaims {
    let fields = [
        ("entity-type", "有限责任公司（自然人投资或控股）"),
        ("legal-representative", "张明"),
        ("registered-capital", "500万元人民币"),
        ("established", "2021-03-18"),
        ("address", "贵州省贵阳市观山湖区长岭北路55号"),
        (
            "business-scope",
            "数据处理和存储支持服务；软件开发；信息系统集成服务",
        ),
    ];
    LicenseClaims {
        license_type: LicenseType::BusinessLicense,
        number: "52011500012345".into(),
        holder_name: "贵州黔链数据服务有限公司".into(),
        holder_id: "91520115MA6DKXQ43E".into(),
        department: MARKET.into(),
        issuer_key_id: MARKET_KEY_ID.into(),
        issued_at: ISSUED,
        valid_from: ISSUED,
        valid_until: None,
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

/// A construction permit (建筑工程施工许可证) valid for a year from [`ISSUED`].
pub(crate) fn construction_permit() -> LicenseClaims {
    LicenseClaims {
        license_type: LicenseType::ConstructionPermit,
        number: "520115202601150101".into(),
        holder_name: "贵州黔链数据服务有限公司".into(),
        holder_id: "91520115MA6DKXQ43E".into(),
        department: HOUSING.into(),
        issuer_key_id: HOUSING_KEY_ID.into(),
        issued_at: ISSUED,
        valid_from: ISSUED,
        valid_until: Some(ISSUED + 365 * 86_400),
        fields: BTreeMap::from([("project".to_owned(), "黔链数据中心二期".to_owned())]),
    }
}

pub(crate) fn signed_business_license() -> Vec<u8> {
    sign_license(&business_license(), &market_key()).expect("sample claims are valid")
}

const ISSUED_PREFIX: &[u8] = b"test-record/license-issued/";

/// A stand-in for raft-store's issuance record: a prefix and the license hash.
pub(crate) fn issuance_record(hash: &Hash) -> Vec<u8> {
    [ISSUED_PREFIX, hash.as_slice()].concat()
}

/// The [`super::RecordCheck`] for [`issuance_record`].
pub(crate) fn names_license(record: &[u8], hash: &Hash) -> bool {
    record.strip_prefix(ISSUED_PREFIX) == Some(hash.as_slice())
}

fn department(
    id: &str,
    name: &str,
    key_id: &str,
    key: &SigningKey,
    t: LicenseType,
) -> DepartmentEntry {
    DepartmentEntry {
        id: id.into(),
        name: name.into(),
        keys: vec![DepartmentKey::new(key_id, &key.verifying_key())],
        may_issue: vec![t],
    }
}

/// A log in memory: a few unrelated records, then whatever the test appends.
#[derive(Debug)]
pub(crate) struct Log {
    pub(crate) tree: MemoryTree,
}

impl Log {
    pub(crate) fn new() -> Self {
        let mut tree = MemoryTree::new();
        for i in 0..5u8 {
            tree.push_entry(&[b'x', i]);
        }
        Self { tree }
    }

    /// Appends the issuance record of `license` and returns its index.
    pub(crate) fn issue(&mut self, license: &[u8]) -> u64 {
        self.tree
            .push_entry(&issuance_record(&license_hash(license)))
    }

    /// The current checkpoint, cosigned by `signers`.
    pub(crate) fn checkpoint(&self, signers: &[&NoteSigner]) -> String {
        let body = Checkpoint::new(ORIGIN, self.tree.size(), self.tree.root()).to_body();
        cosign(body, signers)
    }

    /// Evidence for the record of `license` at `index`, against the current tree, cosigned by
    /// nodes a and b.
    pub(crate) fn evidence(&self, license: &[u8], index: u64) -> LicenseEvidence {
        let [a, b, _] = nodes();
        let size = self.tree.size();
        LicenseEvidence {
            log_index: index,
            tree_size: size,
            inclusion_proof: self
                .tree
                .inclusion_proof(index, size)
                .expect("index in tree"),
            checkpoint: self.checkpoint(&[&a, &b]),
            record: issuance_record(&license_hash(license)),
        }
    }

    /// The status list at the current size, cosigned by `signers`.
    pub(crate) fn status_list(
        &self,
        time: i64,
        entries: Vec<StatusEntry>,
        signers: &[&NoteSigner],
    ) -> String {
        let list = StatusList::new(ORIGIN, self.tree.size(), self.tree.root(), time, entries);
        list.check().expect("fixture status list is valid");
        cosign(list.to_body(), signers)
    }

    /// The bundle file for the current tree with this status, cosigned by nodes a and b.
    pub(crate) fn bundle_file(&self, entries: Vec<StatusEntry>) -> TrustBundleFile {
        let [a, b, c] = nodes();
        TrustBundleFile {
            version: TRUST_BUNDLE_VERSION,
            origin: ORIGIN.into(),
            departments: vec![
                department(
                    MARKET,
                    "贵州省市场监督管理局",
                    MARKET_KEY_ID,
                    &market_key(),
                    LicenseType::BusinessLicense,
                ),
                department(
                    HOUSING,
                    "贵州省住房和城乡建设厅",
                    HOUSING_KEY_ID,
                    &housing_key(),
                    LicenseType::ConstructionPermit,
                ),
            ],
            node_keys: [&a, &b, &c].map(|n| n.verifier().to_vkey()).to_vec(),
            min_cosigners: 2,
            checkpoint: self.checkpoint(&[&a, &b]),
            status_list: self.status_list(STATUS_TIME, entries, &[&a, &b]),
        }
    }

    pub(crate) fn bundle(&self, entries: Vec<StatusEntry>) -> TrustBundle {
        TrustBundle::open(self.bundle_file(entries)).expect("fixture bundle is valid")
    }
}

fn cosign(body: String, signers: &[&NoteSigner]) -> String {
    let mut note = SignedNote::new(body).expect("valid note text");
    for signer in signers {
        note.add_signature(signer).expect("room for signatures");
    }
    note.to_string()
}
