use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::license::cose::sign_license;
use crate::license::fixtures::{
    HOUSING, HOUSING_KEY_ID, ISSUED, Log, MARKET, NOW, business_license, construction_permit,
    housing_key, market_key, names_license, nodes, rogue_key, signed_business_license,
};
use crate::license::qr::to_qr_payload;
use crate::license::status::StatusEntry;

/// A log in which `license` was issued, the evidence for it, and a bundle with `entries`.
fn issued(license: &[u8], entries: Vec<StatusEntry>) -> (LicenseEvidence, TrustBundle) {
    let mut log = Log::new();
    let index = log.issue(license);
    log.tree.push_entry(b"a later record");
    (log.evidence(license, index), log.bundle(entries))
}

fn verdict(license: &[u8], evidence: Option<&LicenseEvidence>, bundle: &TrustBundle) -> Verdict {
    verify_offline(license, evidence, bundle, NOW, &names_license)
}

fn status_entry(license: &[u8], state: LicenseState) -> StatusEntry {
    StatusEntry {
        license_hash: license_hash(license),
        state,
        since: NOW - 86_400,
        reason: "fraud".into(),
    }
}

#[test]
fn a_logged_license_in_good_standing_is_genuine() {
    let license = signed_business_license();
    let (evidence, bundle) = issued(&license, vec![]);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::Genuine, "{}", v.reason);
    assert!(v.is_genuine());
    assert_eq!(v.claims, Some(business_license()));
    assert_eq!(v.license_hash, Some(license_hash(&license)));
    assert_eq!(
        (v.checkpoint_age_seconds, v.status_list_age_seconds),
        (3600, 3600)
    );
    assert!(v.reason.contains("贵州省市场监督管理局"), "{}", v.reason);
    assert!(v.reason.contains("index 5 of a tree of 7"), "{}", v.reason);
    assert!(v.reason.contains("node-a, node-b"), "{}", v.reason);

    let json = v.to_json();
    assert_eq!(json["status"], "genuine");
    assert_eq!(json["claims"]["type_name"], "营业执照");
    assert_eq!(json["license_hash"], hex::encode(license_hash(&license)));
    assert_eq!(json["status_list_age_seconds"], 3600);
}

#[test]
fn a_qr_payload_verifies_like_its_bytes() {
    let license = signed_business_license();
    let (evidence, bundle) = issued(&license, vec![]);
    let qr = to_qr_payload(&license);
    let v = verify_qr_offline(&qr, Some(&evidence), &bundle, NOW, &names_license);
    assert_eq!(v.status, VerdictStatus::Genuine, "{}", v.reason);

    // Any one character changed: the payload no longer decodes, or decodes to other bytes.
    let alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    for i in (4..qr.len()).step_by(7) {
        let original = qr.as_bytes()[i] as char;
        let other = alphabet
            .chars()
            .find(|&c| c != original)
            .expect("45 characters");
        let mut changed = qr.clone();
        changed.replace_range(i..=i, &other.to_string());
        let v = verify_qr_offline(&changed, Some(&evidence), &bundle, NOW, &names_license);
        assert_eq!(v.status, VerdictStatus::Tampered, "char {i}: {}", v.reason);
        assert_eq!(v.claims, None);
    }
}

#[test]
fn malformed_input_is_tampered() {
    let (evidence, bundle) = issued(&signed_business_license(), vec![]);
    for bytes in [&b""[..], b"\xd2\x84", b"not a license at all"] {
        let v = verdict(bytes, Some(&evidence), &bundle);
        assert_eq!(v.status, VerdictStatus::Tampered);
        assert!(
            v.reason.starts_with("the license is malformed"),
            "{}",
            v.reason
        );
    }
}

#[test]
fn an_unknown_key_is_an_unknown_issuer() {
    let mut claims = business_license();
    claims.issuer_key_id = "market-regulation-2019".into();
    let license = sign_license(&claims, &rogue_key()).expect("signs");
    let (evidence, bundle) = issued(&license, vec![]);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::UnknownIssuer, "{}", v.reason);
    assert_eq!(v.claims, None, "unverified claims are never returned");
    assert!(v.reason.contains("market-regulation-2019"), "{}", v.reason);
}

