//! Certificate revocation lists: which file may replace the lists in force, and whether the
//! lists in force are still current.
//!
//! A CRL file that an operator (or a copy job) writes can be empty, half-written, signed by
//! the wrong key, older than the one in force or past its `nextUpdate`. Each of these would
//! silently switch revocation off, or back on for a certificate revoked since, so
//! [`CrlSet::replace`] refuses the file and the lists in force stay. A set whose `nextUpdate`
//! has passed while in force makes [`CrlSet::expired_since`] answer, and the node then refuses
//! client certificates other than node certificates (see `node::tls`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// Why a CRL file was refused. The file (or whoever wrote it) is at fault; the lists in force
/// stay, and a corrected file is picked up on the next check.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no CRL (empty or half-written?); expected `-----BEGIN X509 CRL-----` blocks"
    )]
    Empty { path: String },
    #[error("{path} is not a valid CRL file: {reason}")]
    Unparsable { path: String, reason: String },
    #[error("{path}: the CRL of `{issuer}` does not verify with that CA's key: {reason}")]
    Signature {
        path: String,
        issuer: String,
        reason: String,
    },
    #[error(
        "{path}: the CRL of `{issuer}` expired at {next_update} (its nextUpdate); publish a current one"
    )]
    Expired {
        path: String,
        issuer: String,
        next_update: String,
    },
    #[error("{path}: the CRL of `{issuer}` ({new}) is older than the one in force ({old})")]
    Older {
        path: String,
        issuer: String,
        /// `number <n>, thisUpdate <time>` of the refused CRL.
        new: String,
        /// The same of the CRL in force.
        old: String,
    },
    #[error(
        "{path} no longer holds a CRL of `{issuer}`, whose CA is still trusted; dropping it would un-revoke its certificates"
    )]
    Missing { path: String, issuer: String },
}

impl CrlError {
    /// A short, fixed name of the reason, for the metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            CrlError::Read { .. } => "unreadable",
            CrlError::Empty { .. } => "empty",
            CrlError::Unparsable { .. } => "unparsable",
            CrlError::Signature { .. } => "bad_signature",
            CrlError::Expired { .. } => "expired",
            CrlError::Older { .. } => "older",
            CrlError::Missing { .. } => "missing_issuer",
        }
    }
}

/// One parsed CRL: its issuer, freshness and revoked serial numbers.
#[derive(Debug, Clone)]
struct CrlInfo {
    issuer_text: String,
    number: Option<BigUint>,
    this_update: i64,
    next_update: Option<i64>,
    /// Serial numbers without leading zero bytes.
    revoked: HashSet<Vec<u8>>,
}

/// The CRLs in force, one per issuer, as rustls needs them and as the node checks them.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    ders: Vec<CertificateRevocationListDer<'static>>,
    /// By the issuer's raw DER name.
    by_issuer: HashMap<Vec<u8>, CrlInfo>,
}

