//! Writes the seed corpora of `license_decode` and `audit_bundle` from the sample world the
//! targets verify against:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//!
//! The output is deterministic, so rerunning it leaves git clean.

use std::path::Path;

use qianlian_fuzz::{NOW, Samples, names_license};
use qianlian_verifier::audit::{EvidenceBundle, TrustedKeys, check_bundle};
use qianlian_verifier::license::{open_license, verify_offline};

fn main() -> std::io::Result<()> {
    let samples = Samples::new();
    license_decode(&samples)?;
    audit_bundle(&samples)
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}

fn license_decode(samples: &Samples) -> std::io::Result<()> {
    // Seeds that fail early would keep the fuzzer away from the deeper checks.
    let verdict = verify_offline(
        &samples.holder.license,
        samples.holder.evidence.as_ref(),
        &samples.trust,
        NOW,
        &names_license,
    );
    if !verdict.is_genuine() {
        return Err(std::io::Error::other(format!(
            "the sample license is not genuine: {}",
            verdict.reason
        )));
    }
    let claims = open_license(&samples.license)
        .ok()
        .and_then(|l| l.unverified_claims().to_cbor().ok())
        .unwrap_or_default();
    let seeds: [(&str, Vec<u8>); 5] = [
        (
            "seed-business-license.qr.txt",
            samples.qr.clone().into_bytes(),
        ),
        ("seed-business-license.cose", samples.license.clone()),
        ("seed-business-license.claims.cbor", claims),
        (
            "seed-holder-bundle.json",
            samples.holder.to_json().into_bytes(),
        ),
        (
            "seed-trust-bundle.json",
            samples.trust.to_json().into_bytes(),
        ),
    ];
    write_seeds("license_decode", &seeds)
}

/// The sample evidence bundle, and two smaller ones cut from it that verify as well: the license
/// records alone (no policy needed) and no records at all.
fn audit_bundle(samples: &Samples) -> std::io::Result<()> {
    let full = samples.audit.clone();
    let mut licenses = full.clone();
    licenses
        .records
        .retain(|r| r.log_index == 5 || r.log_index == 7);
    licenses.policies.clear();
    let mut empty = full.clone();
    empty.records.clear();
    empty.policies.clear();
    let pinned = TrustedKeys::from(&samples.trust);
    let mut seeds = Vec::new();
    for (name, bundle) in [
        ("seed-evidence-bundle.json", full),
        ("seed-evidence-bundle.licenses.json", licenses),
        ("seed-evidence-bundle.empty.json", empty),
    ] {
        // Seeds that fail early would keep the fuzzer away from the deeper checks.
        for keys in [Some(&pinned), None] {
            if let Err(e) = check_bundle(&bundle, keys) {
                return Err(std::io::Error::other(format!(
                    "{name} does not verify: {e}"
                )));
            }
        }
        let json = bundle.to_json_pretty();
        if EvidenceBundle::from_json(&json).as_ref() != Ok(&bundle) {
            return Err(std::io::Error::other(format!("{name} does not round-trip")));
        }
        seeds.push((name, json.into_bytes()));
    }
    write_seeds("audit_bundle", &seeds)
}
