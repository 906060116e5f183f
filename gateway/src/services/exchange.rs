//! The Exchange service: departments put their own records and read others' for a declared
//! purpose, with the fields the policy discloses for that purpose.
//!
//! A department's systems call their own gateway. A gateway serves the datasets of its own
//! department from its record store (or an HTTP/JSON backend); for another department's data it
//! forwards the request over mutual TLS to the owner's gateway, found in the replicated
//! directory. The owner's gateway decides and notarizes its side (provider); the consumer's
//! gateway notarizes its side when the answer comes back (consumer); both records carry one
//! request id, drawn by the consumer's gateway. A caller's own id for a call (metadata
//! `x-qianlian-correlation-id`) is echoed in the response metadata beside the request id and
//! logged, never recorded. A department may also call the owner's gateway directly.
//!
//! Order matters for what the log can prove: a read fetches the record first so the digest of
//! what is disclosed is part of the access record; a write is notarized first and stored after,
//! so no record ever changes without an access record naming who changed it. Citizen
//! identifiers (fields the dataset marks personal) reach the log only as keyed hashes.
//!
//! Layout: this file holds the service, the checks both sides share (resolving the dataset,
//! validating the request, deciding, notarizing) and the gRPC trait; `provider.rs` serves the
//! department's own datasets; `consumer.rs` forwards to the owner's gateway and records what
//! comes back.

mod consumer;
mod provider;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use qianlian_proto::contract::{CORRELATION_ID_HEADER, MAX_PAGE, REQUEST_ID_HEADER};
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
use tonic::{Request, Response, Status};

use crate::domain::dataset::Dataset;
use crate::domain::identity::{PeerIdentity, Role};
use crate::domain::policy::{AccessRequest, Fields};
use crate::domain::subject::SubjectKey;
use crate::node::cluster_config::InForce;
use crate::node::config::Limits;
use crate::node::forward::{Forwarder, HttpAdapter};
use crate::node::records::RecordStore;
use crate::node::time::now_ms;
use crate::services::error::{ServiceError, caller};

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
    /// Seals this gateway's exchange records with the node's key; `None` writes them unsealed.
    pub seal: Option<Arc<crate::node::seal::NodeSeal>>,
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

/// What was decided and disclosed, for the access record.
struct Outcome {
    decision: crate::domain::policy::Decision,
    policy_version: u64,
    disclosed: Vec<String>,
    result_count: u32,
    subjects: BTreeSet<SubjectHash>,
    response_digest: Option<[u8; 32]>,
}

impl Outcome {
    /// A decision, with nothing disclosed yet.
    fn decided(
        decision: crate::domain::policy::Decision,
        policy_version: u64,
        subjects: BTreeSet<SubjectHash>,
    ) -> Outcome {
        Outcome {
            decision,
            policy_version,
            disclosed: Vec::new(),
            result_count: 0,
            subjects,
            response_digest: None,
        }
    }
}

/// An authenticated call: who asks, the request id its access record carries, the caller's
/// own correlation id if it sent one, and the digest of the request as it arrived.
struct Call {
    who: PeerIdentity,
    request_id: String,
    correlation_id: Option<String>,
    request_digest: [u8; 32],
}

/// Longest correlation id kept, in bytes.
const MAX_CORRELATION_ID: usize = 128;

