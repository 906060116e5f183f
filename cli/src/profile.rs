//! Who the command line connects as, and where: a dev profile under a `qianlian dev` folder
//! (`--as housing`) or explicit certificate files, and the defaults of the embedded default.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The folder `qianlian dev` writes and the clients read their dev profiles from.
pub const DEFAULT_DEV_DIR: &str = "qianlian-dev";
/// Where `qianlian dev` serves unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// The endpoint clients use for [`DEFAULT_LISTEN`].
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7400";

/// The endpoint a `qianlian dev` folder names (its `endpoint` file), or [`DEFAULT_ENDPOINT`].
pub fn dev_endpoint(dev_dir: &Path) -> String {
    std::fs::read_to_string(dev_dir.join("endpoint"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned())
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct Profile {
    pub endpoint: String,
    pub ca: PathBuf,
    /// Client certificate and key; `None` connects without a client certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name the server certificate must carry.
    pub server_name: String,
}

impl Profile {
    /// The dev profile of client `name` under a `qianlian dev` folder.
    pub fn dev(dev_dir: &Path, name: &str, endpoint: Option<String>) -> anyhow::Result<Profile> {
        let pki = dev_dir.join("pki");
        let cert = pki.join("clients").join(format!("{name}.crt"));
        if !cert.exists() {
            let known = std::fs::read_dir(pki.join("clients"))
                .map(|rd| {
                    let mut v: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.path()
                                .file_stem()
                                .filter(|_| e.path().extension().is_some_and(|x| x == "crt"))
                                .map(|s| s.to_string_lossy().into_owned())
                        })
                        .collect();
                    v.sort();
                    v.join(", ")
                })
                .unwrap_or_default();
            if known.is_empty() {
                anyhow::bail!(
                    "no dev profile under {}: run `qianlian dev` first, or pass --cert, --key and --ca",
                    dev_dir.display()
                );
            }
            anyhow::bail!(
                "no dev profile `{name}` under {}; profiles: {known}",
                dev_dir.display()
            );
        }
        Ok(Profile {
            endpoint: endpoint.unwrap_or_else(|| dev_endpoint(dev_dir)),
            ca: pki.join("ca.crt"),
            identity: Some((cert, pki.join("clients").join(format!("{name}.key")))),
            server_name: "localhost".into(),
        })
    }

    /// No client certificate, the CA of a `qianlian dev` folder: for the public calls
    /// (verification, trust bundles, watching) and for a data subject's bearer token.
    pub fn public(dev_dir: &Path, endpoint: Option<String>, server_name: &str) -> Profile {
        Profile {
            endpoint: endpoint.unwrap_or_else(|| dev_endpoint(dev_dir)),
            ca: dev_dir.join("pki").join("ca.crt"),
            identity: None,
            server_name: server_name.to_owned(),
        }
    }

    /// Open a TLS channel.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        qianlian_gateway::node::tls::install_crypto_provider();
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .domain_name(self.server_name.clone());
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let channel = Channel::from_shared(self.endpoint.clone())
            .map_err(|e| anyhow::anyhow!("bad endpoint `{}`: {e}", self.endpoint))?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to {}: {e}; is the node running (`qianlian dev`)?",
                    self.endpoint
                )
            })?;
        Ok(channel)
    }
}
