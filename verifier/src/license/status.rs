//! The license status list: which licenses are suspended or revoked, as of one tree head, signed
//! by the cluster's nodes as a C2SP signed note (k of n, like checkpoints).
//!
//! The note body, each line ending in a newline:
//!
//! ```text
//! qianlian.example/notary
//! qianlian license-status v1
//! tree 1234 XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=
//! time 1767225600
//! 0c5b…64 hex digits… revoked 1767139200 fraud
//! 9e01…64 hex digits… suspended 1767052800 court-order
//! ```
//!
//! 1. the log's origin, as in its checkpoints;
//! 2. the fixed line `qianlian license-status v1`. It is what keeps a status list and a
//!    checkpoint, signed by the same node keys, from being passed off as each other: a checkpoint's
//!    second line is a decimal tree size;
//! 3. `tree <size> <base64 root>`: the tree head whose state the list reflects;
//! 4. `time <unix seconds>`: when that state was current. All cosigners must sign the same text,
//!    so the cluster must agree on this time (for instance the commit time recorded in the log at
//!    that size); a verifier reports its knowledge as this old;
//! 5. one line per license that is not in good standing, sorted by hash, no hash twice:
//!    `<lowercase hex license hash> <revoked|suspended> <unix seconds since> <reason code>`, the
//!    reason a token of `a-z`, `0-9` and `-` (at most 32) whose meaning the gateway defines.
//!
//! A reinstated license leaves the list; a revoked one stays. Decimals are canonical (no sign, no
//! leading zeros), so one state has one text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::hash::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier, SignedNote, open_note, require_signers};

/// The second line of every status list body.
pub const STATUS_LIST_MAGIC: &str = "qianlian license-status v1";

/// The longest reason code.
pub const MAX_REASON_LEN: usize = 32;

/// Why a status list was refused. Body errors mean the signer wrote a body this format does not
/// allow, or it was damaged; none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusListError {
    /// The body does not end with a newline.
    #[error("status list body must end with a newline")]
    MissingFinalNewline,

    /// Fewer than the four header lines.
    #[error(
        "status list body has {lines} line(s); it needs an origin, the format line, a tree line and a time line"
    )]
    TooFewLines {
        /// Lines found.
        lines: usize,
    },

    /// An empty origin line, or one with control characters.
    #[error("status list origin must be a non-empty line without control characters")]
    InvalidOrigin,

    /// The second line is not [`STATUS_LIST_MAGIC`]: another kind of note (a checkpoint?) or
    /// another version of the format.
    #[error("not a status list: line 2 is {found:?}, expected {STATUS_LIST_MAGIC:?}")]
    NotAStatusList {
        /// The second line (shortened).
        found: String,
    },

    /// A header or entry line that breaks the format.
    #[error("status list line {number} is malformed: {reason}")]
    InvalidLine {
        /// 1-based line number in the body.
        number: usize,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// Entries not in strictly increasing hash order (unsorted, or a hash twice).
    #[error("status list line {number} is out of order or repeats a license hash")]
    Unsorted {
        /// 1-based line number of the offending entry.
        number: usize,
    },

    /// A verified status list from another log than the one expected.
    #[error("status list is for log {got:?}, not {expected:?}")]
    WrongOrigin {
        /// The origin the caller trusts.
        expected: String,
        /// The origin in the list.
        got: String,
    },

    /// The signed note around the body was refused (bad signature, too few signers …).
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// How a listed license stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseState {
    /// Suspended by its issuer; it may be reinstated.
    Suspended,
    /// Revoked by its issuer; final.
    Revoked,
}

impl LicenseState {
    /// The word in the status list: `suspended` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseState::Suspended => "suspended",
            LicenseState::Revoked => "revoked",
        }
    }
}

/// One license that is not in good standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The license's [`super::license_hash`].
    pub license_hash: Hash,
    /// Suspended or revoked.
    pub state: LicenseState,
    /// When it entered that state (Unix seconds).
    pub since: i64,
    /// The reason code (`a-z`, `0-9`, `-`; 1 to 32 characters), e.g. `fraud`, `holder-request`.
    pub reason: String,
}

