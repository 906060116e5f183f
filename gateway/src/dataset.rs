//! The datasets departments exchange, who owns each, and the rule its record keys follow.
//!
//! A key that breaks its dataset's rule is refused at the edge, with the rule named, before any
//! policy decision or storage access.

use crate::identifier::UnifiedSocialCreditCode;

/// One dataset in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    pub id: &'static str,
    /// The department that publishes the dataset and alone may write it.
    pub owner: &'static str,
    pub title: &'static str,
    pub key: KeyRule,
}

/// How a dataset's record keys are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// 统一社会信用代码, GB 32100-2015.
    UnifiedSocialCreditCode,
    /// 不动产权证书号: `黔(2024)贵阳市不动产权第0012345号`.
    RealEstateCertificate,
    /// 施工许可证编号: 6-digit division code, issue date YYYYMMDD, 4-digit sequence.
    ConstructionPermit,
}

/// Every dataset this gateway knows.
pub const CATALOG: &[Dataset] = &[
    Dataset {
        id: "enterprise-registration",
        owner: "market-regulation",
        title: "企业登记信息 enterprise registration",
        key: KeyRule::UnifiedSocialCreditCode,
    },
    Dataset {
        id: "real-estate-registration",
        owner: "natural-resources",
        title: "不动产登记信息 real-estate registration",
        key: KeyRule::RealEstateCertificate,
    },
    Dataset {
        id: "construction-permit",
        owner: "housing",
        title: "建筑工程施工许可 construction permits",
        key: KeyRule::ConstructionPermit,
    },
];

/// Look a dataset up by id.
pub fn find(id: &str) -> Option<&'static Dataset> {
    CATALOG.iter().find(|d| d.id == id)
}

/// The ids of all datasets, for error messages.
pub fn known_ids() -> String {
    CATALOG.iter().map(|d| d.id).collect::<Vec<_>>().join(", ")
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
    (1949..=2200).contains(&year) && crate::identifier::check_date(year, month, day).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_one_owner_per_dataset() {
        assert_eq!(
            find("enterprise-registration").map(|d| d.owner),
            Some("market-regulation")
        );
        assert_eq!(
            find("construction-permit").map(|d| d.owner),
            Some("housing")
        );
        assert!(find("tax-records").is_none());
        assert!(known_ids().contains("real-estate-registration"));
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
