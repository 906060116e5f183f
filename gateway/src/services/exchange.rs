//! The Exchange service: departments put their own records and read others' for a declared
//! purpose, with the fields the policy discloses for that purpose.
//!
//! A department's systems call their own gateway. A gateway serves the datasets of its own
//! department from its record store (or an HTTP/JSON backend); for another department's data it
//! forwards the request over mutual TLS to the owner's gateway, found in the replicated
//! directory. The owner's gateway decides and notarizes its side (provider); the consumer's
//! gateway notarizes its side when the answer comes back (consumer); both records carry one
//! request id. A department may also call the owner's gateway directly.
//!
//! Order matters for what the log can prove: a read fetches the record first so the digest of
//! what is disclosed is part of the access record; a write is notarized first and stored after,
//! so no record ever changes without an access record naming who changed it. Citizen
//! identifiers (fields the dataset marks personal) reach the log only as keyed hashes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use qianlian_proto::v1::exchange_server::Exchange;
use qianlian_proto::v1::{
    FieldMatch, GetRecordRequest, GetRecordResponse, PutRecordRequest, PutRecordResponse,
    QueriedRecord, QueryRecordsRequest, QueryRecordsResponse, RecordRef,
};
use qianlian_raft_store::notary::{Notary, Receipt};
use qianlian_raft_store::record::{
    Action, Caller, Decision, ExchangeRecord, Record, Side, SubjectHash,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};

use crate::domain::dataset::Dataset;
use crate::domain::identity::{PeerIdentity, Role};
use crate::domain::policy::{AccessRequest, Fields};
use crate::domain::subject::SubjectKey;
use crate::node::cluster_config::InForce;
use crate::node::config::Limits;
use crate::node::forward::{ForwardError, Forwarder, HttpAdapter, OwnerGateway};
use crate::node::records::RecordStore;
use crate::node::time::now_ms;
use crate::services::convert;
use crate::services::error::{ServiceError, caller};
use qianlian_proto::contract::{MAX_PAGE, POLICY_VERSION_HEADER, REQUEST_ID_HEADER};

/// State shared by the data services.
#[derive(Debug)]
pub struct ExchangeService {
    /// Where decisions and commit latency are counted, when metrics are on.
    pub metrics: Option<Arc<crate::node::metrics::Metrics>>,
    pub in_force: InForce,
    pub store: RecordStore,
    pub notary: Notary,
    pub limits: Limits,
    /// The department this gateway serves; `None`: every dataset is served here.
    pub department: Option<String>,
    /// How requests for other departments' data reach their gateways.
    pub forwarder: Option<Arc<Forwarder>>,
    /// Datasets served by HTTP/JSON backends, by dataset id.
    pub adapters: HashMap<String, HttpAdapter>,
    pub subject_key: Option<SubjectKey>,
}

/// A request that passed validation.
struct Checked {
    owner: String,
    dataset: Dataset,
    /// The normalised record key (read, write) or the query as recorded (query).
    key: String,
    /// The owner's gateway, if the directory names one.
    gateway: Option<String>,
    /// The SHA-256 the directory pins for the owner gateway's certificate, if any.
    gateway_pin: Option<[u8; 32]>,
}

/// A validated query: its conditions, the query as the log records it, and the data subjects
/// its conditions name.
type CheckedQuery = (Vec<(String, String)>, String, BTreeSet<SubjectHash>);

/// What a provider decided and disclosed, for the access record.
struct Outcome {
    decision: crate::domain::policy::Decision,
    policy_version: u64,
    disclosed: Vec<String>,
    result_count: u32,
    subjects: BTreeSet<SubjectHash>,
    response_digest: Option<[u8; 32]>,
}

