//! Interoperability vectors come from Go's reference implementation, golang.org/x/mod
//! `sumdb/note/note_test.go` (keys of "PeterNeumann" and "EnochRoot", and their signatures of the
//! text below), and from github.com/transparency-dev/formats `log/note_test.go` (key pairs whose
//! base64 contains '+').

use super::*;

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> NoteVerifier {
    NoteVerifier::from_vkey(PETER_VKEY).expect("Go's test key parses")
}

fn enoch() -> NoteVerifier {
    NoteVerifier::from_vkey(ENOCH_VKEY).expect("Go's test key parses")
}

#[test]
fn go_verifier_keys_parse_and_print_back() {
    let v = peter();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(v.to_vkey(), PETER_VKEY);
    assert_eq!(v.to_string().parse::<NoteVerifier>(), Ok(v));
    assert_eq!(enoch().to_vkey(), ENOCH_VKEY);
}

#[test]
fn every_mangled_verifier_key_is_refused() {
    let good = PETER_VKEY.as_bytes();
    for i in 0..=good.len() {
        for j in i + 1..=good.len() {
            if (i, j) != (0, good.len()) {
                let part = &PETER_VKEY[i..j];
                assert!(NoteVerifier::from_vkey(part).is_err(), "{part:?}");
            }
        }
    }
    for i in 0..good.len() {
        let mut bytes = good.to_vec();
        bytes[i] += 1;
        let mangled = String::from_utf8(bytes).expect("ASCII stays UTF-8");
        assert!(NoteVerifier::from_vkey(&mangled).is_err(), "{mangled:?}");
    }
    // A key of the wrong length and a key of an unknown type, each with a matching key id.
    assert!(matches!(
        NoteVerifier::from_vkey(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(NoteError::MalformedVerifierKey { .. })
    ));
    assert_eq!(
        NoteVerifier::from_vkey(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(NoteError::UnsupportedAlgorithm { alg: 0x65 })
    );
}

#[test]
fn go_signer_keys_parse_print_back_and_match_their_verifiers() {
    let s = NoteSigner::from_skey(PETER_SKEY).expect("Go's test key parses");
    assert_eq!(s.to_skey(), PETER_SKEY);
    assert_eq!(s.verifier(), peter());
    // transparency-dev/formats log/note_test.go: base64 parts that contain '+'.
    for (vkey, skey) in [
        (
            "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
            "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        ),
        (
            "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
            "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        ),
    ] {
        let signer = NoteSigner::from_skey(skey).expect("published key parses");
        assert_eq!(signer.verifier().to_vkey(), vkey);
    }
}

#[test]
fn every_mangled_signer_key_is_refused() {
    let good = PETER_SKEY.as_bytes();
    for i in 0..=good.len() {
        for j in i + 1..=good.len() {
            if (i, j) != (0, good.len()) {
                assert!(
                    NoteSigner::from_skey(&PETER_SKEY[i..j]).is_err(),
                    "{i}..{j}"
                );
            }
        }
    }
    for i in 0..good.len() {
        let mut bytes = good.to_vec();
        bytes[i] += 1;
        let mangled = String::from_utf8(bytes).expect("ASCII stays UTF-8");
        let err = NoteSigner::from_skey(&mangled).expect_err("mangled key refused");
        // The secret never appears in the message.
        assert!(!err.to_string().contains("AYEKFALV"), "{err}");
    }
}

#[test]
fn signing_reproduces_go_signature_byte_for_byte() {
    let s = NoteSigner::from_skey(PETER_SKEY).expect("Go's test key parses");
    assert_eq!(
        s.sign(TEXT).map(|sig| sig.to_line()),
        Ok(PETER_SIG.to_owned())
    );

    let seed: [u8; 32] = BASE64
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .expect("b64")[1..]
        .try_into()
        .expect("32 bytes");
    let line = sign_note(TEXT, "PeterNeumann", &SigningKey::from_bytes(&seed));
    assert_eq!(line, Ok(PETER_SIG.to_owned()));

    let mut note = SignedNote::new(TEXT).expect("valid text");
    note.add_signature(&s).expect("room for a signature");
    assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}"));
    // Signing again by the same key replaces, not duplicates.
    note.add_signature(&s).expect("room for a signature");
    assert_eq!(note.signatures().len(), 1);
}

#[test]
fn go_signed_note_opens_with_each_trusted_key() {
    let note = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let opened = open_note(&note, &[peter()]).expect("Peter's signature verifies");
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.signers, ["PeterNeumann"]);

    let opened = open_note(&note, &[enoch(), peter()]).expect("both verify");
    assert_eq!(opened.signers, ["PeterNeumann", "EnochRoot"]);
    assert!(opened.clone().require_signers(2).is_ok());
    assert_eq!(
        opened.require_signers(3),
        Err(NoteError::NotEnoughSigners {
            required: 3,
            signers: vec!["PeterNeumann".into(), "EnochRoot".into()]
        })
    );

    assert_eq!(
        open_note(&note, &[]),
        Err(NoteError::NoTrustedSignature {
            untrusted: vec!["PeterNeumann".into(), "EnochRoot".into()]
        })
    );
    // The same trusted key listed twice is not ambiguous; the same signature twice counts once.
    let twice = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}");
    assert_eq!(
        open_note(&twice, &[peter(), peter()]).map(|o| o.signers),
        Ok(vec!["PeterNeumann".to_owned()])
    );
}

#[test]
fn a_bad_signature_by_a_trusted_key_rejects_the_whole_note() {
    let forged = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let bad = Err(NoteError::BadSignature {
        name: "PeterNeumann".into(),
        key_id: 0xc74f20a3,
    });
    assert_eq!(open_note(&forged, &[peter()]), bad);
    // Even next to a good signature by another trusted key.
    let mixed = format!(
        "{TEXT}\n{ENOCH_SIG}{}ABCD{}",
        &PETER_SIG[..60],
        &PETER_SIG[60..]
    );
    assert_eq!(open_note(&mixed, &[peter(), enoch()]), bad);
    // An altered text.
    let altered = format!("{}\n{PETER_SIG}", TEXT.replace("don't", "do"));
    assert_eq!(open_note(&altered, &[peter()]), bad);
    // But a bad signature by an unknown key is ignored.
    assert!(open_note(&mixed, &[enoch()]).is_ok());
}

#[test]
fn malformed_notes_are_refused() {
    let bad = [
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!(
            "{TEXT}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
        format!("{TEXT}\n\u{2014} PeterNeumann not*base64\n"),
    ];
    for note in bad {
        assert!(
            matches!(
                open_note(&note, &[peter()]),
                Err(NoteError::Malformed { .. })
            ),
            "{note:?}"
        );
    }
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(
        open_note(&many, &[peter()]),
        Err(NoteError::TooManySignatures {
            count: MAX_SIGNATURES + 1
        })
    );
    let enough = format!("{TEXT}\n{}", PETER_SIG.repeat(16));
    assert!(open_note(&enough, &[peter()]).is_ok());
}

#[test]
fn ambiguous_trusted_keys_are_refused() {
    let mut impostor = enoch();
    impostor.name = "PeterNeumann".into();
    impostor.key_id = 0xc74f20a3;
    let note = format!("{TEXT}\n{PETER_SIG}");
    assert_eq!(
        open_note(&note, &[peter(), impostor]),
        Err(NoteError::AmbiguousKey {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );
}

#[test]
fn names_and_texts_are_checked_before_signing() {
    let s = NoteSigner::from_seed("dept-a", &[7; 32]).expect("valid name");
    for name in ["", "a+b", "a b", "a\u{3000}b"] {
        assert_eq!(
            NoteSigner::from_seed(name, &[7; 32]).map(|_| ()),
            Err(NoteError::InvalidKeyName { name: name.into() })
        );
    }
    assert!(matches!(s.sign(""), Err(NoteError::InvalidText { .. })));
    assert!(matches!(
        s.sign("no newline"),
        Err(NoteError::InvalidText { .. })
    ));
    assert!(matches!(
        s.sign("tab\there\n"),
        Err(NoteError::InvalidText { .. })
    ));
    // Notes may contain blank lines: the last one separates the signatures.
    let text = "first\n\nsecond\n";
    let note = format!("{text}\n{}", s.sign(text).expect("valid").to_line());
    assert_eq!(
        open_note(&note, &[s.verifier()]).map(|o| o.text),
        Ok(text.to_owned())
    );
}

#[test]
fn debug_output_hides_the_signing_key() {
    let s = NoteSigner::from_skey(PETER_SKEY).expect("Go's test key parses");
    let debug = format!("{s:?}");
    assert!(
        debug.contains("PeterNeumann") && debug.contains("c74f20a3"),
        "{debug}"
    );
    assert!(debug.contains("<secret>"), "{debug}");
}
