//! The datasets departments exchange, who owns each, and the rule its record keys follow.
//!
//! A key that breaks its dataset's rule is refused at the edge, with the rule named, before any
//! policy decision or storage access.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::domain::identifier::UnifiedSocialCreditCode;

/// One dataset: its id, the rule its keys follow and its fields. Its owner is the directory
/// department that lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub id: String,
    pub title: String,
    pub key: KeyRule,
    /// The record fields; a record may hold others, which are stored and disclosed like any
    /// field but neither indexed nor treated as personal data.
    #[serde(default, rename = "field")]
    pub fields: Vec<Field>,
}

/// One field of a dataset's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    /// A citizen's identifier (ID number): never written to the log in clear, only as a keyed
    /// hash, which lets the data subject's accesses be found.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
    /// Records can be queried by this field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub indexed: bool,
}

/// How a dataset's record keys are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRule {
    /// 统一社会信用代码, GB 32100-2015.
    UnifiedSocialCreditCode,
    /// 不动产权证书号: `黔(2024)贵阳市不动产权第0012345号`.
    RealEstateCertificate,
    /// 施工许可证编号: 6-digit division code, issue date YYYYMMDD, 4-digit sequence.
    ConstructionPermit,
}

impl Dataset {
    /// The field `name`, if the schema lists it.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Field names are unique, 1–64 of `a-z`, `0-9`, `_`.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            let ok = !f.name.is_empty()
                && f.name.len() <= 64
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(format!(
                    "field name `{}` must be 1 to 64 of a-z, 0-9 and `_`",
                    f.name
                ));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(format!("field `{}` is listed twice", f.name));
            }
        }
        Ok(())
    }
}

fn field(name: &str, personal: bool, indexed: bool) -> Field {
    Field {
        name: name.to_owned(),
        personal,
        indexed,
    }
}

/// The built-in catalog: the datasets of the three sample departments, with their owners.
/// Used when the directory lists no datasets, and written by `qianlian pki init`.
pub static CATALOG: LazyLock<Vec<(&'static str, Dataset)>> = LazyLock::new(|| {
    vec![
        (
            "market-regulation",
            Dataset {
                id: "enterprise-registration".into(),
                title: "企业登记信息 enterprise registration".into(),
                key: KeyRule::UnifiedSocialCreditCode,
                fields: vec![
                    field("unified_social_credit_code", false, false),
                    field("name", false, true),
                    field("legal_representative", false, false),
                    field("legal_representative_id", true, true),
                    field("registered_capital_cny", false, false),
                    field("established", false, false),
                    field("status", false, true),
                ],
            },
        ),
        (
            "natural-resources",
            Dataset {
                id: "real-estate-registration".into(),
                title: "不动产登记信息 real-estate registration".into(),
                key: KeyRule::RealEstateCertificate,
                fields: vec![
                    field("certificate_number", false, false),
                    field("holder_credit_code", false, true),
                    field("holder_id", true, true),
                    field("location", false, false),
                    field("area_m2", false, false),
                    field("use", false, false),
                ],
            },
        ),
        (
            "housing",
            Dataset {
                id: "construction-permit".into(),
                title: "建筑工程施工许可 construction permits".into(),
                key: KeyRule::ConstructionPermit,
                fields: vec![
                    field("permit_number", false, false),
                    field("builder_credit_code", false, true),
                    field("project", false, false),
                    field("project_manager_id", true, true),
                    field("land_certificate", false, false),
                    field("contract_price_cny", false, false),
                ],
            },
        ),
    ]
});

/// A built-in dataset and its owner.
pub fn builtin(id: &str) -> Option<(&'static str, &'static Dataset)> {
    CATALOG
        .iter()
        .find(|(_, d)| d.id == id)
        .map(|(owner, d)| (*owner, d))
}

