//! Every parser of e-license input, on arbitrary bytes: none may panic, and what one accepts
//! must hold up (round trips, and only the sample license can be judged genuine).
//!
//! The same input goes to each, as the form it would arrive in:
//! 1. `from_qr_payload` on the bytes as (lossy) UTF-8 text, as a scanned QR code;
//! 2. `open_license` and the whole `verify_offline` on the raw bytes, as a `.cose` file, and on
//!    whatever a QR payload decoded to;
//! 3. `LicenseClaims::from_cbor` on the raw bytes, as a COSE payload;
//! 4. `HolderBundle::from_json` and `TrustBundle::from_json` on the text, as files a verifier
//!    is handed; an accepted holder bundle is verified, an accepted trust bundle is used to
//!    verify the sample license.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qianlian_fuzz::{NOW, Samples, names_license};
use qianlian_verifier::license::{
    HolderBundle, LicenseClaims, LicenseEvidence, MAX_LICENSE_BYTES, MAX_QR_CHARS, TrustBundle,
    from_qr_payload, license_hash, open_license, to_qr_payload, verify_offline,
};

static SAMPLES: OnceLock<Samples> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let samples = SAMPLES.get_or_init(Samples::new);
    let text = String::from_utf8_lossy(data);

    if let Ok(cose) = from_qr_payload(&text) {
        assert!(cose.len() <= MAX_LICENSE_BYTES);
        let again = to_qr_payload(&cose);
        if again.len() <= MAX_QR_CHARS {
            assert_eq!(from_qr_payload(&again).as_ref(), Ok(&cose));
        }
        check_license(&cose, samples.holder.evidence.as_ref(), samples);
    }

    check_license(data, samples.holder.evidence.as_ref(), samples);

    if let Ok(claims) = LicenseClaims::from_cbor(data) {
        // Only the canonical encoding is accepted, so it is the one `to_cbor` writes.
        assert_eq!(claims.to_cbor().as_deref(), Ok(data));
        let _ = claims.to_json();
    }

    if let Ok(holder) = HolderBundle::from_json(&text) {
        assert_eq!(
            HolderBundle::from_json(&holder.to_json()).as_ref(),
            Ok(&holder)
        );
        check_license(&holder.license, holder.evidence.as_ref(), samples);
    }
    if let Ok(trust) = TrustBundle::from_json(&text) {
        assert!(TrustBundle::from_json(&trust.to_json()).is_ok());
        let verdict = verify_offline(
            &samples.license,
            samples.holder.evidence.as_ref(),
            &trust,
            NOW,
            &names_license,
        );
        let _ = verdict.to_json();
    }
});

/// Opens and verifies `bytes` as a license against the sample trust bundle.
fn check_license(bytes: &[u8], evidence: Option<&LicenseEvidence>, samples: &Samples) {
    if let Ok(license) = open_license(bytes) {
        assert_eq!(license.license_hash(), license_hash(bytes));
        let claims = license.unverified_claims();
        assert_eq!(claims.issuer_key_id, license.key_id());
        let _ = claims.to_json();
    }
    let verdict = verify_offline(bytes, evidence, &samples.trust, NOW, &names_license);
    let _ = verdict.to_json();
    // The sample trust bundle's log records one issuance: any other document judged genuine
    // would be a forgery that got through.
    if verdict.is_genuine() {
        assert_eq!(bytes, samples.license.as_slice(), "{}", verdict.reason);
    }
}
