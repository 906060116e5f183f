//! `qianlian cluster`: the membership of the Raft cluster (operator certificate).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use qianlian_cli::profile::Profile;
use qianlian_cli::{client, config_signing};
use qianlian_verifier::record::{ConfigChange, ConfigKind, MemberSet, Record};

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
        #[command(flatten)]
        signing: Signing,
    },
    /// Make a learner a voter.
    Promote {
        node_id: u64,
        #[command(flatten)]
        signing: Signing,
    },
    /// Remove a node from the cluster (two operators sign this where the directory lists two
    /// or more: the first with --out, the second with --cosign).
    Remove {
        node_id: u64,
        #[command(flatten)]
        signing: Signing,
    },
    /// Show leader, members and log position.
    Status,
}

/// How a membership change is signed: with the operator's key where there is one (a cluster
/// whose directory lists operator keys refuses unsigned changes).
#[derive(Args, Debug)]
pub struct Signing {
    /// The operator's Ed25519 signing key (PKCS#8 PEM); default: `<name>.sign.key` beside the
    /// certificate, if present.
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Sign only: write the signed change to this file for another operator, who makes it with
    /// the same command and `--cosign`; nothing changes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Add this operator's signature to a change another operator signed with `--out`, then
    /// make it.
    #[arg(long)]
    cosign: Option<PathBuf>,
}

/// The membership change `to` makes from the membership in force, signed as `signing` says:
/// `Ok(None)` to send it unsigned (no signing key), `Err` after writing it to `--out`.
async fn sign_change(
    p: &Profile,
    to: impl FnOnce(&MemberSet) -> MemberSet,
    signing: Signing,
) -> anyhow::Result<Signed> {
    let signer = config_signing::signer(p, signing.sign_key.as_deref())?;
    let change = match (signing.cosign, signer) {
        (Some(_), None) => anyhow::bail!(
            "--cosign adds your signature: pass --sign-key, or keep your signing key beside your certificate as <name>.sign.key"
        ),
        (Some(path), Some(signer)) => {
            let mut change = config_signing::read_file(&path, ConfigKind::Membership)?;
            if let Some(ConfigChange::Membership { from, to }) = change.config().map(|c| &c.change)
            {
                eprintln!(
                    "signing the membership change from [{from}] to [{to}] (signed so far by {}) as {}",
                    config_signing::signed_by(&change).join(", "),
                    signer.who.department
                );
            }
            signer.add_to(&mut change);
            change
        }
        (None, None) if signing.out.is_some() => anyhow::bail!(
            "--out writes a signed change, and there is no signing key: pass --sign-key"
        ),
        (None, None) => return Ok(Signed::Unsigned),
        (None, Some(signer)) => {
            let (leader, from) = client::members(p).await?;
            let to = to(&from);
            let (replaces, _) = client::config_in_force(&leader, "membership").await?;
            signer.sign_new(ConfigChange::Membership { from, to }, replaces)
        }
    };
    if let Some(out) = signing.out {
        config_signing::write_file(&out, &change)?;
        println!(
            "signed the membership change (signed by {}); wrote {}. Another operator makes it with the same command and `--cosign {}`",
            config_signing::signed_by(&change).join(", "),
            out.display(),
            out.display()
        );
        return Ok(Signed::Written);
    }
    Ok(Signed::Record(
        Record::Authorized(Box::new(change)).encode(),
    ))
}

/// What [`sign_change`] made.
enum Signed {
    Unsigned,
    Record(Vec<u8>),
    Written,
}

impl Signed {
    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Signed::Unsigned => Some(Vec::new()),
            Signed::Record(b) => Some(b),
            Signed::Written => None,
        }
    }
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
        ClusterCommand::AddLearner { node, signing } => {
            let (id, addr) = parse_member(&node)?;
            let signed = sign_change(&p, |m| m.with_learner(id, &addr), signing).await?;
            let Some(signed) = signed.bytes() else {
                return Ok(());
            };
            client::ClusterOp::AddLearner(id, addr, signed)
        }
        ClusterCommand::Promote { node_id, signing } => {
            let signed = sign_change(&p, |m| m.with_voter(node_id), signing).await?;
            let Some(signed) = signed.bytes() else {
                return Ok(());
            };
            client::ClusterOp::Promote(node_id, signed)
        }
        ClusterCommand::Remove { node_id, signing } => {
            let signed = sign_change(&p, |m| m.without(node_id), signing).await?;
            let Some(signed) = signed.bytes() else {
                return Ok(());
            };
            client::ClusterOp::Remove(node_id, signed)
        }
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