impl Call {
    /// The request id is this gateway's own, new for every call, unless the caller is another
    /// department's gateway forwarding a request to this owner: then the id that gateway drew
    /// pairs the two sides' records and is kept (a UUID, or a new one). A caller's own id for
    /// the call (`x-qianlian-correlation-id`, or, from this gateway's own department, an
    /// `x-qianlian-request-id` it sent) is only echoed and logged, never recorded.
    fn new<T: Message>(
        who: PeerIdentity,
        req: &Request<T>,
        own_department: Option<&str>,
    ) -> Result<Call, ServiceError> {
        let header = |name: &str| {
            req.metadata()
                .get(name)
                .map(|v| v.to_str().map_err(|_| name.to_owned()))
                .transpose()
        };
        let visible = |name: &str| {
            ServiceError::InvalidArgument(format!(
                "metadata `{name}` must be visible ASCII characters"
            ))
        };
        let sent_id = header(REQUEST_ID_HEADER).map_err(|n| visible(&n))?;
        let from_consumer_gateway = own_department.is_some_and(|own| who.department != own);
        let request_id = sent_id
            .filter(|_| from_consumer_gateway)
            .and_then(|v| uuid::Uuid::parse_str(v).ok())
            .map(|u| u.to_string())
            .unwrap_or_else(crate::node::request_id::new_request_id);
        let correlation_id = match header(CORRELATION_ID_HEADER).map_err(|n| visible(&n))? {
            Some(c) => Some(c),
            None => sent_id.filter(|_| !from_consumer_gateway),
        };
        if let Some(c) = correlation_id
            && c.len() > MAX_CORRELATION_ID
        {
            return Err(ServiceError::InvalidArgument(format!(
                "the caller's correlation id is {} bytes; at most {MAX_CORRELATION_ID} (metadata `{CORRELATION_ID_HEADER}`)",
                c.len()
            )));
        }
        Ok(Call {
            who,
            request_digest: sha256(&req.get_ref().encode_to_vec()),
            request_id,
            correlation_id: correlation_id.map(str::to_owned),
        })
    }

    /// The ids a response carries back: the record's request id, and the caller's own.
    fn ids(&self) -> (String, Option<String>) {
        (self.request_id.clone(), self.correlation_id.clone())
    }
}

/// A response, or its status, with the call's ids in the metadata: `x-qianlian-request-id`
/// (what the access record carries) and `x-qianlian-correlation-id` (the caller's own, echoed).
fn tagged<T>(
    (request_id, correlation_id): (String, Option<String>),
    result: Result<T, ServiceError>,
) -> Result<Response<T>, Status> {
    let tag = |md: &mut tonic::metadata::MetadataMap| {
        if let Ok(v) = request_id.parse() {
            md.insert(REQUEST_ID_HEADER, v);
        }
        if let Some(Ok(v)) = correlation_id
            .as_deref()
            .map(str::parse::<tonic::metadata::AsciiMetadataValue>)
        {
            md.insert(CORRELATION_ID_HEADER, v);
        }
    };
    match result {
        Ok(msg) => {
            let mut r = Response::new(msg);
            tag(r.metadata_mut());
            Ok(r)
        }
        Err(e) => {
            let mut s = Status::from(e);
            tag(s.metadata_mut());
            Err(s)
        }
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

/// The page size a query asks for.
fn query_limit(limit: u32) -> Result<usize, ServiceError> {
    match limit {
        0 => Ok(100),
        n if n as usize > MAX_PAGE => Err(ServiceError::InvalidArgument(format!(
            "limit {n} is too large; at most {MAX_PAGE} records per query"
        ))),
        n => Ok(n as usize),
    }
}

/// The top-level field names of a payload to write, sorted; it must be a JSON object.
fn payload_fields(payload: &[u8]) -> Result<Vec<String>, ServiceError> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(map)) => {
            let mut names: Vec<String> = map.keys().cloned().collect();
            names.sort();
            Ok(names)
        }
        Ok(_) => Err(ServiceError::InvalidArgument(
            "payload must be a JSON object, e.g. {\"name\": \"...\"}".into(),
        )),
        Err(e) => Err(ServiceError::InvalidArgument(format!(
            "payload is not valid JSON: {e}"
        ))),
    }
}

impl ExchangeService {
    /// The authenticated call a request makes (see [`Call::new`]).
    fn call<T: Message>(&self, req: &Request<T>) -> Result<Call, ServiceError> {
        Call::new(caller(req)?, req, self.department.as_deref())
    }

