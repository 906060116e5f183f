//! An operator's signature on a policy or directory change, made on the operator's machine with
//! the operator's Ed25519 key (`clients/<operator>.sign.key` from `qianlian pki init`).
//!
//! A change that needs two operators goes from one to the other as a file: the first signs with
//! `--out FILE`, the second reviews and applies it with `--cosign FILE`. The file is JSON with
//! the change's canonical bytes in hex; its other fields repeat what the bytes say, for a
//! reader, and are checked against them when it is read.

use std::path::{Path, PathBuf};

use qianlian_gateway::domain::identity::{PeerIdentity, Role, parse_own};
use qianlian_verifier::ed25519_dalek::SigningKey;
use qianlian_verifier::record::{
    AuthorizedRecord, Caller, ConfigChange, ConfigKind, ConfigRecord, Record,
};
use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// Who signs: the operator named by the certificate, with its signing key.
pub struct OperatorSigner {
    pub who: PeerIdentity,
    pub key_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for OperatorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSigner")
            .field("who", &self.who.to_string())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The signing key beside a client certificate: `<name>.sign.key` for `<name>.crt`.
pub fn default_sign_key(cert: &Path) -> PathBuf {
    let stem = cert.file_stem().unwrap_or_default().to_string_lossy();
    cert.with_file_name(format!("{stem}.sign.key"))
}

/// The signer for `profile`: with `explicit` (which must exist), or the key beside the
/// profile's certificate if there is one; `None` when neither is there.
pub fn signer(
    profile: &Profile,
    explicit: Option<&Path>,
) -> anyhow::Result<Option<OperatorSigner>> {
    let Some((cert, _)) = &profile.identity else {
        anyhow::bail!(
            "signing a change needs an operator certificate: pass --as <operator> or --cert/--key"
        );
    };
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let p = default_sign_key(cert);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let key = qianlian_gateway::node::pki::read_ed25519_key(&path, "operator signing key")?;
    let pem =
        std::fs::read(cert).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?;
    let who = parse_own(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    if who.role != Role::Operator {
        anyhow::bail!(
            "{} is a {} certificate: only operators sign configuration changes",
            cert.display(),
            who.role
        );
    }
    let key_id = qianlian_gateway::node::pki::license_key_id(&who.department, &key.verifying_key());
    Ok(Some(OperatorSigner { who, key_id, key }))
}

impl OperatorSigner {
    /// A new change, signed by this operator, replacing version `replaces` of its kind.
    pub fn sign_new(&self, change: ConfigChange, replaces: u64) -> AuthorizedRecord {
        let record = Record::Config(ConfigRecord {
            request_id: qianlian_gateway::node::request_id::new_request_id(),
            time_unix_ms: qianlian_gateway::node::time::now_ms(),
            caller: Caller {
                department: self.who.department.clone(),
                role: self.who.role.as_str().to_owned(),
                cert_fingerprint: self.who.fingerprint_hex(),
            },
            change,
        });
        let mut a = AuthorizedRecord::new(record, replaces);
        self.add_to(&mut a);
        a
    }

    /// Add this operator's signature.
    pub fn add_to(&self, change: &mut AuthorizedRecord) {
        change.sign(&self.who.department, &self.key_id, &self.key);
    }
}

/// A signed change in transit between operators.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedChangeFile {
    /// `policy` or `directory`.
    pub kind: String,
    /// The version of that kind the change replaces.
    pub replaces: u64,
    /// The operators who signed so far.
    pub signed_by: Vec<String>,
    /// The change's canonical bytes (a version-3 record), hex.
    pub record: String,
}

/// Write `change` to `path` for another operator.
pub fn write_file(path: &Path, change: &AuthorizedRecord) -> anyhow::Result<()> {
    let kind = change
        .config()
        .map(|c| c.change.kind().as_str())
        .unwrap_or("config");
    let file = SignedChangeFile {
        kind: kind.to_owned(),
        replaces: change.replaces,
        signed_by: signed_by(change),
        record: hex::encode(Record::Authorized(Box::new(change.clone())).encode()),
    };
    let text = serde_json::to_string_pretty(&file)?;
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Read a signed change of `kind` from `path`, its signatures checked.
pub fn read_file(path: &Path, kind: ConfigKind) -> anyhow::Result<AuthorizedRecord> {
    let what = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {what}: {e}"))?;
    let file: SignedChangeFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{what} is not a signed change (from `--out`): {e}"))?;
    let bytes = hex::decode(file.record.trim())
        .map_err(|e| anyhow::anyhow!("{what}: `record` is not hex: {e}"))?;
    let Record::Authorized(change) = Record::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{what}: `record` does not decode: {e}"))?
    else {
        anyhow::bail!("{what}: `record` is not a signed configuration change");
    };
    let found = change.config().map(|c| c.change.kind());
    if found != Some(kind) {
        anyhow::bail!(
            "{what} holds a {} change, not a {} change",
            found.map_or("non-config", ConfigKind::as_str),
            kind.as_str()
        );
    }
    change
        .verify_signatures()
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if file.replaces != change.replaces || file.signed_by != signed_by(&change) {
        anyhow::bail!(
            "{what}: `replaces` or `signed_by` do not match the signed bytes: the file was edited"
        );
    }
    Ok(*change)
}

/// The operators who signed `change`, in signing order.
pub fn signed_by(change: &AuthorizedRecord) -> Vec<String> {
    change
        .signatures
        .iter()
        .map(|s| s.originator.department.clone())
        .collect()
}

#[cfg(test)]
mod tests;
