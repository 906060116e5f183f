use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::domain::identity::parse_peer;

fn plan(out: &Path, nodes: &[&str], hosts: &[&str]) -> PkiPlan {
    PkiPlan {
        out: out.to_owned(),
        trust_domain: "gov.example".into(),
        departments: vec!["market-regulation".into(), "housing".into()],
        inspectors: vec![],
        operators: vec![],
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        node_hosts: hosts.iter().map(|s| s.to_string()).collect(),
        names: vec![],
        leaf_days: 1,
        force: false,
    }
}

/// The node certificate's DER and its DNS and IP names, as strings.
fn node_cert(out: &Path, name: &str) -> (Vec<u8>, Vec<String>) {
    let path = out.join(format!("nodes/{name}.crt"));
    let der = crate::node::tls::load_certs(&path).expect("certificate")[0].to_vec();
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let names = cert
        .subject_alternative_name()
        .expect("san")
        .expect("san")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(ip) if ip.len() == 4 => {
                Some(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string())
            }
            _ => None,
        })
        .collect();
    (der, names)
}

#[test]
fn each_node_certificate_gets_its_own_hosts_and_department() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    init(&plan(
        &out,
        &["node-1=market-regulation", "node-2"],
        &["node-1=10.0.0.1,gw1.example", "shared.example"],
    ))
    .expect("init");
    let (der1, names1) = node_cert(&out, "node-1");
    let (der2, names2) = node_cert(&out, "node-2");
    for n in [
        "10.0.0.1",
        "gw1.example",
        "shared.example",
        "node-1",
        "localhost",
    ] {
        assert!(
            names1.contains(&n.to_owned()),
            "node-1 names {n}: {names1:?}"
        );
    }
    assert!(!names2.contains(&"10.0.0.1".to_owned()), "{names2:?}");
    assert!(!names2.contains(&"gw1.example".to_owned()), "{names2:?}");
    assert!(names2.contains(&"shared.example".to_owned()), "{names2:?}");

    let id1 = parse_peer(&der1, "gov.example").expect("identity");
    assert_eq!(id1.role, Role::Node);
    assert_eq!(id1.department, "node-1");
    assert_eq!(id1.node_department.as_deref(), Some("market-regulation"));
    let id2 = parse_peer(&der2, "gov.example").expect("identity");
    assert_eq!(id2.node_department, None);
}

#[test]
fn default_nodes_are_their_departments_gateways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    init(&plan(&out, &[], &["housing=10.0.0.9"])).expect("init");
    let (der, names) = node_cert(&out, "housing");
    assert!(names.contains(&"10.0.0.9".to_owned()), "{names:?}");
    let id = parse_peer(&der, "gov.example").expect("identity");
    assert_eq!(id.node_department.as_deref(), Some("housing"));
    let (_, market) = node_cert(&out, "market-regulation");
    assert!(!market.contains(&"10.0.0.9".to_owned()), "{market:?}");
}

#[test]
fn bad_node_and_host_forms_are_refused_with_the_form_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let e = node_specs(&plan(&out, &["node-1"], &["node-9=10.0.0.1"]))
        .expect_err("unknown node")
        .to_string();
    assert!(
        e.contains("names node `node-9`") && e.contains("node-1"),
        "{e}"
    );
    let e = node_specs(&plan(&out, &["node-1=Market"], &[]))
        .expect_err("bad department")
        .to_string();
    assert!(e.contains("<node>=<department>"), "{e}");
    let e = node_specs(&plan(&out, &["node-1", "node-1=housing"], &[]))
        .expect_err("twice")
        .to_string();
    assert!(e.contains("named twice"), "{e}");
    let e = node_specs(&plan(&out, &["node-1"], &["node-1=a,,b"]))
        .expect_err("empty host")
        .to_string();
    assert!(e.contains("empty host name"), "{e}");
}

#[test]
fn a_forwarding_gateway_accepts_only_the_owner_departments_node_certificate() {
    use crate::node::forward::owner_identity_matches;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let mut p = plan(&out, &["node-1=market-regulation", "node-2"], &[]);
    p.operators = vec!["ops".into()];
    init(&p).expect("init");
    let (market, _) = node_cert(&out, "node-1");
    let (operators, _) = node_cert(&out, "node-2");
    let client = crate::node::tls::load_certs(&out.join("clients/market-regulation.crt"))
        .expect("client")[0]
        .to_vec();
    let td = "gov.example";
    assert_eq!(
        owner_identity_matches(Some(&market), td, "market-regulation"),
        Ok(())
    );
    let e = owner_identity_matches(Some(&market), td, "housing").expect_err("another's");
    assert!(e.contains("the gateway of `market-regulation`"), "{e}");
    let e = owner_identity_matches(Some(&operators), td, "housing").expect_err("no department");
    assert!(e.contains("names no department"), "{e}");
    let e = owner_identity_matches(Some(&client), td, "market-regulation")
        .expect_err("a client certificate");
    assert!(e.contains("not a gateway node's"), "{e}");
    assert!(owner_identity_matches(None, td, "market-regulation").is_err());
}

#[test]
fn a_nodes_key_is_published_for_the_department_its_certificate_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    init(&plan(&out, &["node-1=market-regulation", "node-2"], &[])).expect("init");
    let directory =
        crate::domain::directory::Directory::load(&out.join("departments.toml")).expect("load");
    let signer = NoteSigner::from_skey(
        std::fs::read_to_string(out.join("nodes/node-1.note.key"))
            .expect("note key")
            .trim(),
    )
    .expect("signer");
    let public = signer.signing_key().verifying_key().to_bytes();
    assert_eq!(
        directory.node_key_id("market-regulation", &public),
        Some(signer.name()),
        "{directory:?}"
    );
    // node-2 names no department: it writes for the departments without a gateway of their
    // own (housing), and not for market-regulation, which has node-1.
    let key_of = |node: &str| {
        NoteSigner::from_skey(
            std::fs::read_to_string(out.join(format!("nodes/{node}.note.key")))
                .expect("note key")
                .trim(),
        )
        .expect("signer")
        .signing_key()
        .verifying_key()
        .to_bytes()
    };
    let housing = directory.department("housing").expect("listed");
    assert_eq!(housing.node_keys.len(), 1, "{:?}", housing.node_keys);
    assert!(
        directory
            .node_key_id("housing", &key_of("node-2"))
            .is_some()
    );
    assert!(
        directory
            .node_key_id("housing", &key_of("node-1"))
            .is_none()
    );
    assert!(
        directory
            .node_key_id("market-regulation", &key_of("node-2"))
            .is_none()
    );
}

#[test]
fn operators_get_a_signing_key_that_the_directory_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let with_ops = PkiPlan {
        operators: vec!["ops".into()],
        ..plan(&out, &["node-1"], &[])
    };
    init(&with_ops).expect("init");
    let directory =
        crate::domain::directory::Directory::load(&out.join("departments.toml")).expect("load");
    let key = read_ed25519_key(&out.join("clients/ops.sign.key"), "operator signing key")
        .expect("a signing key");
    let public = key.verifying_key().to_bytes();
    assert_eq!(
        directory.operator_key_id("ops", &public),
        Some(license_key_id("ops", &key.verifying_key()).as_str()),
        "{directory:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("clients/ops.sign.key"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second run keeps the key and the listing.
    init(&with_ops).expect("init again");
    let again =
        crate::domain::directory::Directory::load(&out.join("departments.toml")).expect("load");
    assert_eq!(again.operator, directory.operator);
}
