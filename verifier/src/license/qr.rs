//! The QR payload of a license: `QL1:` + base45(zlib(COSE_Sign1 bytes)).
//!
//! The shape follows the EU digital COVID certificate's `HC1:` payload (eHealth Network,
//! Technical Specifications for Digital Green Certificates, Volume 3): a version prefix, zlib
//! (RFC 1950) compression, and base45 (RFC 9285), whose 45 characters are exactly QR
//! alphanumeric mode's, so the prefix and payload are encoded at 5.5 bits per character instead
//! of byte mode's 8.
//!
//! The wrapper is a transport, not part of the signed document: two payloads for one license may
//! differ (another zlib level), but they decode to the same COSE bytes and so the same
//! [`super::license_hash`].

use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_zlib_with_limit};

use super::cose::MAX_LICENSE_BYTES;
use super::error::LicenseError;

/// The version prefix: "Qianlian license, payload format 1". A new compression or encoding takes
/// a new number.
pub const QR_PREFIX: &str = "QL1:";

/// The longest payload accepted: 4,296 characters, what a version-40 QR code holds in
/// alphanumeric mode at error correction level L. Anything longer did not come from a QR code.
pub const MAX_QR_CHARS: usize = 4296;

/// zlib level: the best compression miniz_oxide offers; a license is small, so time is no issue.
const ZLIB_LEVEL: u8 = 9;

/// The QR payload of a license's COSE bytes. Payloads over [`MAX_QR_CHARS`] (a license of more
/// than about 2.8 KiB after compression) fit no QR code; `from_qr_payload` refuses them.
pub fn to_qr_payload(cose: &[u8]) -> String {
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(cose, ZLIB_LEVEL);
    format!("{QR_PREFIX}{}", base45::encode(compressed))
}

/// The COSE bytes inside a QR payload. Decompression stops at [`MAX_LICENSE_BYTES`], so a small
/// payload cannot make the verifier allocate much (a decompression bomb). The result is not yet
/// a license: pass it to [`super::open_license`].
///
/// # Errors
/// [`LicenseError::QrTooLong`], [`LicenseError::MissingQrPrefix`], [`LicenseError::Base45`],
/// [`LicenseError::Inflate`] and [`LicenseError::InflatedTooLarge`].
pub fn from_qr_payload(payload: &str) -> Result<Vec<u8>, LicenseError> {
    if payload.len() > MAX_QR_CHARS {
        return Err(LicenseError::QrTooLong {
            len: payload.len(),
            max: MAX_QR_CHARS,
        });
    }
    let encoded = payload
        .strip_prefix(QR_PREFIX)
        .ok_or_else(|| LicenseError::MissingQrPrefix {
            expected: QR_PREFIX,
            found: payload.chars().take(8).collect(),
        })?;
    let compressed = base45_decode(encoded)?;
    decompress_to_vec_zlib_with_limit(&compressed, MAX_LICENSE_BYTES).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => LicenseError::InflatedTooLarge {
            max: MAX_LICENSE_BYTES,
        },
        status => LicenseError::Inflate {
            reason: format!("{status:?}"),
        },
    })
}

/// RFC 9285 decoding through the `base45` crate, plus the one check it omits: a final pair of
/// characters must encode a single byte (value below 256); the crate would silently truncate it,
/// letting many strings decode alike.
fn base45_decode(encoded: &str) -> Result<Vec<u8>, LicenseError> {
    let bytes = encoded.as_bytes();
    if bytes.len() % 3 == 1 {
        return Err(LicenseError::Base45 {
            reason: "a single character cannot end a base45 string",
        });
    }
    if bytes.len() % 3 == 2 {
        let digit = |b: u8| base45::alphabet::decode(b).map(u32::from);
        if let (Some(c), Some(d)) = (digit(bytes[bytes.len() - 2]), digit(bytes[bytes.len() - 1]))
            && c + 45 * d > 0xff
        {
            return Err(LicenseError::Base45 {
                reason: "the final pair of characters encodes a value above 255",
            });
        }
    }
    base45::decode(bytes).map_err(|_| LicenseError::Base45 {
        reason: "a character outside the base45 alphabet, or a group above 65535",
    })
}

#[cfg(test)]
mod tests;
