use coset::{CoseSign1Builder, Header, HeaderBuilder, TaggedCborSerializable as _, iana};
use ed25519_dalek::Signer as _;
use proptest::prelude::*;

use super::*;
use crate::license::fixtures::{
    business_license, housing_key, market_key, rogue_key, signed_business_license,
};

#[test]
fn sign_then_open_round_trips() {
    let bytes = signed_business_license();
    let license = open_license(&bytes).expect("a signed license opens");
    assert_eq!(license.key_id(), "market-regulation-2026");
    assert_eq!(license.unverified_claims(), &business_license());
    assert_eq!(license.license_hash(), license_hash(&bytes));
    assert_eq!(
        license.verify_signature(&market_key().verifying_key()),
        Ok(business_license())
    );
    // Ed25519 is deterministic: signing again gives the same document and hash.
    assert_eq!(signed_business_license(), bytes);
}

#[test]
fn message_has_the_documented_shape() {
    let bytes = signed_business_license();
    // Tag 18, array of 4, protected bstr of 26 bytes: {1: -8, 4: h'6d61726b…'}.
    assert_eq!(bytes[..3], [0xd2, 0x84, 0x58]);
    assert_eq!(bytes[4..8], [0xa2, 0x01, 0x27, 0x04]);
    let message = CoseSign1::from_tagged_slice(&bytes).expect("COSE parses");
    assert!(message.unprotected.is_empty());
    assert_eq!(message.signature.len(), 64);
}

#[test]
fn wrong_key_is_a_bad_signature() {
    let license = open_license(&signed_business_license()).expect("opens");
    for key in [housing_key(), rogue_key()] {
        assert_eq!(
            license.verify_signature(&key.verifying_key()),
            Err(LicenseError::BadSignature {
                key_id: "market-regulation-2026".into()
            })
        );
    }
}

fn build(protected: Header, unprotected: Header, payload: Option<Vec<u8>>) -> Vec<u8> {
    let mut builder = CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected);
    if let Some(payload) = payload {
        builder = builder.payload(payload);
    }
    builder
        .create_signature(&[], |tbs| market_key().sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .expect("encodes")
}

fn protected(kid: &str) -> HeaderBuilder {
    HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(kid.as_bytes().to_vec())
}

#[test]
fn shapes_other_than_the_documented_one_are_refused() {
    let payload = business_license().to_cbor().expect("valid claims");
    let kid = "market-regulation-2026";
    let cases = [
        (
            build(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES256)
                    .key_id(kid.into())
                    .build(),
                Header::default(),
                Some(payload.clone()),
            ),
            "UnsupportedAlgorithm",
        ),
        (
            build(
                HeaderBuilder::new().key_id(kid.into()).build(),
                Header::default(),
                Some(payload.clone()),
            ),
            "UnexpectedHeader",
        ),
        (
            build(
                protected(kid)
                    .content_type("application/cbor".into())
                    .build(),
                Header::default(),
                Some(payload.clone()),
            ),
            "UnexpectedHeader",
        ),
        (
            build(
                protected(kid).build(),
                HeaderBuilder::new().key_id(b"x".to_vec()).build(),
                Some(payload.clone()),
            ),
            "UnexpectedHeader",
        ),
        (
            build(
                protected("").build(),
                Header::default(),
                Some(payload.clone()),
            ),
            "UnexpectedHeader",
        ),
        (
            build(protected(kid).build(), Header::default(), None),
            "DetachedPayload",
        ),
        (
            build(
                protected("housing-2026").build(),
                Header::default(),
                Some(payload.clone()),
            ),
            "KeyIdMismatch",
        ),
        (
            build(protected(kid).build(), Header::default(), Some(vec![0xa0])),
            "Claims",
        ),
    ];
    for (bytes, expected) in cases {
        let err = open_license(&bytes).expect_err(expected);
        assert!(
            format!("{err:?}").starts_with(expected),
            "{expected}: {err:?}"
        );
    }
}

#[test]
fn untagged_truncated_padded_and_oversized_messages_are_refused() {
    let bytes = signed_business_license();
    assert!(matches!(
        open_license(&bytes[1..]),
        Err(LicenseError::NotCoseSign1 { .. })
    ));
    assert!(matches!(
        open_license(&bytes[..bytes.len() - 1]),
        Err(LicenseError::NotCoseSign1 { .. })
    ));
    let padded = [bytes.as_slice(), &[0x00]].concat();
    assert!(matches!(
        open_license(&padded),
        Err(LicenseError::NotCoseSign1 { .. })
    ));
    assert_eq!(
        open_license(&vec![0; MAX_LICENSE_BYTES + 1]),
        Err(LicenseError::TooLarge {
            len: MAX_LICENSE_BYTES + 1,
            max: MAX_LICENSE_BYTES
        })
    );
}

#[test]
fn a_long_form_length_is_not_canonical() {
    let bytes = signed_business_license();
    // The signature is `58 40 <64 bytes>` at the end; rewrite its length as `59 00 40`.
    let at = bytes.len() - 66;
    assert_eq!(bytes[at..at + 2], [0x58, 0x40]);
    let long = [&bytes[..at], &[0x59, 0x00, 0x40], &bytes[at + 2..]].concat();
    assert_eq!(
        open_license(&long),
        Err(LicenseError::NotCanonical { part: "message" })
    );
}

#[test]
fn oversized_claims_cannot_be_signed() {
    let mut claims = business_license();
    claims.fields = (0..32)
        .map(|i| (format!("field-{i}"), "长".repeat(300)))
        .collect();
    assert!(matches!(
        sign_license(&claims, &market_key()),
        Err(LicenseError::TooLarge { .. })
    ));
}

#[test]
fn every_single_byte_change_is_refused_or_fails_verification() {
    // Exhaustive over positions, with a low and a full flip; verify/tests.rs adds a property test
    // over positions and flips at the verdict level.
    let bytes = signed_business_license();
    let key = market_key().verifying_key();
    for i in 0..bytes.len() {
        for flip in [0x01, 0xff] {
            let mut changed = bytes.clone();
            changed[i] ^= flip;
            let accepted = open_license(&changed).and_then(|l| l.verify_signature(&key));
            assert!(accepted.is_err(), "byte {i} ^ {flip:#04x} was accepted");
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = open_license(&bytes);
    }
}

/// A corpus of hostile inputs: each must give an error, never a panic, an abort or a large
/// allocation.
#[test]
fn malformed_corpus_gives_errors_not_panics() {
    let valid = signed_business_license();
    let mut corpus: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xd2],
        vec![0xd2, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // array of 2⁶⁴−1
        vec![
            0xd2, 0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // huge bstr
        vec![0xd2, 0x84, 0x5f, 0x41, 0x00], // unterminated indefinite bstr
        vec![0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40], // nil payload, empty signature
        vec![0xd2, 0x84, 0x41, 0xa0, 0xa0, 0x40, 0x40], // empty everything
        vec![0xd2, 0x84, 0x43, 0xa1, 0x01, 0x27, 0xa0, 0x41, 0xa0, 0x40], // no kid
        [vec![0xd2], vec![0x81; 10_000]].concat(), // deep nesting
        vec![0xd8, 0x62, 0x84, 0x40, 0xa0, 0x40, 0x40], // COSE_Sign (tag 98), not Sign1
    ];
    corpus.extend((0..valid.len()).map(|n| valid[..n].to_vec()));
    for bytes in corpus {
        assert!(open_license(&bytes).is_err(), "{}", hex::encode(&bytes));
    }
}
