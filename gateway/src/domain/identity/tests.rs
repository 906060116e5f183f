use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::node::pki::leaf_params;

const TD: &str = "gov.example";

fn der(params: &CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("cert").der().to_vec()
}

fn params(id: &str, role: Role) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    leaf_params(TD, id, role, &[], now, now + Duration::days(1)).expect("params")
}

#[test]
fn department_certificate_yields_department_identity() {
    let cert = der(&params("housing", Role::Department));
    let id = parse_peer(&cert, TD).expect("identity");
    assert_eq!(id.department, "housing");
    assert_eq!(id.role, Role::Department);
    assert_eq!(id.cert_fingerprint, <[u8; 32]>::from(Sha256::digest(&cert)));
}

#[test]
fn inspector_and_node_roles_are_read_from_the_ou() {
    let id = parse_peer(&der(&params("audit-office", Role::Inspector)), TD).expect("inspector");
    assert_eq!(id.role, Role::Inspector);
    let id = parse_peer(&der(&params("housing", Role::Node)), TD).expect("node");
    assert_eq!((id.role, id.department.as_str()), (Role::Node, "housing"));
}

#[test]
fn other_trust_domain_is_refused() {
    let cert = der(&params("housing", Role::Department));
    let err = parse_peer(&cert, "other.example").expect_err("must refuse");
    assert!(matches!(err, IdentityError::BadUri { .. }), "{err}");
}

#[test]
fn certificate_without_uri_san_is_refused() {
    let mut p = params("housing", Role::Department);
    p.subject_alt_names = vec![SanType::DnsName(
        "housing.gov.example".try_into().expect("dns"),
    )];
    let err = parse_peer(&der(&p), TD).expect_err("must refuse");
    assert_eq!(
        err,
        IdentityError::UriCount {
            trust_domain: TD.into(),
            found: 0
        }
    );
    assert!(err.to_string().contains("exactly one URI SAN"));
}

#[test]
fn two_uri_sans_are_refused() {
    let mut p = params("housing", Role::Department);
    p.subject_alt_names.push(SanType::URI(
        "spiffe://gov.example/dept/market-regulation"
            .try_into()
            .expect("uri"),
    ));
    assert!(matches!(
        parse_peer(&der(&p), TD),
        Err(IdentityError::UriCount { found: 2, .. })
    ));
}

#[test]
fn malformed_uris_are_refused() {
    for uri in [
        "https://gov.example/dept/housing",
        "spiffe://gov.example/dept/",
        "spiffe://gov.example/dept/Housing",
        "spiffe://gov.example/user/housing",
        "spiffe://gov.example.evil/dept/housing",
        "spiffe://gov.example/dept/housing/extra",
    ] {
        let mut p = params("housing", Role::Department);
        p.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        assert!(
            matches!(parse_peer(&der(&p), TD), Err(IdentityError::BadUri { .. })),
            "{uri} must be refused"
        );
    }
}

#[test]
fn missing_or_unknown_role_is_refused() {
    let mut p = params("housing", Role::Department);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "housing");
    p.distinguished_name = dn.clone();
    assert_eq!(parse_peer(&der(&p), TD), Err(IdentityError::MissingRole));
    dn.push(DnType::OrganizationalUnitName, "superuser");
    p.distinguished_name = dn;
    assert_eq!(parse_peer(&der(&p), TD), Err(IdentityError::MissingRole));
}

#[test]
fn a_certificate_naming_two_roles_is_refused() {
    // rcgen keeps one value per attribute type, so the second OU goes in under its OID
    // (2.5.4.11): the certificate then holds two OU attributes, as a careless CA could issue.
    const OU: [u64; 4] = [2, 5, 4, 11];
    let mut p = params("housing", Role::Department);
    p.distinguished_name
        .push(DnType::CustomDnType(OU.to_vec()), "inspector");
    let err = parse_peer(&der(&p), TD).expect_err("two roles");
    assert_eq!(
        err,
        IdentityError::RoleCount {
            found: 2,
            roles: "department, inspector".into()
        }
    );
    assert!(err.to_string().contains("exactly one role"), "{err}");
    // The same role twice is still two role OUs: refused, not guessed.
    let mut p = params("housing", Role::Department);
    p.distinguished_name
        .push(DnType::CustomDnType(OU.to_vec()), "department");
    assert!(matches!(
        parse_peer(&der(&p), TD),
        Err(IdentityError::RoleCount { found: 2, .. })
    ));
    // An OU that names no role beside the role is fine.
    let mut p = params("housing", Role::Department);
    p.distinguished_name
        .push(DnType::CustomDnType(OU.to_vec()), "permits-office");
    assert_eq!(
        parse_peer(&der(&p), TD).map(|id| id.role),
        Ok(Role::Department)
    );
}

#[test]
fn role_must_match_uri_kind() {
    let mut p = params("housing", Role::Node);
    p.subject_alt_names = vec![SanType::URI(
        "spiffe://gov.example/dept/housing".try_into().expect("uri"),
    )];
    assert!(matches!(
        parse_peer(&der(&p), TD),
        Err(IdentityError::RoleMismatch { .. })
    ));
}

#[test]
fn garbage_is_not_a_certificate() {
    assert!(matches!(
        parse_peer(b"not a certificate", TD),
        Err(IdentityError::Malformed(_))
    ));
}

#[test]
fn ids_are_validated() {
    assert!(validate_id("market-regulation").is_ok());
    assert!(validate_id("a").is_ok());
    for bad in [
        "",
        "-x",
        "x-",
        "Upper",
        "with space",
        "dot.ted",
        &"x".repeat(64),
    ] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}
