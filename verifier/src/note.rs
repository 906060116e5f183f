//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, compatible with Go's
//! `golang.org/x/mod/sumdb/note`.
//!
//! A signed note is a text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>` (em dash U+2014). Keys are
//! written in the standard text forms: a verifier key `<name>+<hex key id>+<base64(0x01 || public
//! key)>` (public, configuration) and a signer key `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01
//! || seed)>` (secret). The key id is `SHA-256(name || 0x0A || 0x01 || public key)[..4]`.
//!
//! Opening follows the spec: signatures by unknown keys are ignored, a known key whose signature
//! does not verify rejects the whole note, and a note with no verified signature is rejected.
//! [`OpenedNote::require_signers`] then demands k distinct trusted signers (k of n departments).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Signature type byte for Ed25519 in key ids and key encodings.
const ALG_ED25519: u8 = 0x01;
/// What starts every signature line: em dash and space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// What starts a signer key string.
const SIGNER_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// The most signature lines a note may carry. The spec asks verifiers to accept at least 16; Go's
/// implementation stops at 100, and so do we, to bound the work an outsider can cause.
pub const MAX_SIGNATURES: usize = 100;

/// Why a key could not be read, a note could not be signed, or a note was not accepted.
/// None is transient: retrying the same input gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is not a well-formed signed note. Whoever produced or transmitted it is at fault.
    #[error("malformed signed note: {reason}")]
    Malformed {
        /// Which rule of the format was broken.
        reason: String,
    },

    /// The text to sign cannot become a note. The caller of the signing function is at fault.
    #[error("note text {reason}")]
    InvalidText {
        /// Which rule the text breaks.
        reason: &'static str,
    },

    /// A key name that the format cannot carry. The caller (or the key's configuration) is at
    /// fault.
    #[error(
        "invalid key name {name:?}: a key name must be non-empty and contain no spaces and no '+'"
    )]
    InvalidKeyName {
        /// The refused name.
        name: String,
    },

    /// A verifier key string that is not `<name>+<8 hex digits>+<base64 key>`. The configuration
    /// that supplied it is at fault.
    #[error("malformed verifier key: {reason}")]
    MalformedVerifierKey {
        /// Which part is wrong.
        reason: String,
    },

    /// A signer key string that is not `PRIVATE+KEY+<name>+<8 hex digits>+<base64 seed>`. The
    /// configuration or key file is at fault. The message never repeats the secret.
    #[error("malformed signer key: {reason}")]
    MalformedSignerKey {
        /// Which part is wrong.
        reason: &'static str,
    },

    /// A key of a signature type other than Ed25519 (`0x01`). The configuration is at fault.
    #[error("unsupported signature type 0x{alg:02x}: only Ed25519 (0x01) keys are supported")]
    UnsupportedAlgorithm {
        /// The type byte found.
        alg: u8,
    },

    /// A key string whose stated key id is not the id of its name and key: it was edited or
    /// mistyped. The configuration is at fault.
    #[error(
        "key id mismatch for {name}: the key string says {stated:08x}, but its name and key give {computed:08x}"
    )]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// Key id written in the key string.
        stated: u32,
        /// Key id computed from name and key.
        computed: u32,
    },

    /// 32 bytes that are not an Ed25519 public key. The configuration is at fault.
    #[error("the key for {name} is not a valid Ed25519 public key")]
    InvalidPublicKey {
        /// The key name.
        name: String,
    },

    /// Two different trusted keys share a name and key id, so a signature cannot be attributed.
    /// The verifier configuration is at fault.
    #[error("ambiguous trusted key {name}+{key_id:08x}: two different keys share this name and id")]
    AmbiguousKey {
        /// The shared name.
        name: String,
        /// The shared key id.
        key_id: u32,
    },

    /// A signature by a trusted key does not verify: the note text was altered after signing, or
    /// the signature is forged or damaged. Treat as tampering; do not retry.
    #[error(
        "signature by trusted key {name}+{key_id:08x} does not verify: the note was altered after signing or the signature is forged"
    )]
    BadSignature {
        /// The signer's key name.
        name: String,
        /// The signer's key id.
        key_id: u32,
    },

    /// More signature lines than [`MAX_SIGNATURES`]. The sender is at fault.
    #[error("note carries {count} signatures; at most {MAX_SIGNATURES} are accepted")]
    TooManySignatures {
        /// Signature lines found.
        count: usize,
    },

    /// No signature by a trusted key: the note's text must be ignored. Either the note comes
    /// from an unexpected signer, or the verifier lacks the signer's key.
    #[error(
        "note has no signature by a trusted key (signed only by: {}); configure the signer's verifier key if it should be trusted",
        names(.untrusted)
    )]
    NoTrustedSignature {
        /// Names on the signatures that were ignored.
        untrusted: Vec<String>,
    },

    /// Fewer distinct trusted signers than required (k of n). Wait for more cosignatures, or
    /// lower the threshold if the policy allows.
    #[error(
        "note is signed by {} trusted signer(s) ({}), but {required} are required",
        .signers.len(),
        names(.signers)
    )]
    NotEnoughSigners {
        /// The threshold k.
        required: usize,
        /// The distinct trusted signers found.
        signers: Vec<String>,
    },
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "nobody".to_owned()
    } else {
        list.join(", ")
    }
}

