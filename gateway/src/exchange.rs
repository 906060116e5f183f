//! The Exchange service: departments put their own records and read others' for a declared
//! purpose. Every call that passes authentication and validation is decided by policy and
//! notarized, allowed or denied, before it is answered.
//!
//! Order matters for what the log can prove: a read fetches the record first so the record
//! digest is part of the access record; a write is notarized first and stored after, so no
//! record ever changes without an access record naming who changed it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prost::Message;
use qianlian_proto::v1::exchange_server::Exchange;
use qianlian_proto::v1::{
    GetRecordRequest, GetRecordResponse, PutRecordRequest, PutRecordResponse, RecordRef,
};
use qianlian_raft_store::notary::{Notary, Receipt};
use qianlian_raft_store::record::{AccessRecord, Action, Caller, Decision, Record};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::dataset::{self, Dataset};
use crate::error::{ServiceError, caller};
use crate::identity::{PeerIdentity, Role};
use crate::policy::{AccessRequest, Policy};
use crate::store::RecordStore;

/// State shared by the data services.
#[derive(Debug)]
pub struct ExchangeService {
    /// Where decisions and commit latency are counted, when metrics are on.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub store: RecordStore,
    pub notary: Notary,
    pub limits: Limits,
}

/// A request that passed validation.
struct Checked {
    dataset: &'static Dataset,
    key: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn check_ref(r: Option<&RecordRef>) -> Result<Checked, ServiceError> {
    let r = r.ok_or_else(|| {
        ServiceError::InvalidArgument(
            "`record` is required: name the owner department, the dataset and the key".into(),
        )
    })?;
    let dataset = dataset::find(&r.dataset).ok_or_else(|| {
        ServiceError::InvalidArgument(format!(
            "unknown dataset `{}`; known datasets: {}",
            r.dataset,
            dataset::known_ids()
        ))
    })?;
    if r.department != dataset.owner {
        return Err(ServiceError::InvalidArgument(format!(
            "dataset `{}` is owned by `{}`, not `{}`",
            dataset.id, dataset.owner, r.department
        )));
    }
    let key = dataset.key.normalise(&r.key).map_err(|why| {
        ServiceError::InvalidArgument(format!(
            "invalid key for {}: {why} (keys are {})",
            dataset.id,
            dataset.key.describe()
        ))
    })?;
    Ok(Checked { dataset, key })
}

fn check_purpose(purpose: &str) -> Result<(), ServiceError> {
    if purpose.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "`purpose` is required: declare why you read this record, e.g. permit-review".into(),
        ));
    }
    let ok = purpose.len() <= 64
        && purpose
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(ServiceError::InvalidArgument(format!(
            "purpose `{purpose}` must be a code of at most 64 lowercase letters, digits and `-`"
        )));
    }
    Ok(())
}

impl ExchangeService {
    /// Build the access record and wait until it is committed.
    #[allow(clippy::too_many_arguments)]
    async fn notarize(
        &self,
        who: &PeerIdentity,
        checked: &Checked,
        action: Action,
        purpose: &str,
        decision: &crate::policy::Decision,
        policy_version: &str,
        request_digest: [u8; 32],
        response_digest: Option<[u8; 32]>,
    ) -> Result<Receipt, ServiceError> {
        let record = Record::Access(AccessRecord {
            request_id: uuid::Uuid::new_v4().to_string(),
            time_unix_ms: now_ms(),
            caller: Caller {
                department: who.department.clone(),
                role: who.role.as_str().to_owned(),
                cert_fingerprint: who.fingerprint_hex(),
            },
            owner: checked.dataset.owner.to_owned(),
            dataset: checked.dataset.id.to_owned(),
            key: checked.key.clone(),
            action,
            purpose: purpose.to_owned(),
            decision: if decision.allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            policy_version: policy_version.to_owned(),
            rule: decision.rule.clone(),
            request_digest,
            response_digest,
        });
        let started = std::time::Instant::now();
        let receipt = self.notary.append(record).await?;
        if let Some(m) = &self.metrics {
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.decisions
                .get_or_create(&crate::metrics::DecisionLabels {
                    action: action.as_str().to_owned(),
                    decision: if decision.allowed { "allow" } else { "deny" }.to_owned(),
                })
                .inc();
        }
        tracing::info!(
            caller = %who, owner = checked.dataset.owner, dataset = checked.dataset.id,
            action = action.as_str(), purpose, allowed = decision.allowed,
            log_index = receipt.log_index, "access notarized"
        );
        Ok(receipt)
    }

