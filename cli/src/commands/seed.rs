//! `qianlian seed`: the sample records of the embedded default, put into a running node by
//! their owner departments (for container deployments).

use std::path::PathBuf;

use clap::Args;
use qianlian_cli::dev;

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// PKI folder from `qianlian pki init` (client certificates of the departments).
    #[arg(long)]
    pub pki: PathBuf,
    #[arg(long)]
    pub endpoint: String,
    /// Name the server certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

pub async fn exec(args: SeedArgs) -> anyhow::Result<()> {
    dev::seed(&args.pki, &args.endpoint, &args.server_name).await
}
