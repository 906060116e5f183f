//! `qianlian pki`: certificates and keys for a cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_gateway::node::pki::{self, PkiPlan};

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Write a root CA, node certificates and client certificates.
    Init(InitArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "gov.example")]
    pub trust_domain: String,
    /// A department (client certificate, role `department`); repeatable.
    #[arg(long = "dept")]
    pub departments: Vec<String>,
    /// An inspector (client certificate, role `inspector`); repeatable.
    #[arg(long = "inspector")]
    pub inspectors: Vec<String>,
    /// An operator (client certificate, role `operator`); repeatable.
    #[arg(long = "operator")]
    pub operators: Vec<String>,
    /// A gateway node (server certificate) as <name> or <name>=<department>, the department whose
    /// gateway it is (named in its certificate); a cluster member is named node-<member id>;
    /// repeatable. Default: one per department, named after it.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Extra DNS names or IPs for node certificates: <node>=<host>[,<host>...] for that node's
    /// certificate only, or <host> for every node certificate; repeatable.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Display name of a department as <id>=<name> (e.g. Chinese names); repeatable.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Validity of node and client certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Overwrite existing keys and certificates (a new CA invalidates every old certificate).
    #[arg(long)]
    pub force: bool,
}

pub fn exec(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let InitArgs {
        out,
        trust_domain,
        departments,
        inspectors,
        operators,
        nodes,
        hosts,
        names,
        days,
        force,
    } = args;
    let names = names
        .iter()
        .map(|n| {
            n.split_once('=')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--name `{n}`: write <id>=<name>"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = pki::init(&PkiPlan {
        out,
        trust_domain,
        departments,
        inspectors,
        operators,
        nodes,
        node_hosts: hosts,
        names,
        leaf_days: days,
        force,
    })?;
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    for p in &report.kept {
        println!("kept  {} (exists; --force replaces it)", p.display());
    }
    Ok(())
}