fn strip_zeros(serial: &[u8]) -> Vec<u8> {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    serial[first..].to_vec()
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl CrlSet {
    /// No CRLs: nothing is revoked, nothing expires.
    pub fn none() -> CrlSet {
        CrlSet::default()
    }

    /// Read and check the CRL file at `path`: at least one CRL, each parsing, each whose issuer
    /// is in `ca` signed by it, at most one per issuer. Expiry is not checked here (see
    /// [`CrlSet::replace`] and [`CrlSet::expired_since`]).
    pub fn load(path: &Path, ca: &[CertificateDer<'static>]) -> Result<CrlSet, CrlError> {
        let p = || path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CrlError::Read { path: p(), source })?;
        use rustls_pki_types::pem::PemObject;
        let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CrlError::Unparsable {
                path: p(),
                reason: e.to_string(),
            })?;
        if ders.is_empty() {
            return Err(CrlError::Empty { path: p() });
        }
        let cas: Vec<X509Certificate<'_>> = ca
            .iter()
            .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
            .collect();
        let mut by_issuer = HashMap::new();
        for der in &ders {
            let (rest, crl) =
                CertificateRevocationList::from_der(der).map_err(|e| CrlError::Unparsable {
                    path: p(),
                    reason: e.to_string(),
                })?;
            if !rest.is_empty() {
                return Err(CrlError::Unparsable {
                    path: p(),
                    reason: "bytes after the end of a CRL".into(),
                });
            }
            let issuer_raw = crl.issuer().as_raw().to_vec();
            let issuer_text = crl.issuer().to_string();
            // Issuers not in the bundle (intermediates) are checked by rustls against the chain
            // a client presents.
            if let Some(ca) = cas.iter().find(|c| c.subject().as_raw() == issuer_raw) {
                crl.verify_signature(ca.public_key())
                    .map_err(|e| CrlError::Signature {
                        path: p(),
                        issuer: issuer_text.clone(),
                        reason: e.to_string(),
                    })?;
            }
            let info = CrlInfo {
                issuer_text: issuer_text.clone(),
                number: crl.crl_number().cloned(),
                this_update: crl.last_update().timestamp(),
                next_update: crl.next_update().map(|t| t.timestamp()),
                revoked: crl
                    .iter_revoked_certificates()
                    .map(|r| strip_zeros(r.raw_serial()))
                    .collect(),
            };
            if by_issuer.insert(issuer_raw, info).is_some() {
                return Err(CrlError::Unparsable {
                    path: p(),
                    reason: format!("two CRLs of `{issuer_text}`; keep only the newest"),
                });
            }
        }
        Ok(CrlSet { ders, by_issuer })
    }

    /// Whether `candidate`, read from `path`, may replace this set at `now` (Unix seconds):
    /// none of its CRLs expired, none older than this set's CRL of the same issuer (lower CRL
    /// number, or earlier thisUpdate), and no issuer dropped whose CA is still in `ca`.
    pub fn replace(
        &self,
        candidate: CrlSet,
        path: &Path,
        ca: &[CertificateDer<'static>],
        now: i64,
    ) -> Result<CrlSet, CrlError> {
        let p = || path.display().to_string();
        for new in candidate.by_issuer.values() {
            if let Some(next) = new.next_update
                && next <= now
            {
                return Err(CrlError::Expired {
                    path: p(),
                    issuer: new.issuer_text.clone(),
                    next_update: rfc3339(next),
                });
            }
        }
        let trusted: HashSet<Vec<u8>> = ca
            .iter()
            .filter_map(|c| X509Certificate::from_der(c).ok())
            .map(|(_, c)| c.subject().as_raw().to_vec())
            .collect();
        for (issuer, old) in &self.by_issuer {
            let Some(new) = candidate.by_issuer.get(issuer) else {
                if trusted.contains(issuer) {
                    return Err(CrlError::Missing {
                        path: p(),
                        issuer: old.issuer_text.clone(),
                    });
                }
                continue;
            };
            let older_number = matches!((&new.number, &old.number), (Some(n), Some(o)) if n < o)
                || (new.number.is_none() && old.number.is_some());
            if older_number || new.this_update < old.this_update {
                let describe = |c: &CrlInfo| {
                    let number = c
                        .number
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "none".into());
                    format!("number {number}, thisUpdate {}", rfc3339(c.this_update))
                };
                return Err(CrlError::Older {
                    path: p(),
                    issuer: new.issuer_text.clone(),
                    new: describe(new),
                    old: describe(old),
                });
            }
        }
        Ok(candidate)
    }

    /// The CRLs, for rustls.
    pub fn ders(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.ders.clone()
    }

    /// Whether any CRL is in force.
    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// The earliest `nextUpdate` of the set (Unix seconds), if any CRL has one.
    pub fn next_update(&self) -> Option<i64> {
        self.by_issuer.values().filter_map(|c| c.next_update).min()
    }

    /// When the set stopped being current, if it has by `now`: revocation status is unknown
    /// from then on.
    pub fn expired_since(&self, now: i64) -> Option<String> {
        self.next_update().filter(|t| *t <= now).map(rfc3339)
    }

    /// Whether `cert` is revoked by the CRL of its issuer.
    pub fn revokes(&self, cert: &CertId) -> bool {
        self.by_issuer
            .get(&cert.issuer)
            .is_some_and(|crl| crl.revoked.contains(&cert.serial))
    }
}

/// What revocation and expiry of a certificate are decided by, read once from it.
#[derive(Debug, Clone)]
pub struct CertId {
    issuer: Vec<u8>,
    serial: Vec<u8>,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertId {
    /// `None` if `der` is not an X.509 certificate.
    pub fn from_der(der: &[u8]) -> Option<CertId> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(CertId {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: strip_zeros(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests;
