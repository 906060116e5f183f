use std::collections::BTreeSet;

use super::*;
use crate::record::{
    AccessRecord, Action, Caller, ConfigChange, ConfigRecord, Decision, LicenseStatusChange,
    LicenseStatusRecord,
};

fn node(name: &str, department: Option<&str>) -> CallingNode {
    CallingNode {
        name: name.into(),
        member_id: CallingNode::member_id_of(name),
        department: department.map(str::to_owned),
    }
}

fn caller(department: &str) -> Caller {
    Caller {
        department: department.into(),
        role: "department".into(),
        cert_fingerprint: String::new(),
    }
}

fn access(caller_dept: &str, owner: &str) -> Record {
    Record::Access(AccessRecord {
        request_id: "r".into(),
        time_unix_ms: 1,
        caller: caller(caller_dept),
        owner: owner.into(),
        dataset: "d".into(),
        key: "k".into(),
        action: Action::Read,
        purpose: "p".into(),
        decision: Decision::Allow,
        policy_version: "1".into(),
        rule: String::new(),
        request_digest: [0; 32],
        response_digest: None,
    })
}

fn status(reason: &str) -> Record {
    Record::LicenseStatus(LicenseStatusRecord {
        request_id: "r".into(),
        time_unix_ms: 1,
        caller: caller("housing"),
        license_hash: [7; 32],
        change: LicenseStatusChange::Revoked,
        reason: reason.into(),
    })
}

#[test]
fn member_ids_are_read_from_node_names() {
    assert_eq!(CallingNode::member_id_of("node-3"), Some(3));
    assert_eq!(CallingNode::member_id_of("node-12"), Some(12));
    for name in [
        "node-0", "node-03", "node-", "node-1a", "housing", "xnode-1",
    ] {
        assert_eq!(CallingNode::member_id_of(name), None, "{name}");
    }
}

#[test]
fn only_current_members_call_and_only_in_their_own_name() {
    let members = BTreeSet::from([1, 2, 3]);
    let n2 = node("node-2", None);
    assert_eq!(authorize_call("Vote", Some(&n2), &members, Some(2)), Ok(2));
    assert_eq!(authorize_call("Forward", Some(&n2), &members, None), Ok(2));
    assert!(matches!(
        authorize_call("Vote", Some(&n2), &members, Some(1)),
        Err(CallRefusal::WrongSender {
            sender: 1,
            id: 2,
            ..
        })
    ));
    let n9 = node("node-9", None);
    let refused = authorize_call("AppendEntries", Some(&n9), &members, Some(9));
    assert!(matches!(refused, Err(CallRefusal::NotMember { id: 9, .. })));
    assert!(
        refused
            .expect_err("refused")
            .to_string()
            .contains("members are 1, 2, 3")
    );
    let named = node("housing", Some("housing"));
    assert!(matches!(
        authorize_call("Vote", Some(&named), &members, Some(1)),
        Err(CallRefusal::NoMemberId { .. })
    ));
    assert!(matches!(
        authorize_call("Vote", None, &members, Some(1)),
        Err(CallRefusal::NoCertificate { .. })
    ));
    // A node of no cluster yet learns its members from the leader's first call.
    assert_eq!(
        authorize_call("AppendEntries", Some(&n9), &BTreeSet::new(), Some(9)),
        Ok(9)
    );
}

#[test]
fn a_department_node_forwards_only_its_own_records() {
    let market = node("node-1", Some("market-regulation"));
    assert!(may_originate(&market, &access("market-regulation", "housing"), None).is_ok());
    assert!(may_originate(&market, &access("housing", "market-regulation"), None).is_ok());
    let e =
        may_originate(&market, &access("housing", "natural-resources"), None).expect_err("refused");
    assert!(e.contains("neither is its department"), "{e}");
    let policy = Record::Config(ConfigRecord {
        request_id: "r".into(),
        time_unix_ms: 1,
        caller: caller("ops"),
        change: ConfigChange::Policy {
            model: String::new(),
            rules: String::new(),
        },
    });
    let e = may_originate(&market, &policy, None).expect_err("refused");
    assert!(e.contains("may not forward a policy change"), "{e}");
    assert!(may_originate(&market, &status("fraud"), Some("market-regulation")).is_ok());
    let e = may_originate(&market, &status("fraud"), Some("housing")).expect_err("refused");
    assert!(e.contains("issued by `housing`"), "{e}");
    assert!(may_originate(&market, &status("fraud"), None).is_err());
    // Every node's records pass `Record::check` first.
    let operator_node = node("node-4", None);
    assert!(may_originate(&operator_node, &policy, None).is_ok());
    assert!(may_originate(&operator_node, &status("Not A Code"), None).is_err());
}

#[test]
fn a_seal_does_not_widen_what_a_department_node_may_forward() {
    use crate::record::{Originator, SealedRecord, SignerRole};
    let market = node("node-1", Some("market-regulation"));
    let sealed = |record: Record| {
        let key = qianlian_verifier::ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let originator = Originator {
            role: SignerRole::Gateway,
            department: "housing".into(),
            key_id: "k".into(),
            public_key: [0; 32],
        };
        Record::Sealed(Box::new(SealedRecord::seal(record, originator, &key)))
    };
    let e = may_originate(
        &market,
        &sealed(access("housing", "natural-resources")),
        None,
    )
    .expect_err("refused");
    assert!(e.contains("neither is its department"), "{e}");
    assert!(
        may_originate(
            &market,
            &sealed(access("market-regulation", "housing")),
            None
        )
        .is_ok()
    );
    let e = may_originate(&market, &sealed(status("fraud")), Some("housing")).expect_err("refused");
    assert!(e.contains("issued by `housing`"), "{e}");
}
