//! `qianlian`: the gateway node and its command line. This file parses the command line, starts
//! the runtime and telemetry, and hands the command to its module in `commands/`, which holds
//! the command's arguments and what it does.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qianlian_gateway::node::config::NodeConfig;
use qianlian_gateway::node::telemetry::{self, NodeResource};

mod commands;

use commands::{audit, bench, catalog, client, cluster, config, dev, license, pki, seed, serve};

/// A request allocates and frees many small buffers on several threads (TLS records, HTTP/2
/// frames, protobuf messages, access records); mimalloc's per-thread heaps serve them without the
/// contention and fragmentation of the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Qianlian: a cross-department government data-sharing gateway with a notarized access trail.
#[derive(Parser, Debug)]
#[command(name = "qianlian", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded default: a single node with dev PKI, default policy and sample data.
    Dev(dev::DevArgs),
    /// Load the sample records of the embedded default into a running node, each put by its
    /// owner department (for container deployments).
    Seed(seed::SeedArgs),
    /// Run a node from its config file.
    Serve(serve::ServeArgs),
    /// Manage certificates.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Call a gateway.
    Client(client::ClientArgs),
    /// Manage the membership of the Raft cluster (operator certificate).
    Cluster(cluster::ClusterArgs),
    /// Replace or show the cluster's access policy (operator certificate).
    Policy(config::ConfigArgs),
    /// Replace or show the cluster's department directory (operator certificate).
    Directory(config::ConfigArgs),
    /// Issue, change, verify and watch e-licenses.
    License(license::LicenseArgs),
    /// Query the access trail, check its integrity, export and check evidence bundles.
    Audit(Box<audit::AuditArgs>),
    /// List, show and publish the catalog entries of the datasets departments own.
    Catalog(catalog::CatalogArgs),
    /// Measure a running gateway (or etcd, for comparison): closed-loop load over mutual TLS,
    /// throughput, latency percentiles, errors and CPU time.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // The node commands load their config first: it names the node in its spans.
        let config = node_config(&cli.command)?;
        // Inside the runtime: the span exporter runs on it.
        let telemetry = telemetry::init(config.as_ref().map(NodeResource::of).as_ref())?;
        let result = run(cli.command, config).await;
        // Spans of the last requests leave before the process does.
        telemetry.shutdown().await;
        result
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // A check that ran and failed is an answer, not an error.
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            // Every error message already carries its cause; the chain would repeat it.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config of the commands that run a node.
fn node_config(command: &Command) -> anyhow::Result<Option<NodeConfig>> {
    match command {
        Command::Serve(args) => args.load().map(Some),
        Command::Dev(args) => args.prepare().map(Some),
        _ => Ok(None),
    }
}

/// Run `command`; `Ok(false)` when a check ran and found the evidence or license not genuine.
async fn run(command: Command, config: Option<NodeConfig>) -> anyhow::Result<bool> {
    let done = |r: anyhow::Result<()>| r.map(|()| true);
    let node_config = || config.ok_or_else(|| anyhow::anyhow!("the node config was not loaded"));
    match command {
        Command::Dev(args) => done(dev::exec(args, node_config()?).await),
        Command::Serve(_) => done(serve::exec(node_config()?).await),
        Command::Seed(args) => done(seed::exec(args).await),
        Command::Pki { command } => done(pki::exec(command)),
        Command::Client(args) => done(client::exec(args).await),
        Command::Cluster(args) => done(cluster::exec(args).await),
        Command::Policy(args) => done(config::exec("policy", args).await),
        Command::Directory(args) => done(config::exec("directory", args).await),
        Command::License(args) => license::exec(args).await,
        Command::Audit(args) => audit::exec(*args).await,
        Command::Catalog(args) => done(catalog::exec(args).await),
        Command::Bench(args) => done(bench::exec(*args).await),
    }
}
