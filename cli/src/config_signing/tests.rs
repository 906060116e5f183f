//! The signed-change file between operators: what it carries and what it refuses.

use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::record::{
    AuthorizedRecord, Caller, ConfigChange, ConfigKind, ConfigRecord, Record,
};

use super::*;

fn change() -> AuthorizedRecord {
    let record = Record::Config(ConfigRecord {
        request_id: "r".into(),
        time_unix_ms: 1,
        caller: Caller {
            department: "ops-a".into(),
            role: "operator".into(),
            cert_fingerprint: "00".repeat(32),
        },
        change: ConfigChange::Directory {
            toml: "[[department]]\nid = \"a\"\nname = \"A\"\n".into(),
        },
    });
    let mut a = AuthorizedRecord::new(record, 7);
    a.sign("ops-a", "ops-a:1", &SigningKey::from_bytes(&[1; 32]));
    a
}

#[test]
fn a_signed_change_goes_through_a_file_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("change.json");
    write_file(&path, &change()).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.contains("\"signed_by\": [\n    \"ops-a\"\n  ]"),
        "{text}"
    );
    assert!(text.contains("\"replaces\": 7"), "{text}");
    let back = read_file(&path, ConfigKind::Directory).expect("read back");
    assert_eq!(back, change());
    // The second operator signs on top; both signatures verify.
    let mut both = back;
    both.sign("ops-b", "ops-b:2", &SigningKey::from_bytes(&[2; 32]));
    assert_eq!(signed_by(&both), ["ops-a", "ops-b"]);
    assert_eq!(both.verify_signatures(), Ok(()));
}

#[test]
fn an_edited_file_or_another_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("change.json");
    write_file(&path, &change()).expect("write");
    let err = read_file(&path, ConfigKind::Policy).expect_err("a directory change");
    assert!(err.to_string().contains("not a policy change"), "{err}");

    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("\"replaces\": 7", "\"replaces\": 8")).expect("write");
    let err = read_file(&path, ConfigKind::Directory).expect_err("edited");
    assert!(err.to_string().contains("the file was edited"), "{err}");

    // The signed bytes themselves altered: the signature no longer verifies.
    let mut file: SignedChangeFile = serde_json::from_str(&text).expect("json");
    let mut bytes = hex::decode(&file.record).expect("hex");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    file.record = hex::encode(bytes);
    std::fs::write(&path, serde_json::to_string(&file).expect("json")).expect("write");
    assert!(read_file(&path, ConfigKind::Directory).is_err());
}
