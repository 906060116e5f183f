//! What a license says ([`LicenseClaims`]), its one CBOR encoding, and its JSON view.
//!
//! The claims are a CBOR map with small integer keys, encoded deterministically (RFC 8949
//! §4.2.1: shortest-form integers and lengths, definite lengths, map keys in bytewise order of
//! their encodings), so one set of claims has exactly one byte form and a signature over it names
//! one document:
//!
//! | key | claim | CBOR type |
//! |---|---|---|
//! | 1 | format version, always 1 | uint |
//! | 2 | license type code ([`LicenseType::code`]) | uint |
//! | 3 | license number | tstr |
//! | 4 | holder name | tstr |
//! | 5 | holder identifier (unified social credit code, resident identity number …) | tstr |
//! | 6 | issuing department id | tstr |
//! | 7 | issuer key id (equal to the COSE `kid`) | tstr |
//! | 8 | issued at | uint, Unix seconds (UTC) |
//! | 9 | valid from (inclusive) | uint, Unix seconds |
//! | 10 | valid until (exclusive); absent for a license without an end (长期) | uint, Unix seconds |
//! | 11 | type-specific fields; absent when there are none | map tstr → tstr |
//!
//! The holder identifier is in clear: the license is the holder's own document. Only the log's
//! record of it keeps a keyed hash instead, which is the gateway's business.
//!
//! Decoding is strict: unknown keys, missing keys, wrong types, text that breaks the rules of
//! [`LicenseClaims::check`], and any encoding other than the deterministic one are refused.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ciborium::Value;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why claims were refused. At decoding, the issuer (or whoever altered the document) is at
/// fault; at encoding, the caller that filled the claims. None is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The payload is not one well-formed CBOR item.
    #[error("license claims are not well-formed CBOR: {reason}")]
    Cbor {
        /// What the CBOR decoder reported.
        reason: String,
    },

    /// The payload is CBOR but not a map.
    #[error("license claims must be a CBOR map")]
    NotAMap,

    /// A map key that is not one of the integers this version defines.
    #[error("license claims carry unknown key {key}: this verifier reads claims version 1")]
    UnknownKey {
        /// The key, in CBOR diagnostic-like form.
        key: String,
    },

    /// A key appears twice.
    #[error("license claims carry key {key} twice")]
    DuplicateKey {
        /// The repeated key.
        key: u64,
    },

    /// A mandatory claim is absent.
    #[error("license claims lack {name} (key {key})")]
    MissingClaim {
        /// The CBOR key.
        key: u64,
        /// The claim's name.
        name: &'static str,
    },

    /// A claim has the wrong CBOR type.
    #[error("license claim {name} must be {expected}")]
    WrongType {
        /// The claim's name.
        name: &'static str,
        /// The type it must have.
        expected: &'static str,
    },

    /// A claims version this verifier does not read. A newer issuer is at fault only if it sent
    /// the document to an old verifier: update the verifier.
    #[error("license claims version {version} is not supported: this verifier reads version 1")]
    UnsupportedVersion {
        /// The version found.
        version: u64,
    },

    /// A license type code this verifier does not know.
    #[error("license type code {code} is unknown: this verifier knows codes 1 to 3")]
    UnknownLicenseType {
        /// The code found.
        code: u64,
    },

    /// A text claim breaks a rule: empty, too long, control characters, stray whitespace.
    #[error("license claim {field} {reason}")]
    InvalidText {
        /// Which claim (for a type-specific field, `fields.<name>`).
        field: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// A date outside 1970-01-01 … 9999-12-31.
    #[error("license claim {field} = {value} is not a Unix time between 1970 and 9999")]
    DateOutOfRange {
        /// Which date.
        field: &'static str,
        /// The value found.
        value: i128,
    },

    /// `valid_until` is not after `valid_from`.
    #[error("license validity ends ({valid_until}) before or when it starts ({valid_from})")]
    EmptyValidity {
        /// Start of validity.
        valid_from: i64,
        /// End of validity.
        valid_until: i64,
    },

    /// More type-specific fields than a QR-sized document should carry.
    #[error("license carries {count} type-specific fields; at most {max} are allowed")]
    TooManyFields {
        /// Fields found.
        count: usize,
        /// The limit, [`MAX_FIELDS`].
        max: usize,
    },

    /// The claims decode, but their bytes are not the deterministic encoding: someone other than
    /// a conforming issuer wrote them.
    #[error("license claims are not in deterministic CBOR encoding")]
    NotCanonical,
}

