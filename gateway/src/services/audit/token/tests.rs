use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::domain::identifier::ResidentId;

struct Idp {
    encoding: EncodingKey,
    _dir: tempfile::TempDir,
    verifier: TokenVerifier,
}

fn idp() -> Idp {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let public = dir.path().join("idp.pub.pem");
    std::fs::write(&public, key.public_key_pem()).expect("write");
    let settings = AuditSettings {
        token_issuer: "https://id.gov.example".into(),
        token_audience: "qianlian".into(),
        token_keys: vec![public],
        token_subject_claim: "sub".into(),
    };
    Idp {
        encoding: EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).expect("encoding key"),
        _dir: dir,
        verifier: TokenVerifier::from_settings(&settings)
            .expect("load")
            .expect("configured"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn sign(idp: &Idp, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &idp.encoding).expect("sign")
}

fn citizen() -> String {
    ResidentId::generate(3).as_str().to_owned()
}

#[test]
fn a_valid_token_names_its_subject() {
    let idp = idp();
    let id = citizen();
    let token = sign(
        &idp,
        json!({"iss": "https://id.gov.example", "aud": "qianlian", "exp": now() + 600,
               "sub": id.to_lowercase()}),
    );
    assert_eq!(idp.verifier.subject(&token).expect("accepted"), id);
}

#[test]
fn expired_foreign_and_misaddressed_tokens_are_refused_with_the_reason() {
    let idp = idp();
    let other = self::idp();
    let good = json!({"iss": "https://id.gov.example", "aud": "qianlian", "exp": now() + 600, "sub": citizen()});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let cases = [
        (sign(&idp, with("exp", json!(now() - 3600))), "expired"),
        (sign(&other, good.clone()), "signature does not verify"),
        (
            sign(&idp, with("iss", json!("https://evil.example"))),
            "not issued by https://id.gov.example",
        ),
        (
            sign(&idp, with("aud", json!("someone-else"))),
            "not meant for qianlian",
        ),
        (
            sign(&idp, with("nbf", json!(now() + 3600))),
            "not valid yet",
        ),
        ("not-a-token".to_owned(), "not a JWT"),
    ];
    for (token, reason) in cases {
        let e = idp.verifier.subject(&token).expect_err("refused");
        assert!(e.to_string().contains(reason), "{e} lacks {reason}");
    }
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    let e = idp
        .verifier
        .subject(&sign(&idp, no_exp))
        .expect_err("refused");
    assert!(e.to_string().contains("exp"), "{e}");
}

#[test]
fn a_token_signed_with_a_shared_secret_is_refused() {
    let idp = idp();
    // The classic confusion: HS256 keyed with the public key text.
    let pem = std::fs::read(idp._dir.path().join("idp.pub.pem")).expect("pem");
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "https://id.gov.example", "aud": "qianlian", "exp": now() + 600, "sub": citizen()}),
        &EncodingKey::from_secret(&pem),
    )
    .expect("sign");
    let e = idp.verifier.subject(&token).expect_err("refused");
    assert!(e.to_string().contains("algorithm"), "{e}");
}

#[test]
fn the_subject_claim_must_be_an_identifier() {
    let idp = idp();
    let base = json!({"iss": "https://id.gov.example", "aud": "qianlian", "exp": now() + 600});
    let mut missing = base.clone();
    missing["name"] = json!("张三");
    assert!(matches!(
        idp.verifier.subject(&sign(&idp, missing)),
        Err(TokenError::NoSubject { .. })
    ));
    let mut bad = base;
    bad["sub"] = json!("520102199003071234");
    let e = idp.verifier.subject(&sign(&idp, bad)).expect_err("refused");
    assert!(matches!(e, TokenError::BadSubject { .. }), "{e}");
}

#[test]
fn bearer_headers() {
    assert_eq!(bearer(Some("Bearer abc")).expect("token"), "abc");
    assert_eq!(bearer(Some("bearer  abc ")).expect("token"), "abc");
    for h in [None, Some("Basic abc"), Some("Bearer "), Some("abc")] {
        assert!(matches!(bearer(h), Err(TokenError::Missing)), "{h:?}");
    }
}
