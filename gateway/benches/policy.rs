//! What one access decision costs: `Policy::decide` (Casbin, one enforcer per owner department)
//! with the default policy and with 10,000 rules.
//!
//! - `policy/default/<case>`: `policies/model.conf` and `policies/policy.csv` as shipped.
//! - `policy/10k-100-owners/<case>`: 100 owner departments with 100 rules each (10,000 `p`
//!   rules, plus one owner role per department): a province-sized policy, indexed by owner.
//! - `policy/10k-one-owner/<case>`: the 10,000 rules all in one owner's domain: the worst case
//!   of the per-owner index, what a decision costs when nothing narrows the scan.
//!
//! Cases: `allow-first` (the first rule of the domain allows), `allow-last` (the last one does),
//! `deny` (no rule does: every rule of the domain is evaluated). Elements are decisions. Each
//! case is measured as the gateway asks it (`decide`: a question asked before is answered from
//! the policy's memory) and afresh (`<case>/fresh`: `evaluate`, Casbin every time).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qianlian_gateway::domain::identity::{PeerIdentity, Role};
use qianlian_gateway::domain::policy::{AccessRequest, Policy};

const MODEL: &str = include_str!("../../policies/model.conf");
const DEFAULT_RULES: &str = include_str!("../../policies/policy.csv");

fn policy(rules: &str) -> Policy {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(Policy::from_text(
        MODEL,
        rules,
        1,
        Path::new("model.conf"),
        Path::new("bench.csv"),
    ))
    .expect("policy loads")
}

/// 10,000 allow rules over `owners` owner departments: caller `dept-<c>` may read dataset
/// `ds-<d>` of owner `owner-<o>` for purpose `purpose-<p>`.
fn ten_thousand(owners: usize) -> String {
    let per_owner = 10_000 / owners;
    let mut text = String::new();
    for o in 0..owners {
        text.push_str(&format!("g, owner-{o:03}, owner, owner-{o:03}\n"));
        for r in 0..per_owner {
            text.push_str(&format!(
                "p, dept-{:03}, owner-{o:03}, ds-{:02}, read, purpose-{r:04}\n",
                r % 97,
                r % 10
            ));
        }
    }
    text
}

fn caller(department: &str) -> PeerIdentity {
    PeerIdentity {
        department: department.into(),
        role: Role::Department,
        cert_fingerprint: [0; 32],
        node_department: None,
    }
}

fn decide(
    c: &mut Criterion,
    name: &str,
    policy: &Policy,
    cases: [(&str, &str, &str, &str, &str); 3],
) {
    let mut group = c.benchmark_group(format!("policy/{name}"));
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for (case, dept, owner, dataset, purpose) in cases {
        let who = caller(dept);
        let req = AccessRequest {
            caller: &who,
            owner,
            dataset,
            action: "read",
            purpose,
        };
        let expect = case.starts_with("allow");
        let d = policy.decide(req).expect("decides");
        assert_eq!(d.allowed, expect, "{name}/{case}: {}", d.rule);
        group.bench_function(case, |b| {
            b.iter(|| black_box(policy.decide(black_box(req)).expect("decides")))
        });
        group.bench_function(format!("{case}/fresh"), |b| {
            b.iter(|| black_box(policy.evaluate(black_box(req)).expect("decides")))
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let default = policy(DEFAULT_RULES);
    decide(
        c,
        "default",
        &default,
        [
            // The owner's own rule, first of its domain (through the `g` owner role).
            (
                "allow-first",
                "housing",
                "housing",
                "construction-permit",
                "permit-review",
            ),
            (
                "allow-last",
                "natural-resources",
                "market-regulation",
                "enterprise-registration",
                "property-registration",
            ),
            (
                "deny",
                "housing",
                "market-regulation",
                "enterprise-registration",
                "marketing",
            ),
        ],
    );
    let spread = policy(&ten_thousand(100));
    decide(
        c,
        "10k-100-owners",
        &spread,
        [
            (
                "allow-first",
                "dept-000",
                "owner-050",
                "ds-00",
                "purpose-0000",
            ),
            (
                "allow-last",
                "dept-002",
                "owner-050",
                "ds-09",
                "purpose-0099",
            ),
            ("deny", "dept-001", "owner-050", "ds-09", "marketing"),
        ],
    );
    let one = policy(&ten_thousand(1));
    decide(
        c,
        "10k-one-owner",
        &one,
        [
            (
                "allow-first",
                "dept-000",
                "owner-000",
                "ds-00",
                "purpose-0000",
            ),
            (
                "allow-last",
                "dept-008",
                "owner-000",
                "ds-09",
                "purpose-9999",
            ),
            ("deny", "dept-001", "owner-000", "ds-09", "marketing"),
        ],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