/// The key id of an Ed25519 key: `SHA-256(name || 0x0A || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A note may hold no ASCII control character other than newline.
fn has_control(text: &str) -> bool {
    text.chars().any(|c| c < ' ' && c != '\n')
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() {
        return Err(NoteError::InvalidText {
            reason: "must not be empty",
        });
    }
    if !text.ends_with('\n') {
        return Err(NoteError::InvalidText {
            reason: "must end with a newline",
        });
    }
    if has_control(text) {
        return Err(NoteError::InvalidText {
            reason: "must not contain control characters other than newline",
        });
    }
    Ok(())
}

/// Splits `<name>+<8 hex digits>+<base64 key>` (the base64 may itself contain '+').
fn split_key(key: &str) -> Option<(&str, u32, Vec<u8>)> {
    let mut parts = key.splitn(3, '+');
    let (name, id_hex, key64) = (parts.next()?, parts.next()?, parts.next()?);
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = u32::from_str_radix(id_hex, 16).ok()?;
    Some((name, id, BASE64.decode(key64).ok()?))
}

/// A trusted Ed25519 note key: what a verifier is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for `key` under `name`; computes the key id.
    ///
    /// # Errors
    /// [`NoteError::InvalidKeyName`].
    pub fn new(name: impl Into<String>, key: VerifyingKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self {
            key_id: key_id(&name, &key),
            name,
            key,
        })
    }

    /// Parses the standard verifier key form `<name>+<hex key id>+<base64(0x01 || public key)>`.
    ///
    /// # Errors
    /// [`NoteError::MalformedVerifierKey`], [`NoteError::InvalidKeyName`],
    /// [`NoteError::UnsupportedAlgorithm`], [`NoteError::InvalidPublicKey`] and
    /// [`NoteError::KeyIdMismatch`].
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let malformed = |reason: &str| NoteError::MalformedVerifierKey {
            reason: reason.to_owned(),
        };
        let (name, stated, bytes) = split_key(vkey)
            .ok_or_else(|| malformed("expected <name>+<8 hex digit key id>+<base64 key>"))?;
        check_key_name(name)?;
        let (&alg, key) = bytes
            .split_first()
            .ok_or_else(|| malformed("the key is empty"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm { alg });
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| malformed("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoteError::InvalidPublicKey {
            name: name.to_owned(),
        })?;
        let verifier = Self::new(name, key)?;
        if verifier.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_owned(),
                stated,
                computed: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The standard verifier key form; [`NoteVerifier::from_vkey`] reads it back.
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `signature` (without the key id) is this key's signature of `text`. Uses strict
    /// verification: non-canonical and small-order encodings are refused.
    pub fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        Signature::from_slice(signature)
            .is_ok_and(|sig| self.key.verify_strict(text.as_bytes(), &sig).is_ok())
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl FromStr for NoteVerifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_vkey(s)
    }
}

