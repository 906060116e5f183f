//! What the fuzz targets and the seed corpus share: one sample world with fixed keys.
//!
//! A market-regulation department key, three node keys (k = 2), a log of 8 typed records (two
//! policy versions, the directory, data exchanges and one business license's issuance), and
//! from them a license, its QR payload, the holder's bundle, a trust bundle and an inspector's
//! evidence bundle. The targets verify every input against this trust bundle, and the seeds are
//! made from the same world, so mutations of a seed reach the deepest checks (known issuer, good
//! signature, evidence that holds) instead of stopping at "unknown key".

#![forbid(unsafe_code)]

use qianlian_verifier::audit::{
    BundleDepartment, BundlePolicy, BundleRecord, EVIDENCE_BUNDLE_VERSION, EvidenceBundle,
};
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::license::{
    DepartmentEntry, DepartmentKey, HolderBundle, LicenseClaims, LicenseEvidence, LicenseState,
    LicenseType, StatusEntry, StatusList, TRUST_BUNDLE_VERSION, TrustBundle, TrustBundleFile,
    license_hash, sign_license, to_qr_payload,
};
use qianlian_verifier::record::{
    AccessRecord, Action, Caller, ConfigChange, ConfigRecord, Decision, ExchangeRecord,
    LicenseIssuedRecord, LicenseStatusChange, LicenseStatusRecord, Record, Side, SubjectHash,
};
use qianlian_verifier::{Checkpoint, Hash, MemoryTree, NoteSigner, SignedNote};

/// The log's origin line.
pub const ORIGIN: &str = "qianlian.fuzz/notary";
/// 2026-05-28T20:26:40Z: the time every verdict is reached at.
pub const NOW: i64 = 1_780_000_000;
const ISSUED: i64 = 1_768_435_200;
const MARKET: &str = "market-regulation";
const MARKET_KEY_ID: &str = "market-regulation-2026";
const HOUSING: &str = "housing";
const DATASET: &str = "enterprise-registration";
const DAY_MS: u64 = 86_400_000;
/// The policy model every logged policy version carries.
const POLICY_MODEL: &str = "[request_definition]\nr = sub, dom, obj, act, purpose\n";

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
    /// The log's records, canonical bytes by log index; the trust bundle's checkpoint covers all.
    pub log: Vec<Vec<u8>>,
    /// An inspector's evidence bundle: every record that is not a policy, with policies 1 and 2,
    /// against the trust bundle's checkpoint.
    pub audit: EvidenceBundle,
}

/// The issuance record check the command-line verifier uses: the record is a
/// `LicenseIssued` record naming the hash.
pub fn names_license(record: &[u8], hash: &Hash) -> bool {
    matches!(Record::decode(record), Ok(Record::LicenseIssued(r)) if &r.license_hash == hash)
}

/// SHA-256 of `text` (the license hash is the SHA-256 of its bytes).
fn digest(text: &str) -> Hash {
    license_hash(text.as_bytes())
}

