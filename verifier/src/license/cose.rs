//! Licenses as COSE_Sign1 messages (RFC 9052 §4.2): signing, opening without trust, checking
//! the signature, and the license hash.
//!
//! The message is `18([protected, {}, payload, signature])`:
//! - protected header: exactly `{1: -8, 4: kid}`, i.e. `alg` EdDSA (RFC 9053 §2.2; Ed25519 is
//!   the only curve accepted) and `kid` the UTF-8 bytes of the issuer key id;
//! - unprotected header: the empty map (nothing unsigned may travel with a license);
//! - payload: the deterministic CBOR of the [`LicenseClaims`];
//! - signature: Ed25519 over the `Sig_structure` `["Signature1", protected, h'', payload]` (no
//!   external AAD).
//!
//! Opening refuses every other shape and any encoding that differs from what signing writes, so
//! every byte of an accepted message is either fixed by the format or covered by the signature:
//! changing any one byte makes it fail to open or fail to verify.

use coset::{
    CborSerializable as _, CoseSign1, CoseSign1Builder, HeaderBuilder, ProtectedHeader,
    RegisteredLabelWithPrivate, TaggedCborSerializable as _, iana,
};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::claims::LicenseClaims;
use super::error::LicenseError;
use crate::hash::Hash;

/// The largest license this crate opens or signs, 16 KiB: a QR-sized document is far smaller,
/// and the bound caps the work and memory an outsider can demand.
pub const MAX_LICENSE_BYTES: usize = 16 * 1024;

const ED25519_SIGNATURE_LEN: usize = 64;

/// THE identifier of a license: SHA-256 of its COSE_Sign1 bytes, exactly as signed.
///
/// Plain SHA-256, not an RFC 6962 leaf hash: the log leaf is the hash of the *record* that names
/// the license, not of the license itself, and anyone can recompute this one with `sha256sum`.
/// Because opening refuses every encoding but the canonical one, one license has one hash.
pub fn license_hash(cose: &[u8]) -> Hash {
    Sha256::digest(cose).into()
}

/// Signs `claims` with the issuing department's key and returns the tagged COSE_Sign1 bytes.
/// The COSE `kid` is `claims.issuer_key_id`, so the two cannot disagree. Ed25519 is
/// deterministic: the same claims and key always give the same bytes.
///
/// # Errors
/// [`LicenseError::Claims`] when the claims break a rule of the format,
/// [`LicenseError::TooLarge`] when the document would exceed [`MAX_LICENSE_BYTES`].
pub fn sign_license(claims: &LicenseClaims, key: &SigningKey) -> Result<Vec<u8>, LicenseError> {
    let payload = claims.to_cbor()?;
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(claims.issuer_key_id.as_bytes().to_vec())
        .build();
    let bytes = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(&[], |tbs| key.sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .map_err(|e| LicenseError::Encode {
            reason: e.to_string(),
        })?;
    if bytes.len() > MAX_LICENSE_BYTES {
        return Err(LicenseError::TooLarge {
            len: bytes.len(),
            max: MAX_LICENSE_BYTES,
        });
    }
    Ok(bytes)
}

/// A license whose structure was checked but whose signature was not. Nothing in it is to be
/// believed until [`UnverifiedLicense::verify_signature`] succeeds with a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedLicense {
    key_id: String,
    claims: LicenseClaims,
    signed_data: Vec<u8>,
    signature: Signature,
    hash: Hash,
}

impl UnverifiedLicense {
    /// The issuer key id named by the license (COSE `kid`, equal to the claims' issuer key id):
    /// which key to look up before verifying.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The claims as the document states them, NOT verified: for display next to a refusal, or
    /// to pick the department to ask, never to decide.
    pub fn unverified_claims(&self) -> &LicenseClaims {
        &self.claims
    }

    /// [`license_hash`] of the document.
    pub fn license_hash(&self) -> Hash {
        self.hash
    }

