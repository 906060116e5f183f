use std::path::Path;

use super::*;
use crate::identity::{PeerIdentity, Role};

const MODEL: &str = include_str!("../../../policies/model.conf");
const RULES: &str = include_str!("../../../policies/policy.csv");

fn dept(id: &str) -> PeerIdentity {
    PeerIdentity {
        department: id.into(),
        role: Role::Department,
        cert_fingerprint: [0; 32],
    }
}

async fn default_policy() -> Policy {
    Policy::from_text(
        MODEL,
        RULES,
        Path::new("model.conf"),
        Path::new("policy.csv"),
    )
    .await
    .expect("default policy loads")
}

fn ask<'a>(
    caller: &'a PeerIdentity,
    owner: &'a str,
    dataset: &'a str,
    action: &'a str,
    purpose: &'a str,
) -> AccessRequest<'a> {
    AccessRequest {
        caller,
        owner,
        dataset,
        action,
        purpose,
    }
}

#[tokio::test]
async fn cross_department_read_with_declared_purpose_is_allowed_and_names_the_rule() {
    let p = default_policy().await;
    let housing = dept("housing");
    let d = p
        .decide(ask(
            &housing,
            "market-regulation",
            "enterprise-registration",
            "read",
            "permit-review",
        ))
        .expect("decide");
    assert!(d.allowed);
    assert_eq!(
        d.rule,
        "p, housing, market-regulation, enterprise-registration, read, permit-review"
    );
}

#[tokio::test]
async fn other_purpose_or_action_is_denied_with_the_missing_rule() {
    let p = default_policy().await;
    let housing = dept("housing");
    let d = p
        .decide(ask(
            &housing,
            "market-regulation",
            "enterprise-registration",
            "read",
            "marketing",
        ))
        .expect("decide");
    assert!(!d.allowed);
    assert_eq!(
        d.rule,
        format!(
            "policy {} has no rule letting housing read market-regulation/enterprise-registration for purpose marketing",
            p.version()
        )
    );
    let d = p
        .decide(ask(
            &housing,
            "market-regulation",
            "enterprise-registration",
            "write",
            "permit-review",
        ))
        .expect("decide");
    assert!(!d.allowed);
}

#[tokio::test]
async fn owners_read_and_write_their_own_datasets_only() {
    let p = default_policy().await;
    let housing = dept("housing");
    for action in ["read", "write"] {
        let d = p
            .decide(ask(&housing, "housing", "construction-permit", action, ""))
            .expect("decide");
        assert!(d.allowed, "{action}");
        assert_eq!(d.rule, "p, owner, housing, construction-permit, *, *");
    }
    // The owner role is scoped to the owner's own domain.
    let d = p
        .decide(ask(
            &housing,
            "natural-resources",
            "real-estate-registration",
            "write",
            "",
        ))
        .expect("decide");
    assert!(!d.allowed);
}

#[tokio::test]
async fn unknown_owner_is_denied_without_error() {
    let p = default_policy().await;
    let d = p
        .decide(ask(&dept("housing"), "nobody", "x", "read", "y"))
        .expect("decide");
    assert!(!d.allowed);
}

#[tokio::test]
async fn version_changes_with_the_rules() {
    let a = default_policy().await;
    let b = Policy::from_text(
        MODEL,
        &format!("{RULES}\np, housing, housing, x, read, y\n"),
        Path::new("m"),
        Path::new("p"),
    )
    .await
    .expect("loads");
    assert_ne!(a.version(), b.version());
    assert_eq!(a.version().len(), 12);
}

#[test]
fn broken_rules_name_file_line_and_reason() {
    let cases = [
        ("p, housing, x, y, read\n", 1, "needs 5 fields"),
        ("# c\n\nq, a, b, c\n", 3, "unknown rule type `q`"),
        ("g, a, *, c\n", 1, "cannot use `*`"),
        ("p, housing, *, x, read, y\n", 1, "cannot be `*`"),
        ("p, Housing, x, y, read, z\n", 1, "field 1 (`Housing`)"),
        ("p, housing, x, y, read, \n", 1, "field 5"),
    ];
    for (text, line, needle) in cases {
        let err = parse_rules(text, Path::new("policies/policy.csv")).expect_err(text);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("policies/policy.csv:{line}: ")),
            "{msg}"
        );
        assert!(msg.contains(needle), "{msg} should contain {needle}");
    }
}

#[tokio::test]
async fn broken_model_is_refused_with_its_path() {
    let err = Policy::from_text(
        "[request_definition]\nr = sub\n",
        RULES,
        Path::new("policies/model.conf"),
        Path::new("p"),
    )
    .await
    .expect_err("must refuse");
    assert!(
        err.to_string()
            .starts_with("policies/model.conf: invalid Casbin model"),
        "{err}"
    );
}
