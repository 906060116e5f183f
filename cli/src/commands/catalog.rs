//! `qianlian catalog`: list, show and publish the catalog entries of the datasets departments
//! own.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use qianlian_cli::client::describe_status;
use qianlian_gateway::services::catalog::{EntryDocument, view_json};
use qianlian_proto::v1::catalog_client::CatalogClient;
use qianlian_proto::v1::{GetEntryRequest, ListEntriesRequest, PublishEntryRequest};

use super::conn::ConnArgs;

/// List, show and publish catalog entries (department or inspector certificate).
#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: CatalogCommand,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Every catalog entry in force, one line each.
    List {
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One dataset's catalog entry, as JSON.
    Show { dataset: String },
    /// Publish the catalog entry of a dataset your department owns, from a TOML file:
    /// `dataset`, `title_zh`, `title_en`, `description`, `sharing` (unconditional, conditional,
    /// not-shared), `purposes`, `update_frequency` (real-time, daily, weekly, monthly,
    /// quarterly, yearly, irregular), `legal_basis` and one `[[field]]` table per field (`name`,
    /// `class`: public, internal, personal or sensitive, `shareable`). `version` defaults to
    /// the one after the entry in force.
    Publish { file: PathBuf },
}

fn read_entry(path: &Path) -> anyhow::Result<EntryDocument> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Run `qianlian catalog`.
pub async fn exec(args: CatalogArgs) -> anyhow::Result<()> {
    let profile = args.conn.profile()?;
    let mut client = CatalogClient::new(profile.connect().await?);
    match args.command {
        CatalogCommand::List { json } => {
            let entries = client
                .list_entries(ListEntriesRequest {})
                .await
                .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                .into_inner()
                .entries;
            if json {
                let all: Vec<serde_json::Value> = entries.iter().map(view_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if entries.is_empty() {
                println!(
                    "no catalog entries yet: a department publishes one with `qianlian catalog publish`"
                );
            }
            for v in &entries {
                let e = v.entry.clone().unwrap_or_default();
                println!(
                    "{}  v{}  {}  {}  log index {}  {} / {}",
                    e.dataset, e.version, v.owner, e.sharing, v.log_index, e.title_zh, e.title_en
                );
            }
        }
        CatalogCommand::Show { dataset } => {
            let view = client
                .get_entry(GetEntryRequest { dataset })
                .await
                .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&view_json(&view))?);
        }
        CatalogCommand::Publish { file } => {
            let f = read_entry(&file)?;
            let version = match f.version {
                Some(v) => v,
                None => match client
                    .get_entry(GetEntryRequest {
                        dataset: f.dataset.clone(),
                    })
                    .await
                {
                    Ok(current) => current.into_inner().entry.unwrap_or_default().version + 1,
                    Err(s) if s.code() == tonic::Code::NotFound => 1,
                    Err(s) => anyhow::bail!(describe_status(&s)),
                },
            };
            let entry = f.into_wire(version);
            let view = client
                .publish_entry(PublishEntryRequest { entry: Some(entry) })
                .await
                .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                .into_inner();
            let e = view.entry.unwrap_or_default();
            println!(
                "published {} version {} as {}\nnotarized: log index {}, leaf {}",
                e.dataset,
                e.version,
                view.owner,
                view.log_index,
                hex::encode(&view.leaf_hash)
            );
        }
    }
    Ok(())
}
