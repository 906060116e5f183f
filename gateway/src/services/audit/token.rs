//! Citizens' bearer tokens: a JWT from the identity provider the node trusts names the data
//! subject who asks "who read my data".
//!
//! A token is accepted only when its signature verifies with one of the configured public keys
//! (the algorithm follows the key: Ed25519 → EdDSA, P-256 → ES256, RSA → RS256, so a token
//! cannot choose a weaker one), its `iss` and `aud` are the configured ones, and `exp` (required)
//! and `nbf` (if present) hold with 30 s of clock leeway. The subject claim must be a valid
//! resident identity number or unified social credit code.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::node::config::AuditSettings;

/// Clock leeway for `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

/// Why a token was refused. Every variant is the token holder's (or their app's) fault: a new
/// token from the identity provider is the fix.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no bearer token: send `authorization: Bearer <token>` with a token from the identity provider"
    )]
    Missing,
    #[error("the token was refused: {0}")]
    Invalid(String),
    #[error("the token has no `{claim}` claim naming the data subject")]
    NoSubject { claim: String },
    #[error("the token's `{claim}` claim is not an identifier: {reason}")]
    BadSubject { claim: String, reason: String },
}

/// Why the token settings could not be loaded: the operator must fix the named file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason} (config key audit.token_keys)")]
pub struct TokenKeyError {
    pub path: String,
    pub reason: String,
}

/// Checks citizens' bearer tokens against the identity provider's keys.
pub struct TokenVerifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    issuer: String,
    audience: String,
    subject_claim: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The algorithm a SubjectPublicKeyInfo PEM's key is for, and the key.
fn load_key(path: &Path) -> Result<(Algorithm, DecodingKey), TokenKeyError> {
    let err = |reason: String| TokenKeyError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&pem);
    let der = pem_body(&text).ok_or_else(|| err("not a PEM `PUBLIC KEY`".into()))?;
    // The algorithm OID inside the SubjectPublicKeyInfo names the key type.
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(ED25519) {
        Ok((
            Algorithm::EdDSA,
            DecodingKey::from_ed_pem(&pem).map_err(|e| err(e.to_string()))?,
        ))
    } else if has(EC_PUBLIC_KEY) {
        Ok((
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&pem).map_err(|e| err(e.to_string()))?,
        ))
    } else if has(RSA) {
        Ok((
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(&pem).map_err(|e| err(e.to_string()))?,
        ))
    } else {
        Err(err(
            "not an Ed25519, P-256 or RSA public key (PEM `PUBLIC KEY`)".into(),
        ))
    }
}

/// The DER bytes of the first `PUBLIC KEY` block of a PEM text.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = text.find("-----BEGIN PUBLIC KEY-----")? + "-----BEGIN PUBLIC KEY-----".len();
    let end = start + text[start..].find("-----END PUBLIC KEY-----")?;
    let b64: String = text[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl TokenVerifier {
    /// The verifier the `[audit]` settings describe; `None` when no keys are configured.
    pub fn from_settings(s: &AuditSettings) -> Result<Option<TokenVerifier>, TokenKeyError> {
        if s.token_keys.is_empty() {
            return Ok(None);
        }
        let keys = s
            .token_keys
            .iter()
            .map(|p| load_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(TokenVerifier {
            keys,
            issuer: s.token_issuer.clone(),
            audience: s.token_audience.clone(),
            subject_claim: s.token_subject_claim.clone(),
        }))
    }

    /// The data subject's identifier (normalised) the token names, if the token holds.
    pub fn subject(&self, token: &str) -> Result<String, TokenError> {
        let mut last = None;
        for (alg, key) in &self.keys {
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v.leeway = LEEWAY_SECONDS;
            v.validate_nbf = true;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &v)
            {
                Ok(data) => return self.subject_of(&data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(TokenError::Invalid(last.map_or_else(
            || "no key".to_owned(),
            |e| describe(&e, &self.issuer, &self.audience),
        )))
    }

    fn subject_of(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TokenError> {
        let value = claims
            .get(&self.subject_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| TokenError::NoSubject {
                claim: self.subject_claim.clone(),
            })?;
        crate::services::license::normalise_holder_id(value).map_err(|e| TokenError::BadSubject {
            claim: self.subject_claim.clone(),
            reason: e.to_string(),
        })
    }
}

/// A refusal in words a citizen's app can show.
fn describe(e: &jsonwebtoken::errors::Error, issuer: &str, audience: &str) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "it has expired; sign in again".into(),
        K::ImmatureSignature => "it is not valid yet (nbf)".into(),
        K::InvalidSignature => {
            "its signature does not verify with the identity provider's keys".into()
        }
        K::InvalidIssuer => format!("it was not issued by {issuer}"),
        K::InvalidAudience => format!("it is not meant for {audience}"),
        K::InvalidAlgorithm => {
            "it is signed with an algorithm the identity provider's keys do not use".into()
        }
        K::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
            "it is not a JWT (header.payload.signature)".into()
        }
        _ => e.to_string(),
    }
}

/// The token of an `authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, TokenError> {
    let h = header.ok_or(TokenError::Missing)?.trim();
    let (scheme, token) = h.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests;
