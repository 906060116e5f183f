//! Signed checkpoints of the notarization log: this node's signature over each tree head it
//! applies, cosignatures by its peers, and the checks a node runs on its own stored checkpoint.
//!
//! A checkpoint is a C2SP `tlog-checkpoint` body (origin, tree size, root) in a signed note
//! (`qianlian_verifier::{Checkpoint, SignedNote}`). Every node signs the tree heads it applies
//! with its own Ed25519 note key; [`CosignedCheckpoint`] adds the signatures of the other members
//! that computed the same root, so a verifier can demand k of n departments with the keys it
//! trusts. A cosignature is accepted only if it verifies over *this* node's body, under the key
//! the cosigner sent: a member whose tree differs signs a different body and is left out.
//!
//! The license status list (`qianlian_verifier::license::StatusList`) is signed and cosigned
//! the same way, by the same keys: its body's second line keeps the two kinds of note apart.
//!
//! Every node of one cluster must use the same origin line, or their signatures cover different
//! bodies and never count as cosignatures.
//!
//! A member answers a request to cosign with a [`Cosignature`] or a [`CosignRefusal`]; the
//! network carries both between nodes as they are (postcard), so their fields and variants are
//! part of the wire format.

use qianlian_verifier::license::StatusList;
use qianlian_verifier::{Checkpoint, Hash, NoteSigner, NoteVerifier, SignedNote};
use serde::{Deserialize, Serialize};

/// The default checkpoint origin line: names the log a checkpoint is for.
pub const DEFAULT_ORIGIN: &str = "gov.example/qianlian";

/// A tree head signed by this node's key, as the state machine stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed note: body, blank line, this node's signature line.
    pub note: String,
    pub size: u64,
    pub root: Hash,
}

/// The latest checkpoint a node applied, with its own signature and the cosignatures of the
/// members that answered in time and computed the same root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignedCheckpoint {
    /// The full signed note text: the checkpoint body, a blank line, one signature line per
    /// signer (this node's first).
    pub note: String,
    /// The tree size it covers.
    pub size: u64,
    /// RFC 6962 root of the first `size` records.
    pub root: Hash,
    /// Key names of the signers, in note order (this node's first).
    pub signers: Vec<String>,
}

/// A cosignature: the signer's public key (note verifier key form) and its signature line over
/// the checkpoint body it computed from its own tree.
///
/// The key is self-asserted: the caller uses it only to check that the signature is over the
/// same body (so the same root); whoever verifies the note decides which keys to trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    pub verifier_key: String,
    pub signature_line: String,
}

/// Why a node did not cosign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CosignRefusal {
    /// The node has not applied that tree size yet. Asking again later can succeed.
    #[error("not yet: this node has applied {applied} records")]
    NotYet { applied: u64 },
    /// The node has no checkpoint signing key configured; the operator must give it one.
    #[error("this node has no checkpoint signing key")]
    NoKey,
    /// The node failed to compute or sign (storage); its log says why.
    #[error("cosigning failed: {reason}")]
    Failed { reason: String },
}

/// What a node signs with: its note key, if it has one, and the log's origin line.
#[derive(Debug, Clone)]
pub struct CheckpointSigner {
    signer: Option<NoteSigner>,
    origin: String,
}

/// Why a checkpoint could not be signed or read back: the configured origin is not a valid
/// origin line, or a stored note is damaged. The operator must act; no retry helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint: {0}")]
pub struct CheckpointFault(pub String);

impl CheckpointSigner {
    /// Signs with `signer` (or not at all) under `origin`, checked to be a valid origin line.
    pub fn new(signer: Option<NoteSigner>, origin: &str) -> Result<Self, CheckpointFault> {
        Checkpoint::new(origin, 0, [0; 32])
            .check()
            .map_err(|e| CheckpointFault(format!("origin {origin:?}: {e}")))?;
        Ok(CheckpointSigner {
            signer,
            origin: origin.to_string(),
        })
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// This node's public key, if it signs.
    pub fn verifier(&self) -> Option<NoteVerifier> {
        self.signer.as_ref().map(NoteSigner::verifier)
    }

    /// This node's signing key, which also seals the records it writes (see
    /// `qianlian_verifier::record::batch_signature`); `None` if this node has no key.
    pub fn signing_key(&self) -> Option<&qianlian_verifier::ed25519_dalek::SigningKey> {
        self.signer.as_ref().map(|s| s.signing_key())
    }

    fn body(&self, size: u64, root: Hash) -> String {
        Checkpoint::new(self.origin.clone(), size, root).to_body()
    }

    /// The signed note of `(size, root)`; `None` if this node has no key.
    pub fn sign(&self, size: u64, root: Hash) -> Result<Option<SignedCheckpoint>, CheckpointFault> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let note = Checkpoint::new(self.origin.clone(), size, root)
            .sign(signer)
            .map_err(|e| CheckpointFault(e.to_string()))?;
        Ok(Some(SignedCheckpoint { note, size, root }))
    }

    /// This node's cosignature of `(size, root)`, which it computed from its own tree.
    pub fn cosign(&self, size: u64, root: Hash) -> Result<Cosignature, CosignRefusal> {
        self.cosign_body(&self.body(size, root))
    }

