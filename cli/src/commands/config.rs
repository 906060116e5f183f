//! `qianlian policy` and `qianlian directory`: replace or show the cluster's access policy or
//! department directory (operator certificate). A file is checked here, naming its path and
//! line, before anything is sent.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::client;
use qianlian_gateway::domain::directory::Directory;
use qianlian_gateway::domain::policy::{self, Policy};

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
    /// Validate FILE, then append it to the log: every node switches to it at that log index.
    Apply {
        /// Policy rules (policy.csv) or directory (departments.toml).
        file: PathBuf,
        /// Policy only: a new Casbin model (default: keep the model in force).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Print the version in force and its text.
    Show,
}

pub async fn exec(kind: &str, args: ConfigArgs) -> anyhow::Result<()> {
    let p = args.conn.profile()?;
    match args.command {
        ConfigCommand::Show => client::show_config(&p, kind).await,
        ConfigCommand::Apply { file, model } => {
            let read = |f: &PathBuf| {
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))
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
            client::apply_config(&p, kind, text, model).await
        }
    }
}