/// An Ed25519 note signing key with its name. Its `Debug` output hides the secret.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer for `key` under `name`; computes the key id.
    ///
    /// # Errors
    /// [`NoteError::InvalidKeyName`].
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self {
            key_id: key_id(&name, &key.verifying_key()),
            name,
            key,
        })
    }

    /// A signer from a 32-byte Ed25519 seed (the RFC 8032 private key). Draw the seed from a
    /// cryptographic RNG; this crate has none, so that it stays free of OS dependencies.
    ///
    /// # Errors
    /// [`NoteError::InvalidKeyName`].
    pub fn from_seed(name: impl Into<String>, seed: &[u8; 32]) -> Result<Self, NoteError> {
        Self::new(name, SigningKey::from_bytes(seed))
    }

    /// Parses the signer key form `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`, as
    /// Go's `note.GenerateKey` writes it.
    ///
    /// # Errors
    /// [`NoteError::MalformedSignerKey`], [`NoteError::InvalidKeyName`],
    /// [`NoteError::UnsupportedAlgorithm`] and [`NoteError::KeyIdMismatch`].
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let malformed = |reason| NoteError::MalformedSignerKey { reason };
        let rest = skey
            .strip_prefix(SIGNER_KEY_PREFIX)
            .ok_or(malformed("it must start with PRIVATE+KEY+"))?;
        let (name, stated, bytes) = split_key(rest).ok_or(malformed(
            "expected PRIVATE+KEY+<name>+<8 hex digit key id>+<base64 seed>",
        ))?;
        check_key_name(name)?;
        let (&alg, seed) = bytes.split_first().ok_or(malformed("the seed is empty"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm { alg });
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| malformed("an Ed25519 seed is 32 bytes"))?;
        let signer = Self::from_seed(name, &seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_owned(),
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The signer key form; [`NoteSigner::from_skey`] reads it back. It is the secret: write it
    /// only to a protected key file.
    pub fn to_skey(&self) -> String {
        let mut seed = Vec::with_capacity(33);
        seed.push(ALG_ED25519);
        seed.extend_from_slice(self.key.as_bytes());
        format!(
            "{SIGNER_KEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(seed)
        )
    }

    /// The Ed25519 key itself, for the node's other signatures (record seals, whose messages
    /// are domain-separated from notes).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier, to publish.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note text (which must end in a newline).
    ///
    /// # Errors
    /// [`NoteError::InvalidText`].
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("key", &"<secret>")
            .finish()
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The signer's key id.
    pub key_id: u32,
    /// The signature bytes after the key id (64 bytes for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, with its final newline: `— <name> <base64(key id || signature)>\n`.
    pub fn to_line(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }

    fn parse_line(line: &str) -> Result<Self, NoteError> {
        let malformed = |reason: &str| NoteError::Malformed {
            reason: reason.to_owned(),
        };
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            malformed("a signature line must start with an em dash (U+2014) and a space")
        })?;
        let (name, sig64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("a signature line is `— <key name> <base64 signature>`"))?;
        check_key_name(name).map_err(|e| malformed(&e.to_string()))?;
        let bytes = BASE64
            .decode(sig64)
            .map_err(|_| malformed(&format!("the signature by {name} is not standard base64")))?;
        if bytes.len() < 5 {
            return Err(malformed(&format!(
                "the signature by {name} is shorter than 5 bytes"
            )));
        }
        let (id, signature) = bytes.split_at(4);
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            signature: signature.to_vec(),
        })
    }
}

