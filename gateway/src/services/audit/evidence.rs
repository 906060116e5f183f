//! Evidence bundles: every record a query matches, proven against one cosigned checkpoint, with
//! the policy versions that decided them and the keys needed to check it all, in one JSON file
//! (`qianlian_verifier::audit::bundle`) that `qianlian audit check` verifies with no node.
//!
//! The checkpoint is fixed first and the query is bounded at its tree size, so every record in
//! the bundle is provable against it even while the log grows.

use qianlian_proto::v1::{ExportEvidenceRequest, ExportEvidenceResponse};
use qianlian_raft_store::audit_query::{AuditCursor, AuditFilter, AuditHit, AuditOrder};
use qianlian_raft_store::record::{ConfigKind, Record};
use qianlian_verifier::audit::{
    BundleBatchSignature, BundleDepartment, BundlePolicy, BundleRecord, EVIDENCE_BUNDLE_VERSION,
    EvidenceBundle,
};

use qianlian_proto::contract::MAX_PAGE;

use super::{AuditService, Filters};
use crate::services::error::ServiceError;

/// How far after a record the exporter looks for the batch signature that covers it: a
/// signature follows its batch in the same Raft entry.
const SIGNATURE_SCAN: u64 = 4096;

/// A batch signature found while exporting, with the paths of the records it covers.
struct SignedBatch {
    /// Log index of the first record covered.
    start: u64,
    /// Log index of the signature record.
    at: u64,
    record: Vec<u8>,
    proof: Vec<qianlian_verifier::Hash>,
    paths: Vec<Vec<qianlian_verifier::Hash>>,
}

impl SignedBatch {
    fn covers(&self, log_index: u64) -> bool {
        (self.start..self.at).contains(&log_index)
    }

    fn entry(&self, log_index: u64) -> BundleBatchSignature {
        let index = usize::try_from(log_index - self.start).unwrap_or(usize::MAX);
        BundleBatchSignature {
            log_index: self.at,
            record: self.record.clone(),
            proof: self.proof.clone(),
            path: self.paths.get(index).cloned().unwrap_or_default(),
        }
    }
}

/// Records in a bundle when the request says 0.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Most records one bundle may hold.
pub const MAX_RECORDS: usize = 100_000;
/// Largest bundle sent or received over gRPC.
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024 * 1024;

