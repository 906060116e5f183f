//! `qianlian license`: issue, change, verify and watch e-licenses; export the trust bundle;
//! render QR codes.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::license_client as lc;
use qianlian_proto::v1::LicenseStatusChange as C;

use super::conn::ConnArgs;

/// Issue, change, verify and watch e-licenses.
#[derive(Args, Debug)]
pub struct LicenseArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: LicenseCommand,
}

#[derive(Subcommand, Debug)]
pub enum LicenseCommand {
    /// Issue a license as your department; writes the holder's bundle and prints the QR payload.
    Issue {
        /// business-license, real-estate-certificate or construction-permit.
        #[arg(long = "type")]
        license_type: String,
        #[arg(long)]
        number: String,
        #[arg(long)]
        holder_name: String,
        /// Unified social credit code or resident identity number of the holder.
        #[arg(long)]
        holder_id: String,
        /// Start of validity, Unix seconds (default: now).
        #[arg(long, default_value_t = 0)]
        valid_from: i64,
        /// End of validity, Unix seconds, exclusive (default: none, or --valid-days).
        #[arg(long, default_value_t = 0)]
        valid_until: i64,
        /// Validity in days from now (instead of --valid-until).
        #[arg(long)]
        valid_days: Option<i64>,
        /// A type-specific field as key=value; repeatable.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Where to write the holder's bundle (license + evidence, JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Suspend a license you issued.
    Suspend {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a suspended license you issued.
    Reinstate {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a license you issued (final).
    Revoke {
        license_hash: String,
        #[arg(long)]
        reason: String,
    },
    /// Verify a license online (any node, no client certificate) or offline (--offline --trust).
    Verify {
        /// A holder bundle (JSON) or a file holding the QR payload.
        file: Option<PathBuf>,
        #[arg(long)]
        qr: Option<String>,
        /// Verify with the verifier crate and a trust bundle only (`--trust BUNDLE`).
        #[arg(long)]
        offline: bool,
        /// Trust bundle from `license trust-bundle` (also accepted as `--trust BUNDLE`).
        #[arg(long = "trust-bundle", id = "trust_bundle")]
        trust_bundle: Option<PathBuf>,
    },
    /// Export the trust bundle offline verifiers need.
    TrustBundle {
        #[arg(long)]
        out: PathBuf,
    },
    /// Render a license's QR code as PNG and/or SVG.
    Qr {
        file: Option<PathBuf>,
        #[arg(long)]
        qr: Option<String>,
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// List every license issued, suspended or revoked for a holder, with proofs. The holder
    /// watches their own with a bearer token from the identity provider (no certificate); a
    /// department or inspector certificate (--as, --cert) may watch any holder.
    Watch {
        /// The holder's unified social credit code or resident identity number; with --token,
        /// by default the token's holder.
        #[arg(long)]
        holder: Option<String>,
        /// The holder's bearer token (or set QIANLIAN_TOKEN); sent instead of a certificate.
        #[arg(long, env = "QIANLIAN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Run a license command; `Ok(false)` when a license was checked and is not genuine.
pub async fn exec(args: LicenseArgs) -> anyhow::Result<bool> {
    let conn = &args.conn;
    match args.command {
        LicenseCommand::Issue {
            license_type,
            number,
            holder_name,
            holder_id,
            valid_from,
            valid_until,
            valid_days,
            fields,
            out,
        } => {
            let now = qianlian_gateway::node::time::now_unix();
            let args = lc::IssueArgs {
                license_type,
                number,
                holder_name,
                holder_id,
                valid_from,
                valid_until: match valid_days {
                    Some(d) => now + d * 86_400,
                    None => valid_until,
                },
                fields: parse_fields(&fields)?,
            };
            lc::issue(&conn.profile()?, args, &out).await?;
            Ok(true)
        }
        LicenseCommand::Suspend {
            license_hash,
            reason,
        } => change(conn, &license_hash, C::Suspend, &reason).await,
        LicenseCommand::Reinstate {
            license_hash,
            reason,
        } => change(conn, &license_hash, C::Reinstate, &reason).await,
        LicenseCommand::Revoke {
            license_hash,
            reason,
        } => change(conn, &license_hash, C::Revoke, &reason).await,
        LicenseCommand::Verify {
            file,
            qr,
            offline: false,
            ..
        } => lc::verify_online(&conn.profile_or_public()?, file.as_deref(), qr.as_deref()).await,
        LicenseCommand::Verify {
            file,
            qr,
            offline: true,
            trust_bundle,
        } => {
            let bundle = offline_trust_bundle(trust_bundle, &conn.trust)?;
            lc::verify_offline_cli(file.as_deref(), qr.as_deref(), &bundle)
        }
        LicenseCommand::TrustBundle { out } => {
            lc::trust_bundle(&conn.profile_or_public()?, &out).await?;
            Ok(true)
        }
        LicenseCommand::Qr { file, qr, png, svg } => {
            anyhow::ensure!(
                png.is_some() || svg.is_some(),
                "say where: --png FILE and/or --svg FILE"
            );
            lc::qr(
                file.as_deref(),
                qr.as_deref(),
                png.as_deref(),
                svg.as_deref(),
            )?;
            Ok(true)
        }
        LicenseCommand::Watch { holder, token } => {
            let holder = holder.unwrap_or_default();
            match token {
                Some(token) => {
                    // The holder has no client certificate: the token is the credential.
                    let mut p = conn.profile_or_public()?;
                    p.identity = None;
                    lc::watch(&p, &holder, Some(&token)).await?;
                }
                None => {
                    let p = conn.profile_or_public()?;
                    anyhow::ensure!(
                        p.identity.is_some(),
                        "watching licenses is not anonymous: a holder sends their token (--token or QIANLIAN_TOKEN), a department or inspector its certificate (--as, or --cert and --key)"
                    );
                    anyhow::ensure!(
                        !holder.trim().is_empty(),
                        "name the holder to watch: --holder ID"
                    );
                    lc::watch(&p, &holder, None).await?;
                }
            }
            Ok(true)
        }
    }
}

/// The `--field key=value` arguments as pairs.
fn parse_fields(fields: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    fields
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--field `{f}`: write key=value"))
        })
        .collect()
}

/// Suspend, reinstate or revoke a license as the caller's department.
async fn change(
    conn: &ConnArgs,
    license_hash: &str,
    change: C,
    reason: &str,
) -> anyhow::Result<bool> {
    lc::change(&conn.profile()?, license_hash, change, reason).await?;
    Ok(true)
}

/// The trust bundle an offline verification needs: `--trust-bundle`, or a single `--trust`.
fn offline_trust_bundle(
    trust_bundle: Option<PathBuf>,
    trust: &[PathBuf],
) -> anyhow::Result<PathBuf> {
    match (trust_bundle, trust) {
        (Some(t), _) => Ok(t),
        (None, [t]) => Ok(t.clone()),
        _ => anyhow::bail!(
            "--offline needs the trust bundle: --trust BUNDLE (from `qianlian license trust-bundle`)"
        ),
    }
}
