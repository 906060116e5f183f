//! `qianlian cluster`: the membership of the Raft cluster (operator certificate).

use clap::{Args, Subcommand};
use qianlian_cli::client;

use super::conn::ConnArgs;

/// Manage the membership of the Raft cluster (operator certificate).
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Initialise a new cluster with these voters (send it to one of them).
    Init {
        /// A member as <id>=https://<host>:<port>; repeatable.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// Succeed without a change when the node already belongs to an initialised cluster
        /// (for a job that may run again, e.g. in Kubernetes).
        #[arg(long)]
        skip_if_initialised: bool,
    },
    /// Add a node as a learner (it receives the log, does not vote).
    AddLearner {
        /// The node as <id>=https://<host>:<port>.
        node: String,
    },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a node from the cluster.
    Remove { node_id: u64 },
    /// Show leader, members and log position.
    Status,
}

pub async fn exec(args: ClusterArgs) -> anyhow::Result<()> {
    let p = args.conn.profile()?;
    let op = match args.command {
        ClusterCommand::Init {
            nodes,
            skip_if_initialised,
        } => {
            let members = nodes
                .iter()
                .map(|n| parse_member(n))
                .collect::<anyhow::Result<_>>()?;
            if skip_if_initialised && client::cluster_is_initialised(&p).await? {
                println!("the cluster is already initialised; nothing to do");
                return client::cluster(&p, client::ClusterOp::Status).await;
            }
            client::ClusterOp::Init(members)
        }
        ClusterCommand::AddLearner { node } => {
            let (id, addr) = parse_member(&node)?;
            client::ClusterOp::AddLearner(id, addr)
        }
        ClusterCommand::Promote { node_id } => client::ClusterOp::Promote(node_id),
        ClusterCommand::Remove { node_id } => client::ClusterOp::Remove(node_id),
        ClusterCommand::Status => client::ClusterOp::Status,
    };
    client::cluster(&p, op).await
}

fn parse_member(s: &str) -> anyhow::Result<(u64, String)> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("`{s}`: write a member as <id>=https://<host>:<port>"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}`: node id `{id}` is not a number"))?;
    Ok((id, addr.to_owned()))
}
