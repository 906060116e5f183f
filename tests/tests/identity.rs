//! Mutual TLS at the door: who is refused, and that the node says why.

mod support;

use std::path::Path;
use std::time::Duration;

use qianlian_gateway::domain::identity::Role;
use qianlian_gateway::node::pki::leaf_params;
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, RecordRef};
use rcgen::{Issuer, KeyPair, SanType};
use support::*;
use time::OffsetDateTime;
use tonic::Code;

fn request() -> GetRecordRequest {
    GetRecordRequest {
        record: Some(RecordRef {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: uscc(7),
        }),
        purpose: "permit-review".into(),
    }
}

/// Issue a client certificate from the test CA with the given parameters; returns (crt, key).
fn issue(
    env: &Env,
    name: &str,
    params: rcgen::CertificateParams,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = env.pki();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).expect("ca key"))
        .expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).expect("ca crt"),
        ca_key,
    )
    .expect("issuer");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let crt_path = env.path().join(format!("{name}.crt"));
    let key_path = env.path().join(format!("{name}.key"));
    std::fs::write(&crt_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (crt_path, key_path)
}

/// Make one call with the given TLS settings; return the error status or transport error text.
async fn call(node: &Node, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<(), String> {
    let ch = channel(node, tls(ca, identity))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ExchangeClient::new(ch)
        .get_record(request())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

async fn log_contains(node: &Node, needle: &str) -> bool {
    for _ in 0..100 {
        if node.log_text().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn call_without_client_certificate_is_unauthenticated() {
    let env = Env::new();
    let node = env.start();
    let ch = channel(&node, tls(&env.pki().join("ca.crt"), None))
        .await
        .expect("TLS without client certificate is allowed for public services");
    let s = ExchangeClient::new(ch)
        .get_record(request())
        .await
        .expect_err("data services need a certificate");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(
        s.message().contains("needs a client certificate"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused_and_logged() {
    let env = Env::new();
    let other = Env::new();
    let node = env.start();
    let (c, k) = other.identity("housing");
    let err = call(&node, &env.pki().join("ca.crt"), Some((&c, &k)))
        .await
        .expect_err("foreign CA must be refused");
    assert!(!err.starts_with("Ok"), "{err}");
    assert!(
        log_contains(&node, "TLS handshake refused").await,
        "node log should say why:\n{}",
        node.log_text()
    );
    assert!(
        node.log_text().contains("UnknownIssuer"),
        "{}",
        node.log_text()
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_and_logged() {
    let env = Env::new();
    let node = env.start();
    let now = OffsetDateTime::now_utc();
    let params = leaf_params(
        "gov.example",
        "housing",
        Role::Department,
        &[],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .expect("params");
    let (c, k) = issue(&env, "expired", params);
    let err = call(&node, &env.pki().join("ca.crt"), Some((&c, &k)))
        .await
        .expect_err("expired certificate must be refused");
    assert!(!err.is_empty());
    assert!(
        log_contains(&node, "certificate expired").await,
        "node log should say the certificate expired:\n{}",
        node.log_text()
    );
}

#[tokio::test]
async fn certificate_without_department_san_is_refused_with_the_reason() {
    let env = Env::new();
    let node = env.start();
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(
        "gov.example",
        "housing",
        Role::Department,
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
    .expect("params");
    params.subject_alt_names = vec![SanType::DnsName(
        "housing.gov.example".try_into().expect("dns"),
    )];
    let (c, k) = issue(&env, "no-san", params);
    let err = call(&node, &env.pki().join("ca.crt"), Some((&c, &k)))
        .await
        .expect_err("no department SAN");
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert!(err.contains("exactly one URI SAN"), "{err}");
    assert!(
        log_contains(&node, "carries no usable identity").await,
        "{}",
        node.log_text()
    );
}

#[tokio::test]
async fn node_certificates_cannot_read_department_data() {
    let env = Env::new();
    let node = env.start();
    let nodes = env.pki().join("nodes");
    let err = call(
        &node,
        &env.pki().join("ca.crt"),
        Some((&nodes.join("node-1.crt"), &nodes.join("node-1.key"))),
    )
    .await
    .expect_err("a node is not a department");
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("role `node`"), "{err}");
}

#[tokio::test]
async fn a_certificate_naming_two_roles_is_refused_at_the_door() {
    let env = Env::new();
    let node = env.start();
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(
        "gov.example",
        "housing",
        Role::Department,
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
    .expect("params");
    // A second OU attribute (2.5.4.11) naming another role, as a careless CA could issue.
    params
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), "inspector");
    let (c, k) = issue(&env, "two-roles", params);
    let err = call(&node, &env.pki().join("ca.crt"), Some((&c, &k)))
        .await
        .expect_err("two roles");
    assert!(err.starts_with("Unauthenticated"), "{err}");
    assert!(err.contains("exactly one role"), "{err}");
}

/// Mode bits of a file.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every private key file under `dir`: PEM keys, note keys, the subject key.
fn key_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(key_files(&p));
        } else if p.extension().is_some_and(|x| x == "key") {
            out.push(p);
        }
    }
    out
}

#[test]
fn key_files_are_0600_after_pki_init_force_whatever_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let init = |force: bool| {
        let mut args = vec![
            "pki",
            "init",
            "--out",
            pki.to_str().expect("path"),
            "--trust-domain",
            "gov.example",
            "--dept",
            "housing",
            "--inspector",
            "audit-office",
        ];
        if force {
            args.push("--force");
        }
        let out = cli(&args);
        assert!(out.status.success(), "pki init: {}", stderr(&out));
    };
    init(false);
    let keys = key_files(&pki);
    assert!(
        keys.iter().any(|k| k.ends_with("ca.key"))
            && keys.iter().any(|k| k.ends_with("subject.key"))
            && keys
                .iter()
                .any(|k| k.to_string_lossy().ends_with(".note.key"))
            && keys
                .iter()
                .any(|k| k.to_string_lossy().ends_with(".license.key")),
        "{keys:?}"
    );
    // Someone loosened them (a restore, a copy): --force writes new keys, and only the owner
    // may read them.
    for k in &keys {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(k, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let before = std::fs::read(pki.join("ca.key")).expect("ca key");
    init(true);
    assert_ne!(
        std::fs::read(pki.join("ca.key")).expect("ca key"),
        before,
        "rewritten"
    );
    for k in key_files(&pki) {
        assert_eq!(mode(&k), 0o600, "{}", k.display());
    }
    assert_eq!(mode(&pki.join("ca.crt")), 0o644);
    // No temporary file is left beside them.
    let names: Vec<String> = std::fs::read_dir(&pki)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn the_dev_identity_providers_key_is_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    qianlian_cli::dev::prepare(dir.path(), "127.0.0.1:0".parse().expect("addr"))
        .expect("prepare the dev folder");
    let pki = dir.path().join("pki");
    assert_eq!(mode(&pki.join("dev-idp.key")), 0o600);
    assert_eq!(mode(&pki.join("dev-idp.pub.pem")), 0o644);
    for k in key_files(&pki) {
        assert_eq!(mode(&k), 0o600, "{}", k.display());
    }
}
