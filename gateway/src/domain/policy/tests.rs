use std::path::Path;

use super::*;
use crate::domain::identity::{PeerIdentity, Role};

const MODEL: &str = include_str!("../../../../policies/model.conf");
const RULES: &str = include_str!("../../../../policies/policy.csv");

fn dept(id: &str) -> PeerIdentity {
    PeerIdentity {
        department: id.into(),
        role: Role::Department,
        cert_fingerprint: [0; 32],
        node_department: None,
    }
}

async fn default_policy() -> Policy {
    Policy::from_text(
        MODEL,
        RULES,
        7,
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
        "p, housing, market-regulation, enterprise-registration, read, permit-review, \
         unified_social_credit_code|name|status|registered_capital_cny|established"
    );
    assert!(d.fields.allows("name") && !d.fields.allows("legal_representative_id"));
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
        assert_eq!(d.rule, "p, owner, housing, construction-permit, *, *, *");
        assert_eq!(d.fields, Fields::All);
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
async fn versions_are_given_and_local_files_are_version_0() {
    assert_eq!(default_policy().await.version(), 7);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let local = Policy::load(&dir.join("model.conf"), &dir.join("policy.csv"))
        .await
        .expect("loads");
    assert_eq!(local.version(), 0);
}

#[tokio::test]
async fn a_rule_can_limit_the_fields_disclosed_for_a_purpose() {
    let p = Policy::from_text(
        MODEL,
        "p, housing, market-regulation, enterprise-registration, read, permit-review, status|name\n\
         p, housing, market-regulation, enterprise-registration, read, audit\n",
        1,
        Path::new("m"),
        Path::new("p"),
    )
    .await
    .expect("loads");
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
    assert_eq!(d.fields, Fields::Only(vec!["name".into(), "status".into()]));
    assert!(d.fields.allows("name") && !d.fields.allows("legal_representative_id"));
    let d = p
        .decide(ask(
            &housing,
            "market-regulation",
            "enterprise-registration",
            "read",
            "audit",
        ))
        .expect("decide");
    assert_eq!(d.fields, Fields::All);
    assert!(d.rule.ends_with("audit, *"), "{}", d.rule);
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
        (
            "p, housing, x, y, read, z, Name\n",
            1,
            "field 6: field name `Name`",
        ),
        (
            "p, housing, x, y, read, z, a|\n",
            1,
            "field 6: field name ``",
        ),
        ("p, housing, x, y, read, z, a, b\n", 1, "needs 5 fields"),
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
        1,
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

#[tokio::test]
async fn remembered_decisions_equal_fresh_ones_for_every_field_changed() {
    let remembering = default_policy().await;
    let fresh = default_policy().await;
    let departments = [
        "housing",
        "natural-resources",
        "market-regulation",
        "nobody",
    ];
    let owners = ["market-regulation", "housing", "natural-resources"];
    let datasets = [
        "enterprise-registration",
        "construction-permit",
        "land-parcel",
    ];
    let actions = ["read", "write", "issue"];
    let purposes = ["permit-review", "marketing", "", "credit-check"];
    let mut allowed = 0;
    // Twice over the grid: the second pass answers from memory, and must answer the same as a
    // policy that evaluates each question afresh.
    for _ in 0..2 {
        for d in departments {
            let who = dept(d);
            for o in owners {
                for ds in datasets {
                    for a in actions {
                        for p in purposes {
                            let want = fresh.evaluate(ask(&who, o, ds, a, p)).expect("evaluate");
                            let got = remembering.decide(ask(&who, o, ds, a, p)).expect("decide");
                            assert_eq!(got, want, "{d} {o} {ds} {a} {p}");
                            allowed += usize::from(got.allowed);
                        }
                    }
                }
            }
        }
    }
    assert!(allowed > 0, "the grid must contain allowed questions");
    // A field holding the memo's separator is decided afresh, never confused with another.
    let odd = dept("housing\u{1f}market-regulation");
    let d = remembering
        .decide(ask(
            &odd,
            "enterprise-registration",
            "read",
            "permit-review",
            "",
        ))
        .expect("decide");
    assert!(!d.allowed);
}

#[tokio::test]
async fn roles_and_departments_never_share_a_name() {
    // A role named like a department of the same policy is refused at load, naming it.
    let rules = format!("{RULES}\ng, housing, natural-resources, market-regulation\n");
    let err = Policy::from_text(MODEL, &rules, 1, Path::new("m"), Path::new("rules.csv"))
        .await
        .expect_err("role named like a department");
    assert!(
        matches!(&err, PolicyError::RoleIsDepartment { id, .. } if id == "natural-resources"),
        "{err}"
    );
    assert!(err.to_string().starts_with("rules.csv: "), "{err}");
    // A directory naming a department like a role of the policy is refused, naming the source.
    let p = default_policy().await;
    assert!(
        p.check_departments(["housing", "market-regulation"], "dir")
            .is_ok()
    );
    let err = p
        .check_departments(["housing", "owner"], "departments.toml")
        .expect_err("`owner` is a role");
    assert!(
        err.to_string()
            .starts_with("departments.toml: `owner` is both a role"),
        "{err}"
    );
    // And whatever a directory says, a caller with such an id gets nothing: without the
    // guard, Casbin would match `p, owner, market-regulation, …` for the caller `owner`.
    let owner = dept("owner");
    let d = p
        .decide(ask(
            &owner,
            "market-regulation",
            "enterprise-registration",
            "read",
            "permit-review",
        ))
        .expect("decide");
    assert!(!d.allowed, "{}", d.rule);
    assert!(d.rule.contains("is a role name"), "{}", d.rule);
}
