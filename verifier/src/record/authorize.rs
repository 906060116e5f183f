//! Operator authorisation of configuration changes: a policy or directory change carries the
//! signatures of the operators who made it, checked against the operator keys of the directory
//! in force.
//!
//! An authorised record is written in format version 3: `[FORMAT_V3] ++
//! postcard(AuthorizedRecord)`, whose inner record is a version-1 config record. Each signature
//! covers [`authorization_message`]: a fixed context, the signer (operator id, key id, public
//! key), the version of the configuration the change replaces, and the inner record's canonical
//! version-1 bytes. Naming the version replaced makes a signed change good once: replayed after
//! a later change, or racing another one, it no longer replaces what is in force and is refused.
//!
//! How many operators must sign ([`signatures_needed`]): one, and two different operators (where
//! the directory in force lists two or more) for a directory change that removes a department or
//! removes or replaces an operator key, and for a membership change that removes a node or its
//! vote: the changes that take authority away from someone.

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use super::seal::{OriginError, OriginKeys, Originator, Seal, SignerRole, verify_by};
use super::{ConfigChange, ConfigKind, Record};

/// First byte of an authorised config record: version 3 of the record encoding.
pub const FORMAT_V3: u8 = 3;

/// Domain separation of operator signatures from every other signature.
const AUTHORIZE_CONTEXT: &[u8] = b"qianlian/config-authorisation/v1\n";

/// A version-1 config record and the operator signatures that authorise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedRecord {
    /// The config record (version 1, unsealed).
    pub record: Record,
    /// The version of the record's kind of configuration in force when the change was signed
    /// (0: none yet); the change applies only on top of exactly that version.
    pub replaces: u64,
    /// The operators' signatures, each over [`authorization_message`]; their originators have
    /// role [`SignerRole::Operator`] and the operator's id as `department`.
    pub signatures: Vec<Seal>,
}

/// The bytes an operator signs: context, signer, the version replaced, the record's bytes.
pub fn authorization_message(signer: &Originator, replaces: u64, record: &Record) -> Vec<u8> {
    let mut out = AUTHORIZE_CONTEXT.to_vec();
    // Serialising plain strings and arrays into a Vec cannot fail.
    out.extend(postcard::to_stdvec(signer).unwrap_or_default());
    out.extend(replaces.to_be_bytes());
    out.extend(record.encode());
    out
}

impl AuthorizedRecord {
    /// `record` (a config record) to be signed, replacing version `replaces` of its kind.
    pub fn new(record: Record, replaces: u64) -> AuthorizedRecord {
        AuthorizedRecord {
            record,
            replaces,
            signatures: Vec::new(),
        }
    }

    /// The config record inside, if it is one.
    pub fn config(&self) -> Option<&super::ConfigRecord> {
        match &self.record {
            Record::Config(c) => Some(c),
            _ => None,
        }
    }

    /// Add the signature of operator `operator` with `key` listed under `key_id`. A second
    /// signature by the same key replaces the first.
    pub fn sign(&mut self, operator: &str, key_id: &str, key: &SigningKey) {
        let signer = Originator {
            role: SignerRole::Operator,
            department: operator.to_owned(),
            key_id: key_id.to_owned(),
            public_key: key.verifying_key().to_bytes(),
        };
        let signature = key.sign(&authorization_message(&signer, self.replaces, &self.record));
        self.signatures
            .retain(|s| s.originator.public_key != signer.public_key);
        self.signatures.push(Seal {
            originator: signer,
            signature: signature.to_bytes().to_vec(),
        });
    }

    /// Check every signature (not whether its key may sign: [`OriginKeys::check_config`]).
    pub fn verify_signatures(&self) -> Result<(), OriginError> {
        for (i, seal) in self.signatures.iter().enumerate() {
            let o = &seal.originator;
            if self.signatures[..i]
                .iter()
                .any(|s| s.originator.public_key == o.public_key)
            {
                return Err(OriginError::DuplicateSignature {
                    key_id: o.key_id.clone(),
                });
            }
            if o.role != SignerRole::Operator {
                return Err(OriginError::WrongSigner {
                    role: SignerRole::Operator.as_str(),
                    department: String::new(),
                    found_role: o.role.as_str(),
                    found_department: o.department.clone(),
                });
            }
            verify_by(
                o,
                &authorization_message(o, self.replaces, &self.record),
                &seal.signature,
            )?;
        }
        Ok(())
    }
}