    fn subject_key(&self) -> Result<&SubjectKey, ServiceError> {
        self.subject_key.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this gateway has no subject key for hashing citizen identifiers; its operator must set licenses.subject_key".into(),
            )
        })
    }

    /// The keyed hashes of the personal fields present in `payload` (a JSON object), hashed
    /// from the values as they are written there: the hash folds them to one form, so a
    /// record from a backend that writes an identifier differently names the same subject.
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
                into.insert(self.subject_key()?.hash(&v));
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
    async fn notarize(
        &self,
        call: &Call,
        side: Side,
        checked: &Checked,
        action: Action,
        purpose: &str,
        outcome: &Outcome,
    ) -> Result<Receipt, ServiceError> {
        let who = &call.who;
        let gateway = self
            .department
            .clone()
            .unwrap_or_else(|| checked.owner.clone());
        let record = Record::Exchange(ExchangeRecord {
            request_id: call.request_id.clone(),
            time_unix_ms: now_ms(),
            caller: Caller {
                department: who.department.clone(),
                role: who.role.as_str().to_owned(),
                cert_fingerprint: who.fingerprint_hex(),
            },
            side,
            gateway: gateway.clone(),
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
            request_digest: call.request_digest,
            response_digest: outcome.response_digest,
            trace_id: crate::node::telemetry::current_trace_id().unwrap_or_default(),
        });
        let started = std::time::Instant::now();
        let receipt = match &self.seal {
            Some(seal) => seal.append(&self.notary, record, &gateway).await?,
            None => self.notary.append(record).await?,
        };
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
            log_index = receipt.log_index, request_id = %call.request_id,
            correlation_id = call.correlation_id.as_deref().unwrap_or(""), "access notarized"
        );
        Ok(receipt)
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
                let hash = self.subject_key()?.hash(&m.value);
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

    /// A read, checked here; served from this gateway's store or forwarded to the owner's.
    async fn get(
        &self,
        call: Call,
        msg: GetRecordRequest,
    ) -> Result<GetRecordResponse, ServiceError> {
        let checked = self.check_ref(msg.record.as_ref())?;
        check_purpose(&msg.purpose)?;
        if self.forwards_for(&checked) {
            return self.forward_get(call, checked, msg).await;
        }
        self.serve_get(call, checked, &msg.purpose).await
    }

    /// A query, checked here; served from this gateway's store or forwarded to the owner's.
    async fn query(
        &self,
        call: Call,
        msg: QueryRecordsRequest,
    ) -> Result<QueryRecordsResponse, ServiceError> {
        let mut checked = self.resolve(&msg.department, &msg.dataset)?;
        check_purpose(&msg.purpose)?;
        let (conditions, recorded, subjects) = self.check_query(&checked, &msg.r#match)?;
        checked.key = recorded;
        let limit = query_limit(msg.limit)?;
        if self.forwards_for(&checked) {
            return self.forward_query(call, checked, msg, subjects).await;
        }
        self.serve_query(call, checked, &msg.purpose, conditions, limit, subjects)
            .await
    }

    /// A write, checked here; only the owner's gateway stores it, nothing is forwarded.
    async fn put(
        &self,
        call: Call,
        msg: PutRecordRequest,
    ) -> Result<PutRecordResponse, ServiceError> {
        let limit = self.limits.max_payload_bytes;
        if msg.payload.len() > limit {
            return Err(ServiceError::InvalidArgument(format!(
                "payload is {} bytes; this gateway accepts at most {limit} (config key limits.max_payload_bytes)",
                msg.payload.len()
            )));
        }
        let checked = self.check_ref(msg.record.as_ref())?;
        let fields = payload_fields(&msg.payload)?;
        if self.forwards_for(&checked) {
            return Err(ServiceError::FailedPrecondition(format!(
                "records of `{}` are stored by its own gateway ({}); send PutRecord there",
                checked.owner,
                checked.gateway.as_deref().unwrap_or("not in the directory")
            )));
        }
        self.serve_put(call, checked, msg.payload, fields).await
    }
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
        let call = self.call(&request)?;
        let ids = call.ids();
        tagged(ids, self.put(call, request.into_inner()).await)
    }

    async fn get_record(
        &self,
        request: Request<GetRecordRequest>,
    ) -> Result<Response<GetRecordResponse>, Status> {
        let call = self.call(&request)?;
        let ids = call.ids();
        tagged(ids, self.get(call, request.into_inner()).await)
    }

    async fn query_records(
        &self,
        request: Request<QueryRecordsRequest>,
    ) -> Result<Response<QueryRecordsResponse>, Status> {
        let call = self.call(&request)?;
        let ids = call.ids();
        tagged(ids, self.query(call, request.into_inner()).await)
    }
}
