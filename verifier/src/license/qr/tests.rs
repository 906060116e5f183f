use qrcode::{EcLevel, QrCode, Version};

use super::*;
use crate::license::cose::sign_license;
use crate::license::fixtures::{business_license, market_key, signed_business_license};

#[test]
fn qr_payload_round_trips() {
    let cose = signed_business_license();
    let payload = to_qr_payload(&cose);
    assert!(payload.starts_with("QL1:"));
    assert_eq!(from_qr_payload(&payload), Ok(cose));
}

#[test]
fn payload_uses_only_qr_alphanumeric_characters() {
    let payload = to_qr_payload(&signed_business_license());
    let alphanumeric = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    assert!(payload.chars().all(|c| alphanumeric.contains(c)));
}

fn qr_version(payload: &str, level: EcLevel) -> i16 {
    match QrCode::with_error_correction_level(payload, level)
        .expect("fits some QR code")
        .version()
    {
        Version::Normal(v) => v,
        Version::Micro(_) => 0,
    }
}

/// The size budget. Issue 5 asks that a typical business license fit a version-25 QR code or
/// smaller; we hold it to that at error correction level Q (25 % damage) for a license carrying
/// every item printed on a paper business license, address and business scope included. Chinese
/// text is 3 bytes a character in UTF-8 and compresses little, so those two items cost most.
#[test]
fn full_business_license_fits_a_version_25_qr_code_at_level_q() {
    let cose = signed_business_license();
    let payload = to_qr_payload(&cose);
    let (m, q) = (
        qr_version(&payload, EcLevel::M),
        qr_version(&payload, EcLevel::Q),
    );
    println!(
        "full business license: COSE {} bytes, zlib {} bytes, QR payload {} characters, QR version {m} at level M, {q} at level Q",
        cose.len(),
        miniz_oxide::deflate::compress_to_vec_zlib(&cose, ZLIB_LEVEL).len(),
        payload.len()
    );
    assert!(payload.len() <= 800, "{} characters", payload.len());
    assert!(q <= 25, "needs QR version {q} at level Q");
}

/// Without address and business scope (which a verifier can fetch online), the payload stays
/// under 600 characters: a code phones read at arm's length.
#[test]
fn core_business_license_stays_under_600_characters() {
    let mut claims = business_license();
    claims.fields.remove("address");
    claims.fields.remove("business-scope");
    let cose = sign_license(&claims, &market_key()).expect("signs");
    let payload = to_qr_payload(&cose);
    let (m, q) = (
        qr_version(&payload, EcLevel::M),
        qr_version(&payload, EcLevel::Q),
    );
    println!(
        "core business license: COSE {} bytes, QR payload {} characters, QR version {m} at level M, {q} at level Q",
        cose.len(),
        payload.len()
    );
    assert!(payload.len() < 600, "{} characters", payload.len());
}

#[test]
fn rfc_9285_test_vectors() {
    // RFC 9285 §4.3 (encoding) and §4.4 (decoding) examples.
    for (bytes, text) in [
        (&b"AB"[..], "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ] {
        assert_eq!(base45::encode(bytes), text);
        assert_eq!(base45_decode(text), Ok(bytes.to_vec()));
    }
}

#[test]
fn invalid_base45_is_refused() {
    for text in [
        "GGW",   // 16 + 16·45 + 32·45² = 65536: above two bytes
        "ZZ",    // 35 + 35·45 = 1610: above one byte
        "BB8A",  // a dangling single character
        "bb8",   // lowercase is not in the alphabet
        "BB8\n", // nor is a newline
    ] {
        assert!(
            matches!(base45_decode(text), Err(LicenseError::Base45 { .. })),
            "{text:?}"
        );
    }
}

#[test]
fn wrong_prefix_and_overlong_payloads_are_refused() {
    let payload = to_qr_payload(&signed_business_license());
    let dcc = payload.replacen("QL1:", "HC1:", 1);
    assert_eq!(
        from_qr_payload(&dcc),
        Err(LicenseError::MissingQrPrefix {
            expected: "QL1:",
            found: dcc.chars().take(8).collect(),
        })
    );
    assert!(matches!(
        from_qr_payload(&payload.to_lowercase()),
        Err(LicenseError::MissingQrPrefix { .. })
    ));
    let long = format!("QL1:{}", "0".repeat(MAX_QR_CHARS));
    assert_eq!(
        from_qr_payload(&long),
        Err(LicenseError::QrTooLong {
            len: MAX_QR_CHARS + 4,
            max: MAX_QR_CHARS
        })
    );
}

#[test]
fn decompression_bombs_are_refused() {
    // 1 MiB of zeros compresses to about a kilobyte: a valid QR payload that would inflate to
    // 64 times the limit.
    let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 1 << 20], 10);
    let payload = format!("QL1:{}", base45::encode(&bomb));
    assert!(payload.len() <= MAX_QR_CHARS, "{}", payload.len());
    assert_eq!(
        from_qr_payload(&payload),
        Err(LicenseError::InflatedTooLarge {
            max: MAX_LICENSE_BYTES
        })
    );
    // One byte over the limit is refused too; exactly the limit is not.
    let just_over = to_qr_payload(&vec![7u8; MAX_LICENSE_BYTES + 1]);
    assert!(matches!(
        from_qr_payload(&just_over),
        Err(LicenseError::InflatedTooLarge { .. })
    ));
    let at_limit = to_qr_payload(&vec![7u8; MAX_LICENSE_BYTES]);
    assert_eq!(
        from_qr_payload(&at_limit).map(|b| b.len()),
        Ok(MAX_LICENSE_BYTES)
    );
}

#[test]
fn damaged_zlib_streams_are_refused() {
    let cose = signed_business_license();
    let mut compressed = miniz_oxide::deflate::compress_to_vec_zlib(&cose, 9);
    let last = compressed.len() - 1;
    compressed[last] ^= 1; // the Adler-32 checksum
    assert!(matches!(
        from_qr_payload(&format!("QL1:{}", base45::encode(&compressed))),
        Err(LicenseError::Inflate { .. })
    ));
    // Raw deflate without the zlib header is not accepted either.
    let raw = miniz_oxide::deflate::compress_to_vec(&cose, 9);
    assert!(matches!(
        from_qr_payload(&format!("QL1:{}", base45::encode(&raw))),
        Err(LicenseError::Inflate { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(s in "QL1:[0-9A-Z $%*+./:-]{0,600}") {
        let _ = from_qr_payload(&s);
    }
}