/// The state of every suspended or revoked license as of one tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    /// Which log.
    pub origin: String,
    /// Size of the tree head the list reflects.
    pub tree_size: u64,
    /// Root hash of that tree head.
    pub root: Hash,
    /// When that state was current (Unix seconds).
    pub time: i64,
    /// The entries, sorted by license hash, no hash twice.
    pub entries: Vec<StatusEntry>,
}

fn is_plain_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c < ' ')
}

fn is_reason(reason: &str) -> bool {
    (1..=MAX_REASON_LEN).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A canonical decimal: digits only, no leading zero unless it is `0`.
fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn parse_time(text: &str) -> Option<i64> {
    parse_decimal(text).and_then(|t| i64::try_from(t).ok())
}

fn shortened(line: &str) -> String {
    line.chars().take(64).collect()
}

impl StatusList {
    /// A list with `entries` sorted by hash. Call [`StatusList::check`] (or sign, which does) to
    /// catch a hash listed twice.
    pub fn new(
        origin: impl Into<String>,
        tree_size: u64,
        root: Hash,
        time: i64,
        mut entries: Vec<StatusEntry>,
    ) -> Self {
        entries.sort_by_key(|e| e.license_hash);
        Self {
            origin: origin.into(),
            tree_size,
            root,
            time,
            entries,
        }
    }

    /// Checks that the fields make a body that parses back to the same list.
    ///
    /// # Errors
    /// [`StatusListError::InvalidOrigin`], [`StatusListError::InvalidLine`] (negative times, bad
    /// reason codes) and [`StatusListError::Unsorted`].
    pub fn check(&self) -> Result<(), StatusListError> {
        if !is_plain_line(&self.origin) {
            return Err(StatusListError::InvalidOrigin);
        }
        if self.time < 0 {
            return Err(StatusListError::InvalidLine {
                number: 4,
                reason: "the time must not be negative",
            });
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let number = i + 5;
            if entry.since < 0 {
                return Err(StatusListError::InvalidLine {
                    number,
                    reason: "the time must not be negative",
                });
            }
            if !is_reason(&entry.reason) {
                return Err(StatusListError::InvalidLine {
                    number,
                    reason: "the reason code must be 1 to 32 of a-z, 0-9 and -",
                });
            }
            if i > 0 && self.entries[i - 1].license_hash >= entry.license_hash {
                return Err(StatusListError::Unsorted { number });
            }
        }
        Ok(())
    }

    /// The note body. Call [`StatusList::check`] first if the fields come from outside;
    /// [`StatusList::sign`] does.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{STATUS_LIST_MAGIC}\ntree {} {}\ntime {}\n",
            self.origin,
            self.tree_size,
            BASE64.encode(self.root),
            self.time
        );
        for e in &self.entries {
            body.push_str(&format!(
                "{} {} {} {}\n",
                hex::encode(e.license_hash),
                e.state.as_str(),
                e.since,
                e.reason
            ));
        }
        body
    }

    /// Parses a status list body. Only for a body whose signatures were verified: see
    /// [`open_status_list`].
    ///
    /// # Errors
    /// Every body variant of [`StatusListError`].
    pub fn parse_body(body: &str) -> Result<Self, StatusListError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(StatusListError::MissingFinalNewline)?;
        let lines: Vec<&str> = lines.split('\n').collect();
        // The format line first, so that another kind of note is named as such.
        if let Some(magic) = lines.get(1)
            && *magic != STATUS_LIST_MAGIC
        {
            return Err(StatusListError::NotAStatusList {
                found: shortened(magic),
            });
        }
        let [origin, _magic, tree, time, entries @ ..] = lines.as_slice() else {
            return Err(StatusListError::TooFewLines { lines: lines.len() });
        };
        if !is_plain_line(origin) {
            return Err(StatusListError::InvalidOrigin);
        }
        let (tree_size, root) = tree
            .strip_prefix("tree ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(size, root)| {
                let root = BASE64.decode(root).ok()?;
                Some((parse_decimal(size)?, Hash::try_from(root).ok()?))
            })
            .ok_or(StatusListError::InvalidLine {
                number: 3,
                reason: "expected `tree <decimal size> <base64 root hash>`",
            })?;
        let time = time.strip_prefix("time ").and_then(parse_time).ok_or(
            StatusListError::InvalidLine {
                number: 4,
                reason: "expected `time <decimal unix seconds>`",
            },
        )?;
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, line)| parse_entry(line, i + 5))
            .collect::<Result<Vec<_>, _>>()?;
        let list = Self {
            origin: (*origin).to_owned(),
            tree_size,
            root,
            time,
            entries,
        };
        list.check()?;
        Ok(list)
    }

    /// Signs the list and returns the signed note; other nodes cosign it with
    /// [`SignedNote::add_signature`] (they must agree on every byte of the body, the time
    /// included).
    ///
    /// # Errors
    /// As [`StatusList::check`].
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, StatusListError> {
        self.check()?;
        let mut note = SignedNote::new(self.to_body())?;
        note.add_signature(signer)?;
        Ok(note.to_string())
    }

    /// The entry for a license, if it is suspended or revoked. Binary search: the list is sorted.
    pub fn lookup(&self, license_hash: &Hash) -> Option<&StatusEntry> {
        self.entries
            .binary_search_by(|e| e.license_hash.cmp(license_hash))
            .ok()
            .map(|i| &self.entries[i])
    }
}

