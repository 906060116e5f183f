//! Who is calling: the peer's certificate parsed once, at the TLS boundary, into a
//! [`PeerIdentity`]. Policy and notary take this type, never raw strings or certificates.
//!
//! A certificate names exactly one SPIFFE-style URI SAN, `spiffe://<trust-domain>/dept/<id>` for
//! people-facing roles or `spiffe://<trust-domain>/node/<id>` for gateway nodes, and carries its
//! role in the subject's organizational unit (OU): `department`, `inspector`, `operator` or
//! `node`, and no other OU may name a role. A node certificate may name the department whose
//! gateway it is in the subject's organizationIdentifier (OID 2.5.4.97), and its member id in
//! its name (`node/node-<member id>`). Chain validation (CA, expiry, revocation) happens in rustls before this code runs.

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate holder may do, as stated in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A department's systems: publish its records, read others' under policy.
    Department,
    /// An audit office: reads the access trail and its proofs.
    Inspector,
    /// Runs gateways: membership, policy changes.
    Operator,
    /// A gateway node: Raft traffic and forwarding between gateways.
    Node,
}

impl Role {
    /// The role's name in certificates, policies and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::Inspector => "inspector",
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }

    /// Parse a role name as written in a certificate's OU.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "department" => Some(Role::Department),
            "inspector" => Some(Role::Inspector),
            "operator" => Some(Role::Operator),
            "node" => Some(Role::Node),
            _ => None,
        }
    }

    /// The SPIFFE path segment this role's identities live under.
    pub fn uri_kind(self) -> &'static str {
        match self {
            Role::Node => "node",
            _ => "dept",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Department (or node) id from the certificate's SAN URI, e.g. `market-regulation`.
    pub department: String,
    pub role: Role,
    /// SHA-256 of the leaf certificate's DER bytes.
    pub cert_fingerprint: [u8; 32],
    /// For a node certificate: the department whose gateway the node is, from the subject's
    /// organizationIdentifier; `None` for an operator's node and for other roles.
    pub node_department: Option<String>,
}

impl PeerIdentity {
    /// Lowercase hex of the certificate fingerprint, as recorded in the log.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.cert_fingerprint)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.department)
    }
}

/// Why a certificate does not carry a usable identity. The holder's certificate is at fault;
/// retrying with the same certificate cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("client certificate is not valid X.509: {0}")]
    Malformed(String),
    /// No SAN URI, or more than one.
    #[error(
        "client certificate must carry exactly one URI SAN (spiffe://{trust_domain}/dept/<id>), found {found}"
    )]
    UriCount { trust_domain: String, found: usize },
    /// The SAN URI is not of the expected shape or trust domain.
    #[error(
        "client certificate SAN URI `{uri}` is not spiffe://{trust_domain}/dept/<id> or spiffe://{trust_domain}/node/<id>"
    )]
    BadUri { uri: String, trust_domain: String },
    /// The subject has no OU naming a known role.
    #[error(
        "client certificate subject has no OU naming a role (department, inspector, operator, node)"
    )]
    MissingRole,
    /// The subject has several OUs naming roles: which one holds would depend on their order,
    /// so none is taken.
    #[error(
        "client certificate subject names {found} roles in its OUs ({roles}); a certificate carries exactly one role: issue one certificate per role"
    )]
    RoleCount { found: usize, roles: String },
    /// The OU role does not match the SAN URI kind (e.g. a node URI with a department role).
    #[error("client certificate role `{role}` does not match its SAN URI `{uri}`")]
    RoleMismatch { role: String, uri: String },
    /// A node certificate's organizationIdentifier is not one valid department id.
    #[error(
        "node certificate must name at most one department in its subject organizationIdentifier, as a department id; found {found:?}"
    )]
    BadNodeDepartment { found: Vec<String> },
    /// The node's CRLs passed their nextUpdate: whether the certificate is revoked cannot be
    /// known, so it is refused. The node's operator must load a current CRL.
    #[error(
        "this node cannot tell whether your certificate is revoked: its CRL expired at {since}; client certificates are refused until its operator loads a current CRL (tls.crl)"
    )]
    RevocationUnknown { since: String },
}

/// OID of the subject attribute that names a node's department (X.520 organizationIdentifier).
pub const ORGANIZATION_IDENTIFIER: &str = "2.5.4.97";

/// Check a department or node id: 1–63 characters of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`. Returns a message naming the rule broken.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err(format!("id `{id}` must be 1 to 63 characters long"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "id `{id}` contains `{c}`; use only lowercase letters, digits and `-`"
        ));
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(format!("id `{id}` must not start or end with `-`"));
    }
    Ok(())
}

/// The identity in one's own certificate (PEM), in whatever trust domain its SAN URI names:
/// what the command line signs as.
pub fn parse_own(cert_pem: &[u8]) -> Result<PeerIdentity, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem)
        .map_err(|e| IdentityError::Malformed(format!("not a PEM certificate: {e}")))?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let trust_domain = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(u) => u
                .strip_prefix("spiffe://")
                .and_then(|r| r.split_once('/'))
                .map(|(td, _)| td.to_owned()),
            _ => None,
        }),
        _ => None,
    }
    .unwrap_or_default();
    parse_peer(&der, &trust_domain)
}

/// Parse the identity out of a leaf certificate (DER) that rustls has already validated.
pub fn parse_peer(cert_der: &[u8], trust_domain: &str) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| IdentityError::Malformed(e.to_string()))?;

    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(IdentityError::Malformed(e.to_string())),
    };
    let [uri] = uris.as_slice() else {
        return Err(IdentityError::UriCount {
            trust_domain: trust_domain.to_owned(),
            found: uris.len(),
        });
    };
    let bad_uri = || IdentityError::BadUri {
        uri: (*uri).to_owned(),
        trust_domain: trust_domain.to_owned(),
    };
    let rest = uri
        .strip_prefix("spiffe://")
        .and_then(|r| r.strip_prefix(trust_domain))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad_uri)?;
    let (kind, id) = rest.split_once('/').ok_or_else(bad_uri)?;
    if !(kind == "dept" || kind == "node") || validate_id(id).is_err() {
        return Err(bad_uri());
    }

    let roles: Vec<Role> = cert
        .subject()
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .filter_map(Role::parse)
        .collect();
    let role = match roles.as_slice() {
        [] => return Err(IdentityError::MissingRole),
        [role] => *role,
        many => {
            return Err(IdentityError::RoleCount {
                found: many.len(),
                roles: many
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    if role.uri_kind() != kind {
        return Err(IdentityError::RoleMismatch {
            role: role.as_str().to_owned(),
            uri: (*uri).to_owned(),
        });
    }

    let node_department = if role == Role::Node {
        let found: Vec<String> = cert
            .subject()
            .iter_attributes()
            .filter(|a| a.attr_type().to_id_string() == ORGANIZATION_IDENTIFIER)
            .map(|a| a.as_str().unwrap_or("(not a string)").to_owned())
            .collect();
        match found.as_slice() {
            [] => None,
            [d] if validate_id(d).is_ok() => Some(d.clone()),
            _ => return Err(IdentityError::BadNodeDepartment { found }),
        }
    } else {
        None
    };

    Ok(PeerIdentity {
        department: id.to_owned(),
        role,
        cert_fingerprint: Sha256::digest(cert_der).into(),
        node_department,
    })
}

#[cfg(test)]
mod tests;
