//! `qianlian serve`: run a node from its config file.

use std::path::PathBuf;

use clap::Args;
use qianlian_gateway::node::config::NodeConfig;
use qianlian_gateway::server;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, short)]
    pub config: PathBuf,
}

impl ServeArgs {
    pub fn load(&self) -> anyhow::Result<NodeConfig> {
        Ok(NodeConfig::load(&self.config)?)
    }
}

/// Serve until Ctrl-C or SIGTERM.
pub async fn exec(config: NodeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (key `listen`): {e}", config.listen))?;
    let node_id = config.node_id;
    let node = server::start(config, listener).await?;
    // One line on stdout that scripts and tests wait for.
    let metrics = node
        .metrics_addr()
        .map(|a| format!(", metrics on http://{a}/metrics"))
        .unwrap_or_default();
    let raft = node
        .raft_addr()
        .map(|a| format!(", raft on {a}"))
        .unwrap_or_default();
    println!(
        "qianlian node {node_id} ready on {} (log size {}{raft}{metrics})",
        node.local_addr()?,
        node.log_size()
    );
    node.serve(async {
        if let Err(e) = server::shutdown_signal().await {
            tracing::error!(error = %e, "cannot listen for signals; stopping");
        }
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}