fn parse_entry(line: &str, number: usize) -> Result<StatusEntry, StatusListError> {
    let invalid = |reason| StatusListError::InvalidLine { number, reason };
    let parts: Vec<&str> = line.split(' ').collect();
    let [hash, state, since, reason] = parts.as_slice() else {
        return Err(invalid(
            "expected `<hex hash> <revoked|suspended> <unix seconds> <reason>`",
        ));
    };
    let is_lower_hex = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let license_hash = is_lower_hex
        .then(|| hex::decode(hash).ok())
        .flatten()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or(invalid("the license hash must be 64 lowercase hex digits"))?;
    let state = match *state {
        "revoked" => LicenseState::Revoked,
        "suspended" => LicenseState::Suspended,
        _ => return Err(invalid("the state must be `revoked` or `suspended`")),
    };
    let since = parse_time(since).ok_or(invalid("the time must be canonical decimal seconds"))?;
    if !is_reason(reason) {
        return Err(invalid("the reason code must be 1 to 32 of a-z, 0-9 and -"));
    }
    Ok(StatusEntry {
        license_hash,
        state,
        since,
        reason: (*reason).to_owned(),
    })
}

/// A status list whose note carried at least one verified signature by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedStatusList {
    /// The list.
    pub list: StatusList,
    /// Distinct names of the trusted keys whose signatures verified, in note order.
    pub signers: Vec<String>,
}

impl VerifiedStatusList {
    /// Demands at least `k` distinct trusted signers (k of n nodes).
    ///
    /// # Errors
    /// [`StatusListError::Note`] with [`NoteError::NotEnoughSigners`].
    pub fn require_signers(self, k: usize) -> Result<Self, StatusListError> {
        require_signers(&self.signers, k)?;
        Ok(self)
    }

    /// Demands that the list comes from the log named `origin`.
    ///
    /// # Errors
    /// [`StatusListError::WrongOrigin`].
    pub fn require_origin(self, origin: &str) -> Result<Self, StatusListError> {
        if self.list.origin != origin {
            return Err(StatusListError::WrongOrigin {
                expected: origin.to_owned(),
                got: self.list.origin,
            });
        }
        Ok(self)
    }
}

/// Opens a signed status list: verifies the note's signatures against the trusted node keys
/// (unknown signers are ignored, a failing trusted signature rejects the note), then parses the
/// body. Chain [`VerifiedStatusList::require_origin`] and
/// [`VerifiedStatusList::require_signers`].
///
/// # Errors
/// [`StatusListError::Note`] for the note and its signatures, then the body variants.
pub fn open_status_list(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<VerifiedStatusList, StatusListError> {
    let opened = open_note(note, verifiers)?;
    let list = StatusList::parse_body(&opened.text)?;
    Ok(VerifiedStatusList {
        list,
        signers: opened.signers,
    })
}

#[cfg(test)]
mod tests;
