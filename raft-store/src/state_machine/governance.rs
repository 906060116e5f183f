//! The data-sharing governance in force, derived from the governance records applied so far:
//! for each dataset whose owner published a catalog entry, where its latest entry is in the log
//! and its version. Small (one pointer per dataset), so kept whole in memory and in one
//! `sm_meta` value, and rebuilt from the records when a snapshot is installed.
//!
//! Who may take a step is the origin check's ([`super::origin::batch_signatures`]): a governance
//! record applies only under its department's batch signature, made by one of its gateway keys,
//! about a dataset the directory in force lists under that department, and a catalog entry only
//! as the next version of the dataset's entry.

use std::collections::BTreeMap;

use rocksdb::{DB, WriteBatch};
use serde::{Deserialize, Serialize};

use super::meta::ConfigPointer;
use crate::db::{self, CF_SM_META, StoreError, encode_value, get_value};
use crate::record::{GovernanceStep, Record};

pub(super) const KEY_GOVERNANCE: &[u8] = b"governance";

/// The governance in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    /// Per dataset, the catalog entry in force (its version is the entry's own).
    pub catalog: BTreeMap<String, ConfigPointer>,
}

impl Governance {
    /// The version of `dataset`'s catalog entry in force; 0 for none.
    pub fn catalog_version(&self, dataset: &str) -> u64 {
        self.catalog.get(dataset).map_or(0, |p| p.version)
    }

    /// Account for `record`, applied at `log_index`. Returns whether anything changed.
    pub(crate) fn observe(&mut self, log_index: u64, record: &Record) -> bool {
        let Record::Governance(g) = record.content() else {
            return false;
        };
        match &g.step {
            GovernanceStep::Catalog(entry) => {
                self.catalog.insert(
                    entry.dataset.clone(),
                    ConfigPointer {
                        log_index,
                        version: entry.version,
                    },
                );
            }
        }
        true
    }
}

/// The stored governance (none stored: nothing published yet).
pub(super) fn load(db: &DB) -> Result<Governance, StoreError> {
    Ok(get_value(db, CF_SM_META, KEY_GOVERNANCE, "governance")?.unwrap_or_default())
}

/// Stage `governance` into `batch`.
pub(super) fn stage(
    db: &DB,
    batch: &mut WriteBatch,
    governance: &Governance,
) -> Result<(), StoreError> {
    batch.put_cf(
        db::cf(db, CF_SM_META)?,
        KEY_GOVERNANCE,
        encode_value("governance", governance)?,
    );
    Ok(())
}