/// The claims format version this crate reads and writes.
pub const CLAIMS_VERSION: u64 = 1;
/// The most type-specific fields a license may carry.
pub const MAX_FIELDS: usize = 32;
/// Latest date a claim may carry: 9999-12-31T23:59:59Z, the end of RFC 3339's range.
pub const MAX_UNIX_TIME: i64 = 253_402_300_799;

const KEY_VERSION: u64 = 1;
const KEY_TYPE: u64 = 2;
const KEY_NUMBER: u64 = 3;
const KEY_HOLDER_NAME: u64 = 4;
const KEY_HOLDER_ID: u64 = 5;
const KEY_DEPARTMENT: u64 = 6;
const KEY_ISSUER_KEY_ID: u64 = 7;
const KEY_ISSUED_AT: u64 = 8;
const KEY_VALID_FROM: u64 = 9;
const KEY_VALID_UNTIL: u64 = 10;
const KEY_FIELDS: u64 = 11;

/// The kinds of license. Codes are part of the format: never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LicenseType {
    /// 营业执照: an enterprise's business license (market regulation).
    BusinessLicense,
    /// 不动产权证书: a real-estate title certificate (natural resources).
    RealEstateCertificate,
    /// 建筑工程施工许可证: a construction permit (housing and urban-rural development).
    ConstructionPermit,
}

impl LicenseType {
    /// Every type, in code order.
    pub const ALL: [LicenseType; 3] = [
        LicenseType::BusinessLicense,
        LicenseType::RealEstateCertificate,
        LicenseType::ConstructionPermit,
    ];

    /// The CBOR code (claim key 2).
    pub fn code(self) -> u64 {
        match self {
            LicenseType::BusinessLicense => 1,
            LicenseType::RealEstateCertificate => 2,
            LicenseType::ConstructionPermit => 3,
        }
    }

    /// The type with this CBOR code.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The stable ASCII name used in JSON, trust bundles and policy: `business-license`,
    /// `real-estate-certificate`, `construction-permit`.
    pub fn slug(self) -> &'static str {
        match self {
            LicenseType::BusinessLicense => "business-license",
            LicenseType::RealEstateCertificate => "real-estate-certificate",
            LicenseType::ConstructionPermit => "construction-permit",
        }
    }

    /// The official Chinese name.
    pub fn name_zh(self) -> &'static str {
        match self {
            LicenseType::BusinessLicense => "营业执照",
            LicenseType::RealEstateCertificate => "不动产权证书",
            LicenseType::ConstructionPermit => "建筑工程施工许可证",
        }
    }
}

impl fmt::Display for LicenseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// The slug was not one of [`LicenseType::slug`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown license type {0:?}: expected business-license, real-estate-certificate or construction-permit"
)]
pub struct UnknownLicenseType(pub String);

impl FromStr for LicenseType {
    type Err = UnknownLicenseType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.slug() == s)
            .ok_or_else(|| UnknownLicenseType(s.to_owned()))
    }
}

impl serde::Serialize for LicenseType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.slug())
    }
}

impl<'de> serde::Deserialize<'de> for LicenseType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let slug = String::deserialize(d)?;
        slug.parse().map_err(serde::de::Error::custom)
    }
}