/// A query in words, for the bundle's reader; identifiers appear only as their keyed hash.
fn describe(f: &Filters) -> String {
    let mut parts: Vec<String> = f
        .filters
        .iter()
        .map(|c| match c {
            AuditFilter::Consumer(d) => format!("consumer={d}"),
            AuditFilter::Provider(d) => format!("provider={d}"),
            AuditFilter::Dataset { owner, dataset } => format!("dataset={owner}/{dataset}"),
            AuditFilter::Key(k) => format!("key={k}"),
            AuditFilter::Action(a) => format!("action={}", a.as_str()),
            AuditFilter::Decision(d) => format!("decision={d:?}").to_lowercase(),
            AuditFilter::Purpose(p) => format!("purpose={p}"),
            AuditFilter::PolicyVersion(v) => format!("policy_version={v}"),
            AuditFilter::Subject(s) => format!("subject_hash={}", hex::encode(s.0)),
            AuditFilter::AnySubject(hashes) => format!(
                "subject_hash={}",
                hashes
                    .iter()
                    .map(|s| hex::encode(s.0))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            AuditFilter::Side(s) => format!("side={s:?}").to_lowercase(),
        })
        .collect();
    if let Some(s) = f.since_unix_ms {
        parts.push(format!("since_unix_ms={s}"));
    }
    if let Some(u) = f.until_unix_ms {
        parts.push(format!("until_unix_ms={u}"));
    }
    if parts.is_empty() {
        "every access record".to_owned()
    } else {
        parts.join(", ")
    }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// The most records a request lets its bundle hold.
fn max_records(requested: u32) -> Result<usize, ServiceError> {
    match requested as usize {
        0 => Ok(DEFAULT_MAX_RECORDS),
        n if n <= MAX_RECORDS => Ok(n),
        n => Err(ServiceError::InvalidArgument(format!(
            "max_records {n} is above {MAX_RECORDS}: split the query by time range"
        ))),
    }
}

impl AuditService {
    /// Build the bundle for a request (the gRPC method has checked the caller's role).
    pub async fn evidence_bundle(
        &self,
        request: ExportEvidenceRequest,
    ) -> Result<ExportEvidenceResponse, ServiceError> {
        let max = max_records(request.max_records)?;
        if self.trust_node_keys.is_empty() {
            return Err(ServiceError::FailedPrecondition(
                "this node exports no evidence: its operator must set licenses.trust_node_keys (the node keys a bundle is checked with)".into(),
            ));
        }
        let filters = self.filters(request.filter)?;
        let query = describe(&filters);
        let checkpoint = self.notary.checkpoint().await?;
        let size = checkpoint.size;
        let hits = self.matches_below(filters, size, max).await?;
        let (records, highest_policy) = self.proven_records(hits, size).await?;
        let policies = self.proven_policies(highest_policy, size).await?;
        let bundle = EvidenceBundle {
            version: EVIDENCE_BUNDLE_VERSION,
            created_unix_ms: crate::node::time::now_ms(),
            query,
            origin: checkpoint
                .note
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            checkpoint: checkpoint.note,
            node_keys: self.trust_node_keys.clone(),
            min_cosigners: self.min_cosigners,
            departments: self.departments(size).await?,
            records,
            policies,
        };
        let count = bundle.records.len() as u32;
        Ok(ExportEvidenceResponse {
            bundle_json: bundle.to_json_pretty(),
            records: count,
            tree_size: size,
        })
    }

    /// Every record the query matches below tree size `size`, oldest first; more than `max`
    /// is refused.
    async fn matches_below(
        &self,
        filters: Filters,
        size: u64,
        max: usize,
    ) -> Result<Vec<AuditHit>, ServiceError> {
        let mut hits = Vec::new();
        let mut after = Some(AuditCursor {
            tree_size: size,
            time_unix_ms: 0,
            log_index: 0,
        });
        while let Some(cursor) = after {
            let page = self
                .page(
                    filters.clone(),
                    AuditOrder::OldestFirst,
                    MAX_PAGE,
                    Some(cursor),
                )
                .await?;
            hits.extend(page.hits);
            if hits.len() > max {
                return Err(ServiceError::InvalidArgument(format!(
                    "the query matches more than {max} records: narrow it (e.g. with a time range) or raise max_records (at most {MAX_RECORDS})"
                )));
            }
            after = page.next;
        }
        Ok(hits)
    }

    /// The records with their inclusion proofs in the tree of `size`, and the highest policy
    /// version that decided one of them.
    async fn proven_records(
        &self,
        hits: Vec<AuditHit>,
        size: u64,
    ) -> Result<(Vec<BundleRecord>, u64), ServiceError> {
        let mut records = Vec::with_capacity(hits.len());
        let mut highest_policy = 0;
        let mut batches: Vec<SignedBatch> = Vec::new();
        for h in hits {
            if let Record::Exchange(x) = h.record.content() {
                highest_policy = highest_policy.max(x.policy_version);
            }
            let proof = self.notary.inclusion_proof(h.log_index, size).await?;
            let unsealed = h.record.originator().is_none()
                && matches!(h.record, Record::Access(_) | Record::Exchange(_));
            let mut entry = BundleRecord::new(h.log_index, h.bytes, proof).map_err(internal)?;
            if unsealed {
                entry.signed_by = self
                    .covering_signature(&mut batches, h.log_index, size)
                    .await?;
            }
            records.push(entry);
        }
        Ok((records, highest_policy))
    }

    /// The batch signature record that covers the record at `log_index` (below `size`), with
    /// the record's path among those it covers; `None` if no signature within
    /// [`SIGNATURE_SCAN`] records after it covers it. `batches` keeps the batches found, for
    /// the records of the same batch.
    async fn covering_signature(
        &self,
        batches: &mut Vec<SignedBatch>,
        log_index: u64,
        size: u64,
    ) -> Result<Option<BundleBatchSignature>, ServiceError> {
        if let Some(b) = batches.iter().find(|b| b.covers(log_index)) {
            return Ok(Some(b.entry(log_index)));
        }
        let end = size.min(log_index.saturating_add(SIGNATURE_SCAN + 1));
        for at in log_index + 1..end {
            let Some((bytes, _)) = self.notary.entry(at).await? else {
                return Ok(None);
            };
            let Ok(Record::BatchSignature(signature)) = Record::decode(&bytes) else {
                continue;
            };
            let Some(start) = at.checked_sub(signature.count).filter(|s| *s <= log_index) else {
                return Ok(None);
            };
            let mut leaves = Vec::new();
            for i in start..at {
                let (covered, _) = self.notary.entry(i).await?.ok_or_else(|| {
                    internal(format!(
                        "record {i}, covered by the signature at {at}, is missing"
                    ))
                })?;
                leaves.push(qianlian_verifier::leaf_hash(&covered));
            }
            let (_, paths) = qianlian_verifier::tree::root_and_paths(&leaves);
            let batch = SignedBatch {
                start,
                at,
                record: bytes,
                proof: self.notary.inclusion_proof(at, size).await?,
                paths,
            };
            let entry = batch.entry(log_index);
            batches.push(batch);
            return Ok(Some(entry));
        }
        Ok(None)
    }

    /// The policy records up to version `highest` in the tree of `size`, with their inclusion
    /// proofs, so the bundle shows the rules that decided.
    async fn proven_policies(
        &self,
        highest: u64,
        size: u64,
    ) -> Result<Vec<BundlePolicy>, ServiceError> {
        let notary = &self.notary;
        let mut policies = Vec::new();
        for p in notary.config_history(ConfigKind::Policy).await? {
            if p.version > highest || p.log_index >= size {
                continue;
            }
            let (bytes, _) = notary.entry(p.log_index).await?.ok_or_else(|| {
                internal(format!(
                    "policy record at log index {} is missing",
                    p.log_index
                ))
            })?;
            policies.push(BundlePolicy {
                version: p.version,
                log_index: p.log_index,
                record: bytes,
                proof: notary.inclusion_proof(p.log_index, size).await?,
            });
        }
        Ok(policies)
    }

    /// The departments in force with their keys, for checking signed records. A department's
    /// node keys come with the log index from which the replicated directory has made seals
    /// compulsory for it (below `size`); a department the replicated directory does not seal
    /// gets none, as no node checks its seals' authority. Keys it listed in earlier versions and
    /// no longer does come with the log positions between which they were listed.
    async fn departments(&self, size: u64) -> Result<Vec<BundleDepartment>, ServiceError> {
        let mut history = self.key_history(size).await?;
        let directory = self.in_force.directory.load();
        Ok(directory
            .directory
            .department
            .iter()
            .map(|d| {
                let from = history.sealed_from.get(&d.id).copied();
                BundleDepartment {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    keys: d.keys.clone(),
                    node_keys: if from.is_some() {
                        d.node_keys.clone()
                    } else {
                        Vec::new()
                    },
                    sealed_from: from,
                    retired_keys: history.retired.remove(&d.id).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Walk the replicated directory's versions below `size`: for each department, the log
    /// index of the version that began the run of versions, lasting to `size`, in which it
    /// publishes node keys; and the keys it listed in some versions and not in the last.
    async fn key_history(&self, size: u64) -> Result<KeyHistory, ServiceError> {
        use qianlian_raft_store::record::{ConfigChange, SignerRole};
        use qianlian_verifier::audit::RetiredKey;
        use qianlian_verifier::license::DepartmentKey;
        let history = self.notary.config_history(ConfigKind::Directory).await?;
        let mut out = KeyHistory::default();
        // (department, role, key id, public key) -> log index from which it is listed.
        let mut listed: std::collections::BTreeMap<(String, SignerRole, String, [u8; 32]), u64> =
            std::collections::BTreeMap::new();
        for p in history.iter().filter(|p| p.log_index < size) {
            let Some((bytes, _)) = self.notary.entry(p.log_index).await? else {
                continue;
            };
            let Ok(record) = Record::decode(&bytes) else {
                continue;
            };
            let Record::Config(c) = record.content() else {
                continue;
            };
            let ConfigChange::Directory { toml } = &c.change else {
                continue;
            };
            let keys = qianlian_raft_store::state_machine::origin::keys_from_directory(toml)
                .unwrap_or_default();
            let sealed: std::collections::HashSet<String> = keys
                .keys
                .iter()
                .filter(|k| k.role == SignerRole::Gateway)
                .map(|k| k.department.clone())
                .collect();
            out.sealed_from.retain(|d, _| sealed.contains(d));
            for d in sealed {
                out.sealed_from.entry(d).or_insert(p.log_index);
            }
            let now: std::collections::BTreeSet<(String, SignerRole, String, [u8; 32])> = keys
                .keys
                .into_iter()
                .filter(|k| k.role != SignerRole::Operator)
                .map(|k| (k.department, k.role, k.key_id, k.public_key))
                .collect();
            listed.retain(|k, since| {
                if now.contains(k) {
                    return true;
                }
                let (department, role, key_id, public_key) = k.clone();
                out.retired.entry(department).or_default().push(RetiredKey {
                    role,
                    key: DepartmentKey {
                        key_id,
                        public_key: public_key.to_vec(),
                    },
                    from: *since,
                    until: p.log_index,
                });
                false
            });
            for k in now {
                listed.entry(k).or_insert(p.log_index);
            }
        }
        Ok(out)
    }
}

/// What the directory's history says about departments' keys (see
/// [`AuditService::key_history`]).
#[derive(Debug, Default)]
struct KeyHistory {
    sealed_from: std::collections::HashMap<String, u64>,
    retired: std::collections::HashMap<String, Vec<qianlian_verifier::audit::RetiredKey>>,
}
