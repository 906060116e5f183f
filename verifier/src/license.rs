//! Electronic licenses (电子证照): the signed document a citizen or enterprise carries, its QR
//! form, the evidence that it is on the record, and the offline verdict a phone reaches.
//!
//! A license is a COSE_Sign1 (RFC 9052 §4.2) whose payload is the deterministic CBOR of its
//! [`LicenseClaims`], signed with the issuing department's Ed25519 key. The lifecycle around it
//! (issuing, logging, suspending, revoking) belongs to the gateway; this module only reads and
//! writes bytes, so a phone or a wasm page can link it.
//!
//! - [`claims`]: what a license says, its canonical CBOR and its JSON view.
//! - [`cose`]: signing ([`sign_license`]), opening without trust ([`open_license`]), checking the
//!   signature, and [`license_hash`], the one identifier of a license.
//! - [`qr`]: the QR payload `QL1:` + base45(zlib(COSE)), in the manner of the EU digital COVID
//!   certificate's `HC1:`.
//! - [`status`]: the cluster-signed list of suspended and revoked licenses.
//! - [`trust`]: the trust bundle a verifier works from offline (department keys, node keys, a
//!   cosigned checkpoint, the status list).
//! - [`evidence`]: the log evidence that travels with a license, and the holder's bundle.
//! - [`memo`]: licenses already verified, so an online verifier opens and checks each once.
//! - [`verify`]: [`verify_offline`] and its [`Verdict`].
//!
//! Invariants: every parser takes outside input and refuses what the format does not allow with a
//! typed error, never a panic; every encoding has exactly one byte form, so a license's hash names
//! one document.

pub mod claims;
pub mod cose;
mod error;
pub mod evidence;
pub mod memo;
pub mod qr;
pub mod status;
pub mod trust;
pub mod verify;

pub(crate) mod serde_bytes;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod frozen;

pub use claims::{ClaimsError, LicenseClaims, LicenseType, UnknownLicenseType};
pub use cose::{MAX_LICENSE_BYTES, UnverifiedLicense, license_hash, open_license, sign_license};
pub use error::LicenseError;
pub use evidence::{HOLDER_BUNDLE_VERSION, HolderBundle, HolderBundleError, LicenseEvidence};
pub use memo::{VerifiedLicense, VerifiedLicenses};
pub use qr::{MAX_QR_CHARS, QR_PREFIX, from_qr_payload, to_qr_payload};
pub use status::{
    LicenseState, StatusEntry, StatusList, StatusListError, VerifiedStatusList, open_status_list,
};
pub use trust::{
    DepartmentEntry, DepartmentKey, TRUST_BUNDLE_VERSION, TrustBundle, TrustBundleError,
    TrustBundleFile,
};
pub use verify::{RecordCheck, Verdict, VerdictStatus, verify_offline, verify_qr_offline};
