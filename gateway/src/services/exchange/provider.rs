//! The owner's side: this gateway serves its own department's datasets from its record store
//! or an HTTP/JSON backend. It decides, reads (or writes after notarizing), records the access
//! as provider and answers with what the policy discloses.

use std::collections::BTreeSet;

use qianlian_proto::v1::{
    GetRecordResponse, PutRecordResponse, QueriedRecord, QueryRecordsResponse, RecordRef,
};
use qianlian_raft_store::notary::Receipt;
use qianlian_raft_store::record::{Action, Side, SubjectHash};

use super::{Call, Checked, ExchangeService, Outcome, query_digest, sha256};
use crate::domain::dataset::Dataset;
use crate::domain::policy::Fields;
use crate::node::forward::BackendError;
use crate::services::convert;
use crate::services::error::ServiceError;

impl ExchangeService {
    /// Serve a read of one of this department's records.
    pub(super) async fn serve_get(
        &self,
        call: Call,
        checked: Checked,
        purpose: &str,
    ) -> Result<GetRecordResponse, ServiceError> {
        let (decision, policy_version) = self.decide(&call.who, &checked, Action::Read, purpose)?;
        let mut outcome = Outcome::decided(decision, policy_version, BTreeSet::new());
        let mut payload = None;
        if outcome.decision.allowed
            && let Some(stored) = self.fetch(&checked, &call.request_id).await?
        {
            let (bytes, names) = disclose(&stored, &outcome.decision.fields)?;
            self.subjects_in(&checked.dataset, &bytes, &mut outcome.subjects)?;
            outcome.disclosed = names;
            outcome.result_count = 1;
            outcome.response_digest = Some(sha256(&bytes));
            payload = Some(bytes);
        }
        let receipt = self
            .notarize(
                &call,
                Side::Provider,
                &checked,
                Action::Read,
                purpose,
                &outcome,
            )
            .await?;
        if !outcome.decision.allowed {
            return Err(denied(&outcome, receipt));
        }
        let (Some(payload), Some(digest)) = (payload, outcome.response_digest) else {
            return Err(ServiceError::NotFound {
                message: format!(
                    "{} has no record `{}` in {} (access notarized at log index {})",
                    checked.owner, checked.key, checked.dataset.id, receipt.log_index
                ),
                receipt: Some(receipt),
            });
        };
        Ok(GetRecordResponse {
            record: Some(RecordRef {
                department: checked.owner.clone(),
                dataset: checked.dataset.id.clone(),
                key: checked.key.clone(),
            }),
            payload,
            receipt: Some(convert::receipt(&receipt)),
            payload_digest: digest.to_vec(),
            disclosed_fields: outcome.disclosed,
            policy_version,
            rule: outcome.decision.rule,
            consumer_receipt: None,
        })
    }

    /// Serve a query over one of this department's datasets; `subjects` are those its
    /// conditions name.
    pub(super) async fn serve_query(
        &self,
        call: Call,
        checked: Checked,
        purpose: &str,
        conditions: Vec<(String, String)>,
        limit: usize,
        subjects: BTreeSet<SubjectHash>,
    ) -> Result<QueryRecordsResponse, ServiceError> {
        let (decision, policy_version) =
            self.decide(&call.who, &checked, Action::Query, purpose)?;
        let mut outcome = Outcome::decided(decision, policy_version, subjects);
        let mut records = Vec::new();
        if outcome.decision.allowed {
            let mut names = BTreeSet::new();
            for (key, stored) in self
                .fetch_matching(&checked, conditions, limit, &call.request_id)
                .await?
            {
                let (bytes, disclosed) = disclose(&stored, &outcome.decision.fields)?;
                self.subjects_in(&checked.dataset, &bytes, &mut outcome.subjects)?;
                names.extend(disclosed);
                records.push(QueriedRecord {
                    key,
                    payload: bytes,
                });
            }
            outcome.disclosed = names.into_iter().collect();
            outcome.result_count = records.len() as u32;
            outcome.response_digest = Some(query_digest(&records));
        }
        let receipt = self
            .notarize(
                &call,
                Side::Provider,
                &checked,
                Action::Query,
                purpose,
                &outcome,
            )
            .await?;
        if !outcome.decision.allowed {
            return Err(denied(&outcome, receipt));
        }
        Ok(QueryRecordsResponse {
            records,
            receipt: Some(convert::receipt(&receipt)),
            payload_digest: outcome.response_digest.unwrap_or_default().to_vec(),
            disclosed_fields: outcome.disclosed,
            policy_version,
            rule: outcome.decision.rule,
            consumer_receipt: None,
        })
    }

