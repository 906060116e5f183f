//! `qianlian policy` and `qianlian directory`: replace or show the cluster's access policy or
//! department directory (operator certificate). A file is checked here, naming its path and
//! line, before anything is sent.
//!
//! A change is signed with the operator's signing key (`--sign-key`, by default `<name>.sign.key`
//! beside the certificate) when there is one; a cluster whose directory lists operator keys
//! refuses unsigned changes. A change that needs a second operator is passed on as a file
//! (`--out`) that the other operator applies with `--cosign`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::{client, config_signing};
use qianlian_gateway::domain::directory::Directory;
use qianlian_gateway::domain::policy::{self, Policy};
use qianlian_verifier::record::{AuthorizedRecord, ConfigChange, ConfigKind, Record};

use super::conn::ConnArgs;

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate FILE, sign it, then append it to the log: every node switches to it at that
    /// log index.
    Apply {
        /// Policy rules (policy.csv) or directory (departments.toml).
        #[arg(required_unless_present = "cosign")]
        file: Option<PathBuf>,
        /// Policy only: a new Casbin model (default: keep the model in force).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The operator's Ed25519 signing key (PKCS#8 PEM); default: `<name>.sign.key` beside
        /// the certificate (`clients/<operator>.sign.key` of `qianlian pki init`), if present.
        #[arg(long)]
        sign_key: Option<PathBuf>,
        /// Sign only: write the signed change to this file for another operator, who applies
        /// it with `--cosign`; nothing is applied.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Add this operator's signature to a change another operator signed with `--out`,
        /// then apply it (or, with `--out`, pass it on).
        #[arg(long, conflicts_with_all = ["file", "model"])]
        cosign: Option<PathBuf>,
    },
    /// Print the version in force and its text.
    Show,
}

pub async fn exec(kind: &str, args: ConfigArgs) -> anyhow::Result<()> {
    let p = args.conn.profile()?;
    let config_kind = if kind == "policy" {
        ConfigKind::Policy
    } else {
        ConfigKind::Directory
    };
    let ConfigCommand::Apply {
        file,
        model,
        sign_key,
        out,
        cosign,
    } = args.command
    else {
        return client::show_config(&p, kind).await;
    };
    let signer = config_signing::signer(&p, sign_key.as_deref())?;
    if let Some(path) = cosign {
        let Some(signer) = signer else {
            anyhow::bail!(
                "--cosign adds your signature: pass --sign-key, or keep your signing key beside your certificate as <name>.sign.key"
            );
        };
        let mut change = config_signing::read_file(&path, config_kind)?;
        let signed_by = config_signing::signed_by(&change);
        eprintln!(
            "signing the {kind} change replacing version {} (signed so far by {}) as {}",
            change.replaces,
            signed_by.join(", "),
            signer.who.department
        );
        signer.add_to(&mut change);
        return submit_or_write(&p, kind, change, out.as_deref()).await;
    }
    let Some(file) = file else {
        anyhow::bail!("name the {kind} file to apply, or --cosign a signed change");
    };
    let read = |f: &PathBuf| {
        std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
    };
    let text = read(&file)?;
    let model_path = model;
    let model = model_path.as_ref().map(read).transpose()?;
    // Refuse a broken file here, naming its path and line, before anything is sent.
    if kind == "policy" {
        policy::parse_rules(&text, &file)?;
        if let (Some(m), Some(path)) = (&model, &model_path) {
            Policy::from_text(m, &text, 0, path, &file).await?;
        }
    } else {
        Directory::from_toml(&text, &file.display().to_string())?;
    }
    let Some(signer) = signer else {
        if out.is_some() {
            anyhow::bail!(
                "--out writes a signed change, and there is no signing key: pass --sign-key"
            );
        }
        return client::apply_config(&p, kind, text, model, Vec::new()).await;
    };
    // The signature covers the version replaced and the whole document, the model included.
    let (replaces, model_in_force) = client::config_in_force(&p, kind).await?;
    let change = match config_kind {
        ConfigKind::Policy => ConfigChange::Policy {
            model: model.or(model_in_force).ok_or_else(|| {
                anyhow::anyhow!("the cluster has no policy yet: pass the Casbin model with --model")
            })?,
            rules: text,
        },
        ConfigKind::Directory | ConfigKind::Membership => ConfigChange::Directory { toml: text },
    };
    let change = signer.sign_new(change, replaces);
    submit_or_write(&p, kind, change, out.as_deref()).await
}

/// Apply a signed change, or write it to `out` for the next operator.
async fn submit_or_write(
    p: &qianlian_cli::profile::Profile,
    kind: &str,
    change: AuthorizedRecord,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(out) = out {
        config_signing::write_file(out, &change)?;
        println!(
            "signed the {kind} change replacing version {} (signed by {}); wrote {}. Another operator applies it with `qianlian {kind} apply --cosign {}`",
            change.replaces,
            config_signing::signed_by(&change).join(", "),
            out.display(),
            out.display()
        );
        return Ok(());
    }
    let bytes = Record::Authorized(Box::new(change)).encode();
    client::apply_config(p, kind, String::new(), None, bytes).await
}