#[test]
fn a_known_key_id_with_the_wrong_key_is_tampered() {
    // Same kid as the market regulator's real key, signed by someone else.
    let license = sign_license(&business_license(), &rogue_key()).expect("signs");
    let (evidence, bundle) = issued(&license, vec![]);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::Tampered, "{}", v.reason);
    assert_eq!(v.claims, None);
}

#[test]
fn a_department_outside_its_remit_is_not_authorised() {
    // The housing department signs a business license, which only market regulation may issue.
    let mut claims = business_license();
    claims.department = HOUSING.into();
    claims.issuer_key_id = HOUSING_KEY_ID.into();
    let license = sign_license(&claims, &housing_key()).expect("signs");
    let (evidence, bundle) = issued(&license, vec![]);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::IssuerNotAuthorised, "{}", v.reason);
    assert!(v.reason.contains("may not issue 营业执照"), "{}", v.reason);

    // The housing department's key signs a license in market regulation's name.
    let mut claims = business_license();
    claims.issuer_key_id = HOUSING_KEY_ID.into();
    let license = sign_license(&claims, &housing_key()).expect("signs");
    let (evidence, bundle) = issued(&license, vec![]);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::IssuerNotAuthorised, "{}", v.reason);
    assert!(v.reason.contains(MARKET), "{}", v.reason);
}

#[test]
fn missing_or_broken_evidence_is_not_on_record() {
    let license = signed_business_license();
    let (evidence, bundle) = issued(&license, vec![]);
    let [a, ..] = nodes();

    let v = verdict(&license, None, &bundle);
    assert_eq!(v.status, VerdictStatus::NotOnRecord);
    assert_eq!(
        v.claims,
        Some(business_license()),
        "the signature did verify"
    );

    let other = sign_license(&construction_permit(), &housing_key()).expect("signs");
    let mut log = Log::new();
    let index = log.issue(&other);
    let mut bad: Vec<(LicenseEvidence, &str)> = vec![(
        log.evidence(&other, index),
        "does not record the issuance of this license",
    )];
    let mut e = evidence.clone();
    e.checkpoint = log.checkpoint(&[&a]);
    bad.push((e, "checkpoint is refused"));
    let mut e = evidence.clone();
    e.tree_size += 1;
    bad.push((e, "proof is for a tree of size 8"));
    let mut e = evidence.clone();
    e.inclusion_proof[0][0] ^= 1;
    bad.push((e, "inclusion proof does not hold"));
    let mut e = evidence.clone();
    e.log_index -= 1;
    bad.push((e, "inclusion proof does not hold"));
    let mut e = evidence.clone();
    e.inclusion_proof.pop();
    bad.push((e, "inclusion proof does not hold"));
    for (e, why) in bad {
        let v = verdict(&license, Some(&e), &bundle);
        assert_eq!(v.status, VerdictStatus::NotOnRecord, "{why}");
        assert!(v.reason.contains(why), "{why}: {}", v.reason);
    }

    // The same record presented to a check that does not recognise it.
    let v = verify_offline(
        &license,
        Some(&evidence),
        &bundle,
        NOW,
        &|_: &[u8], _: &Hash| false,
    );
    assert_eq!(v.status, VerdictStatus::NotOnRecord);
}

#[test]
fn listed_licenses_are_suspended_or_revoked() {
    let license = signed_business_license();
    for (state, expected) in [
        (LicenseState::Suspended, VerdictStatus::Suspended),
        (LicenseState::Revoked, VerdictStatus::Revoked),
    ] {
        let (evidence, bundle) = issued(&license, vec![status_entry(&license, state)]);
        let v = verdict(&license, Some(&evidence), &bundle);
        assert_eq!(v.status, expected, "{}", v.reason);
        assert!(v.reason.contains("reason: fraud"), "{}", v.reason);
        assert!(v.reason.contains("3600 s ago"), "{}", v.reason);
    }
}

