//! `qianlian audit`: query the access trail, a data subject's own accesses, evidence bundles
//! exported and checked offline, and the whole log verified against cosigned checkpoints.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::audit_client::{self, Format, QueryPlan};
use qianlian_cli::{client, dev};
use qianlian_proto::contract::MAX_PAGE;

use super::conn::ConnArgs;

/// Query the access trail, check its integrity, export and check evidence bundles.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// What an audit query matches; every option given must hold.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Department that asked for the data.
    #[arg(long)]
    consumer: Option<String>,
    /// Department that owns the data.
    #[arg(long)]
    provider: Option<String>,
    /// Dataset: <owner>/<dataset>, or the dataset id alone.
    #[arg(long)]
    dataset: Option<String>,
    /// Record key (or the recorded text of a query).
    #[arg(long = "record-key")]
    record_key: Option<String>,
    /// read, write or query.
    #[arg(long)]
    action: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// Declared purpose code.
    #[arg(long)]
    purpose: Option<String>,
    /// Version of the policy that decided.
    #[arg(long)]
    policy_version: Option<u64>,
    /// A data subject's resident identity number or unified social credit code (the node
    /// hashes it; it is never stored).
    #[arg(long)]
    subject: Option<String>,
    /// A data subject's keyed hash (64 hex digits).
    #[arg(long)]
    subject_hash: Option<String>,
    /// provider (the owner's record) or consumer (the forwarding gateway's record).
    #[arg(long)]
    side: Option<String>,
    /// From this time (inclusive): Unix ms or RFC 3339, e.g. 2026-11-25T08:00:00+08:00.
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive): Unix ms or RFC 3339.
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn to_proto(&self) -> anyhow::Result<qianlian_proto::v1::AccessFilter> {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Ok(qianlian_proto::v1::AccessFilter {
            consumer: s(&self.consumer),
            provider: s(&self.provider),
            dataset: s(&self.dataset),
            key: s(&self.record_key),
            action: s(&self.action),
            decision: s(&self.decision),
            purpose: s(&self.purpose),
            policy_version: self.policy_version,
            subject: s(&self.subject),
            subject_hash: match &self.subject_hash {
                Some(h) => hex::decode(h)
                    .ok()
                    .filter(|v| v.len() == 32)
                    .ok_or_else(|| anyhow::anyhow!("--subject-hash must be 64 hex digits"))?,
                None => Vec::new(),
            },
            side: s(&self.side),
            since_unix_ms: self
                .since
                .as_deref()
                .map(audit_client::parse_time)
                .transpose()?,
            until_unix_ms: self
                .until
                .as_deref()
                .map(audit_client::parse_time)
                .transpose()?,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Find accesses in the trail (inspector certificate), newest first.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// Oldest first instead.
        #[arg(long)]
        oldest_first: bool,
        /// Records to print in all; 0 prints every match.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Records fetched per call (1 to 1000).
        #[arg(long, default_value_t = 500)]
        page_size: u32,
        /// Go on from a cursor an earlier run printed.
        #[arg(long, default_value = "")]
        cursor: String,
        /// table, jsonl, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Which departments read data about you: needs a bearer token from the identity provider,
    /// no client certificate.
    Mine {
        /// The token (or set QIANLIAN_TOKEN).
        #[arg(long, env = "QIANLIAN_TOKEN", hide_env_values = true)]
        token: String,
        /// Accesses to print; 0 prints all.
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// table or jsonl.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Write a self-contained evidence bundle for a query (inspector certificate).
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        out: PathBuf,
        /// Most records in the bundle; a query matching more is refused.
        #[arg(long, default_value_t = 10_000)]
        max_records: u32,
    },
    /// Verify an evidence bundle offline, with no node and no network.
    Check {
        bundle: PathBuf,
        /// Pin the node keys and k of this trust bundle (`qianlian license trust-bundle`)
        /// instead of trusting the keys the evidence bundle carries.
        #[arg(long = "trust-bundle")]
        trust_bundle: Option<PathBuf>,
    },
    /// Print a citizen's token from the dev identity provider of a `qianlian dev` folder.
    DevToken {
        /// Resident identity number or unified social credit code the token names.
        #[arg(long)]
        subject: String,
        /// Minutes the token is valid.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Stream the whole log, recompute the Merkle tree, and check it against every cosigned
    /// checkpoint given or fetched, and the consistency between them; reports the first bad
    /// log index. Needs an inspector or operator certificate, or --data-dir.
    Verify {
        /// A cosigned checkpoint saved earlier (signed note text); repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Read a stopped node's data folder instead of asking a running node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Run an audit command; `Ok(false)` when a check ran and failed.
pub async fn exec(args: AuditArgs) -> anyhow::Result<bool> {
    let trust = || client::trusted_keys(&args.conn.trust, args.conn.trust_dev_dir());
    match args.command {
        AuditCommand::Query {
            filter,
            oldest_first,
            limit,
            page_size,
            cursor,
            format,
            out,
        } => {
            if !(1..=MAX_PAGE as u32).contains(&page_size) {
                anyhow::bail!("--page-size must be between 1 and {MAX_PAGE}, got {page_size}");
            }
            let plan = QueryPlan {
                filter: filter.to_proto()?,
                oldest_first,
                max: limit,
                page_size,
                cursor,
                format: Format::parse(&format)?,
                out,
            };
            audit_client::query(&args.conn.profile()?, plan).await?;
            Ok(true)
        }
        AuditCommand::Mine {
            token,
            limit,
            format,
        } => {
            let mut p = args.conn.profile().unwrap_or_else(|_| args.conn.public());
            // A data subject has no client certificate: the token is the credential.
            p.identity = None;
            audit_client::mine(&p, &token, limit, Format::parse(&format)?).await?;
            Ok(true)
        }
        AuditCommand::Export {
            filter,
            out,
            max_records,
        } => {
            audit_client::export(&args.conn.profile()?, filter.to_proto()?, max_records, &out)
                .await?;
            Ok(true)
        }
        AuditCommand::Check {
            bundle,
            trust_bundle,
        } => audit_client::verify::check(&bundle, trust_bundle.as_deref()),
        AuditCommand::DevToken { subject, minutes } => {
            println!("{}", dev::dev_token(&args.conn.dev_dir, &subject, minutes)?);
            Ok(true)
        }
        AuditCommand::Verify {
            checkpoints,
            data_dir,
        } => {
            let source = match &data_dir {
                Some(d) => audit_client::verify::Source::DataDir(d.clone()),
                None => audit_client::verify::Source::Node(args.conn.profile()?),
            };
            audit_client::verify::verify(source, &checkpoints, &trust()?, args.conn.min_signers)
                .await
        }
    }
}
