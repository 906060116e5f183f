//! `qianlian client`: every call of the gateway from the command line, with a dev profile
//! (`--as housing`) or explicit certificate files.

use std::path::{Path, PathBuf};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{GetLogEntryRequest, GetRecordRequest, PutRecordRequest, RecordRef};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::dataset;
use crate::error::{LOG_INDEX_HEADER, RECORD_HASH_HEADER};

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
        let endpoint = match endpoint {
            Some(e) => e,
            None => std::fs::read_to_string(dev_dir.join("endpoint"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| crate::dev::DEFAULT_ENDPOINT.to_owned()),
        };
        Ok(Profile {
            endpoint,
            ca: pki.join("ca.crt"),
            identity: Some((cert, pki.join("clients").join(format!("{name}.key")))),
            server_name: "localhost".into(),
        })
    }

    /// Open a TLS channel.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        crate::tls::install_crypto_provider();
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

/// Render a refused call: code, message and the receipt if the refusal was notarized.
pub fn describe_status(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let md = s.metadata();
    if let (Some(i), Some(h)) = (md.get(LOG_INDEX_HEADER), md.get(RECORD_HASH_HEADER)) {
        out.push_str(&format!(
            "\nnotarized: log index {}, record hash {}",
            i.to_str().unwrap_or("?"),
            h.to_str().unwrap_or("?")
        ));
    }
    out
}

fn owner_of(dataset_id: &str) -> anyhow::Result<&'static str> {
    dataset::find(dataset_id).map(|d| d.owner).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown dataset `{dataset_id}`; known datasets: {}",
            dataset::known_ids()
        )
    })
}

/// `client put`: store a record of the caller's own dataset.
pub async fn put(
    profile: &Profile,
    dataset_id: &str,
    key: &str,
    json: Vec<u8>,
) -> anyhow::Result<()> {
    let mut c = ExchangeClient::new(profile.connect().await?);
    let resp = c
        .put_record(PutRecordRequest {
            record: Some(RecordRef {
                department: owner_of(dataset_id)?.to_owned(),
                dataset: dataset_id.to_owned(),
                key: key.to_owned(),
            }),
            payload: json,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let r = resp.receipt.unwrap_or_default();
    println!(
        "stored {dataset_id}/{key}\nnotarized: log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    Ok(())
}

/// `client get`: read a record for a declared purpose.
pub async fn get(
    profile: &Profile,
    dataset_id: &str,
    key: &str,
    purpose: &str,
) -> anyhow::Result<()> {
    let mut c = ExchangeClient::new(profile.connect().await?);
    let resp = c
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: owner_of(dataset_id)?.to_owned(),
                dataset: dataset_id.to_owned(),
                key: key.to_owned(),
            }),
            purpose: purpose.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let payload: serde_json::Value = serde_json::from_slice(&resp.payload)?;
    let r = resp.receipt.unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&payload)?);
    println!(
        "notarized: log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    Ok(())
}

/// `client log get`: read one record of the notarization log.
pub async fn log_get(profile: &Profile, index: u64) -> anyhow::Result<()> {
    let mut c = NotaryClient::new(profile.connect().await?);
    let resp = c
        .get_log_entry(GetLogEntryRequest { log_index: index })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let r = resp.receipt.unwrap_or_default();
    println!(
        "log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    println!("{}", resp.record_json);
    Ok(())
}