/// A note text with its signatures, verified or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// An unsigned note over `text`, to add signatures to.
    ///
    /// # Errors
    /// [`NoteError::InvalidText`].
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_text(&text)?;
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// Splits a signed note into its text and signature lines, checking the format but not the
    /// signatures: the text must not be trusted until [`SignedNote::verify`] succeeds.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] and [`NoteError::TooManySignatures`].
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        let malformed = |reason: &str| NoteError::Malformed {
            reason: reason.to_owned(),
        };
        if has_control(note) {
            return Err(malformed(
                "a note must not contain control characters other than newline",
            ));
        }
        // The text ends at the last blank line; it may contain blank lines itself.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line separates the text from the signatures"))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        let Some(lines) = signatures.strip_suffix('\n') else {
            return Err(malformed(if signatures.is_empty() {
                "the note has no signature lines"
            } else {
                "the last signature line does not end with a newline"
            }));
        };
        let count = lines.split('\n').count();
        if count > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures { count });
        }
        let signatures = lines
            .split('\n')
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note text, including its final newline. Unverified unless obtained through
    /// [`open_note`] or after [`SignedNote::verify`] succeeded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in note order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds `signer`'s signature (a cosignature when others signed already), replacing an
    /// earlier one by the same key.
    ///
    /// # Errors
    /// [`NoteError::TooManySignatures`] when the note is full.
    pub fn add_signature(&mut self, signer: &NoteSigner) -> Result<(), NoteError> {
        let signature = signer.sign(&self.text)?;
        self.signatures
            .retain(|s| (s.name.as_str(), s.key_id) != (signer.name(), signer.key_id()));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: self.signatures.len() + 1,
            });
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Verifies the signatures by the trusted keys in `verifiers` and returns the distinct names
    /// of the trusted signers, in note order. Signatures by unknown keys are ignored.
    ///
    /// # Errors
    /// [`NoteError::BadSignature`] if any trusted key's signature fails (the whole note is
    /// rejected), [`NoteError::AmbiguousKey`], and [`NoteError::NoTrustedSignature`].
    pub fn verify(&self, verifiers: &[NoteVerifier]) -> Result<Vec<String>, NoteError> {
        let mut signers: Vec<String> = Vec::new();
        let mut untrusted: Vec<String> = Vec::new();
        for sig in &self.signatures {
            let mut known = verifiers
                .iter()
                .filter(|v| v.name == sig.name && v.key_id == sig.key_id);
            let Some(verifier) = known.next() else {
                if !untrusted.contains(&sig.name) {
                    untrusted.push(sig.name.clone());
                }
                continue;
            };
            if known.any(|other| other.key != verifier.key) {
                return Err(NoteError::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verifier.verifies(&self.text, &sig.signature) {
                return Err(NoteError::BadSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !signers.contains(&sig.name) {
                signers.push(sig.name.clone());
            }
        }
        if signers.is_empty() {
            return Err(NoteError::NoTrustedSignature { untrusted });
        }
        Ok(signers)
    }
}

impl fmt::Display for SignedNote {
    /// The note in its wire form: text, blank line, signature lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        self.signatures
            .iter()
            .try_for_each(|s| f.write_str(&s.to_line()))
    }
}

/// A note whose text is vouched for by at least one trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The note text, including its final newline.
    pub text: String,
    /// Distinct names of the trusted keys whose signatures verified, in note order.
    pub signers: Vec<String>,
}

impl OpenedNote {
    /// Demands at least `k` distinct trusted signers (k of n).
    ///
    /// # Errors
    /// [`NoteError::NotEnoughSigners`].
    pub fn require_signers(self, k: usize) -> Result<Self, NoteError> {
        require_signers(&self.signers, k)?;
        Ok(self)
    }
}

/// Demands at least `k` distinct names in `signers` (as returned by verification).
///
/// # Errors
/// [`NoteError::NotEnoughSigners`].
pub fn require_signers(signers: &[String], k: usize) -> Result<(), NoteError> {
    if signers.len() < k {
        return Err(NoteError::NotEnoughSigners {
            required: k,
            signers: signers.to_vec(),
        });
    }
    Ok(())
}

/// Signs `text` with `key` under `name` and returns the signature line, newline included. The
/// signed note is `text + "\n" + line` (plus other signers' lines).
///
/// # Errors
/// [`NoteError::InvalidKeyName`] and [`NoteError::InvalidText`].
pub fn sign_note(text: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    Ok(NoteSigner::new(name, key.clone())?.sign(text)?.to_line())
}

/// Parses a signed note and verifies it against the trusted `verifiers`.
///
/// # Errors
/// As [`SignedNote::parse`] and [`SignedNote::verify`].
pub fn open_note(note: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let parsed = SignedNote::parse(note)?;
    let signers = parsed.verify(verifiers)?;
    Ok(OpenedNote {
        text: parsed.text,
        signers,
    })
}

#[cfg(test)]
mod tests;
