use super::*;
use crate::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use crate::license::fixtures::{ORIGIN, nodes};

fn entry(byte: u8, state: LicenseState, reason: &str) -> StatusEntry {
    StatusEntry {
        license_hash: [byte; 32],
        state,
        since: 1_767_139_200,
        reason: reason.into(),
    }
}

fn sample() -> StatusList {
    StatusList::new(
        ORIGIN,
        1234,
        [9; 32],
        1_767_225_600,
        vec![
            entry(0x9e, LicenseState::Suspended, "court-order"),
            entry(0x0c, LicenseState::Revoked, "fraud"),
        ],
    )
}

#[test]
fn body_has_the_documented_text_and_round_trips() {
    let list = sample();
    let body = list.to_body();
    let expected = format!(
        "qianlian.test/notary\nqianlian license-status v1\ntree 1234 CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\ntime 1767225600\n{} revoked 1767139200 fraud\n{} suspended 1767139200 court-order\n",
        "0c".repeat(32),
        "9e".repeat(32)
    );
    assert_eq!(body, expected);
    assert_eq!(StatusList::parse_body(&body), Ok(list.clone()));

    let empty = StatusList::new(ORIGIN, 0, [0; 32], 0, vec![]);
    assert_eq!(StatusList::parse_body(&empty.to_body()), Ok(empty));
}

#[test]
fn lookup_finds_listed_hashes_only() {
    let list = sample();
    assert_eq!(
        list.lookup(&[0x0c; 32]).map(|e| e.state),
        Some(LicenseState::Revoked)
    );
    assert_eq!(
        list.lookup(&[0x9e; 32]).map(|e| e.state),
        Some(LicenseState::Suspended)
    );
    assert_eq!(list.lookup(&[0x00; 32]), None);
}

#[test]
fn k_of_n_signing_and_opening() {
    let [a, b, c] = nodes();
    let verifiers = [a.verifier(), b.verifier(), c.verifier()];
    let mut note = SignedNote::parse(&sample().sign(&a).expect("signs")).expect("parses");
    note.add_signature(&b).expect("cosigns");
    let note = note.to_string();

    let opened = open_status_list(&note, &verifiers)
        .and_then(|s| s.require_origin(ORIGIN))
        .and_then(|s| s.require_signers(2))
        .expect("two of three nodes signed");
    assert_eq!(opened.list, sample());
    assert_eq!(opened.signers, ["node-a", "node-b"]);

    assert!(matches!(
        open_status_list(&note, &verifiers).and_then(|s| s.require_signers(3)),
        Err(StatusListError::Note(NoteError::NotEnoughSigners { .. }))
    ));
    assert!(matches!(
        open_status_list(&note, &verifiers).and_then(|s| s.require_origin("other.example/log")),
        Err(StatusListError::WrongOrigin { .. })
    ));
    // Signed only by keys the verifier does not trust.
    assert!(matches!(
        open_status_list(&note, std::slice::from_ref(&c.verifier())),
        Err(StatusListError::Note(NoteError::NoTrustedSignature { .. }))
    ));
}

#[test]
fn a_tampered_list_is_refused() {
    let [a, b, _] = nodes();
    let verifiers = [a.verifier(), b.verifier()];
    let mut note = SignedNote::parse(&sample().sign(&a).expect("signs")).expect("parses");
    note.add_signature(&b).expect("cosigns");
    let note = note.to_string();
    let revoked_line = format!("{} revoked 1767139200 fraud\n", "0c".repeat(32));
    for tampered in [
        note.replace(" revoked ", " suspended "),
        note.replace(&revoked_line, ""),
        note.replace("time 1767225600", "time 1767225601"),
        note.replace("tree 1234", "tree 1235"),
    ] {
        assert_ne!(tampered, note);
        assert!(
            matches!(
                open_status_list(&tampered, &verifiers),
                Err(StatusListError::Note(NoteError::BadSignature { .. }))
            ),
            "{tampered}"
        );
    }
}

#[test]
fn checkpoints_and_status_lists_cannot_pass_for_each_other() {
    let [a, ..] = nodes();
    let verifiers = [a.verifier()];
    let checkpoint = Checkpoint::new(ORIGIN, 1234, [9; 32])
        .sign(&a)
        .expect("signs");
    assert!(matches!(
        open_status_list(&checkpoint, &verifiers),
        Err(StatusListError::NotAStatusList { .. })
    ));
    let list = sample().sign(&a).expect("signs");
    assert!(matches!(
        open_checkpoint(&list, &verifiers),
        Err(CheckpointError::InvalidSize { .. })
    ));
}

#[test]
fn malformed_bodies_are_refused_with_the_line_named() {
    let good = sample().to_body();
    let hash_c = "0c".repeat(32);
    let hash_9 = "9e".repeat(32);
    let cases: Vec<(String, StatusListError)> = vec![
        (
            good.trim_end().to_owned(),
            StatusListError::MissingFinalNewline,
        ),
        (
            "qianlian.test/notary\nqianlian license-status v1\n".into(),
            StatusListError::TooFewLines { lines: 2 },
        ),
        (
            good.replace("license-status v1", "license-status v2"),
            StatusListError::NotAStatusList {
                found: "qianlian license-status v2".into(),
            },
        ),
        (
            good.replace("tree 1234", "tree 01234"),
            StatusListError::InvalidLine {
                number: 3,
                reason: "expected `tree <decimal size> <base64 root hash>`",
            },
        ),
        (
            good.replace("time 1767225600", "time -1"),
            StatusListError::InvalidLine {
                number: 4,
                reason: "expected `time <decimal unix seconds>`",
            },
        ),
        (
            good.replace(&hash_c, &hash_c.to_uppercase()),
            StatusListError::InvalidLine {
                number: 5,
                reason: "the license hash must be 64 lowercase hex digits",
            },
        ),
        (
            good.replace(" revoked ", " cancelled "),
            StatusListError::InvalidLine {
                number: 5,
                reason: "the state must be `revoked` or `suspended`",
            },
        ),
        (
            good.replace(" fraud", " Fraud"),
            StatusListError::InvalidLine {
                number: 5,
                reason: "the reason code must be 1 to 32 of a-z, 0-9 and -",
            },
        ),
        (
            good.replace(" fraud", " fraud extra"),
            StatusListError::InvalidLine {
                number: 5,
                reason: "expected `<hex hash> <revoked|suspended> <unix seconds> <reason>`",
            },
        ),
        (
            good.replace(&hash_9, &hash_c),
            StatusListError::Unsorted { number: 6 },
        ),
        (
            good.replace(&hash_9, &"00".repeat(32)),
            StatusListError::Unsorted { number: 6 },
        ),
        (
            good.replacen("qianlian.test/notary", "", 1),
            StatusListError::InvalidOrigin,
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(StatusList::parse_body(&body), Err(expected), "{body}");
    }
}

#[test]
fn invalid_lists_cannot_be_signed() {
    let [a, ..] = nodes();
    let mut list = sample();
    list.entries[0].reason = "has space".into();
    assert!(matches!(
        list.sign(&a),
        Err(StatusListError::InvalidLine { number: 5, .. })
    ));
    let mut list = sample();
    list.entries.push(list.entries[0].clone());
    assert!(matches!(
        list.sign(&a),
        Err(StatusListError::Unsorted { .. })
    ));
}
