//! [`LicenseError`]: why a license document or its QR payload was refused or could not be made.

use super::claims::ClaimsError;

/// Why a license (COSE bytes or QR payload) was refused, or could not be signed. Unless a variant
/// says otherwise, whoever produced or altered the document is at fault; none is transient, so
/// retrying the same input gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseError {
    /// The document is larger than [`super::MAX_LICENSE_BYTES`]. At signing, the caller put too
    /// much into the claims; at opening, the input is not a license.
    #[error("license is {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The bytes are not a tagged COSE_Sign1 message (CBOR tag 18, array of four).
    #[error("not a tagged COSE_Sign1 message: {reason}")]
    NotCoseSign1 {
        /// What the COSE decoder reported.
        reason: String,
    },

    /// The message decodes but is not in the one encoding an issuer writes (a different length
    /// form, trailing bytes, a re-encoded header): it was altered after signing.
    #[error("COSE {part} is not in deterministic CBOR encoding")]
    NotCanonical {
        /// Which part: `message` or `protected header`.
        part: &'static str,
    },

    /// The protected header names another algorithm than EdDSA (-8).
    #[error("license signature algorithm {alg} is not supported: only EdDSA (-8) is")]
    UnsupportedAlgorithm {
        /// The algorithm found, as coset prints it.
        alg: String,
    },

    /// A header parameter this format does not use, an unprotected header that is not empty, or
    /// a missing or non-UTF-8 key id.
    #[error("unexpected COSE header: {reason}")]
    UnexpectedHeader {
        /// Which rule the headers break.
        reason: &'static str,
    },

    /// The payload is detached (nil): a license carries its claims.
    #[error("license payload is detached; a license must carry its claims")]
    DetachedPayload,

    /// The signature field is not 64 bytes, the size of an Ed25519 signature.
    #[error("license signature is {len} bytes; an Ed25519 signature is 64")]
    BadSignatureLength {
        /// Size found.
        len: usize,
    },

    /// The claims inside are refused. At signing, the caller filled them wrongly.
    #[error(transparent)]
    Claims(#[from] ClaimsError),

    /// The COSE `kid` and the issuer key id in the claims differ.
    #[error("COSE key id {header:?} differs from the claims' issuer key id {claims:?}")]
    KeyIdMismatch {
        /// The key id in the protected header.
        header: String,
        /// The key id in the claims.
        claims: String,
    },

    /// The signature does not verify with the key it was checked against: the document was
    /// altered, or signed by another key under this key id.
    #[error("license signature does not verify with key {key_id}")]
    BadSignature {
        /// The key id the signature was checked against.
        key_id: String,
    },

    /// COSE encoding failed while signing. A bug, not the caller's fault; report it.
    #[error("could not encode the COSE message: {reason}")]
    Encode {
        /// What the encoder reported.
        reason: String,
    },

    /// A QR payload without the `QL1:` prefix: not a Qianlian license, or a format version this
    /// verifier does not read.
    #[error("QR payload must start with {expected:?}, found {found:?}")]
    MissingQrPrefix {
        /// The prefix this verifier reads.
        expected: &'static str,
        /// The start of the input (at most 8 characters).
        found: String,
    },

    /// The QR payload is longer than any QR code can hold ([`super::MAX_QR_CHARS`]).
    #[error("QR payload is {len} bytes long; no QR code holds more than {max} characters")]
    QrTooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The text after the prefix is not base45 (RFC 9285): a character outside the alphabet, a
    /// dangling single character, or a group whose value is out of range.
    #[error("QR payload is not valid base45 (RFC 9285): {reason}")]
    Base45 {
        /// Which rule was broken.
        reason: &'static str,
    },

    /// The base45 content is not a zlib stream (RFC 1950), or is damaged (checksum mismatch,
    /// truncated).
    #[error("QR payload is not a valid zlib stream: {reason}")]
    Inflate {
        /// What the decompressor reported.
        reason: String,
    },

    /// The zlib stream inflates to more than [`super::MAX_LICENSE_BYTES`]: a decompression bomb
    /// or not a license. Decompression stopped at the limit.
    #[error("QR payload inflates to more than {max} bytes")]
    InflatedTooLarge {
        /// The limit.
        max: usize,
    },
}
