//! Published vectors: the example body of c2sp.org/tlog-checkpoint, a real sum.golang.org
//! checkpoint with Go's pinned key (from github.com/transparency-dev/formats `log/note_test.go`),
//! and that file's key pairs for k-of-n signing.

use super::*;
use crate::test_vectors as tv;

const LOG_SKEY: &str = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ";
const KNOWN1_SKEY: &str = "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci";
const KNOWN2_SKEY: &str =
    "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+";
const UNKNOWN_SKEY: &str =
    "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU";

fn signer(skey: &str) -> NoteSigner {
    NoteSigner::from_skey(skey).expect("published key parses")
}

fn sample() -> Checkpoint {
    Checkpoint::new("qianlian.example/notary", 8, tv::root(8))
}

#[test]
fn body_round_trips() {
    let cp = sample();
    let body = cp.to_body();
    assert_eq!(
        body,
        "qianlian.example/notary\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    );
    assert_eq!(Checkpoint::parse_body(&body), Ok(cp.clone()));

    let mut with_ext = cp;
    with_ext.extensions = vec!["policy v12".into(), "x".into()];
    assert_eq!(Checkpoint::parse_body(&with_ext.to_body()), Ok(with_ext));
}

#[test]
fn c2sp_example_body_parses() {
    let cp = Checkpoint::parse_body(
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    )
    .expect("the spec's example parses");
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(hex::encode(&cp.root[..4]), "0ac5186a");
}

#[test]
fn real_sum_golang_org_checkpoint_opens_with_go_pinned_key() {
    let key = NoteVerifier::from_vkey(
        "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
    )
    .expect("Go's pinned sumdb key parses");
    let note = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n\
                \u{2014} sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n";
    let verified = open_checkpoint(note, std::slice::from_ref(&key))
        .and_then(|v| v.require_origin("go.sum database tree"))
        .expect("the real checkpoint verifies");
    assert_eq!(verified.checkpoint.size, 6476701);
    assert_eq!(verified.signers, ["sum.golang.org"]);
    assert_eq!(
        open_checkpoint(note, std::slice::from_ref(&key))
            .and_then(|v| v.require_origin("qianlian")),
        Err(CheckpointError::WrongOrigin {
            expected: "qianlian".into(),
            got: "go.sum database tree".into()
        })
    );
    // One digit of the size changed: the signature no longer covers the text.
    let tampered = note.replace("6476701", "6476702");
    assert!(matches!(
        open_checkpoint(&tampered, &[key]),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));
}

#[test]
fn sign_then_open_round_trips_and_tampering_fails() {
    let log = signer(LOG_SKEY);
    let note = sample().sign(&log).expect("valid checkpoint");
    let verified = open_checkpoint(&note, &[log.verifier()]).expect("own signature verifies");
    assert_eq!(verified.checkpoint, sample());
    assert_eq!(verified.signers, ["Log"]);

    let tampered_body = note.replace("\n8\n", "\n9\n");
    assert!(matches!(
        open_checkpoint(&tampered_body, &[log.verifier()]),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));
    // Flip one character inside the Ed25519 signature (past the key id's base64).
    let at = note.rfind(' ').expect("signature line") + 20;
    let mut bytes = note.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered_sig = String::from_utf8(bytes).expect("ASCII edit");
    assert!(matches!(
        open_checkpoint(&tampered_sig, &[log.verifier()]),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));
    // Nobody trusted signed it.
    assert!(matches!(
        open_checkpoint(&note, &[signer(KNOWN1_SKEY).verifier()]),
        Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
    ));
}

#[test]
fn k_of_n_department_cosignatures() {
    let (log, k1, k2, unknown) = (
        signer(LOG_SKEY),
        signer(KNOWN1_SKEY),
        signer(KNOWN2_SKEY),
        signer(UNKNOWN_SKEY),
    );
    let trusted = [log.verifier(), k1.verifier(), k2.verifier()];

    let mut note = SignedNote::parse(&sample().sign(&log).expect("valid")).expect("parses");
    for cosigner in [&unknown, &k1] {
        note.add_signature(cosigner).expect("room");
    }
    let two = open_checkpoint(&note.to_string(), &trusted).expect("verifies");
    assert_eq!(two.signers, ["Log", "Known"]);
    assert_eq!(
        two.require_signers(3),
        Err(CheckpointError::Note(NoteError::NotEnoughSigners {
            required: 3,
            signers: vec!["Log".into(), "Known".into()]
        }))
    );
    note.add_signature(&k2).expect("room");
    let three = open_checkpoint(&note.to_string(), &trusted)
        .and_then(|v| v.require_signers(3))
        .expect("three trusted departments signed");
    assert_eq!(three.signers, ["Log", "Known", "KnownAgain"]);
}

#[test]
fn a_signed_non_checkpoint_is_refused_only_after_verification() {
    let log = signer(LOG_SKEY);
    let text = "if this is a valid checkpoint then I'll eat my hat\n";
    let note = format!("{text}\n{}", log.sign(text).expect("valid").to_line());
    assert_eq!(
        open_checkpoint(&note, &[log.verifier()]),
        Err(CheckpointError::TooFewLines { lines: 1 })
    );
    // Without a trusted signature the body is not even looked at.
    assert!(matches!(
        open_checkpoint(&note, &[]),
        Err(CheckpointError::Note(_))
    ));
}

#[test]
fn malformed_bodies_name_the_broken_rule() {
    let root = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=";
    let cases: [(String, CheckpointError); 9] = [
        (
            format!("o\n8\n{root}"),
            CheckpointError::MissingFinalNewline,
        ),
        ("o\n8\n".into(), CheckpointError::TooFewLines { lines: 2 }),
        (format!("\n8\n{root}\n"), CheckpointError::InvalidOrigin),
        (
            format!("o\n08\n{root}\n"),
            CheckpointError::InvalidSize { line: "08".into() },
        ),
        (
            format!("o\n+8\n{root}\n"),
            CheckpointError::InvalidSize { line: "+8".into() },
        ),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            CheckpointError::InvalidSize {
                line: "18446744073709551616".into(),
            },
        ),
        (
            "o\n8\nAAAA\n".into(),
            CheckpointError::InvalidRootHash {
                line: "AAAA".into(),
            },
        ),
        (
            format!("o\n8\n{}\n", root.trim_end_matches('=')),
            CheckpointError::InvalidRootHash {
                line: root.trim_end_matches('=').into(),
            },
        ),
        (
            format!("o\n8\n{root}\next\n\n"),
            CheckpointError::InvalidExtensionLine { number: 5 },
        ),
    ];
    for (body, err) in cases {
        assert_eq!(Checkpoint::parse_body(&body), Err(err), "{body:?}");
    }
    assert_eq!(
        Checkpoint::parse_body(&format!("o\n0\n{root}\n")).map(|c| c.size),
        Ok(0)
    );
    assert_eq!(
        CheckpointError::InvalidSize { line: "08".into() }.to_string(),
        "checkpoint tree size \"08\" is not a decimal number without sign or leading zeros"
    );
}

#[test]
fn unrepresentable_checkpoints_are_not_signed() {
    let log = signer(LOG_SKEY);
    let mut cp = sample();
    cp.origin = "two\nlines".into();
    assert_eq!(cp.sign(&log), Err(CheckpointError::InvalidOrigin));
    let mut cp = sample();
    cp.extensions = vec![String::new()];
    assert_eq!(
        cp.sign(&log),
        Err(CheckpointError::InvalidExtensionLine { number: 4 })
    );
}
