//! What one e-license check costs on one core, against raw Ed25519 verification as the floor.
//!
//! - `ed25519/verify_strict_400B`: the baseline, one strict signature check of 400 bytes.
//! - `license/open_and_verify_signature`: a typical business license parsed and its department
//!   signature checked.
//! - `license/verify_offline`: the whole offline verdict with a holder's evidence: the license,
//!   a real 20-hash inclusion proof in a tree of 1,000,000 leaves, the evidence's checkpoint
//!   cosigned by all 3 node keys (k = 2, so 3 signatures are checked), and a trust bundle whose
//!   status list names 1,000 other licenses.
//! - `license/verify_qr_offline`: the same from the QR payload, as a phone that scanned it.
//! - `license/from_qr_payload`: base45 and zlib decoding only.
//! - `license/sign_license`: what the issuing department pays per license.
//!
//! Setup builds the million-leaf tree with `MemoryTree` (about a second); it is not measured.
//! Every benchmark reports elements per second: one element is one operation.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use qianlian_verifier::license::{
    DepartmentEntry, DepartmentKey, HolderBundle, LicenseClaims, LicenseEvidence, LicenseState,
    LicenseType, StatusEntry, StatusList, TRUST_BUNDLE_VERSION, TrustBundle, TrustBundleFile,
    from_qr_payload, license_hash, open_license, sign_license, to_qr_payload, verify_offline,
    verify_qr_offline,
};
use qianlian_verifier::{Checkpoint, Hash, MemoryTree, NoteSigner, SignedNote, leaf_hash};

const ORIGIN: &str = "qianlian.bench/notary";
/// 2026-05-28T20:26:40Z: inside the license's validity.
const NOW: i64 = 1_780_000_000;
/// 2026-01-15T00:00:00Z.
const ISSUED: i64 = 1_768_435_200;
const MARKET: &str = "market-regulation";
const MARKET_KEY_ID: &str = "market-regulation-2026";

/// Leaves in the log the evidence proves against, and where the license's record sits: off the
/// tree's right border, so its proof has the full ⌈log2 n⌉ = 20 hashes.
const TREE_SIZE: u64 = 1_000_000;
const RECORD_INDEX: u64 = 765_432;
/// Other licenses the status list names as suspended or revoked.
const STATUS_ENTRIES: u64 = 1_000;

const ISSUED_PREFIX: &[u8] = b"bench-record/license-issued/";

fn market_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

fn nodes() -> [NoteSigner; 3] {
    ["node-a", "node-b", "node-c"].map(|name| {
        let seed = [name.as_bytes()[5]; 32];
        NoteSigner::from_seed(name, &seed).expect("valid key name")
    })
}

