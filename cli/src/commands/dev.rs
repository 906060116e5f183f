//! `qianlian dev`: the embedded default, one node with dev PKI, default policy and sample data.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use qianlian_cli::dev;
use qianlian_cli::profile::DEFAULT_DEV_DIR;
use qianlian_gateway::node::config::NodeConfig;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Folder for keys, config and data; reused on the next run.
    #[arg(long, default_value = DEFAULT_DEV_DIR, env = "QIANLIAN_DEV_DIR")]
    pub dir: PathBuf,
    /// Address to serve on (default 127.0.0.1:7400, or what node.toml says).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

impl DevArgs {
    /// Write what is missing of the dev folder (PKI, policy, config) and load its node config.
    pub fn prepare(&self) -> anyhow::Result<NodeConfig> {
        dev::prepare_config(&self.dir, self.listen)
    }
}

pub async fn exec(args: DevArgs, config: NodeConfig) -> anyhow::Result<()> {
    dev::run(&args.dir, config).await
}