    /// The signed note of a status list; `None` if this node has no key.
    pub fn sign_status_list(&self, list: &StatusList) -> Result<Option<String>, CheckpointFault> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        list.sign(signer)
            .map(Some)
            .map_err(|e| CheckpointFault(e.to_string()))
    }

    /// This node's cosignature of a status list it computed from its own state.
    pub fn cosign_status_list(&self, list: &StatusList) -> Result<Cosignature, CosignRefusal> {
        // `sign` checks the list; a cosignature must only ever cover a body that parses back.
        list.check().map_err(|e| CosignRefusal::Failed {
            reason: e.to_string(),
        })?;
        self.cosign_body(&list.to_body())
    }

    fn cosign_body(&self, body: &str) -> Result<Cosignature, CosignRefusal> {
        let signer = self.signer.as_ref().ok_or(CosignRefusal::NoKey)?;
        let signature = signer.sign(body).map_err(|e| CosignRefusal::Failed {
            reason: e.to_string(),
        })?;
        Ok(Cosignature {
            verifier_key: signer.verifier().to_vkey(),
            signature_line: signature.to_line(),
        })
    }
}

/// Read a stored signed note back: its size and root. Does not verify signatures.
pub fn parse_stored(note: &str) -> Result<SignedCheckpoint, CheckpointFault> {
    let parsed = SignedNote::parse(note).map_err(|e| CheckpointFault(e.to_string()))?;
    let body = Checkpoint::parse_body(parsed.text()).map_err(|e| CheckpointFault(e.to_string()))?;
    Ok(SignedCheckpoint {
        note: note.to_string(),
        size: body.size,
        root: body.root,
    })
}

/// Add to `own` every cosignature that verifies over its body under the key sent with it,
/// skipping keys already on the note. Returns the cosigned checkpoint.
pub fn cosigned(
    own: &SignedCheckpoint,
    cosignatures: impl IntoIterator<Item = Cosignature>,
) -> Result<CosignedCheckpoint, CheckpointFault> {
    let (note, signers) = add_cosignatures(&own.note, cosignatures)?;
    Ok(CosignedCheckpoint {
        note,
        size: own.size,
        root: own.root,
        signers,
    })
}

/// Add to the signed note `own` every cosignature that verifies over its text under the key
/// sent with it, skipping keys already on the note. Returns the note and its signers' names,
/// in note order.
pub fn add_cosignatures(
    own: &str,
    cosignatures: impl IntoIterator<Item = Cosignature>,
) -> Result<(String, Vec<String>), CheckpointFault> {
    let parsed = SignedNote::parse(own).map_err(|e| CheckpointFault(e.to_string()))?;
    let text = parsed.text().to_string();
    let mut lines: Vec<String> = parsed.signatures().iter().map(|s| s.to_line()).collect();
    let mut signers: Vec<String> = parsed.signatures().iter().map(|s| s.name.clone()).collect();
    for cosignature in cosignatures {
        let Ok(verifier) = NoteVerifier::from_vkey(&cosignature.verifier_key) else {
            continue;
        };
        if signers.iter().any(|name| name == verifier.name()) {
            continue;
        }
        // The cosignature alone on our text: it verifies only if the cosigner computed that text.
        let alone = format!("{text}\n{}", cosignature.signature_line);
        let verified = SignedNote::parse(&alone)
            .ok()
            .filter(|note| note.signatures().len() == 1)
            .and_then(|note| note.verify(std::slice::from_ref(&verifier)).ok());
        if verified.is_some() {
            signers.push(verifier.name().to_string());
            lines.push(cosignature.signature_line);
        }
    }
    let note = format!("{text}\n{}", lines.concat());
    // Parse the result once more: it must be a note any verifier accepts the format of.
    SignedNote::parse(&note).map_err(|e| CheckpointFault(e.to_string()))?;
    Ok((note, signers))
}

#[cfg(test)]
mod tests {
    use qianlian_verifier::{empty_root, open_checkpoint};

    use super::*;

    fn key(name: &str, seed: u8) -> NoteSigner {
        match NoteSigner::from_seed(name, &[seed; 32]) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn cosignatures_over_the_same_root_are_added_others_left_out() -> Result<(), CheckpointFault> {
        let root = [3u8; 32];
        let a = CheckpointSigner::new(Some(key("dept-a", 1)), DEFAULT_ORIGIN)?;
        let b = CheckpointSigner::new(Some(key("dept-b", 2)), DEFAULT_ORIGIN)?;
        let c = CheckpointSigner::new(Some(key("dept-c", 3)), DEFAULT_ORIGIN)?;
        let other_log = CheckpointSigner::new(Some(key("dept-d", 4)), "elsewhere.example/log")?;
        let own = a.sign(7, root)?.ok_or(CheckpointFault("no key".into()))?;
        let answers = [
            b.cosign(7, root),
            c.cosign(7, [4; 32]),      // a different tree
            other_log.cosign(7, root), // a different origin
            a.cosign(7, root),         // our own key again
        ];
        let got = cosigned(&own, answers.into_iter().filter_map(Result::ok))?;
        assert_eq!(got.signers, ["dept-a", "dept-b"]);
        assert_eq!((got.size, got.root), (7, root));
        let trusted: Vec<NoteVerifier> = [&a, &b, &c].iter().filter_map(|s| s.verifier()).collect();
        let opened =
            open_checkpoint(&got.note, &trusted).map_err(|e| CheckpointFault(e.to_string()))?;
        assert_eq!(opened.signers, ["dept-a", "dept-b"]);
        assert_eq!(opened.checkpoint.root, root);
        assert_eq!(parse_stored(&own.note)?, own);
        Ok(())
    }

    #[test]
    fn no_key_signs_nothing_and_bad_origins_are_refused() {
        let none = CheckpointSigner::new(None, DEFAULT_ORIGIN);
        assert!(matches!(
            none.as_ref().map(|s| s.sign(0, empty_root())),
            Ok(Ok(None))
        ));
        assert_eq!(
            none.ok().map(|s| s.cosign(0, empty_root())),
            Some(Err(CosignRefusal::NoKey))
        );
        assert!(CheckpointSigner::new(None, "").is_err());
        assert!(CheckpointSigner::new(None, "two\nlines").is_err());
    }
}
