//! Frozen test vectors: the exact bytes of a fixed license signed with a fixed key. If one of
//! these tests fails, the format changed, and every license already issued would stop verifying
//! or change its hash: bump the claims version or the QR prefix instead of editing the vector.
//! The signature was cross-checked once with an independent Ed25519 implementation (Python's
//! `cryptography`) over a hand-built RFC 9052 `Sig_structure`, so the vector is not only
//! self-consistent.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;

use super::*;

/// RFC 8032 §7.1 TEST 1 secret key: a published seed, so anyone can reproduce the vector.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn frozen_claims() -> LicenseClaims {
    LicenseClaims {
        license_type: LicenseType::BusinessLicense,
        number: "52011500012345".into(),
        holder_name: "贵州黔链数据服务有限公司".into(),
        holder_id: "91520115MA6DKXQ43E".into(),
        department: "market-regulation".into(),
        issuer_key_id: "market-regulation-2026".into(),
        issued_at: 1_768_435_200,
        valid_from: 1_768_435_200,
        valid_until: Some(2_083_968_000),
        fields: BTreeMap::from([
            ("legal-representative".to_owned(), "张明".to_owned()),
            ("registered-capital".to_owned(), "500万元人民币".to_owned()),
        ]),
    }
}

fn key() -> SigningKey {
    let seed: [u8; 32] = hex::decode(SEED)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    SigningKey::from_bytes(&seed)
}

const FROZEN_COSE: &str = concat!(
    // tag 18, array(4), protected bstr(27): {1: -8, 4: "market-regulation-2026"}
    "d284581ba2012704566d61726b65742d726567756c6174696f6e2d32303236",
    // unprotected {}, payload bstr(209): the claims map
    "a058d1",
    // claims: map(11) with keys 1..=11
    "ab01010201036e3532303131353030303132333435047824e8b4b5e5b79ee9bb94e993bee695b0e6",
    "8daee69c8de58aa1e69c89e99990e585ace58fb8057239313532303131354d4136444b5851343345",
    "06716d61726b65742d726567756c6174696f6e07766d61726b65742d726567756c6174696f6e2d32",
    "303236081a69682e00091a69682e000a1a7c36d4000ba272726567697374657265642d6361706974",
    "616c72353030e4b887e58583e4babae6b091e5b881746c6567616c2d726570726573656e74617469",
    "766566e5bca0e6988e",
    // signature bstr(64)
    "584013b947d5c2cfad829159206eff7c0ae1ebe51c93912319b03a5fe76442ca42e14a71e3c9cdb7",
    "82b9f1874154f1e77b5091c6ce3082a461eb907d02d543b54401",
);
const FROZEN_HASH: &str = "119ab0367585c50c4118acc10d6a02930fc14a31ceba3a3db57258058d73d6dc";

#[test]
fn frozen_license_bytes_do_not_drift() {
    let bytes = sign_license(&frozen_claims(), &key()).expect("signs");
    assert_eq!(hex::encode(&bytes), FROZEN_COSE);
    assert_eq!(hex::encode(license_hash(&bytes)), FROZEN_HASH);
}

#[test]
fn frozen_license_opens_and_verifies_with_the_rfc_8032_public_key() {
    let bytes = hex::decode(FROZEN_COSE).expect("hex");
    let license = open_license(&bytes).expect("the frozen license opens");
    // RFC 8032 §7.1 TEST 1 public key.
    let public: [u8; 32] =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .expect("hex")
            .try_into()
            .expect("32 bytes");
    let public = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("valid key");
    assert_eq!(public, key().verifying_key());
    assert_eq!(license.verify_signature(&public), Ok(frozen_claims()));
    assert_eq!(from_qr_payload(&to_qr_payload(&bytes)), Ok(bytes));
}
