//! Writes the seed corpus of `license_decode` from the sample world the target verifies against:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//!
//! The output is deterministic, so rerunning it leaves git clean.

use std::path::Path;

use qianlian_fuzz::{NOW, Samples, names_license};
use qianlian_verifier::license::{open_license, verify_offline};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/license_decode");
    std::fs::create_dir_all(&dir)?;
    let samples = Samples::new();
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
    for (name, bytes) in seeds {
        let path = dir.join(name);
        std::fs::write(&path, &bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
