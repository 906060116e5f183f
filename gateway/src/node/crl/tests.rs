use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A CA named `name`; two CAs of the same name have different keys.
fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, serial: u64) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec!["leaf.example".to_owned()]).expect("params");
    params.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().expect("key");
    params
        .signed_by(&key, &ca.issuer)
        .expect("sign")
        .der()
        .clone()
}

/// A CRL of `ca` numbered `number`, issued `age_days` ago and current for `valid_days` from
/// then, revoking `serials`.
fn crl(ca: &Ca, number: u64, age_days: i64, valid_days: i64, serials: &[u64]) -> String {
    let now = OffsetDateTime::now_utc();
    let this_update = now - Duration::days(age_days);
    CertificateRevocationListParams {
        this_update,
        next_update: this_update + Duration::days(valid_days),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: this_update,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .expect("crl")
    .pem()
    .expect("pem")
}

fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("crl.pem");
    std::fs::write(&p, text).expect("write");
    p
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn an_empty_or_half_written_file_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = ca("Test CA");
    let bundle = [ca.der.clone()];
    let err = CrlSet::load(&file(&dir, ""), &bundle).expect_err("empty");
    assert_eq!(err.kind(), "empty", "{err}");
    let whole = crl(&ca, 1, 0, 7, &[]);
    let half = &whole[..whole.len() / 2];
    let err = CrlSet::load(&file(&dir, half), &bundle).expect_err("half");
    assert!(matches!(err.kind(), "empty" | "unparsable"), "{err}");
    CrlSet::load(&file(&dir, &whole), &bundle).expect("the whole file loads");
}

#[test]
fn a_crl_signed_by_another_key_in_the_name_of_our_ca_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ours = ca("Test CA");
    let forger = ca("Test CA");
    let err = CrlSet::load(
        &file(&dir, &crl(&forger, 9, 0, 7, &[])),
        std::slice::from_ref(&ours.der),
    )
    .expect_err("forged");
    assert_eq!(err.kind(), "bad_signature", "{err}");
}

#[test]
fn an_older_or_expired_crl_or_one_dropping_a_trusted_issuer_does_not_replace_the_one_in_force() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = ca("Test CA");
    let bundle = [ca.der.clone()];
    let path = file(&dir, &crl(&ca, 5, 1, 7, &[]));
    let in_force = CrlSet::load(&path, &bundle).expect("current");

    let older = CrlSet::load(&file(&dir, &crl(&ca, 4, 1, 7, &[])), &bundle).expect("parses");
    let err = in_force
        .replace(older, &path, &bundle, now())
        .expect_err("lower number");
    assert_eq!(err.kind(), "older", "{err}");

    let earlier = CrlSet::load(&file(&dir, &crl(&ca, 6, 3, 7, &[])), &bundle).expect("parses");
    let err = in_force
        .replace(earlier, &path, &bundle, now())
        .expect_err("earlier thisUpdate");
    assert_eq!(err.kind(), "older", "{err}");

    let expired = CrlSet::load(&file(&dir, &crl(&ca, 7, 3, 1, &[])), &bundle).expect("parses");
    let err = in_force
        .replace(expired, &path, &bundle, now())
        .expect_err("expired");
    assert_eq!(err.kind(), "expired", "{err}");

    let other = ca_other_crl(&dir);
    let err = in_force
        .replace(other, &path, &bundle, now())
        .expect_err("our CA's CRL dropped");
    assert_eq!(err.kind(), "missing_issuer", "{err}");

    let newer = CrlSet::load(&file(&dir, &crl(&ca, 6, 0, 7, &[42])), &bundle).expect("parses");
    let newer = in_force
        .replace(newer, &path, &bundle, now())
        .expect("newer replaces");
    assert!(newer.revokes(&CertId::from_der(&leaf(&ca, 42)).expect("cert")));
    assert!(!newer.revokes(&CertId::from_der(&leaf(&ca, 43)).expect("cert")));
}

fn ca_other_crl(dir: &tempfile::TempDir) -> CrlSet {
    let other = ca("Other CA");
    CrlSet::load(
        &file(dir, &crl(&other, 1, 0, 7, &[])),
        std::slice::from_ref(&other.der),
    )
    .expect("other")
}

#[test]
fn a_set_past_its_next_update_says_since_when() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = ca("Test CA");
    let set = CrlSet::load(
        &file(&dir, &crl(&ca, 1, 3, 1, &[])),
        std::slice::from_ref(&ca.der),
    )
    .expect("an expired file still parses");
    assert!(set.expired_since(now()).is_some());
    let current = CrlSet::load(
        &file(&dir, &crl(&ca, 2, 0, 7, &[])),
        std::slice::from_ref(&ca.der),
    )
    .expect("current");
    assert_eq!(current.expired_since(now()), None);
    assert_eq!(CrlSet::none().expired_since(now()), None);
}
