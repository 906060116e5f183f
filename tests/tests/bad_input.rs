//! Bad input gets a clear error and changes nothing.

mod support;

use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RecordRef};
use support::*;
use tonic::Code;

fn rec(dept: &str, dataset: &str, key: &str) -> Option<RecordRef> {
    Some(RecordRef {
        department: dept.into(),
        dataset: dataset.into(),
        key: key.into(),
    })
}

#[tokio::test]
async fn malformed_keys_unknown_datasets_and_missing_purpose_are_refused_with_the_rule() {
    let env = Env::new();
    let node = env.start();
    let mut c = exchange(&env, &node, "housing").await;
    let good = uscc(11);
    // Break the check character.
    let mut bad = good.clone();
    let last = bad.pop().expect("char");
    bad.push(if last == '0' { '1' } else { '0' });

    let cases = [
        (
            rec("market-regulation", "enterprise-registration", &bad),
            "permit-review",
            "check",
        ),
        (
            rec("market-regulation", "enterprise-registration", "91520100"),
            "permit-review",
            "18 characters",
        ),
        (
            rec("market-regulation", "tax-records", &good),
            "permit-review",
            "unknown dataset `tax-records`; known datasets: construction-permit, enterprise-registration",
        ),
        (
            rec("housing", "enterprise-registration", &good),
            "permit-review",
            "owned by `market-regulation`, not `housing`",
        ),
        (
            rec(
                "natural-resources",
                "real-estate-registration",
                "黔(2024)贵阳市第0012345号",
            ),
            "permit-review",
            "不动产权第",
        ),
        (
            rec("market-regulation", "enterprise-registration", &good),
            "",
            "`purpose` is required",
        ),
        (
            rec("market-regulation", "enterprise-registration", &good),
            "Credit Check",
            "purpose `Credit Check`",
        ),
        (None, "permit-review", "`record` is required"),
    ];
    for (record, purpose, needle) in cases {
        let s = c
            .get_record(GetRecordRequest {
                record,
                purpose: purpose.into(),
            })
            .await
            .expect_err(needle);
        assert_eq!(s.code(), Code::InvalidArgument, "{needle}: {}", s.message());
        assert!(
            s.message().contains(needle),
            "{} should contain {needle}",
            s.message()
        );
    }
}

#[tokio::test]
async fn oversized_and_non_json_payloads_are_refused_and_nothing_is_stored() {
    let env = Env::new();
    let node = env.start_with(
        &policies().join("policy.csv"),
        "[limits]\nmax_payload_bytes = 1024\n",
    );
    let key = uscc(12);
    let mut owner = exchange(&env, &node, "market-regulation").await;
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2000));
    for (payload, needle) in [
        (
            big.into_bytes(),
            "at most 1024 (config key limits.max_payload_bytes)",
        ),
        (b"not json".to_vec(), "payload is not valid JSON"),
        (b"[1,2]".to_vec(), "payload must be a JSON object"),
    ] {
        let s = owner
            .put_record(PutRecordRequest {
                record: rec("market-regulation", "enterprise-registration", &key),
                payload,
            })
            .await
            .expect_err(needle);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains(needle), "{}", s.message());
    }
    let s = owner
        .get_record(GetRecordRequest {
            record: rec("market-regulation", "enterprise-registration", &key),
            purpose: "audit".into(),
        })
        .await
        .expect_err("nothing was stored");
    assert_eq!(s.code(), Code::NotFound);
}

#[test]
fn a_corrupt_policy_file_stops_the_node_with_file_and_line() {
    let env = Env::new();
    let rules = env.path().join("broken.csv");
    std::fs::write(
        &rules,
        "# ok\np, housing, market-regulation, enterprise-registration, read, permit-review\np, housing, market-regulation\n",
    )
    .expect("write");
    let config = env.write_config(&rules, "");
    let out = cli(&["serve", "--config", &config.display().to_string()]);
    assert!(!out.status.success(), "the node must not start");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:3: a `p` rule needs 5 fields", rules.display())),
        "{err}"
    );
}

#[test]
fn a_bad_config_names_the_key() {
    let env = Env::new();
    let config = env.write_config(
        &policies().join("policy.csv"),
        "[limits]\nmax_payload_bytes = 0\n",
    );
    let out = cli(&["serve", "--config", &config.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("key `limits.max_payload_bytes`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pki_init_never_overwrites_keys_without_force() {
    let env = Env::new();
    let key = env.pki().join("clients/housing.key");
    let before = std::fs::read(&key).expect("key");
    let out = cli(&[
        "pki",
        "init",
        "--out",
        &env.pki().display().to_string(),
        "--dept",
        "housing",
        "--dept",
        "tax",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&key).expect("key"),
        before,
        "existing key kept"
    );
    assert!(
        env.pki().join("clients/tax.crt").exists(),
        "new department added with the same CA"
    );
    assert!(stdout(&out).contains("kept"));
    let out = cli(&[
        "pki",
        "init",
        "--out",
        &env.pki().display().to_string(),
        "--dept",
        "housing",
        "--force",
    ]);
    assert!(out.status.success());
    assert_ne!(
        std::fs::read(&key).expect("key"),
        before,
        "--force replaces it"
    );
    let out = cli(&[
        "pki",
        "init",
        "--out",
        &env.pki().display().to_string(),
        "--dept",
        "Bad_Id",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("use only lowercase letters"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_overrides_are_validated_like_the_file() {
    let env = Env::new();
    let config = env.write_config(&policies().join("policy.csv"), "");
    let out = std::process::Command::new(bin())
        .args(["serve", "--config", &config.display().to_string()])
        .env("QIANLIAN_LIMITS_MAX_PAYLOAD_BYTES", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("key `limits.max_payload_bytes`"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(bin())
        .args(["serve", "--config", &config.display().to_string()])
        .env("QIANLIAN_LIMIT_MAX_PAYLOAD", "1")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("QIANLIAN_LIMIT_MAX_PAYLOAD names no config key"),
        "{}",
        stderr(&out)
    );
}
