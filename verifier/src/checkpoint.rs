//! Tree heads as C2SP checkpoints (c2sp.org/tlog-checkpoint), carried in signed notes.
//!
//! A checkpoint body is the origin line (which log), the tree size in decimal, the root hash in
//! base64, then optional non-empty extension lines, each line ending in a newline:
//!
//! ```text
//! qianlian.example/notary
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//! ```
//!
//! Every department node that applied a tree head cosigns it; [`open_checkpoint`] verifies the
//! signatures before it reads the body, and [`VerifiedCheckpoint::require_signers`] demands k of
//! n departments.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::hash::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier, SignedNote, open_note, require_signers};

/// Why a checkpoint was refused. Body errors mean the signer wrote a body this format does not
/// allow (or it was damaged); none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The body does not end with a newline.
    #[error("checkpoint body must end with a newline")]
    MissingFinalNewline,

    /// Fewer than the three mandatory lines (origin, size, root hash).
    #[error("checkpoint body has {lines} line(s); it needs an origin, a tree size and a root hash")]
    TooFewLines {
        /// Lines found.
        lines: usize,
    },

    /// An empty origin line, or one with ASCII control characters.
    #[error("checkpoint origin must be a non-empty line without control characters")]
    InvalidOrigin,

    /// The size line is not the decimal form of a u64 without leading zeros.
    #[error("checkpoint tree size {line:?} is not a decimal number without sign or leading zeros")]
    InvalidSize {
        /// The offending line (shortened).
        line: String,
    },

    /// The root hash line is not standard base64 of exactly 32 bytes.
    #[error("checkpoint root hash {line:?} is not the standard base64 of 32 bytes")]
    InvalidRootHash {
        /// The offending line (shortened).
        line: String,
    },

    /// An empty extension line, or one with ASCII control characters.
    #[error("checkpoint extension line {number} must be non-empty and without control characters")]
    InvalidExtensionLine {
        /// 1-based line number in the body.
        number: usize,
    },

    /// A verified checkpoint from another log than the one expected. The caller asked the wrong
    /// log, or a log is replaying another's tree heads.
    #[error("checkpoint is for log {got:?}, not {expected:?}")]
    WrongOrigin {
        /// The origin the caller trusts.
        expected: String,
        /// The origin in the checkpoint.
        got: String,
    },

    /// The signed note around the body was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A tree head: the log's identity, its size and its root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log: a schema-less URL such as `qianlian.example/notary` is recommended.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of the first `size` leaves.
    pub root: Hash,
    /// Opaque extension lines after the root hash; empty unless a consumer needs them (the spec
    /// discourages them: monitors cannot audit them).
    pub extensions: Vec<String>,
}

fn shortened(line: &str) -> String {
    const MAX: usize = 64;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

fn is_plain_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c < ' ')
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note body: origin, size, base64 root and extension lines, each ending in a newline.
    /// Call [`Checkpoint::check`] first if the fields come from outside; [`Checkpoint::sign`]
    /// does.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Checks that the fields make a body that parses back to the same checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidOrigin`] and [`CheckpointError::InvalidExtensionLine`].
    pub fn check(&self) -> Result<(), CheckpointError> {
        if !is_plain_line(&self.origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        match self.extensions.iter().position(|line| !is_plain_line(line)) {
            Some(i) => Err(CheckpointError::InvalidExtensionLine { number: i + 4 }),
            None => Ok(()),
        }
    }

    /// Parses a checkpoint body. Only for a body whose signatures were verified: see
    /// [`open_checkpoint`].
    ///
    /// # Errors
    /// Every body variant of [`CheckpointError`].
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let lines: Vec<&str> = lines.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines { lines: lines.len() });
        };
        let invalid_size = || CheckpointError::InvalidSize {
            line: shortened(size),
        };
        let canonical_decimal = size.bytes().all(|b| b.is_ascii_digit())
            && !size.is_empty()
            && (*size == "0" || !size.starts_with('0'));
        if !canonical_decimal {
            return Err(invalid_size());
        }
        let checkpoint = Self {
            origin: (*origin).to_owned(),
            size: size.parse().map_err(|_| invalid_size())?,
            root: BASE64
                .decode(root)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or_else(|| CheckpointError::InvalidRootHash {
                    line: shortened(root),
                })?,
            extensions: extensions.iter().map(|line| (*line).to_owned()).collect(),
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    /// Signs the checkpoint and returns the signed note (body, blank line, signature line). Other
    /// nodes cosign it with [`SignedNote::add_signature`].
    ///
    /// # Errors
    /// As [`Checkpoint::check`].
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        self.check()?;
        let mut note = SignedNote::new(self.to_body())?;
        note.add_signature(signer)?;
        Ok(note.to_string())
    }
}

/// A checkpoint whose note carried at least one verified signature by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// Distinct names of the trusted keys whose signatures verified, in note order.
    pub signers: Vec<String>,
}

impl VerifiedCheckpoint {
    /// Demands at least `k` distinct trusted signers (k of n departments).
    ///
    /// # Errors
    /// [`CheckpointError::Note`] with [`NoteError::NotEnoughSigners`].
    pub fn require_signers(self, k: usize) -> Result<Self, CheckpointError> {
        require_signers(&self.signers, k)?;
        Ok(self)
    }

    /// Demands that the checkpoint comes from the log named `origin`.
    ///
    /// # Errors
    /// [`CheckpointError::WrongOrigin`].
    pub fn require_origin(self, origin: &str) -> Result<Self, CheckpointError> {
        if self.checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                got: self.checkpoint.origin,
            });
        }
        Ok(self)
    }
}

/// Opens a signed checkpoint: verifies the note's signatures against the trusted `verifiers`
/// (unknown signers are ignored, a failing trusted signature rejects the note), then parses the
/// body. Chain [`VerifiedCheckpoint::require_origin`] and
/// [`VerifiedCheckpoint::require_signers`] to pin the log and demand k of n signers.
///
/// # Errors
/// [`CheckpointError::Note`] for the note and its signatures, then the body variants.
pub fn open_checkpoint(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let opened = open_note(note, verifiers)?;
    let checkpoint = Checkpoint::parse_body(&opened.text)?;
    Ok(VerifiedCheckpoint {
        checkpoint,
        signers: opened.signers,
    })
}

#[cfg(test)]
mod tests;