    /// Write one of this department's records: notarized first, stored after. `fields` are
    /// the payload's top-level field names, sorted.
    pub(super) async fn serve_put(
        &self,
        call: Call,
        checked: Checked,
        payload: Vec<u8>,
        fields: Vec<String>,
    ) -> Result<PutRecordResponse, ServiceError> {
        if self.adapters.contains_key(&checked.dataset.id) {
            return Err(ServiceError::FailedPrecondition(format!(
                "{} is served from an HTTP backend by this gateway; write to that backend",
                checked.dataset.id
            )));
        }
        let (decision, policy_version) = self.decide(&call.who, &checked, Action::Write, "")?;
        let digest = sha256(&payload);
        let mut outcome = Outcome::decided(decision, policy_version, BTreeSet::new());
        if outcome.decision.allowed {
            self.subjects_in(&checked.dataset, &payload, &mut outcome.subjects)?;
            outcome.disclosed = fields;
            outcome.result_count = 1;
            outcome.response_digest = Some(digest);
        }
        let receipt = self
            .notarize(&call, Side::Provider, &checked, Action::Write, "", &outcome)
            .await?;
        if !outcome.decision.allowed {
            return Err(denied(&outcome, receipt));
        }
        self.store(&checked, payload).await?;
        Ok(PutRecordResponse {
            receipt: Some(convert::receipt(&receipt)),
            payload_digest: digest.to_vec(),
        })
    }

    async fn fetch(
        &self,
        checked: &Checked,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, ServiceError> {
        match self.adapters.get(&checked.dataset.id) {
            Some(a) => a
                .get(&checked.key)
                .await
                .map_err(|e| backend_failed(checked, request_id, &e)),
            None => self
                .store
                .get(&checked.owner, &checked.dataset.id, &checked.key)
                .await
                .map_err(|e| ServiceError::Internal(e.to_string())),
        }
    }

    /// The records matching a query's conditions, key and stored bytes, at most `limit`.
    async fn fetch_matching(
        &self,
        checked: &Checked,
        conditions: Vec<(String, String)>,
        limit: usize,
        request_id: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ServiceError> {
        match self.adapters.get(&checked.dataset.id) {
            Some(a) => a
                .query(&conditions, limit)
                .await
                .map_err(|e| backend_failed(checked, request_id, &e)),
            None => self
                .store
                .query(&checked.owner, &checked.dataset.id, conditions, limit)
                .await
                .map_err(|e| ServiceError::Internal(e.to_string())),
        }
    }

    /// Store a record under its key, with its indexed fields indexed.
    async fn store(&self, checked: &Checked, payload: Vec<u8>) -> Result<(), ServiceError> {
        let fields = &checked.dataset.fields;
        let indexed: Vec<String> = fields
            .iter()
            .filter(|f| f.indexed)
            .map(|f| f.name.clone())
            .collect();
        let payload = if fields.iter().any(|f| f.personal && f.indexed) {
            normalise_personal(&checked.dataset, payload)
        } else {
            payload
        };
        self.store
            .put(
                &checked.owner,
                &checked.dataset.id,
                &checked.key,
                payload,
                &indexed,
            )
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

/// A backend that gave no usable answer: the cause, with the backend's address, goes to this
/// gateway's log under the request id; the caller (another department) learns what kind of
/// failure it was and that id, nothing of the owner's internal systems or of the values asked.
fn backend_failed(checked: &Checked, request_id: &str, e: &BackendError) -> ServiceError {
    tracing::warn!(
        request_id,
        dataset = %checked.dataset.id,
        error = %e,
        "backend call failed"
    );
    ServiceError::Unavailable(format!(
        "the backend serving {} {}; nothing was disclosed. Try again later; the operators of `{}` find the cause in their gateway's log under request id {request_id}",
        checked.dataset.id,
        e.kind(),
        checked.owner
    ))
}

/// The refusal of a provider, with its receipt and the policy version that decided.
fn denied(outcome: &Outcome, receipt: Receipt) -> ServiceError {
    ServiceError::Refused {
        message: format!(
            "{} (refusal notarized at log index {})",
            outcome.decision.rule, receipt.log_index
        ),
        receipt,
        policy_version: outcome.policy_version,
    }
}

/// Keep only the disclosed top-level fields of a JSON object. Returns the bytes to send and the
/// names of the fields they hold, sorted.
fn disclose(payload: &[u8], fields: &Fields) -> Result<(Vec<u8>, Vec<String>), ServiceError> {
    let serde_json::Value::Object(mut map) = serde_json::from_slice(payload)
        .map_err(|e| ServiceError::Internal(format!("stored record is not JSON: {e}")))?
    else {
        return Err(ServiceError::Internal(
            "stored record is not a JSON object".into(),
        ));
    };
    if let Fields::All = fields {
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        return Ok((payload.to_vec(), names));
    }
    map.retain(|k, _| fields.allows(k));
    let mut names: Vec<String> = map.keys().cloned().collect();
    names.sort();
    let bytes = serde_json::to_vec(&map).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok((bytes, names))
}

/// Personal identifiers are stored as normalised (trimmed, upper case) so that a query finds
/// them however they were typed. Other bytes are kept as sent.
fn normalise_personal(dataset: &Dataset, payload: Vec<u8>) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(&payload) else {
        return payload;
    };
    let mut changed = false;
    for f in dataset.fields.iter().filter(|f| f.personal) {
        if let Some(serde_json::Value::String(v)) = map.get_mut(&f.name) {
            let n = crate::domain::subject::normalise(v);
            if n != *v {
                *v = n;
                changed = true;
            }
        }
    }
    if !changed {
        return payload;
    }
    serde_json::to_vec(&map).unwrap_or(payload)
}
