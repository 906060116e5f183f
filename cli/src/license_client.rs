//! `qianlian license …`: issue, change, verify (online or offline), export trust bundles,
//! render QR codes and watch a holder's licenses, from the command line.

use std::path::Path;

use qianlian_gateway::node::time::now_unix;
use qianlian_proto::v1::licenses_client::LicensesClient;
use qianlian_proto::v1::verify_license_request::Document;
use qianlian_proto::v1::{
    ChangeLicenseStatusRequest, GetTrustBundleRequest, IssueLicenseRequest, LicenseStatusChange,
    VerifyLicenseRequest, WatchLicensesRequest,
};
use qianlian_raft_store::record::Record;
use qianlian_verifier::Hash;
use qianlian_verifier::license::{
    HolderBundle, TrustBundle, from_qr_payload, to_qr_payload, verify_offline,
};

use crate::client::describe_status;
use crate::profile::Profile;

/// What `license issue` sends.
#[derive(Debug, Clone)]
pub struct IssueArgs {
    pub license_type: String,
    pub number: String,
    pub holder_name: String,
    pub holder_id: String,
    pub valid_from: i64,
    pub valid_until: i64,
    pub fields: Vec<(String, String)>,
}

/// `license issue`: print the QR payload and write the holder's bundle to `out`.
pub async fn issue(profile: &Profile, args: IssueArgs, out: &Path) -> anyhow::Result<()> {
    let mut c = LicensesClient::new(profile.connect().await?);
    let r = c
        .issue_license(IssueLicenseRequest {
            license_type: args.license_type,
            number: args.number,
            holder_name: args.holder_name,
            holder_id: args.holder_id,
            valid_from: args.valid_from,
            valid_until: args.valid_until,
            fields: args.fields.into_iter().collect(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    std::fs::write(out, &r.holder_bundle_json)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let receipt = r.receipt.unwrap_or_default();
    println!(
        "issued license {}\nnotarized: log index {}\nholder bundle written to {}\nQR payload ({} characters):\n{}",
        hex::encode(&r.license_hash),
        receipt.log_index,
        out.display(),
        r.qr_payload.len(),
        r.qr_payload
    );
    Ok(())
}

/// `license suspend|reinstate|revoke`.
pub async fn change(
    profile: &Profile,
    license_hash: &str,
    change: LicenseStatusChange,
    reason: &str,
) -> anyhow::Result<()> {
    let hash = hex::decode(license_hash)
        .ok()
        .filter(|h| h.len() == 32)
        .ok_or_else(|| {
            anyhow::anyhow!("the license hash is 64 hex digits, as `license issue` prints it")
        })?;
    let mut c = LicensesClient::new(profile.connect().await?);
    let r = c
        .change_license_status(ChangeLicenseStatusRequest {
            license_hash: hash,
            change: change as i32,
            reason: reason.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    println!(
        "license is now {}\nnotarized: log index {}",
        r.status,
        r.receipt.unwrap_or_default().log_index
    );
    Ok(())
}

/// A license from a holder bundle file, a bare license file, or a QR payload.
fn load(file: Option<&Path>, qr: Option<&str>) -> anyhow::Result<(Vec<u8>, Option<HolderBundle>)> {
    match (file, qr) {
        (Some(f), None) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
            if text
                .trim_start()
                .starts_with(qianlian_verifier::license::QR_PREFIX)
            {
                return Ok((from_qr_payload(text.trim())?, None));
            }
            let bundle = HolderBundle::from_json(&text).map_err(|e| {
                anyhow::anyhow!("{}: not a holder bundle or QR payload: {e}", f.display())
            })?;
            Ok((bundle.license.clone(), Some(bundle)))
        }
        (None, Some(q)) => Ok((from_qr_payload(q.trim())?, None)),
        _ => anyhow::bail!("give the license as FILE (holder bundle or QR text) or --qr STRING"),
    }
}

/// Does `record` (canonical log bytes) record the issuance of `license_hash`? A sealed
/// issuance record must also carry the issuing department's seal, by a key `trust` lists for
/// it: the record was logged by the issuer, not in its name.
pub fn records_issuance(record: &[u8], license_hash: &Hash, trust: Option<&TrustBundle>) -> bool {
    let Ok(record) = Record::decode(record) else {
        return false;
    };
    let Record::LicenseIssued(r) = record.content() else {
        return false;
    };
    if &r.license_hash != license_hash {
        return false;
    }
    match &record {
        Record::Sealed(s) => {
            let o = &s.seal.originator;
            s.verify_signature().is_ok()
                && o.department == r.department
                && trust.is_none_or(|t| {
                    t.issuer_key(&o.key_id).is_some_and(|(d, key)| {
                        d.id == r.department && key.as_bytes() == &o.public_key
                    })
                })
        }
        _ => true,
    }
}

/// `license verify --offline`: only the verifier crate and the trust bundle.
pub fn verify_offline_cli(
    file: Option<&Path>,
    qr: Option<&str>,
    trust: &Path,
) -> anyhow::Result<bool> {
    let (license, bundle) = load(file, qr)?;
    let text = std::fs::read_to_string(trust)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", trust.display()))?;
    let trust = TrustBundle::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a usable trust bundle: {e}", trust.display()))?;
    let check = |record: &[u8], hash: &Hash| records_issuance(record, hash, Some(&trust));
    let evidence = bundle.as_ref().and_then(|b| b.evidence.as_ref());
    let v = verify_offline(&license, evidence, &trust, now_unix(), &check);
    println!("{}", serde_json::to_string_pretty(&v.to_json())?);
    println!(
        "{} ({}); trust bundle knowledge is {} s old (checkpoint) and {} s old (status list)",
        v.status.as_str(),
        v.reason,
        v.checkpoint_age_seconds,
        v.status_list_age_seconds
    );
    Ok(v.is_genuine())
}

/// `license verify` online.
pub async fn verify_online(
    profile: &Profile,
    file: Option<&Path>,
    qr: Option<&str>,
) -> anyhow::Result<bool> {
    let doc = match (file, qr) {
        (None, Some(q)) => Document::Qr(q.trim().to_owned()),
        _ => Document::License(load(file, qr)?.0),
    };
    let mut c = LicensesClient::new(profile.connect().await?);
    let v = c
        .verify_license(VerifyLicenseRequest {
            document: Some(doc),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    println!(
        "{}",
        serde_json::to_string_pretty(&qianlian_gateway::services::license::verdict_json(&v))?
    );
    println!("{} ({})", v.verdict, v.reason);
    Ok(v.verdict == "genuine")
}

/// `license trust-bundle --out FILE`.
pub async fn trust_bundle(profile: &Profile, out: &Path) -> anyhow::Result<()> {
    let mut c = LicensesClient::new(profile.connect().await?);
    let r = c
        .get_trust_bundle(GetTrustBundleRequest {})
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    std::fs::write(out, &r.trust_bundle_json)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!("trust bundle written to {}", out.display());
    Ok(())
}

/// `license watch`: the records of `holder_id` (empty: the token's holder), with the holder's
/// bearer `token` or the profile's certificate.
pub async fn watch(profile: &Profile, holder_id: &str, token: Option<&str>) -> anyhow::Result<()> {
    let mut c = LicensesClient::new(profile.connect().await?);
    let mut req = tonic::Request::new(WatchLicensesRequest {
        holder_id: holder_id.to_owned(),
    });
    if let Some(token) = token {
        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        req.metadata_mut().insert("authorization", auth);
    }
    let r = c
        .watch_licenses(req)
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let cp = r.checkpoint.unwrap_or_default();
    println!(
        "{} record(s) for this holder, proven against the log of size {}",
        r.records.len(),
        cp.tree_size
    );
    for w in r.records {
        println!(
            "log index {} ({} proof hashes): {}",
            w.log_index,
            w.inclusion_proof.len(),
            w.record_json
        );
    }
    Ok(())
}

/// `license qr`: render a license's QR payload as PNG and/or SVG.
pub fn qr(
    file: Option<&Path>,
    qr: Option<&str>,
    png_out: Option<&Path>,
    svg_out: Option<&Path>,
) -> anyhow::Result<()> {
    let (license, _) = load(file, qr)?;
    let payload = to_qr_payload(&license);
    // Alphanumeric mode: base45's alphabet is the QR alphanumeric set.
    let code = qrcode::QrCode::with_error_correction_level(payload.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| anyhow::anyhow!("the payload does not fit a QR code: {e}"))?;
    let qrcode::Version::Normal(version) = code.version() else {
        anyhow::bail!("unexpected micro QR code");
    };
    if let Some(p) = svg_out {
        let svg = code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(400, 400)
            .build();
        std::fs::write(p, svg).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = png_out {
        write_png(&code, p)?;
        println!("wrote {}", p.display());
    }
    println!(
        "QR version {version}, {} modules wide, error correction M, payload {} characters",
        code.width(),
        payload.len()
    );
    Ok(())
}

/// A grayscale PNG, 4 pixels per module with a 4-module quiet zone.
fn write_png(code: &qrcode::QrCode, path: &Path) -> anyhow::Result<()> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let w = code.width();
    let size = (w + 2 * QUIET) * SCALE;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; size * size];
    for y in 0..w {
        for x in 0..w {
            if colors[y * w + x] == qrcode::Color::Dark {
                for dy in 0..SCALE {
                    let row = (y + QUIET) * SCALE + dy;
                    let start = row * size + (x + QUIET) * SCALE;
                    pixels[start..start + SCALE].fill(0);
                }
            }
        }
    }
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), size as u32, size as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&pixels)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use qianlian_verifier::ed25519_dalek::SigningKey;
    use qianlian_verifier::record::{
        Caller, LicenseIssuedRecord, Originator, Record, SealedRecord, SignerRole,
    };

    use super::records_issuance;

    fn issued() -> Record {
        Record::LicenseIssued(LicenseIssuedRecord {
            request_id: "r".into(),
            time_unix_ms: 1,
            caller: Caller {
                department: "market-regulation".into(),
                role: "department".into(),
                cert_fingerprint: "ab".repeat(32),
            },
            license_hash: [1; 32],
            license_type: "business-license".into(),
            number: "1".into(),
            department: "market-regulation".into(),
            holder_hash: [2; 32],
            valid_from: 0,
            valid_until: None,
        })
    }

    fn sealed_as(department: &str) -> Record {
        let originator = Originator {
            role: SignerRole::LicenseIssuer,
            department: department.into(),
            key_id: "k".into(),
            public_key: [0; 32],
        };
        let key = SigningKey::from_bytes(&[5; 32]);
        Record::Sealed(Box::new(SealedRecord::seal(issued(), originator, &key)))
    }

    #[test]
    fn an_issuance_record_counts_only_with_the_issuers_seal() {
        assert!(records_issuance(&issued().encode(), &[1; 32], None));
        assert!(records_issuance(
            &sealed_as("market-regulation").encode(),
            &[1; 32],
            None
        ));
        assert!(!records_issuance(
            &sealed_as("housing").encode(),
            &[1; 32],
            None
        ));
        let Record::Sealed(mut altered) = sealed_as("market-regulation") else {
            panic!("sealed")
        };
        altered.seal.signature[0] ^= 1;
        assert!(!records_issuance(
            &Record::Sealed(altered).encode(),
            &[1; 32],
            None
        ));
        assert!(!records_issuance(&issued().encode(), &[3; 32], None));
    }
}