/// How many different operators must sign `change` when `old` is the directory in force and
/// `new` the keys of the directory the change installs (for a directory change), and why.
pub fn signatures_needed(
    old: &OriginKeys,
    change: &ConfigChange,
    new: Option<&OriginKeys>,
) -> (usize, Option<String>) {
    let operators = old.operators().len();
    if let ConfigChange::Membership { from, to } = change {
        let dropped = from.dropped_in(to);
        return match dropped.is_empty() {
            false if operators >= 2 => (
                2,
                Some(format!(
                    "it removes node {} or its vote",
                    dropped
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ),
            _ => (1, None),
        };
    }
    let (ConfigChange::Directory { .. }, Some(new)) = (change, new) else {
        return (1, None);
    };
    let removed: Vec<&str> = old
        .departments
        .iter()
        .filter(|d| !new.departments.contains(d))
        .map(String::as_str)
        .collect();
    let operator_keys_removed = old
        .keys
        .iter()
        .filter(|k| k.role == SignerRole::Operator)
        .any(|k| !new.keys.contains(k));
    let why = if !removed.is_empty() {
        Some(format!("it removes department {}", removed.join(", ")))
    } else if operator_keys_removed {
        Some("it removes or replaces an operator key".to_owned())
    } else {
        None
    };
    match why {
        Some(why) if operators >= 2 => (2, Some(why)),
        _ => (1, None),
    }
}

impl OriginKeys {
    /// The operators that list keys, sorted, each once.
    pub fn operators(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| k.role == SignerRole::Operator)
            .map(|k| k.department.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Check a config record's authorisation against these keys (the directory in force).
    /// `in_force` is the version of the record's kind in force; `new` the keys of the
    /// directory a directory change installs. Other records pass.
    ///
    /// Without operator keys in force (a cluster whose directory lists none: before its first
    /// directory, or written before operator signatures existed), a config record needs no
    /// signature; signatures it carries must still verify.
    pub fn check_config(
        &self,
        record: &Record,
        in_force: impl Fn(ConfigKind) -> u64,
        new: Option<&OriginKeys>,
    ) -> Result<(), OriginError> {
        let Record::Config(config) = record.content() else {
            return Ok(());
        };
        let authorized = match record {
            Record::Authorized(a) => {
                a.verify_signatures()?;
                Some(a)
            }
            _ => None,
        };
        if self.operators().is_empty() {
            return Ok(());
        }
        let Some(authorized) = authorized else {
            return Err(OriginError::UnsignedConfig {
                kind: config.change.kind().as_str(),
            });
        };
        let kind = config.change.kind();
        if authorized.replaces != in_force(kind) {
            return Err(OriginError::Stale {
                kind: kind.as_str(),
                replaces: authorized.replaces,
                in_force: in_force(kind),
            });
        }
        for s in &authorized.signatures {
            let o = &s.originator;
            let listed = self.keys.iter().any(|k| {
                k.role == SignerRole::Operator
                    && k.department == o.department
                    && k.key_id == o.key_id
                    && k.public_key == o.public_key
            });
            if !listed {
                return Err(OriginError::UnknownKey {
                    key_id: o.key_id.clone(),
                    role: SignerRole::Operator.as_str(),
                    department: o.department.clone(),
                });
            }
        }
        let mut signers: Vec<&str> = authorized
            .signatures
            .iter()
            .map(|s| s.originator.department.as_str())
            .collect();
        signers.sort_unstable();
        signers.dedup();
        let (needed, why) = signatures_needed(self, &config.change, new);
        if signers.len() < needed {
            return Err(OriginError::TooFewSignatures {
                kind: kind.as_str(),
                needed,
                found: signers.len(),
                why: why.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
