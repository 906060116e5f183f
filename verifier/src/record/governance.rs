//! Data-sharing governance on the log: the steps departments take over their own data, each a
//! record made by one department and sealed by its gateway.
//!
//! The first step is the catalog (政务信息资源目录): the department that owns a dataset (the
//! directory in force lists it under that department) publishes an entry saying what the
//! dataset holds, how each field is classified, whether and for which purposes it is shared,
//! how often it is updated and on what legal basis. Each publication replaces the last one
//! and carries the next version number, so a replayed or reordered publication is refused.
//!
//! These records are encoded as version 1 records (a new variant of [`super::Record`]); steps
//! are only ever added at the end of [`GovernanceStep`].

use serde::{Deserialize, Serialize};

/// One governance step by one department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceRecord {
    /// When the department's gateway wrote the record, Unix milliseconds.
    pub time_unix_ms: u64,
    /// The department taking the step; its gateway seals the record.
    pub department: String,
    pub step: GovernanceStep,
}

/// What a department did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GovernanceStep {
    /// The owner published (or replaced) the catalog entry of one of its datasets.
    Catalog(CatalogEntry),
}

/// A dataset's catalog entry, as its owner publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub dataset: String,
    /// 1 for the first publication of the dataset's entry, then one more than the entry it
    /// replaces.
    pub version: u64,
    /// Title in Chinese.
    pub title_zh: String,
    /// Title in English.
    pub title_en: String,
    pub description: String,
    /// Every field a consumer may learn of, with its classification; sorted by name.
    pub fields: Vec<CatalogField>,
    pub sharing: SharingClass,
    /// The purpose codes the dataset may be read for; sorted, each once.
    pub purposes: Vec<String>,
    pub update_frequency: UpdateFrequency,
    /// The law or regulation that allows the sharing (or requires the refusal).
    pub legal_basis: String,
}

/// One field of a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogField {
    pub name: String,
    pub class: FieldClass,
    /// Disclosed to consumers: to any department for an unconditionally shared dataset, and
    /// offered for grants of a conditionally shared one.
    pub shareable: bool,
}

/// How sensitive a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldClass {
    Public,
    Internal,
    /// Identifies or describes a person.
    Personal,
    /// Its disclosure could harm a person or the state.
    Sensitive,
}

/// Whether and how a dataset is shared (无条件共享 / 有条件共享 / 不予共享).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharingClass {
    /// Any department may read it for the entry's purposes, its shareable fields only.
    Unconditional,
    /// A department reads it only under a grant the owner approved.
    Conditional,
    NotShared,
}

/// How often the owner updates the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateFrequency {
    RealTime,
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
    Irregular,
}

/// Longest title, description and legal basis a catalog entry carries, in bytes.
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_LEGAL_BASIS: usize = 1024;
/// Most fields and purposes one entry lists.
pub const MAX_FIELDS: usize = 256;
pub const MAX_PURPOSES: usize = 64;

/// A code: 1 to 64 of `a-z`, `0-9` and `-`.
fn is_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A field name: 1 to 64 of `a-z`, `0-9` and `_`.
fn is_field_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("`{what}` is required"));
    }
    if s.len() > max {
        return Err(format!(
            "`{what}` is {} bytes; at most {max} are allowed",
            s.len()
        ));
    }
    Ok(())
}

impl GovernanceRecord {
    /// The dataset the step is about.
    pub fn dataset(&self) -> &str {
        match &self.step {
            GovernanceStep::Catalog(entry) => &entry.dataset,
        }
    }

    /// Whether the record is well formed on its own (its authority depends on the log).
    pub fn check(&self) -> Result<(), String> {
        if !is_code(&self.department) {
            return Err(format!(
                "department `{}` must be 1 to 64 of a-z, 0-9 and `-`",
                self.department
            ));
        }
        match &self.step {
            GovernanceStep::Catalog(entry) => entry.check(),
        }
    }
}