    /// Decide an access: role first (only departments exchange data), then policy.
    fn decide(
        &self,
        who: &PeerIdentity,
        checked: &Checked,
        action: Action,
        purpose: &str,
    ) -> Result<(crate::policy::Decision, String), ServiceError> {
        let policy = self.policy.load();
        let version = policy.version().to_owned();
        if who.role != Role::Department {
            return Ok((
                crate::policy::Decision {
                    allowed: false,
                    rule: format!(
                        "role `{}` may not {} department records; use a department certificate",
                        who.role,
                        action.as_str()
                    ),
                },
                version,
            ));
        }
        if action == Action::Write && who.department != checked.dataset.owner {
            return Ok((
                crate::policy::Decision {
                    allowed: false,
                    rule: format!(
                        "only the owner department `{}` may write {}",
                        checked.dataset.owner, checked.dataset.id
                    ),
                },
                version,
            ));
        }
        let decision = policy
            .decide(AccessRequest {
                caller: who,
                owner: checked.dataset.owner,
                dataset: checked.dataset.id,
                action: action.as_str(),
                purpose,
            })
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok((decision, version))
    }

    async fn get(&self, req: Request<GetRecordRequest>) -> Result<GetRecordResponse, ServiceError> {
        let who = caller(&req)?;
        let request_digest = sha256(&req.get_ref().encode_to_vec());
        let msg = req.into_inner();
        let checked = check_ref(msg.record.as_ref())?;
        check_purpose(&msg.purpose)?;
        let (decision, version) = self.decide(&who, &checked, Action::Read, &msg.purpose)?;
        let payload = if decision.allowed {
            self.store
                .get(checked.dataset.owner, checked.dataset.id, &checked.key)
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?
        } else {
            None
        };
        let digest = payload.as_deref().map(sha256);
        let receipt = self
            .notarize(
                &who,
                &checked,
                Action::Read,
                &msg.purpose,
                &decision,
                &version,
                request_digest,
                digest,
            )
            .await?;
        if !decision.allowed {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "{} (refusal notarized at log index {})",
                    decision.rule, receipt.log_index
                ),
                receipt: Some(receipt),
            });
        }
        let (Some(payload), Some(digest)) = (payload, digest) else {
            return Err(ServiceError::NotFound {
                message: format!(
                    "{} has no record `{}` in {} (access notarized at log index {})",
                    checked.dataset.owner, checked.key, checked.dataset.id, receipt.log_index
                ),
                receipt: Some(receipt),
            });
        };
        Ok(GetRecordResponse {
            record: Some(RecordRef {
                department: checked.dataset.owner.to_owned(),
                dataset: checked.dataset.id.to_owned(),
                key: checked.key,
            }),
            payload,
            receipt: Some(to_proto(&receipt)),
            payload_digest: digest.to_vec(),
        })
    }

    async fn put(&self, req: Request<PutRecordRequest>) -> Result<PutRecordResponse, ServiceError> {
        let who = caller(&req)?;
        let limit = self.limits.max_payload_bytes;
        if req.get_ref().payload.len() > limit {
            return Err(ServiceError::InvalidArgument(format!(
                "payload is {} bytes; this gateway accepts at most {limit} (config key limits.max_payload_bytes)",
                req.get_ref().payload.len()
            )));
        }
        let request_digest = sha256(&req.get_ref().encode_to_vec());
        let msg = req.into_inner();
        let checked = check_ref(msg.record.as_ref())?;
        match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => {
                return Err(ServiceError::InvalidArgument(
                    "payload must be a JSON object, e.g. {\"name\": \"...\"}".into(),
                ));
            }
            Err(e) => {
                return Err(ServiceError::InvalidArgument(format!(
                    "payload is not valid JSON: {e}"
                )));
            }
        }
        let (decision, version) = self.decide(&who, &checked, Action::Write, "")?;
        let digest = sha256(&msg.payload);
        let receipt = self
            .notarize(
                &who,
                &checked,
                Action::Write,
                "",
                &decision,
                &version,
                request_digest,
                decision.allowed.then_some(digest),
            )
            .await?;
        if !decision.allowed {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "{} (refusal notarized at log index {})",
                    decision.rule, receipt.log_index
                ),
                receipt: Some(receipt),
            });
        }
        self.store
            .put(
                checked.dataset.owner,
                checked.dataset.id,
                &checked.key,
                msg.payload,
            )
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(PutRecordResponse {
            receipt: Some(to_proto(&receipt)),
            payload_digest: digest.to_vec(),
        })
    }
}

/// The wire form of a receipt.
pub fn to_proto(r: &Receipt) -> qianlian_proto::v1::Receipt {
    qianlian_proto::v1::Receipt {
        log_index: r.log_index,
        record_hash: r.record_hash.to_vec(),
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn put_record(
        &self,
        request: Request<PutRecordRequest>,
    ) -> Result<Response<PutRecordResponse>, Status> {
        Ok(Response::new(self.put(request).await?))
    }

    async fn get_record(
        &self,
        request: Request<GetRecordRequest>,
    ) -> Result<Response<GetRecordResponse>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
}
