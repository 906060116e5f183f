//! `qianlian client`: read and write records, read the log, fetch checkpoints and proofs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::client;

use super::conn::ConnArgs;

/// Call a gateway.
#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Store a record of your own department's dataset.
    Put {
        dataset: String,
        key: String,
        /// The record as a JSON object.
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        /// Read the JSON object from a file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Read a record for a declared purpose.
    Get {
        dataset: String,
        key: String,
        #[arg(long)]
        purpose: String,
    },
    /// Find records by indexed fields, for a declared purpose.
    Query {
        dataset: String,
        /// Conditions `field=value`; all must hold.
        #[arg(required = true)]
        conditions: Vec<String>,
        #[arg(long)]
        purpose: String,
        /// Most records returned (default 100).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Read the notarization log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Fetch the latest cosigned checkpoint and verify its signatures.
    Checkpoint {
        /// Also keep the signed note in this file (for `audit verify --checkpoint`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch a proof and verify it against the latest cosigned checkpoint.
    Proof {
        #[command(subcommand)]
        command: ProofCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Show the record at a log index.
    Get { index: u64 },
}

#[derive(Subcommand, Debug)]
pub enum ProofCommand {
    /// Prove that the record at a log index is in the log.
    Inclusion { index: u64 },
    /// Prove that the log of an earlier size is a prefix of the latest one.
    Consistency {
        old_size: u64,
        /// Root hash (hex) of the earlier checkpoint you kept.
        #[arg(long)]
        old_root: Option<String>,
    },
}

pub async fn exec(args: ClientArgs) -> anyhow::Result<()> {
    let p = args.conn.profile()?;
    let trust = || client::trusted_keys(&args.conn.trust, args.conn.trust_dev_dir());
    let k = args.conn.min_signers;
    match args.command {
        ClientCommand::Put {
            dataset,
            key,
            json,
            file,
        } => {
            let body = match (json, file) {
                (Some(j), None) => j.into_bytes(),
                (None, Some(f)) => std::fs::read(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                _ => anyhow::bail!("give the record with --json '{{...}}' or --file FILE"),
            };
            client::put(&p, &dataset, &key, body).await
        }
        ClientCommand::Get {
            dataset,
            key,
            purpose,
        } => client::get(&p, &dataset, &key, &purpose).await,
        ClientCommand::Query {
            dataset,
            conditions,
            purpose,
            limit,
        } => client::query(&p, &dataset, &conditions, &purpose, limit).await,
        ClientCommand::Log {
            command: LogCommand::Get { index },
        } => client::log_get(&p, index).await,
        ClientCommand::Checkpoint { out } => {
            client::checkpoint(&p, &trust()?, k, out.as_deref()).await
        }
        ClientCommand::Proof {
            command: ProofCommand::Inclusion { index },
        } => client::prove_inclusion(&p, index, &trust()?, k).await,
        ClientCommand::Proof {
            command: ProofCommand::Consistency { old_size, old_root },
        } => {
            let old_root = match old_root {
                Some(h) => Some(
                    hex::decode(&h)
                        .ok()
                        .and_then(|v| <[u8; 32]>::try_from(v).ok())
                        .ok_or_else(|| anyhow::anyhow!("--old-root must be 64 hex digits"))?,
                ),
                None => None,
            };
            client::prove_consistency(&p, old_size, old_root, &trust()?, k).await
        }
    }
}