    /// Verifies the signature with `key` (strict Ed25519: non-canonical and small-order encodings
    /// are refused) and returns the claims it vouches for.
    ///
    /// # Errors
    /// [`LicenseError::BadSignature`].
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<LicenseClaims, LicenseError> {
        key.verify_strict(&self.signed_data, &self.signature)
            .map_err(|_| LicenseError::BadSignature {
                key_id: self.key_id.clone(),
            })?;
        Ok(self.claims.clone())
    }
}

/// Parses a license without trusting it: checks the COSE_Sign1 structure, the header, the
/// canonical encoding and the claims, but not the signature.
///
/// # Errors
/// Every document variant of [`LicenseError`] (all but the QR ones, `BadSignature` and
/// `Encode`).
pub fn open_license(bytes: &[u8]) -> Result<UnverifiedLicense, LicenseError> {
    if bytes.len() > MAX_LICENSE_BYTES {
        return Err(LicenseError::TooLarge {
            len: bytes.len(),
            max: MAX_LICENSE_BYTES,
        });
    }
    let message = CoseSign1::from_tagged_slice(bytes).map_err(|e| LicenseError::NotCoseSign1 {
        reason: e.to_string(),
    })?;
    let key_id = check_protected(&message.protected)?;
    if !message.unprotected.is_empty() {
        return Err(LicenseError::UnexpectedHeader {
            reason: "the unprotected header must be empty",
        });
    }
    let payload = message
        .payload
        .as_deref()
        .ok_or(LicenseError::DetachedPayload)?;
    let signature: [u8; ED25519_SIGNATURE_LEN] =
        message
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| LicenseError::BadSignatureLength {
                len: message.signature.len(),
            })?;
    // Re-encoding keeps the protected header's original bytes, so this catches every other
    // liberty the decoder allowed: long-form lengths, indefinite lengths, trailing data.
    let reencoded = message
        .clone()
        .to_tagged_vec()
        .map_err(|e| LicenseError::NotCoseSign1 {
            reason: e.to_string(),
        })?;
    if reencoded != bytes {
        return Err(LicenseError::NotCanonical { part: "message" });
    }
    let claims = LicenseClaims::from_cbor(payload)?;
    if claims.issuer_key_id != key_id {
        return Err(LicenseError::KeyIdMismatch {
            header: key_id,
            claims: claims.issuer_key_id,
        });
    }
    Ok(UnverifiedLicense {
        key_id,
        claims,
        signed_data: message.tbs_data(&[]),
        signature: Signature::from_bytes(&signature),
        hash: license_hash(bytes),
    })
}

/// Checks that the protected header is exactly `{alg: EdDSA, kid}` in canonical encoding and
/// returns the kid as text.
fn check_protected(protected: &ProtectedHeader) -> Result<String, LicenseError> {
    let header = &protected.header;
    match &header.alg {
        Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA)) => {}
        Some(other) => {
            return Err(LicenseError::UnsupportedAlgorithm {
                alg: format!("{other:?}"),
            });
        }
        None => {
            return Err(LicenseError::UnexpectedHeader {
                reason: "the protected header names no algorithm",
            });
        }
    }
    let only_alg_and_kid = header.crit.is_empty()
        && header.content_type.is_none()
        && header.iv.is_empty()
        && header.partial_iv.is_empty()
        && header.counter_signatures.is_empty()
        && header.rest.is_empty();
    if !only_alg_and_kid {
        return Err(LicenseError::UnexpectedHeader {
            reason: "the protected header may hold only alg and kid",
        });
    }
    let key_id =
        String::from_utf8(header.key_id.clone()).map_err(|_| LicenseError::UnexpectedHeader {
            reason: "the kid must be a UTF-8 key id",
        })?;
    if key_id.is_empty() {
        return Err(LicenseError::UnexpectedHeader {
            reason: "the protected header has no kid",
        });
    }
    let canonical = header
        .clone()
        .to_vec()
        .map_err(|e| LicenseError::NotCoseSign1 {
            reason: e.to_string(),
        })?;
    if protected.original_data.as_deref() != Some(canonical.as_slice()) {
        return Err(LicenseError::NotCanonical {
            part: "protected header",
        });
    }
    Ok(key_id)
}

#[cfg(test)]
mod tests;
