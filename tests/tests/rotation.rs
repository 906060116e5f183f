//! Certificates and the CA bundle reload from disk without a restart.

mod support;

use std::path::Path;
use std::time::Duration;

use qianlian_gateway::domain::identity::Role;
use qianlian_gateway::node::pki::leaf_params;
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, RecordRef};
use rcgen::{Issuer, KeyPair};
use support::*;
use time::OffsetDateTime;

/// SHA-256 fingerprint of the certificate the node presents, as openssl prints it.
fn served_fingerprint(node: &Node) -> String {
    let s_client = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            node.addr
        ))
        .output()
        .expect("openssl");
    stdout(&s_client).trim().to_owned()
}

fn file_fingerprint(path: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    stdout(&out).trim().to_owned()
}

async fn call_as(node: &Node, ca: &Path, cert: &Path, key: &Path) -> Result<(), String> {
    let ch = channel(node, tls(ca, Some((cert, key))))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match ExchangeClient::new(ch)
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: "market-regulation".into(),
                dataset: "enterprise-registration".into(),
                key: uscc(1),
            }),
            purpose: "permit-review".into(),
        })
        .await
    {
        Ok(_) => Ok(()),
        // Got past the TLS door: an answer from the service itself.
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..50 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_replaced_server_certificate_is_served_without_a_restart() {
    let env = Env::new();
    let node = env.start();
    let crt = env.pki().join("nodes/node-1.crt");
    let before = served_fingerprint(&node);
    assert_eq!(
        before,
        file_fingerprint(&crt),
        "serves the file's certificate"
    );

    // Issue a new node certificate from the same CA and replace the files.
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(env.pki().join("ca.key")).expect("ca key"))
            .expect("key");
    let issuer = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(env.pki().join("ca.crt")).expect("ca"),
        ca_key,
    )
    .expect("issuer");
    let now = OffsetDateTime::now_utc();
    let params = leaf_params(
        "gov.example",
        "node-1",
        Role::Node,
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )
    .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(env.pki().join("nodes/node-1.key"), key.serialize_pem()).expect("write key");
    std::fs::write(&crt, cert.pem()).expect("write cert");
    let after = file_fingerprint(&crt);
    assert_ne!(before, after);

    assert!(
        eventually(async || served_fingerprint(&node) == after).await,
        "the new certificate is served"
    );
    assert!(
        node.log_text().contains("TLS certificates reloaded"),
        "{}",
        node.log_text()
    );
    // And clients still get through with it.
    let (c, k) = env.identity("housing");
    call_as(&node, &env.pki().join("ca.crt"), &c, &k)
        .await
        .expect("calls still work");
}

#[tokio::test]
async fn a_new_ca_in_the_bundle_is_trusted_without_a_restart_and_a_broken_file_changes_nothing() {
    let env = Env::new();
    let other = Env::new();
    let node = env.start();
    let ours = env.pki().join("ca.crt");
    let (oc, ok) = other.identity("housing");
    // The client trusts our CA for the server; its certificate comes from the other CA.
    assert!(
        call_as(&node, &ours, &oc, &ok).await.is_err(),
        "not trusted yet"
    );

    // A broken bundle is refused and the node keeps its old configuration.
    let original = std::fs::read_to_string(&ours).expect("ca");
    std::fs::write(&ours, "not a certificate").expect("write");
    assert!(
        eventually(async || node
            .log_text()
            .contains("do not load; keeping the previous ones"))
        .await
    );
    std::fs::write(&ours, &original).expect("restore");

    // Both CAs in the bundle: the other department's certificate is now accepted.
    let both = format!(
        "{original}{}",
        std::fs::read_to_string(other.pki().join("ca.crt")).expect("other ca")
    );
    let bundle = env.path().join("client-ca.crt");
    std::fs::write(&bundle, &original).expect("client trust");
    std::fs::write(&ours, both).expect("rotate CA bundle");
    assert!(
        eventually(async || call_as(&node, &bundle, &oc, &ok).await.is_ok()).await,
        "a certificate from the added CA is accepted after the reload"
    );
}