/// The ids of the built-in datasets, for error messages.
pub fn known_ids() -> String {
    CATALOG
        .iter()
        .map(|(_, d)| d.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

impl KeyRule {
    /// Validate `key` and return its normalised form, or a message naming the broken rule.
    pub fn normalise(self, key: &str) -> Result<String, String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "key is {} bytes; keys are at most {MAX_KEY_BYTES}",
                key.len()
            ));
        }
        match self {
            KeyRule::UnifiedSocialCreditCode => UnifiedSocialCreditCode::parse(key)
                .map(|c| c.as_str().to_owned())
                .map_err(|e| e.to_string()),
            KeyRule::RealEstateCertificate => real_estate_certificate(key),
            KeyRule::ConstructionPermit => construction_permit(key),
        }
    }

    /// A short description of the key format, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            KeyRule::UnifiedSocialCreditCode => "a unified social credit code (18 characters)",
            KeyRule::RealEstateCertificate => {
                "a real-estate certificate number such as 黔(2024)贵阳市不动产权第0012345号"
            }
            KeyRule::ConstructionPermit => {
                "an 18-digit construction permit number: division code, YYYYMMDD, sequence"
            }
        }
    }
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// `<province>(<year>)<place>不动产权第<7 digits>号`; ASCII or full-width parentheses, stored
/// with full-width ones as printed on the certificate.
fn real_estate_certificate(key: &str) -> Result<String, String> {
    let norm: String = key
        .trim()
        .chars()
        .map(|c| match c {
            '(' => '（',
            ')' => '）',
            c => c,
        })
        .collect();
    let bad = |why: &str| {
        Err(format!(
            "real-estate certificate number `{key}` {why}; expected the form 黔(2024)贵阳市不动产权第0012345号"
        ))
    };
    let mut chars = norm.chars();
    match chars.next() {
        Some(c) if is_cjk(c) => {}
        _ => return bad("must start with the province abbreviation"),
    }
    if chars.next() != Some('（') {
        return bad("needs the year in parentheses after the province");
    }
    let rest: String = chars.collect();
    let Some((year, rest)) = rest.split_once('）') else {
        return bad("has no closing parenthesis after the year");
    };
    if year.len() != 4 || !year.chars().all(|c| c.is_ascii_digit()) {
        return bad("needs a four-digit year in the parentheses");
    }
    let Some((place, serial)) = rest.split_once("不动产权第") else {
        return bad("lacks `不动产权第`");
    };
    if place.is_empty() || place.chars().count() > 20 || !place.chars().all(is_cjk) {
        return bad("needs the city or county name (1–20 Chinese characters) after the year");
    }
    let Some(digits) = serial.strip_suffix('号') else {
        return bad("must end with `号`");
    };
    if digits.len() != 7 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return bad("needs a seven-digit serial number before `号`");
    }
    Ok(norm)
}

fn construction_permit(key: &str) -> Result<String, String> {
    let key = key.trim();
    let bad = |why: String| {
        Err(format!(
            "construction permit number `{key}` {why}; expected 18 digits: 6-digit division code, issue date YYYYMMDD, 4-digit sequence"
        ))
    };
    if key.len() != 18 {
        return bad(format!("has {} characters", key.chars().count()));
    }
    if let Some((i, c)) = key.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return bad(format!("has `{c}` at position {}", i + 1));
    }
    if !(b'1'..=b'8').contains(&key.as_bytes()[0]) {
        return bad("does not start with an administrative division code (1–8)".into());
    }
    let year: u32 = key[6..10].parse().unwrap_or(0);
    let month: u32 = key[10..12].parse().unwrap_or(0);
    let day: u32 = key[12..14].parse().unwrap_or(0);
    if !valid_date(year, month, day) {
        return bad(format!("has no valid issue date (`{}`)", &key[6..14]));
    }
    Ok(key.to_owned())
}

fn valid_date(year: u32, month: u32, day: u32) -> bool {
    (1949..=2200).contains(&year) && crate::domain::identifier::check_date(year, month, day).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_one_owner_per_dataset() {
        assert_eq!(
            builtin("enterprise-registration").map(|(o, _)| o),
            Some("market-regulation")
        );
        assert_eq!(
            builtin("construction-permit").map(|(o, _)| o),
            Some("housing")
        );
        assert!(builtin("tax-records").is_none());
        assert!(known_ids().contains("real-estate-registration"));
        for (_, d) in CATALOG.iter() {
            assert_eq!(d.check(), Ok(()), "{}", d.id);
        }
    }

    #[test]
    fn real_estate_numbers_are_normalised_and_checked() {
        let rule = KeyRule::RealEstateCertificate;
        assert_eq!(
            rule.normalise("黔(2024)贵阳市不动产权第0012345号")
                .as_deref(),
            Ok("黔（2024）贵阳市不动产权第0012345号")
        );
        for bad in [
            "(2024)贵阳市不动产权第0012345号",
            "黔(24)贵阳市不动产权第0012345号",
            "黔(2024)贵阳市不动产第0012345号",
            "黔(2024)贵阳市不动产权第012345号",
            "黔(2024)不动产权第0012345号",
            "黔(2024)贵阳市不动产权第0012345",
        ] {
            let err = rule.normalise(bad).expect_err(bad);
            assert!(err.contains("expected the form"), "{err}");
        }
    }

    #[test]
    fn construction_permits_need_a_real_date() {
        let rule = KeyRule::ConstructionPermit;
        assert!(rule.normalise("520102202403150007").is_ok());
        assert!(rule.normalise("520102202402290007").is_ok());
        for (bad, needle) in [
            ("52010220240315000", "has 17 characters"),
            ("52010220240315000A", "`A` at position 18"),
            ("020102202403150007", "division code"),
            ("520102202302290007", "no valid issue date"),
            ("520102202413010007", "no valid issue date"),
        ] {
            let err = rule.normalise(bad).expect_err(bad);
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn oversized_keys_are_refused_before_parsing() {
        let err = KeyRule::ConstructionPermit
            .normalise(&"9".repeat(200))
            .expect_err("too long");
        assert!(err.contains("at most 128"), "{err}");
    }
}
