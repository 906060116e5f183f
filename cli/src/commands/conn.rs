//! Who a command connects as, and where: the options every calling command shares.

use std::path::PathBuf;

use clap::Args;
use qianlian_cli::profile::{DEFAULT_DEV_DIR, DEFAULT_ENDPOINT, Profile};

/// Who to connect as, and where.
#[derive(Args, Debug)]
pub struct ConnArgs {
    /// Use the dev profile of this department, inspector or operator (from `qianlian dev`).
    #[arg(long = "as", global = true)]
    pub as_name: Option<String>,
    /// Folder of the dev profile.
    #[arg(
        long,
        default_value = DEFAULT_DEV_DIR,
        env = "QIANLIAN_DEV_DIR",
        global = true
    )]
    pub dev_dir: PathBuf,
    /// Gateway URL, e.g. https://127.0.0.1:7400.
    #[arg(long, env = "QIANLIAN_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// CA bundle (instead of a dev profile).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (instead of a dev profile).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (instead of a dev profile).
    #[arg(long = "key", id = "key_file", global = true)]
    pub key: Option<PathBuf>,
    /// Name the server certificate must carry.
    #[arg(long, default_value = "localhost", global = true)]
    pub server_name: String,
    /// A node's checkpoint verifier key file (`nodes/<id>.note.pub`) to trust; repeatable.
    /// Default with a dev profile: every node key of the dev PKI.
    #[arg(long = "trust", global = true)]
    pub trust: Vec<PathBuf>,
    /// Signatures of trusted nodes a checkpoint needs.
    #[arg(long, default_value_t = 1, global = true)]
    pub min_signers: usize,
}

impl ConnArgs {
    /// The profile these options name: a dev profile (`--as`) or certificate files.
    pub fn profile(&self) -> anyhow::Result<Profile> {
        match (&self.as_name, &self.cert, &self.key, &self.ca) {
            (Some(name), None, None, _) => {
                let mut p = Profile::dev(&self.dev_dir, name, self.endpoint.clone())?;
                if let Some(ca) = &self.ca {
                    p.ca = ca.clone();
                }
                p.server_name = self.server_name.clone();
                Ok(p)
            }
            (None, cert, key, Some(ca)) => {
                let identity = match (cert, key) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => anyhow::bail!("--cert and --key go together"),
                };
                Ok(Profile {
                    endpoint: self
                        .endpoint
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
                    ca: ca.clone(),
                    identity,
                    server_name: self.server_name.clone(),
                })
            }
            (Some(_), _, _, _) => anyhow::bail!("use either --as or --cert/--key, not both"),
            (None, _, _, None) => anyhow::bail!(
                "say who you are: --as <department> (dev profile) or --ca with --cert and --key"
            ),
        }
    }

    /// For the public calls (verification, trust bundles, watching): a CA and an endpoint
    /// suffice; without `--as` or `--ca`, the CA of the dev folder.
    pub fn profile_or_public(&self) -> anyhow::Result<Profile> {
        if self.as_name.is_none() && self.ca.is_none() {
            let public = self.public();
            anyhow::ensure!(
                public.ca.exists(),
                "say which CA to trust: --ca FILE (or --as <name> with a dev profile)"
            );
            return Ok(public);
        }
        self.profile()
    }

    /// No client certificate, the dev folder's CA: a data subject's bearer token is the
    /// credential.
    pub fn public(&self) -> Profile {
        Profile::public(&self.dev_dir, self.endpoint.clone(), &self.server_name)
    }

    /// The dev folder whose node keys are trusted by default: only with a dev profile.
    pub fn trust_dev_dir(&self) -> Option<&std::path::Path> {
        self.as_name.as_ref().map(|_| self.dev_dir.as_path())
    }
}