impl CatalogEntry {
    /// Codes and names in their forms, lists sorted without repeats, texts present and within
    /// their limits, and a shared dataset shares something.
    pub fn check(&self) -> Result<(), String> {
        if !is_code(&self.dataset) {
            return Err(format!(
                "dataset `{}` must be 1 to 64 of a-z, 0-9 and `-`",
                self.dataset
            ));
        }
        if self.version == 0 {
            return Err("`version` starts at 1".into());
        }
        text("title_zh", &self.title_zh, MAX_TITLE)?;
        text("title_en", &self.title_en, MAX_TITLE)?;
        text("description", &self.description, MAX_DESCRIPTION)?;
        text("legal_basis", &self.legal_basis, MAX_LEGAL_BASIS)?;
        if self.fields.len() > MAX_FIELDS {
            return Err(format!("at most {MAX_FIELDS} fields are allowed"));
        }
        if let Some(f) = self.fields.iter().find(|f| !is_field_name(&f.name)) {
            return Err(format!(
                "field name `{}` must be 1 to 64 of a-z, 0-9 and `_`",
                f.name
            ));
        }
        if !self.fields.windows(2).all(|w| w[0].name < w[1].name) {
            return Err("fields must be sorted by name, each once".into());
        }
        if self.purposes.len() > MAX_PURPOSES {
            return Err(format!("at most {MAX_PURPOSES} purposes are allowed"));
        }
        if let Some(p) = self.purposes.iter().find(|p| !is_code(p)) {
            return Err(format!(
                "purpose `{p}` must be a code of 1 to 64 of a-z, 0-9 and `-`"
            ));
        }
        if !self.purposes.windows(2).all(|w| w[0] < w[1]) {
            return Err("purposes must be sorted, each once".into());
        }
        match self.sharing {
            SharingClass::NotShared => {
                if let Some(f) = self.fields.iter().find(|f| f.shareable) {
                    return Err(format!(
                        "field `{}` is shareable, but the dataset is not shared",
                        f.name
                    ));
                }
            }
            SharingClass::Unconditional | SharingClass::Conditional => {
                if !self.fields.iter().any(|f| f.shareable) {
                    return Err("a shared dataset needs at least one shareable field".into());
                }
                if self.purposes.is_empty() {
                    return Err("a shared dataset needs at least one purpose".into());
                }
            }
        }
        Ok(())
    }

    /// The shareable fields, sorted.
    pub fn shareable_fields(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.shareable)
            .map(|f| f.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry() -> CatalogEntry {
        CatalogEntry {
            dataset: "enterprise-registration".into(),
            version: 1,
            title_zh: "企业登记信息".into(),
            title_en: "Enterprise registration".into(),
            description: "Registered enterprises of the province.".into(),
            fields: vec![
                CatalogField {
                    name: "legal_rep_id".into(),
                    class: FieldClass::Personal,
                    shareable: false,
                },
                CatalogField {
                    name: "name".into(),
                    class: FieldClass::Public,
                    shareable: true,
                },
            ],
            sharing: SharingClass::Unconditional,
            purposes: vec!["permit-review".into(), "tax-check".into()],
            update_frequency: UpdateFrequency::Daily,
            legal_basis: "《企业信息公示暂行条例》".into(),
        }
    }

    #[test]
    fn a_catalog_entry_is_checked_for_form() {
        assert_eq!(entry().check(), Ok(()));
        type Break = fn(&mut CatalogEntry);
        let broken: [(&str, Break); 9] = [
            ("dataset", |e| e.dataset = "Enterprise".into()),
            ("version", |e| e.version = 0),
            ("title_en", |e| e.title_en = " ".into()),
            ("legal_basis", |e| {
                e.legal_basis = "x".repeat(MAX_LEGAL_BASIS + 1)
            }),
            ("sorted by name", |e| e.fields.reverse()),
            ("field name", |e| e.fields[0].name = "Legal".into()),
            ("purposes must be sorted", |e| e.purposes.reverse()),
            ("not shared", |e| e.sharing = SharingClass::NotShared),
            ("at least one purpose", |e| e.purposes.clear()),
        ];
        for (needle, breaks) in broken {
            let mut e = entry();
            breaks(&mut e);
            let err = e.check().err().unwrap_or_default();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let mut unshared = entry();
        unshared.sharing = SharingClass::NotShared;
        unshared.purposes.clear();
        unshared.fields[1].shareable = false;
        assert_eq!(
            unshared.check(),
            Ok(()),
            "a dataset not shared shares nothing"
        );
        assert_eq!(entry().shareable_fields(), vec!["name"]);
    }
}