/// What a license says. Dates are Unix seconds (UTC); a license is valid from `valid_from`
/// (inclusive) until `valid_until` (exclusive), or without end when `valid_until` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseClaims {
    /// Which kind of license.
    pub license_type: LicenseType,
    /// The license number printed on the document (证照编号).
    pub number: String,
    /// The holder's name: an enterprise's registered name or a person's name.
    pub holder_name: String,
    /// The holder's identifier in clear (unified social credit code, resident identity number).
    pub holder_id: String,
    /// The issuing department's id, as in the department directory (e.g. `market-regulation`).
    pub department: String,
    /// The id of the department key that signs the license; also the COSE `kid`.
    pub issuer_key_id: String,
    /// When the license was issued.
    pub issued_at: i64,
    /// Start of validity (inclusive).
    pub valid_from: i64,
    /// End of validity (exclusive); `None` for a license without end (长期).
    pub valid_until: Option<i64>,
    /// Type-specific fields (legal representative, address, parcel number …), sorted by name.
    pub fields: BTreeMap<String, String>,
}

/// Byte limits of the text claims: generous for real documents, small enough for a QR code.
const MAX_NUMBER: usize = 64;
const MAX_HOLDER_NAME: usize = 256;
const MAX_IDENTIFIER: usize = 64;
const MAX_FIELD_NAME: usize = 64;
const MAX_FIELD_VALUE: usize = 1024;