/// A typical business license (营业执照) of a limited company: six fields, Chinese text.
fn business_license() -> LicenseClaims {
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
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A stand-in for raft-store's issuance record: a prefix and the license hash.
fn issuance_record(hash: &Hash) -> Vec<u8> {
    [ISSUED_PREFIX, hash.as_slice()].concat()
}

fn names_license(record: &[u8], hash: &Hash) -> bool {
    record.strip_prefix(ISSUED_PREFIX) == Some(hash.as_slice())
}

fn cosign(body: String, signers: &[NoteSigner]) -> String {
    let mut note = SignedNote::new(body).expect("valid note text");
    for signer in signers {
        note.add_signature(signer).expect("room for signatures");
    }
    note.to_string()
}

/// Everything a phone holds: the holder's bundle and the verifier's trust bundle.
struct Offline {
    holder: HolderBundle,
    qr: String,
    trust: TrustBundle,
}

fn offline_setup(license: Vec<u8>) -> Offline {
    let record = issuance_record(&license_hash(&license));
    let leaves = (0..TREE_SIZE)
        .map(|i| {
            if i == RECORD_INDEX {
                leaf_hash(&record)
            } else {
                leaf_hash(&i.to_be_bytes())
            }
        })
        .collect();
    let tree = MemoryTree::from_leaf_hashes(leaves);
    let root = tree.root();
    let inclusion_proof = tree
        .inclusion_proof(RECORD_INDEX, TREE_SIZE)
        .expect("index in tree");
    assert_eq!(inclusion_proof.len(), 20);

    let signers = nodes();
    let checkpoint = cosign(Checkpoint::new(ORIGIN, TREE_SIZE, root).to_body(), &signers);
    let entries = (0..STATUS_ENTRIES)
        .map(|i| StatusEntry {
            license_hash: license_hash(&i.to_be_bytes()),
            state: if i % 4 == 0 {
                LicenseState::Suspended
            } else {
                LicenseState::Revoked
            },
            since: ISSUED + i as i64 * 600,
            reason: "holder-request".into(),
        })
        .collect();
    let status = StatusList::new(ORIGIN, TREE_SIZE, root, NOW - 3600, entries);
    let file = TrustBundleFile {
        version: TRUST_BUNDLE_VERSION,
        origin: ORIGIN.into(),
        departments: vec![DepartmentEntry {
            id: MARKET.into(),
            name: "贵州省市场监督管理局".into(),
            keys: vec![DepartmentKey::new(
                MARKET_KEY_ID,
                &market_key().verifying_key(),
            )],
            may_issue: vec![LicenseType::BusinessLicense],
        }],
        node_keys: signers.iter().map(|n| n.verifier().to_vkey()).collect(),
        min_cosigners: 2,
        checkpoint: checkpoint.clone(),
        status_list: cosign(status.to_body(), &signers),
    };
    let trust = TrustBundle::open(file).expect("bench bundle is valid");
    let evidence = LicenseEvidence {
        log_index: RECORD_INDEX,
        tree_size: TREE_SIZE,
        inclusion_proof,
        checkpoint,
        record,
    };
    Offline {
        qr: to_qr_payload(&license),
        holder: HolderBundle::new(license, Some(evidence)),
        trust,
    }
}

fn ed25519_baseline(c: &mut Criterion) {
    let key = market_key();
    let public = key.verifying_key();
    let message: Vec<u8> = (0..400u32).map(|i| (i * 7) as u8).collect();
    let signature = key.sign(&message);
    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_strict_400B", |b| {
        b.iter(|| {
            black_box(&public)
                .verify_strict(black_box(&message), black_box(&signature))
                .expect("valid signature")
        })
    });
    group.finish();
}

fn license(c: &mut Criterion) {
    let claims = business_license();
    let key = market_key();
    let public = key.verifying_key();
    let license = sign_license(&claims, &key).expect("valid claims");
    let offline = offline_setup(license.clone());
    let evidence = offline.holder.evidence.as_ref();

    // The verdict the benchmark measures must be the full, successful one.
    let verdict = verify_offline(&license, evidence, &offline.trust, NOW, &names_license);
    assert!(verdict.is_genuine(), "{}", verdict.reason);
    assert!(
        verify_qr_offline(&offline.qr, evidence, &offline.trust, NOW, &names_license).is_genuine()
    );

    let mut group = c.benchmark_group("license");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_and_verify_signature", |b| {
        b.iter(|| {
            open_license(black_box(&license))
                .and_then(|l| l.verify_signature(&public))
                .expect("genuine license")
        })
    });
    group.bench_function("verify_offline", |b| {
        b.iter(|| {
            verify_offline(
                black_box(&license),
                black_box(evidence),
                &offline.trust,
                NOW,
                &names_license,
            )
        })
    });
    group.bench_function("verify_qr_offline", |b| {
        b.iter(|| {
            verify_qr_offline(
                black_box(&offline.qr),
                black_box(evidence),
                &offline.trust,
                NOW,
                &names_license,
            )
        })
    });
    group.bench_function("from_qr_payload", |b| {
        b.iter(|| from_qr_payload(black_box(&offline.qr)).expect("valid payload"))
    });
    group.bench_function("sign_license", |b| {
        b.iter(|| sign_license(black_box(&claims), &key).expect("valid claims"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = ed25519_baseline, license
}
criterion_main!(benches);