fn caller(department: &str, role: &str) -> Caller {
    Caller {
        department: department.into(),
        role: role.into(),
        cert_fingerprint: hex(&digest(department)),
    }
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn config(time_unix_ms: u64, change: ConfigChange) -> Record {
    Record::Config(ConfigRecord {
        request_id: format!("00000000-0000-4000-8000-{time_unix_ms:012}"),
        time_unix_ms,
        caller: caller("ops", "operator"),
        change,
    })
}

fn policy(time_unix_ms: u64, rules: &str) -> Record {
    config(
        time_unix_ms,
        ConfigChange::Policy {
            model: POLICY_MODEL.into(),
            rules: rules.into(),
        },
    )
}

fn exchange(time_unix_ms: u64, policy_version: u64, decision: Decision) -> Record {
    let key = "91520115MA6DKXQ43E";
    Record::Exchange(ExchangeRecord {
        request_id: format!("00000000-0000-4000-9000-{time_unix_ms:012}"),
        time_unix_ms,
        caller: caller(HOUSING, "department"),
        side: Side::Provider,
        gateway: MARKET.into(),
        owner: MARKET.into(),
        dataset: DATASET.into(),
        action: Action::Read,
        key: key.into(),
        purpose: "permit-review".into(),
        decision,
        policy_version,
        rule: match decision {
            Decision::Allow => {
                "p, housing, market-regulation, enterprise-registration, read, permit-review".into()
            }
            Decision::Deny => "no rule allows the purpose".into(),
        },
        disclosed_fields: match decision {
            Decision::Allow => vec!["name".into(), "status".into()],
            Decision::Deny => Vec::new(),
        },
        result_count: u32::from(decision == Decision::Allow),
        subjects: vec![SubjectHash(digest(key))],
        request_digest: digest("request"),
        response_digest: (decision == Decision::Allow).then(|| digest("response")),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    })
}

/// The log: 0 policy v1, 1 directory, 2 exchange (v1), 3 access, 4 policy v2, 5 the license's
/// issuance, 6 exchange (v2, denied), 7 another license revoked.
fn log(claims: &LicenseClaims, hash: Hash) -> Vec<Record> {
    let issued_ms = ISSUED as u64 * 1000;
    let start = issued_ms - 30 * DAY_MS;
    vec![
        policy(
            start,
            "p, housing, market-regulation, enterprise-registration, read, permit-review\n",
        ),
        config(
            start + DAY_MS,
            ConfigChange::Directory {
                toml: "[[department]]\nid = \"market-regulation\"\n".into(),
            },
        ),
        exchange(start + 2 * DAY_MS, 1, Decision::Allow),
        Record::Access(AccessRecord {
            request_id: "00000000-0000-4000-a000-000000000003".into(),
            time_unix_ms: start + 3 * DAY_MS,
            caller: caller(HOUSING, "department"),
            owner: MARKET.into(),
            dataset: DATASET.into(),
            key: "91520115MA6DKXQ43E".into(),
            action: Action::Read,
            purpose: "permit-review".into(),
            decision: Decision::Allow,
            policy_version: "1".into(),
            rule: "p, housing, market-regulation, enterprise-registration, read, permit-review"
                .into(),
            request_digest: digest("access request"),
            response_digest: None,
        }),
        policy(
            issued_ms - DAY_MS,
            "p, housing, market-regulation, enterprise-registration, read, permit-review\n\
             p, natural-resources, market-regulation, enterprise-registration, read, land-use\n",
        ),
        Record::LicenseIssued(LicenseIssuedRecord {
            request_id: "00000000-0000-4000-b000-000000000005".into(),
            time_unix_ms: issued_ms,
            caller: caller(MARKET, "department"),
            license_hash: hash,
            license_type: "business-license".into(),
            number: claims.number.clone(),
            department: MARKET.into(),
            holder_hash: digest(&claims.holder_id),
            valid_from: claims.valid_from,
            valid_until: claims.valid_until,
        }),
        exchange(issued_ms + DAY_MS / 2, 2, Decision::Deny),
        Record::LicenseStatus(LicenseStatusRecord {
            request_id: "00000000-0000-4000-b000-000000000007".into(),
            time_unix_ms: issued_ms + DAY_MS,
            caller: caller(MARKET, "department"),
            license_hash: license_hash(b"another license"),
            change: LicenseStatusChange::Revoked,
            reason: "fraud".into(),
        }),
    ]
}

fn cosign(body: String, signers: &[NoteSigner]) -> String {
    let mut note = SignedNote::new(body).expect("valid note text");
    for signer in signers {
        note.add_signature(signer).expect("room for signatures");
    }
    note.to_string()
}

/// The sample business license's claims.
fn license_claims() -> LicenseClaims {
    LicenseClaims {
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
    }
}

/// The trust bundle: market-regulation's key, the three node keys (k = 2), the `checkpoint` of
/// the log of `size` and `root`, and a status list of that log that revokes another license.
fn trust_bundle(
    key: &SigningKey,
    nodes: &[NoteSigner],
    checkpoint: String,
    size: u64,
    root: Hash,
) -> TrustBundle {
    let revoked = StatusEntry {
        license_hash: license_hash(b"another license"),
        state: LicenseState::Revoked,
        since: ISSUED + 86_400,
        reason: "fraud".into(),
    };
    let status = StatusList::new(ORIGIN, size, root, NOW - 3600, vec![revoked]);
    TrustBundle::open(TrustBundleFile {
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
        checkpoint,
        status_list: cosign(status.to_body(), &nodes[1..]),
    })
    .expect("sample trust bundle is valid")
}

/// The inspector's evidence bundle: every record of `log` that is not a policy, with policies 1
/// and 2, each with its inclusion `proof` against `checkpoint`.
fn evidence_bundle(
    key: &SigningKey,
    trust: &TrustBundle,
    checkpoint: String,
    log: &[Vec<u8>],
    proof: impl Fn(u64) -> Vec<Hash>,
) -> EvidenceBundle {
    EvidenceBundle {
        version: EVIDENCE_BUNDLE_VERSION,
        created_unix_ms: NOW as u64 * 1000,
        query: "every record of market-regulation/enterprise-registration".into(),
        origin: ORIGIN.into(),
        checkpoint,
        node_keys: trust.file().node_keys.clone(),
        min_cosigners: 2,
        departments: vec![BundleDepartment {
            id: MARKET.into(),
            name: "贵州省市场监督管理局".into(),
            keys: vec![DepartmentKey::new(MARKET_KEY_ID, &key.verifying_key())],
            node_keys: vec![],
            sealed_from: None,
            retired_keys: vec![],
        }],
        records: [1, 2, 3, 5, 6, 7]
            .into_iter()
            .map(|i| BundleRecord::new(i, log[i as usize].clone(), proof(i)).expect("a record"))
            .collect(),
        policies: [(1, 0), (2, 4)]
            .into_iter()
            .map(|(version, i)| BundlePolicy {
                version,
                log_index: i,
                record: log[i as usize].clone(),
                proof: proof(i),
            })
            .collect(),
    }
}

impl Samples {
    /// Builds the world; deterministic (Ed25519 signing is), so the seeds are reproducible.
    ///
    /// # Panics
    /// Never with the fixed inputs here: every `expect` guards a constant.
    pub fn new() -> Self {
        let key = SigningKey::from_bytes(&[0x11; 32]);
        let claims = license_claims();
        let license = sign_license(&claims, &key).expect("valid claims");
        let hash = license_hash(&license);
        let log: Vec<Vec<u8>> = log(&claims, hash).iter().map(Record::encode).collect();

        let mut tree = MemoryTree::new();
        for record in &log {
            tree.push_entry(record);
        }
        let index = 5;
        let (size, root) = (tree.size(), tree.root());
        let proof = |i: u64| tree.inclusion_proof(i, size).expect("index in tree");

        let nodes = ["node-a", "node-b", "node-c"].map(|name| {
            let seed = [name.as_bytes()[5]; 32];
            NoteSigner::from_seed(name, &seed).expect("valid key name")
        });
        let checkpoint = cosign(Checkpoint::new(ORIGIN, size, root).to_body(), &nodes[..2]);
        let trust = trust_bundle(&key, &nodes, checkpoint.clone(), size, root);
        let audit = evidence_bundle(&key, &trust, checkpoint.clone(), &log, proof);
        let evidence = LicenseEvidence {
            log_index: index,
            tree_size: size,
            inclusion_proof: proof(index),
            checkpoint,
            record: log[index as usize].clone(),
        };
        Self {
            qr: to_qr_payload(&license),
            holder: HolderBundle::new(license.clone(), Some(evidence)),
            license,
            trust,
            log,
            audit,
        }
    }

    /// Whether the record logged at `log_index` is a policy version.
    pub fn is_policy_at(&self, log_index: u64) -> bool {
        let logged = usize::try_from(log_index)
            .ok()
            .and_then(|i| self.log.get(i));
        logged.is_some_and(|bytes| {
            matches!(
                Record::decode(bytes),
                Ok(Record::Config(ConfigRecord {
                    change: ConfigChange::Policy { .. },
                    ..
                }))
            )
        })
    }
}

impl Default for Samples {
    fn default() -> Self {
        Self::new()
    }
}
