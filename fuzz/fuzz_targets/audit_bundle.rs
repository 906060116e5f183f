//! Evidence bundles, as an inspector hands them over, on arbitrary text: no call may panic, and
//! only evidence the sample log really holds may pass `check_bundle`.
//!
//! The input, as (lossy) UTF-8 text, goes to `EvidenceBundle::from_json`. A bundle it accepts
//! 1. round-trips: `to_json_pretty` reads back as the same bundle and writes the same text;
//! 2. has its record bytes decoded as they stand (`highest_policy_version`, `Record::decode`),
//!    before any proof says they are logged;
//! 3. is checked by `check_bundle` twice: with the node keys pinned from the sample trust bundle,
//!    and with the keys the bundle carries. Whatever passes must stand on the sample log's
//!    checkpoint (origin, size, root, signers), and every record and policy it carries must be
//!    the log's bytes at its index, with the log's JSON view, and policies numbered 1, 2, … in
//!    log order: a part of the genuine sample evidence. Anything else judged valid is a forgery
//!    that got through. (Which policy bears which number is not bound by the log; see
//!    `BundlePolicy::version`.)

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qianlian_fuzz::Samples;
use qianlian_verifier::audit::bundle::json_view;
use qianlian_verifier::audit::{BundleReport, EvidenceBundle, TrustedKeys, check_bundle};
use qianlian_verifier::record::Record;

static SAMPLES: OnceLock<(Samples, TrustedKeys)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (samples, pinned) = SAMPLES.get_or_init(|| {
        let samples = Samples::new();
        let pinned = TrustedKeys::from(&samples.trust);
        (samples, pinned)
    });
    let text = String::from_utf8_lossy(data);
    let bundle = match EvidenceBundle::from_json(&text) {
        Ok(bundle) => bundle,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };

    let json = bundle.to_json_pretty();
    let again = EvidenceBundle::from_json(&json);
    assert_eq!(
        again.as_ref(),
        Ok(&bundle),
        "the bundle's JSON reads back differently"
    );
    assert_eq!(
        again.map(|b| b.to_json_pretty()).as_deref(),
        Ok(json.as_str()),
        "the bundle's JSON is not written the same way twice"
    );

    let _ = bundle.highest_policy_version();
    for bytes in bundle.records.iter().map(|r| &r.record) {
        if let Ok(record) = Record::decode(bytes) {
            assert_eq!(Record::decode(&record.encode()).as_ref(), Ok(&record));
            let _ = json_view(&record);
        }
    }

    for keys in [Some(pinned), None] {
        match check_bundle(&bundle, keys) {
            Ok(report) => assert_genuine(&bundle, &report, keys.is_some(), samples),
            Err(error) => {
                let _ = (error.to_string(), error.log_index());
            }
        }
    }
});

/// Panics unless everything `report` vouches for is true of the sample log.
fn assert_genuine(bundle: &EvidenceBundle, report: &BundleReport, pinned: bool, samples: &Samples) {
    let forged = |what: String| -> ! {
        let keys = if pinned { "pinned" } else { "its own" };
        panic!("check_bundle (with {keys} keys) passed a forged evidence bundle: {what}")
    };
    let genuine = samples.trust.checkpoint();
    let head = &genuine.checkpoint;
    if (report.origin.as_str(), report.tree_size, report.root)
        != (head.origin.as_str(), head.size, head.root)
    {
        forged(format!(
            "checkpoint of {:?} at size {} is not the sample log's",
            report.origin, report.tree_size
        ));
    }
    assert_eq!(report.keys_pinned, pinned);
    assert_eq!(report.records_checked, bundle.records.len());
    assert_eq!(report.policies_checked, bundle.policies.len());
    let distinct: BTreeSet<&String> = report.signers.iter().collect();
    let k = if pinned { 2 } else { bundle.min_cosigners };
    if report.min_cosigners != k || k == 0 || distinct.len() != report.signers.len() {
        forged(format!(
            "signers {:?} reported against a threshold of {}",
            report.signers, report.min_cosigners
        ));
    }
    if report.signers.len() < k {
        forged(format!(
            "{} signer(s) where {k} are needed",
            report.signers.len()
        ));
    }
    if pinned && !report.signers.iter().all(|s| genuine.signers.contains(s)) {
        forged(format!(
            "signers {:?}, but only {:?} signed the sample checkpoint",
            report.signers, genuine.signers
        ));
    }

    let logged = |log_index: u64| {
        usize::try_from(log_index)
            .ok()
            .and_then(|i| samples.log.get(i))
    };
    let mut times = Vec::new();
    for r in &bundle.records {
        if logged(r.log_index) != Some(&r.record) {
            forged(format!(
                "record at log index {}: not the bytes the log holds there",
                r.log_index
            ));
        }
        let record = Record::decode(&r.record).expect("the log's records decode");
        if r.record_json != json_view(&record) {
            forged(format!(
                "record at log index {}: record_json is not the logged record's view",
                r.log_index
            ));
        }
        times.push(record.time_unix_ms());
    }
    for p in &bundle.policies {
        if logged(p.log_index) != Some(&p.record) {
            forged(format!(
                "policy at log index {}: not the bytes the log holds there",
                p.log_index
            ));
        }
        // The number a policy bears is the exporter's word (`BundlePolicy::version`): the log
        // binds a policy's bytes to its index, not to a version, so only the order is checked.
        if !samples.is_policy_at(p.log_index) {
            forged(format!(
                "policy at log index {}: the log holds no policy there",
                p.log_index
            ));
        }
    }
    let numbered = bundle.policies.iter().zip(1..).all(|(p, n)| p.version == n);
    let ordered = bundle
        .policies
        .windows(2)
        .all(|w| w[0].log_index < w[1].log_index);
    if !(numbered && ordered) {
        forged("policies not numbered 1, 2, … in log order".into());
    }
    let range = times.iter().min().zip(times.iter().max());
    assert_eq!(
        report.time_range_unix_ms,
        range.map(|(lo, hi)| (*lo, *hi)),
        "the reported time range is not the records'"
    );
}