fn invalid_text(field: &str, reason: impl Into<String>) -> ClaimsError {
    ClaimsError::InvalidText {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Free text (names, numbers, field values): non-empty, bounded, no control characters, no
/// leading or trailing whitespace (which a reader cannot see and a forger could vary).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ClaimsError> {
    if value.is_empty() {
        return Err(invalid_text(field, "is empty"));
    }
    if value.len() > max {
        return Err(invalid_text(
            field,
            format!("is {} bytes long; at most {max} are allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid_text(field, "contains a control character"));
    }
    if value.trim() != value {
        return Err(invalid_text(field, "has leading or trailing whitespace"));
    }
    Ok(())
}

/// Identifiers (department id, key id): printable ASCII without spaces, so that they read the
/// same in a directory, a log line and a trust bundle.
pub(crate) fn check_identifier(field: &str, value: &str) -> Result<(), ClaimsError> {
    check_text(field, value, MAX_IDENTIFIER)?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_text(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

fn check_date(field: &'static str, value: i64) -> Result<(), ClaimsError> {
    if (0..=MAX_UNIX_TIME).contains(&value) {
        Ok(())
    } else {
        Err(ClaimsError::DateOutOfRange {
            field,
            value: value.into(),
        })
    }
}

/// RFC 3339 form of a checked Unix time, for people.
pub(crate) fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

impl LicenseClaims {
    /// Checks every rule the decoder enforces, so that what is signed can be read back.
    ///
    /// # Errors
    /// [`ClaimsError::InvalidText`], [`ClaimsError::DateOutOfRange`],
    /// [`ClaimsError::EmptyValidity`] and [`ClaimsError::TooManyFields`].
    pub fn check(&self) -> Result<(), ClaimsError> {
        check_text("number", &self.number, MAX_NUMBER)?;
        check_text("holder_name", &self.holder_name, MAX_HOLDER_NAME)?;
        check_text("holder_id", &self.holder_id, MAX_IDENTIFIER)?;
        check_identifier("department", &self.department)?;
        check_identifier("issuer_key_id", &self.issuer_key_id)?;
        check_date("issued_at", self.issued_at)?;
        check_date("valid_from", self.valid_from)?;
        if let Some(until) = self.valid_until {
            check_date("valid_until", until)?;
            if until <= self.valid_from {
                return Err(ClaimsError::EmptyValidity {
                    valid_from: self.valid_from,
                    valid_until: until,
                });
            }
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(ClaimsError::TooManyFields {
                count: self.fields.len(),
                max: MAX_FIELDS,
            });
        }
        for (name, value) in &self.fields {
            check_text("a field name", name, MAX_FIELD_NAME)?;
            check_text(&format!("fields.{name}"), value, MAX_FIELD_VALUE)?;
        }
        Ok(())
    }

    /// The deterministic CBOR encoding (the COSE payload).
    ///
    /// # Errors
    /// As [`LicenseClaims::check`].
    pub fn to_cbor(&self) -> Result<Vec<u8>, ClaimsError> {
        self.check()?;
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&self.to_value(), &mut bytes).map_err(|e| {
            ClaimsError::Cbor {
                reason: e.to_string(),
            }
        })?;
        Ok(bytes)
    }

    fn to_value(&self) -> Value {
        let uint = |n: u64| Value::Integer(n.into());
        // Checked dates are non-negative, so they encode as uints.
        let date = |t: i64| Value::Integer(t.into());
        let text = |s: &str| Value::Text(s.to_owned());
        let mut map = vec![
            (uint(KEY_VERSION), uint(CLAIMS_VERSION)),
            (uint(KEY_TYPE), uint(self.license_type.code())),
            (uint(KEY_NUMBER), text(&self.number)),
            (uint(KEY_HOLDER_NAME), text(&self.holder_name)),
            (uint(KEY_HOLDER_ID), text(&self.holder_id)),
            (uint(KEY_DEPARTMENT), text(&self.department)),
            (uint(KEY_ISSUER_KEY_ID), text(&self.issuer_key_id)),
            (uint(KEY_ISSUED_AT), date(self.issued_at)),
            (uint(KEY_VALID_FROM), date(self.valid_from)),
        ];
        if let Some(until) = self.valid_until {
            map.push((uint(KEY_VALID_UNTIL), date(until)));
        }
        if !self.fields.is_empty() {
            // RFC 8949 §4.2.1 orders map keys by their encoded bytes: for text that is shorter
            // first, then bytewise, which is not BTreeMap's order.
            let mut fields: Vec<(&String, &String)> = self.fields.iter().collect();
            fields.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            let fields = fields
                .into_iter()
                .map(|(k, v)| (text(k), text(v)))
                .collect();
            map.push((uint(KEY_FIELDS), Value::Map(fields)));
        }
        Value::Map(map)
    }

    /// Decodes claims from their CBOR bytes, refusing anything but the deterministic encoding of
    /// claims that pass [`LicenseClaims::check`].
    ///
    /// # Errors
    /// Every variant of [`ClaimsError`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ClaimsError> {
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest).map_err(|e| ClaimsError::Cbor {
            reason: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(ClaimsError::Cbor {
                reason: format!("{} bytes follow the claims map", rest.len()),
            });
        }
        let claims = Self::from_value(value)?;
        claims.check()?;
        if claims.to_cbor()? != bytes {
            return Err(ClaimsError::NotCanonical);
        }
        Ok(claims)
    }

    fn from_value(value: Value) -> Result<Self, ClaimsError> {
        let Value::Map(entries) = value else {
            return Err(ClaimsError::NotAMap);
        };
        let mut slots: [Option<Value>; 11] = Default::default();
        for (key, value) in entries {
            let key = match key {
                Value::Integer(i) => u64::try_from(i128::from(i)).ok(),
                _ => None,
            }
            .filter(|k| (KEY_VERSION..=KEY_FIELDS).contains(k))
            .ok_or_else(|| ClaimsError::UnknownKey {
                key: describe(&key),
            })?;
            // The filter above keeps `key - 1` within the 11 slots.
            let slot = &mut slots[(key - 1) as usize];
            if slot.replace(value).is_some() {
                return Err(ClaimsError::DuplicateKey { key });
            }
        }
        let mut take = |key: u64, name: &'static str| {
            slots[(key - 1) as usize]
                .take()
                .ok_or(ClaimsError::MissingClaim { key, name })
        };
        let version = as_uint(take(KEY_VERSION, "version")?, "version")?;
        if version != CLAIMS_VERSION {
            return Err(ClaimsError::UnsupportedVersion { version });
        }
        let code = as_uint(take(KEY_TYPE, "license type")?, "license type")?;
        let license_type =
            LicenseType::from_code(code).ok_or(ClaimsError::UnknownLicenseType { code })?;
        let number = as_text(take(KEY_NUMBER, "number")?, "number")?;
        let holder_name = as_text(take(KEY_HOLDER_NAME, "holder_name")?, "holder_name")?;
        let holder_id = as_text(take(KEY_HOLDER_ID, "holder_id")?, "holder_id")?;
        let department = as_text(take(KEY_DEPARTMENT, "department")?, "department")?;
        let issuer_key_id = as_text(take(KEY_ISSUER_KEY_ID, "issuer_key_id")?, "issuer_key_id")?;
        let issued_at = as_date(take(KEY_ISSUED_AT, "issued_at")?, "issued_at")?;
        let valid_from = as_date(take(KEY_VALID_FROM, "valid_from")?, "valid_from")?;
        let valid_until = take(KEY_VALID_UNTIL, "valid_until")
            .ok()
            .map(|v| as_date(v, "valid_until"))
            .transpose()?;
        let fields = match take(KEY_FIELDS, "fields").ok() {
            None => BTreeMap::new(),
            Some(Value::Map(entries)) => {
                let mut fields = BTreeMap::new();
                for (k, v) in entries {
                    let k = as_text(k, "fields (names)")?;
                    let v = as_text(v, "fields (values)")?;
                    if fields.insert(k.clone(), v).is_some() {
                        return Err(invalid_text(&format!("fields.{k}"), "appears twice"));
                    }
                }
                fields
            }
            Some(_) => {
                return Err(ClaimsError::WrongType {
                    name: "fields",
                    expected: "a map of text to text",
                });
            }
        };
        Ok(Self {
            license_type,
            number,
            holder_name,
            holder_id,
            department,
            issuer_key_id,
            issued_at,
            valid_from,
            valid_until,
            fields,
        })
    }

    /// The JSON view for people and scripts. Chinese text stays as it is (serde_json writes UTF-8,
    /// not `\u` escapes). Dates appear twice: RFC 3339 UTC for people, Unix seconds for scripts.
    ///
    /// ```json
    /// {"version":1,"type":"business-license","type_name":"营业执照","number":"…",
    ///  "holder":{"name":"…","id":"…"},"issuer":{"department":"…","key_id":"…"},
    ///  "issued_at":"2026-01-15T00:00:00Z","valid_from":"…","valid_until":null,
    ///  "issued_at_unix":1768435200,"valid_from_unix":…,"valid_until_unix":null,
    ///  "fields":{"…":"…"}}
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "version": CLAIMS_VERSION,
            "type": self.license_type.slug(),
            "type_name": self.license_type.name_zh(),
            "number": self.number,
            "holder": { "name": self.holder_name, "id": self.holder_id },
            "issuer": { "department": self.department, "key_id": self.issuer_key_id },
            "issued_at": rfc3339(self.issued_at),
            "valid_from": rfc3339(self.valid_from),
            "valid_until": self.valid_until.and_then(rfc3339),
            "issued_at_unix": self.issued_at,
            "valid_from_unix": self.valid_from,
            "valid_until_unix": self.valid_until,
            "fields": self.fields,
        })
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Text(s) => format!("{s:?}"),
        _ => "of a non-integer type".to_owned(),
    }
}

fn as_uint(value: Value, name: &'static str) -> Result<u64, ClaimsError> {
    match value {
        Value::Integer(i) => u64::try_from(i128::from(i)).ok(),
        _ => None,
    }
    .ok_or(ClaimsError::WrongType {
        name,
        expected: "an unsigned integer",
    })
}

fn as_text(value: Value, name: &'static str) -> Result<String, ClaimsError> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(ClaimsError::WrongType {
            name,
            expected: "a text string",
        }),
    }
}

fn as_date(value: Value, name: &'static str) -> Result<i64, ClaimsError> {
    let Value::Integer(i) = value else {
        return Err(ClaimsError::WrongType {
            name,
            expected: "an integer (Unix seconds)",
        });
    };
    let i = i128::from(i);
    i64::try_from(i)
        .ok()
        .filter(|t| (0..=MAX_UNIX_TIME).contains(t))
        .ok_or(ClaimsError::DateOutOfRange {
            field: name,
            value: i,
        })
}

#[cfg(test)]
mod tests;