/// The owner's answer, or the transport's status; a gateway that is not the one the directory
/// pins was sent nothing, so there is nothing to record: the caller learns why at once.
fn forwarded<T>(answer: Result<T, ForwardError>) -> Result<Result<T, Status>, ServiceError> {
    match answer {
        Ok(t) => Ok(Ok(t)),
        Err(ForwardError::Status(status)) => Ok(Err(status)),
        Err(ForwardError::WrongGateway(why)) => Err(ServiceError::FailedPrecondition(why)),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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

/// The request id sent by a consumer's gateway, if it is a UUID; otherwise a new one.
fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .map(|u| u.to_string())
        .unwrap_or_else(crate::node::request_id::new_request_id)
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

impl ExchangeService {
    fn subject_key(&self) -> Result<&SubjectKey, ServiceError> {
        self.subject_key.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this gateway has no subject key for hashing citizen identifiers; its operator must set licenses.subject_key".into(),
            )
        })
    }

    /// The keyed hashes of the personal fields present in `payload` (a JSON object).
    fn subjects_in(
        &self,
        dataset: &Dataset,
        payload: &[u8],
        into: &mut BTreeSet<SubjectHash>,
    ) -> Result<(), ServiceError> {
        if !dataset.fields.iter().any(|f| f.personal) {
            return Ok(());
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return Ok(());
        };
        for f in dataset.fields.iter().filter(|f| f.personal) {
            if let Some(v) = crate::node::records::field_value(&json, &f.name) {
                into.insert(SubjectHash(self.subject_key()?.hash(&v)));
            }
        }
        Ok(())
    }

    /// Find the dataset in the directory in force and check the owner named by the caller.
    fn resolve(&self, department: &str, dataset_id: &str) -> Result<Checked, ServiceError> {
        let in_force = self.in_force.directory.load();
        let directory = &in_force.directory;
        let (owner, dataset) = directory.dataset(dataset_id).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "unknown dataset `{dataset_id}`; known datasets: {}",
                directory.dataset_ids()
            ))
        })?;
        if department != owner {
            return Err(ServiceError::InvalidArgument(format!(
                "dataset `{}` is owned by `{owner}`, not `{department}`",
                dataset.id
            )));
        }
        Ok(Checked {
            owner: owner.to_owned(),
            dataset: dataset.clone(),
            key: String::new(),
            gateway: directory.department(owner).and_then(|d| d.gateway.clone()),
            gateway_pin: directory
                .department(owner)
                .and_then(|d| d.cert_fingerprint.as_deref())
                .and_then(|f| hex::decode(f).ok())
                .and_then(|f| <[u8; 32]>::try_from(f).ok()),
        })
    }

    fn check_ref(&self, r: Option<&RecordRef>) -> Result<Checked, ServiceError> {
        let r = r.ok_or_else(|| {
            ServiceError::InvalidArgument(
                "`record` is required: name the owner department, the dataset and the key".into(),
            )
        })?;
        let mut checked = self.resolve(&r.department, &r.dataset)?;
        checked.key = checked.dataset.key.normalise(&r.key).map_err(|why| {
            ServiceError::InvalidArgument(format!(
                "invalid key for {}: {why} (keys are {})",
                checked.dataset.id,
                checked.dataset.key.describe()
            ))
        })?;
        Ok(checked)
    }

    /// Whether this gateway forwards requests for `owner`'s data rather than serving them.
    fn forwards_for(&self, checked: &Checked) -> bool {
        match &self.department {
            Some(own) => *own != checked.owner,
            None => false,
        }
    }

    /// A forwarded request must come from this gateway's own department.
    fn check_own_department(
        &self,
        who: &PeerIdentity,
        checked: &Checked,
    ) -> Result<(), ServiceError> {
        let own = self.department.as_deref().unwrap_or_default();
        if who.role != Role::Department || who.department != own {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "this is the gateway of `{own}`: it forwards requests of `{own}` only; {who} must call its own gateway, or the owner's gateway ({}) directly",
                    checked.gateway.as_deref().unwrap_or("not in the directory")
                ),
                receipt: None,
            });
        }
        Ok(())
    }

    fn forwarder_for(&self, checked: &Checked) -> Result<(&Forwarder, OwnerGateway), ServiceError> {
        let forwarder = self.forwarder.as_deref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this gateway has no client certificate for forwarding; set gateway.client_cert and gateway.client_key".into(),
            )
        })?;
        let url = checked.gateway.clone().ok_or_else(|| {
            ServiceError::Unavailable(format!(
                "the directory names no gateway for `{}`; an operator must add it with `qianlian directory apply`",
                checked.owner
            ))
        })?;
        let owner = OwnerGateway {
            department: checked.owner.clone(),
            url,
            cert_fingerprint: checked.gateway_pin,
        };
        Ok((forwarder, owner))
    }

    /// The answer of an owner's gateway that did not decide: unreachable, too slow, or broken.
    fn owner_unreachable(&self, checked: &Checked, url: &str, status: &Status) -> ServiceError {
        let timeout = self
            .forwarder
            .as_ref()
            .map(|f| f.timeout())
            .unwrap_or_default();
        ServiceError::Unavailable(format!(
            "the gateway of department `{}` ({url}) did not answer within {timeout:?}: {}; nothing was disclosed, try again later",
            checked.owner,
            status.message()
        ))
    }

    /// What the consumer records when the owner's gateway refused, or found no record: the
    /// owner's words and policy version. An owner that did not decide (unreachable, too slow)
    /// or refused the request as invalid gives the error to return at once, unrecorded.
    fn owner_answer(
        &self,
        checked: &Checked,
        url: &str,
        status: &Status,
        subjects: BTreeSet<SubjectHash>,
    ) -> Result<Outcome, ServiceError> {
        match status.code() {
            Code::PermissionDenied | Code::NotFound => Ok(Outcome {
                decision: crate::domain::policy::Decision {
                    allowed: status.code() == Code::NotFound,
                    rule: format!(
                        "answered by the gateway of `{}`: {}",
                        checked.owner,
                        status.message()
                    ),
                    fields: Fields::All,
                },
                policy_version: status
                    .metadata()
                    .get(POLICY_VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                disclosed: Vec::new(),
                result_count: 0,
                subjects,
                response_digest: None,
            }),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                Err(self.owner_unreachable(checked, url, status))
            }
            _ => Err(ServiceError::Forwarded(status.clone())),
        }
    }

    /// Decide an access: role first (only departments exchange data), then policy.
    #[tracing::instrument(name = "exchange.decide", level = "info", skip_all, fields(
        action = action.as_str(), purpose, allowed = tracing::field::Empty))]
    fn decide(
        &self,
        who: &PeerIdentity,
        checked: &Checked,
        action: Action,
        purpose: &str,
    ) -> Result<(crate::domain::policy::Decision, u64), ServiceError> {
        let policy = self.in_force.policy.load();
        let version = policy.version();
        let refuse = |rule: String| crate::domain::policy::Decision {
            allowed: false,
            rule,
            fields: Fields::Only(Vec::new()),
        };
        if who.role != Role::Department {
            return Ok((
                refuse(format!(
                    "role `{}` may not {} department records; use a department certificate",
                    who.role,
                    action.as_str()
                )),
                version,
            ));
        }
        if action == Action::Write && who.department != checked.owner {
            return Ok((
                refuse(format!(
                    "only the owner department `{}` may write {}",
                    checked.owner, checked.dataset.id
                )),
                version,
            ));
        }
        let policy_action = if action == Action::Query {
            "read"
        } else {
            action.as_str()
        };
        let decision = policy
            .decide(AccessRequest {
                caller: who,
                owner: &checked.owner,
                dataset: &checked.dataset.id,
                action: policy_action,
                purpose,
            })
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        tracing::Span::current().record("allowed", decision.allowed);
        Ok((decision, version))
    }

    /// Append one side's access record and wait until it is committed.
    #[allow(clippy::too_many_arguments)]
    async fn notarize(
        &self,
        who: &PeerIdentity,
        side: Side,
        request_id: String,
        checked: &Checked,
        action: Action,
        purpose: &str,
        outcome: &Outcome,
        request_digest: [u8; 32],
    ) -> Result<Receipt, ServiceError> {
        let record = Record::Exchange(ExchangeRecord {
            request_id,
            time_unix_ms: now_ms(),
            caller: Caller {
                department: who.department.clone(),
                role: who.role.as_str().to_owned(),
                cert_fingerprint: who.fingerprint_hex(),
            },
            side,
            gateway: self
                .department
                .clone()
                .unwrap_or_else(|| checked.owner.clone()),
            owner: checked.owner.clone(),
            dataset: checked.dataset.id.clone(),
            action,
            key: checked.key.clone(),
            purpose: purpose.to_owned(),
            decision: if outcome.decision.allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            policy_version: outcome.policy_version,
            rule: outcome.decision.rule.clone(),
            disclosed_fields: outcome.disclosed.clone(),
            result_count: outcome.result_count,
            subjects: outcome.subjects.iter().copied().collect(),
            request_digest,
            response_digest: outcome.response_digest,
            trace_id: crate::node::telemetry::current_trace_id().unwrap_or_default(),
        });
        let started = std::time::Instant::now();
        let receipt = self.notary.append(record).await?;
        if let Some(m) = &self.metrics {
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.decisions
                .get_or_create(&crate::node::metrics::DecisionLabels {
                    action: action.as_str().to_owned(),
                    decision: if outcome.decision.allowed {
                        "allow"
                    } else {
                        "deny"
                    }
                    .to_owned(),
                })
                .inc();
        }
        tracing::info!(
            caller = %who, side = ?side, owner = %checked.owner, dataset = %checked.dataset.id,
            action = action.as_str(), purpose, allowed = outcome.decision.allowed,
            log_index = receipt.log_index, "access notarized"
        );
        Ok(receipt)
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

    async fn fetch(&self, checked: &Checked) -> Result<Option<Vec<u8>>, ServiceError> {
        match self.adapters.get(&checked.dataset.id) {
            Some(a) => a.get(&checked.key).await.map_err(ServiceError::Unavailable),
            None => self
                .store
                .get(&checked.owner, &checked.dataset.id, &checked.key)
                .await
                .map_err(|e| ServiceError::Internal(e.to_string())),
        }
    }

    async fn get(&self, req: Request<GetRecordRequest>) -> Result<GetRecordResponse, ServiceError> {
        let who = caller(&req)?;
        let request_digest = sha256(&req.get_ref().encode_to_vec());
        let request_id = request_id(&req);
        let msg = req.into_inner();
        let checked = self.check_ref(msg.record.as_ref())?;
        check_purpose(&msg.purpose)?;
        if self.forwards_for(&checked) {
            return self.forward_get(&who, checked, msg, request_digest).await;
        }

        let (decision, policy_version) = self.decide(&who, &checked, Action::Read, &msg.purpose)?;
        let mut outcome = Outcome {
            decision,
            policy_version,
            disclosed: Vec::new(),
            result_count: 0,
            subjects: BTreeSet::new(),
            response_digest: None,
        };
        let mut payload = None;
        if outcome.decision.allowed
            && let Some(stored) = self.fetch(&checked).await?
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
                &who,
                Side::Provider,
                request_id,
                &checked,
                Action::Read,
                &msg.purpose,
                &outcome,
                request_digest,
            )
            .await?;
        if !outcome.decision.allowed {
            return Err(Self::denied(&outcome, receipt));
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

    /// The consumer's side of a read: forward to the owner's gateway, check and notarize what
    /// comes back.
    async fn forward_get(
        &self,
        who: &PeerIdentity,
        checked: Checked,
        msg: GetRecordRequest,
        request_digest: [u8; 32],
    ) -> Result<GetRecordResponse, ServiceError> {
        self.check_own_department(who, &checked)?;
        let (forwarder, owner) = self.forwarder_for(&checked)?;
        let url = owner.url.clone();
        let request_id = crate::node::request_id::new_request_id();
        let purpose = msg.purpose.clone();
        let answer = forwarded(forwarder.get(&owner, msg, &request_id).await)?;
        let (outcome, result) = match answer {
            Ok(resp) => {
                if sha256(&resp.payload).as_slice() != resp.payload_digest.as_slice() {
                    return Err(ServiceError::Internal(format!(
                        "the gateway of `{}` sent a payload that does not match its digest",
                        checked.owner
                    )));
                }
                let mut subjects = BTreeSet::new();
                self.subjects_in(&checked.dataset, &resp.payload, &mut subjects)?;
                let outcome = Outcome {
                    decision: crate::domain::policy::Decision {
                        allowed: true,
                        rule: resp.rule.clone(),
                        fields: Fields::All,
                    },
                    policy_version: resp.policy_version,
                    disclosed: resp.disclosed_fields.clone(),
                    result_count: 1,
                    subjects,
                    response_digest: Some(sha256(&resp.payload)),
                };
                (outcome, Ok(resp))
            }
            Err(status) => {
                let outcome = self.owner_answer(&checked, &url, &status, BTreeSet::new())?;
                (outcome, Err(status))
            }
        };
        let receipt = self
            .notarize(
                who,
                Side::Consumer,
                request_id,
                &checked,
                Action::Read,
                &purpose,
                &outcome,
                request_digest,
            )
            .await?;
        match result {
            Ok(mut resp) => {
                resp.consumer_receipt = Some(convert::receipt(&receipt));
                Ok(resp)
            }
            Err(status) if status.code() == Code::PermissionDenied => {
                Err(ServiceError::PermissionDenied {
                    message: format!(
                        "{} (forwarded; this gateway's record is at log index {})",
                        status.message(),
                        receipt.log_index
                    ),
                    receipt: Some(receipt),
                })
            }
            Err(status) => Err(ServiceError::NotFound {
                message: format!(
                    "{} (forwarded; this gateway's record is at log index {})",
                    status.message(),
                    receipt.log_index
                ),
                receipt: Some(receipt),
            }),
        }
    }

    /// Validate a query: a purpose, 1–8 conditions on indexed fields, personal values
    /// normalised. Returns the conditions and the query as the log records it.
    fn check_query(
        &self,
        checked: &Checked,
        matches: &[FieldMatch],
    ) -> Result<CheckedQuery, ServiceError> {
        let indexed = || {
            checked
                .dataset
                .fields
                .iter()
                .filter(|f| f.indexed)
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if matches.is_empty() || matches.len() > 8 {
            return Err(ServiceError::InvalidArgument(format!(
                "a query needs 1 to 8 conditions on indexed fields of {} ({})",
                checked.dataset.id,
                indexed()
            )));
        }
        let mut conditions = Vec::new();
        let mut recorded = Vec::new();
        let mut subjects = BTreeSet::new();
        for m in matches {
            let field = checked
                .dataset
                .field(&m.field)
                .filter(|f| f.indexed)
                .ok_or_else(|| {
                    ServiceError::InvalidArgument(format!(
                        "`{}` is not an indexed field of {}; query by one of: {}",
                        m.field,
                        checked.dataset.id,
                        indexed()
                    ))
                })?;
            if m.value.is_empty() || m.value.len() > 256 || m.value.contains('\0') {
                return Err(ServiceError::InvalidArgument(format!(
                    "the value for `{}` must be 1 to 256 bytes without NUL",
                    m.field
                )));
            }
            if field.personal {
                let value = crate::domain::subject::normalise(&m.value);
                let hash = SubjectHash(self.subject_key()?.hash(&value));
                subjects.insert(hash);
                recorded.push(format!("{}=subject:{}", m.field, hex::encode(hash.0)));
                conditions.push((m.field.clone(), value));
            } else {
                recorded.push(format!("{}={}", m.field, m.value));
                conditions.push((m.field.clone(), m.value.clone()));
            }
        }
        Ok((conditions, recorded.join("&"), subjects))
    }

    async fn query(
        &self,
        req: Request<QueryRecordsRequest>,
    ) -> Result<QueryRecordsResponse, ServiceError> {
        let who = caller(&req)?;
        let request_digest = sha256(&req.get_ref().encode_to_vec());
        let request_id = request_id(&req);
        let msg = req.into_inner();
        let mut checked = self.resolve(&msg.department, &msg.dataset)?;
        check_purpose(&msg.purpose)?;
        let (conditions, recorded, subjects) = self.check_query(&checked, &msg.r#match)?;
        checked.key = recorded;
        let limit = match msg.limit {
            0 => 100,
            n if n as usize > MAX_PAGE => {
                return Err(ServiceError::InvalidArgument(format!(
                    "limit {n} is too large; at most {MAX_PAGE} records per query"
                )));
            }
            n => n as usize,
        };
        if self.forwards_for(&checked) {
            return self
                .forward_query(&who, checked, msg, subjects, request_digest)
                .await;
        }
        let (decision, policy_version) =
            self.decide(&who, &checked, Action::Query, &msg.purpose)?;
        let mut outcome = Outcome {
            decision,
            policy_version,
            disclosed: Vec::new(),
            result_count: 0,
            subjects,
            response_digest: None,
        };
        let mut records = Vec::new();
        if outcome.decision.allowed {
            let found = match self.adapters.get(&checked.dataset.id) {
                Some(a) => a
                    .query(&conditions, limit)
                    .await
                    .map_err(ServiceError::Unavailable)?,
                None => self
                    .store
                    .query(&checked.owner, &checked.dataset.id, conditions, limit)
                    .await
                    .map_err(|e| ServiceError::Internal(e.to_string()))?,
            };
            let mut names = BTreeSet::new();
            for (key, stored) in found {
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
                &who,
                Side::Provider,
                request_id,
                &checked,
                Action::Query,
                &msg.purpose,
                &outcome,
                request_digest,
            )
            .await?;
        if !outcome.decision.allowed {
            return Err(Self::denied(&outcome, receipt));
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

    async fn forward_query(
        &self,
        who: &PeerIdentity,
        checked: Checked,
        msg: QueryRecordsRequest,
        mut subjects: BTreeSet<SubjectHash>,
        request_digest: [u8; 32],
    ) -> Result<QueryRecordsResponse, ServiceError> {
        self.check_own_department(who, &checked)?;
        let (forwarder, owner) = self.forwarder_for(&checked)?;
        let url = owner.url.clone();
        let request_id = crate::node::request_id::new_request_id();
        let purpose = msg.purpose.clone();
        let answer = forwarded(forwarder.query(&owner, msg, &request_id).await)?;
        let (outcome, result) = match answer {
            Ok(resp) => {
                if query_digest(&resp.records).as_slice() != resp.payload_digest.as_slice() {
                    return Err(ServiceError::Internal(format!(
                        "the gateway of `{}` sent records that do not match their digest",
                        checked.owner
                    )));
                }
                for r in &resp.records {
                    self.subjects_in(&checked.dataset, &r.payload, &mut subjects)?;
                }
                let outcome = Outcome {
                    decision: crate::domain::policy::Decision {
                        allowed: true,
                        rule: resp.rule.clone(),
                        fields: Fields::All,
                    },
                    policy_version: resp.policy_version,
                    disclosed: resp.disclosed_fields.clone(),
                    result_count: resp.records.len() as u32,
                    subjects,
                    response_digest: Some(query_digest(&resp.records)),
                };
                (outcome, Ok(resp))
            }
            Err(status) => {
                let outcome = self.owner_answer(&checked, &url, &status, subjects)?;
                (outcome, Err(status))
            }
        };
        let receipt = self
            .notarize(
                who,
                Side::Consumer,
                request_id,
                &checked,
                Action::Query,
                &purpose,
                &outcome,
                request_digest,
            )
            .await?;
        match result {
            Ok(mut resp) => {
                resp.consumer_receipt = Some(convert::receipt(&receipt));
                Ok(resp)
            }
            Err(status) => Err(ServiceError::PermissionDenied {
                message: format!(
                    "{} (forwarded; this gateway's record is at log index {})",
                    status.message(),
                    receipt.log_index
                ),
                receipt: Some(receipt),
            }),
        }
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
        let request_id = request_id(&req);
        let msg = req.into_inner();
        let checked = self.check_ref(msg.record.as_ref())?;
        let names = match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            Ok(serde_json::Value::Object(map)) => {
                let mut names: Vec<String> = map.keys().cloned().collect();
                names.sort();
                names
            }
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
        };
        if self.forwards_for(&checked) {
            return Err(ServiceError::FailedPrecondition(format!(
                "records of `{}` are stored by its own gateway ({}); send PutRecord there",
                checked.owner,
                checked.gateway.as_deref().unwrap_or("not in the directory")
            )));
        }
        if self.adapters.contains_key(&checked.dataset.id) {
            return Err(ServiceError::FailedPrecondition(format!(
                "{} is served from an HTTP backend by this gateway; write to that backend",
                checked.dataset.id
            )));
        }
        let (decision, policy_version) = self.decide(&who, &checked, Action::Write, "")?;
        let digest = sha256(&msg.payload);
        let mut outcome = Outcome {
            decision,
            policy_version,
            disclosed: Vec::new(),
            result_count: 0,
            subjects: BTreeSet::new(),
            response_digest: None,
        };
        if outcome.decision.allowed {
            self.subjects_in(&checked.dataset, &msg.payload, &mut outcome.subjects)?;
            outcome.disclosed = names;
            outcome.result_count = 1;
            outcome.response_digest = Some(digest);
        }
        let receipt = self
            .notarize(
                &who,
                Side::Provider,
                request_id,
                &checked,
                Action::Write,
                "",
                &outcome,
                request_digest,
            )
            .await?;
        if !outcome.decision.allowed {
            return Err(Self::denied(&outcome, receipt));
        }
        let indexed: Vec<String> = checked
            .dataset
            .fields
            .iter()
            .filter(|f| f.indexed)
            .map(|f| f.name.clone())
            .collect();
        let payload = if checked
            .dataset
            .fields
            .iter()
            .any(|f| f.personal && f.indexed)
        {
            normalise_personal(&checked.dataset, msg.payload)
        } else {
            msg.payload
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
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(PutRecordResponse {
            receipt: Some(convert::receipt(&receipt)),
            payload_digest: digest.to_vec(),
        })
    }
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

/// SHA-256 over the records of a query answer: key, NUL, payload, NUL, for each.
pub fn query_digest(records: &[QueriedRecord]) -> [u8; 32] {
    let mut h = Sha256::new();
    for r in records {
        h.update(r.key.as_bytes());
        h.update([0]);
        h.update(&r.payload);
        h.update([0]);
    }
    h.finalize().into()
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

    async fn query_records(
        &self,
        request: Request<QueryRecordsRequest>,
    ) -> Result<Response<QueryRecordsResponse>, Status> {
        Ok(Response::new(self.query(request).await?))
    }
}