#[test]
fn validity_dates_give_expired_and_not_yet_valid() {
    let license = sign_license(&construction_permit(), &housing_key()).expect("signs");
    let (evidence, bundle) = issued(&license, vec![]);
    let at = |now| verify_offline(&license, Some(&evidence), &bundle, now, &names_license);
    assert_eq!(at(ISSUED - 1).status, VerdictStatus::NotYetValid);
    assert_eq!(at(ISSUED).status, VerdictStatus::Genuine);
    let until = ISSUED + 365 * 86_400;
    assert_eq!(at(until - 1).status, VerdictStatus::Genuine);
    let expired = at(until);
    assert_eq!(expired.status, VerdictStatus::Expired);
    assert_eq!(expired.reason, "expired at 2027-01-15T00:00:00Z");

    // A revoked license that has also expired says revoked: the more serious finding.
    let (evidence, bundle) = issued(
        &license,
        vec![status_entry(&license, LicenseState::Revoked)],
    );
    let v = verify_offline(
        &license,
        Some(&evidence),
        &bundle,
        until + 1,
        &names_license,
    );
    assert_eq!(v.status, VerdictStatus::Revoked);
}

#[test]
fn an_old_bundle_misses_a_newer_revocation_and_says_how_old_it_is() {
    let license = signed_business_license();
    let mut log = Log::new();
    let index = log.issue(&license);
    let old_bundle = log.bundle(vec![]);
    let evidence = log.evidence(&license, index);
    // Later, the license is revoked; a fresh bundle lists it.
    log.tree.push_entry(b"revocation record");
    let new_bundle = log.bundle(vec![status_entry(&license, LicenseState::Revoked)]);

    let a_week_later = NOW + 7 * 86_400;
    let old = verify_offline(
        &license,
        Some(&evidence),
        &old_bundle,
        a_week_later,
        &names_license,
    );
    assert_eq!(old.status, VerdictStatus::Genuine);
    assert_eq!(old.status_list_age_seconds, 7 * 86_400 + 3600);
    assert_eq!(old.checkpoint_age_seconds, old.status_list_age_seconds);
    let new = verify_offline(
        &license,
        Some(&evidence),
        &new_bundle,
        a_week_later,
        &names_license,
    );
    assert_eq!(new.status, VerdictStatus::Revoked);
}

#[test]
fn a_status_list_older_than_the_license_says_so() {
    let license = signed_business_license();
    let mut log = Log::new();
    let bundle = log.bundle(vec![]);
    let index = log.issue(&license);
    let evidence = log.evidence(&license, index);
    let v = verdict(&license, Some(&evidence), &bundle);
    assert_eq!(v.status, VerdictStatus::Genuine, "{}", v.reason);
    assert!(
        v.reason
            .contains("a later suspension or revocation would not show"),
        "{}",
        v.reason
    );
}

#[test]
fn every_verdict_status_has_a_distinct_name() {
    let all = [
        VerdictStatus::Genuine,
        VerdictStatus::Tampered,
        VerdictStatus::UnknownIssuer,
        VerdictStatus::IssuerNotAuthorised,
        VerdictStatus::NotOnRecord,
        VerdictStatus::Suspended,
        VerdictStatus::Revoked,
        VerdictStatus::Expired,
        VerdictStatus::NotYetValid,
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(|s| s.as_str()).collect();
    assert_eq!(names.len(), all.len());
}

/// One genuine license with its evidence and bundle, built once for the property tests.
fn genuine_fixture() -> &'static (Vec<u8>, LicenseEvidence, TrustBundle) {
    static FIXTURE: OnceLock<(Vec<u8>, LicenseEvidence, TrustBundle)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let license = signed_business_license();
        let (evidence, bundle) = issued(&license, vec![]);
        (license, evidence, bundle)
    })
}

proptest! {
    /// The brief's promise: change any one byte of a logged, genuine license and the verdict is
    /// Tampered (not UnknownIssuer, not NotOnRecord): the kid is cross-checked with the claims,
    /// so a changed kid cannot pass for another issuer.
    #[test]
    fn any_one_byte_change_is_tampered(pos in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let (license, evidence, bundle) = genuine_fixture();
        let mut changed = license.clone();
        let i = pos.index(changed.len());
        changed[i] ^= flip;
        let v = verdict(&changed, Some(evidence), bundle);
        prop_assert_eq!(v.status, VerdictStatus::Tampered, "byte {}: {}", i, v.reason);
    }
}

#[test]
fn market_key_fixture_is_the_one_in_the_bundle() {
    let (_, bundle) = issued(&signed_business_license(), vec![]);
    let (_, key) = bundle.issuer_key("market-regulation-2026").expect("listed");
    assert_eq!(*key, market_key().verifying_key());
}
