//! The Audit service: the access trail for inspectors, "who read my data" for citizens, the log
//! streamed to integrity verifiers, and evidence bundles that stand alone.
//!
//! Queries run on the notarization log's secondary indexes (`raft_store::audit_query`), so a query
//! touches only the records it matches. Inspectors (inspector certificate) may query every
//! access; a data subject with a bearer token from the trusted identity provider sees only the
//! accesses to data about them, as the owners' gateways recorded them (provider side). Citizen
//! identifiers are hashed with the cluster's subject key on arrival and never stored or logged.
//!
//! Layout: [`token`] checks bearer tokens; [`evidence`] builds evidence bundles.

pub mod evidence;
pub mod token;

use std::pin::Pin;
use std::sync::Arc;

use qianlian_proto::v1::audit_server::Audit;
use qianlian_proto::v1::{
    AccessFilter, ExportEvidenceRequest, ExportEvidenceResponse, LogChunk, MyAccessesRequest,
    MyAccessesResponse, QueryAccessesRequest, QueryAccessesResponse, StreamLogRequest,
    SubjectAccess,
};
use qianlian_raft_store::audit_query::{AuditCursor, AuditFilter, AuditOrder, AuditQuery};
use qianlian_raft_store::notary::Notary;
use qianlian_raft_store::record::{Action, Decision, Side, SubjectHash};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::domain::identity::{PeerIdentity, Role};
use crate::domain::subject::SubjectKey;
use crate::node::cluster_config::InForce;
use crate::services::convert;
use crate::services::error::{ServiceError, caller};
use token::TokenVerifier;

use qianlian_proto::contract::{DEFAULT_PAGE, MAX_PAGE};
/// Records per chunk of a streamed log.
const STREAM_CHUNK: usize = 1000;

/// gRPC (and HTTP/JSON) face of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditService {
    pub notary: Notary,
    pub in_force: InForce,
    /// Hashes the identifiers inspectors and tokens name; `None`: subject queries are refused.
    pub subject_key: Option<SubjectKey>,
    /// Checks citizens' tokens; `None`: "who read my data" is refused with the key to set.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// Node checkpoint keys and k, put into evidence bundles.
    pub trust_node_keys: Vec<String>,
    pub min_cosigners: usize,
}

/// A query's filters and time range, as the log's indexes take them.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub filters: Vec<AuditFilter>,
    pub since_unix_ms: Option<u64>,
    pub until_unix_ms: Option<u64>,
}

fn invalid(m: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(m.into())
}

/// The caller, if it holds one of `roles`; PERMISSION_DENIED naming what is needed otherwise.
fn require<T>(req: &Request<T>, roles: &[Role], what: &str) -> Result<PeerIdentity, ServiceError> {
    let who = caller(req)?;
    if roles.contains(&who.role) {
        return Ok(who);
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(ServiceError::PermissionDenied {
        message: format!(
            "{what} needs an {} certificate; {who} is not one",
            names.join(" or ")
        ),
        receipt: None,
    })
}

/// The page size a request asks for.
fn page_size(limit: u32) -> Result<usize, ServiceError> {
    match limit as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(invalid(format!(
            "limit {n} is too large: pages hold 1 to {MAX_PAGE} records; follow next_cursor for more"
        ))),
    }
}

fn cursor(token: &str) -> Result<Option<AuditCursor>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    AuditCursor::from_token(token).map(Some).map_err(|e| {
        invalid(format!(
            "cursor: {e}; pass the next_cursor of a previous page"
        ))
    })
}

fn parse_action(s: &str) -> Result<Action, ServiceError> {
    match s {
        "read" => Ok(Action::Read),
        "write" => Ok(Action::Write),
        "query" => Ok(Action::Query),
        other => Err(invalid(format!(
            "action `{other}` is not one of read, write, query"
        ))),
    }
}

fn parse_decision(s: &str) -> Result<Decision, ServiceError> {
    match s {
        "allow" => Ok(Decision::Allow),
        "deny" => Ok(Decision::Deny),
        other => Err(invalid(format!(
            "decision `{other}` is not one of allow, deny"
        ))),
    }
}

fn parse_side(s: &str) -> Result<Side, ServiceError> {
    match s {
        "provider" => Ok(Side::Provider),
        "consumer" => Ok(Side::Consumer),
        other => Err(invalid(format!(
            "side `{other}` is not one of provider, consumer"
        ))),
    }
}

impl AuditService {
    fn subject_key(&self) -> Result<&SubjectKey, ServiceError> {
        self.subject_key.as_ref().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "this node has no subject key for hashing identifiers; its operator must set licenses.subject_key".into(),
            )
        })
    }

    /// The hashes under which the log names the data subject of `identifier` (validated):
    /// its one subject hash, and those that records written before identifiers were folded
    /// may carry for it ([`SubjectKey::lookup`]). A lookup matches a record holding any.
    pub fn subject_hashes(&self, identifier: &str) -> Result<Vec<SubjectHash>, ServiceError> {
        crate::services::license::normalise_holder_id(identifier).map_err(|e| {
            invalid(format!(
                "subject: {}",
                e.to_string().replace("holder_id", "the identifier")
            ))
        })?;
        Ok(self.subject_key()?.lookup(identifier))
    }

    /// Check and convert a request's filter.
    pub fn filters(&self, f: Option<AccessFilter>) -> Result<Filters, ServiceError> {
        let f = f.unwrap_or_default();
        let mut out = Filters {
            since_unix_ms: f.since_unix_ms,
            until_unix_ms: f.until_unix_ms,
            ..Filters::default()
        };
        if let (Some(s), Some(u)) = (f.since_unix_ms, f.until_unix_ms)
            && s >= u
        {
            return Err(invalid(format!(
                "since_unix_ms {s} is not before until_unix_ms {u}: the range is empty"
            )));
        }
        let v = &mut out.filters;
        if !f.consumer.is_empty() {
            v.push(AuditFilter::Consumer(f.consumer.clone()));
        }
        if !f.provider.is_empty() {
            v.push(AuditFilter::Provider(f.provider.clone()));
        }
        if !f.dataset.is_empty() {
            v.push(self.dataset_filter(&f.dataset, &f.provider)?);
        }
        if !f.key.is_empty() {
            v.push(AuditFilter::Key(f.key));
        }
        if !f.action.is_empty() {
            v.push(AuditFilter::Action(parse_action(&f.action)?));
        }
        if !f.decision.is_empty() {
            v.push(AuditFilter::Decision(parse_decision(&f.decision)?));
        }
        if !f.purpose.is_empty() {
            v.push(AuditFilter::Purpose(f.purpose));
        }
        if let Some(p) = f.policy_version {
            v.push(AuditFilter::PolicyVersion(p));
        }
        if !f.subject.is_empty() {
            v.push(AuditFilter::AnySubject(self.subject_hashes(&f.subject)?));
        }
        if !f.subject_hash.is_empty() {
            let h: [u8; 32] = f.subject_hash.as_slice().try_into().map_err(|_| {
                invalid(format!(
                    "subject_hash must be 32 bytes (HMAC-SHA256), got {}",
                    f.subject_hash.len()
                ))
            })?;
            v.push(AuditFilter::Subject(SubjectHash(h)));
        }
        if !f.side.is_empty() {
            v.push(AuditFilter::Side(parse_side(&f.side)?));
        }
        Ok(out)
    }

    /// `owner/dataset`, or a dataset id resolved to its owner.
    fn dataset_filter(&self, dataset: &str, provider: &str) -> Result<AuditFilter, ServiceError> {
        if let Some((owner, ds)) = dataset.split_once('/') {
            if owner.is_empty() || ds.is_empty() {
                return Err(invalid(format!(
                    "dataset `{dataset}`: write it as <owner>/<dataset>, e.g. market-regulation/enterprise-registration"
                )));
            }
            return Ok(AuditFilter::Dataset {
                owner: owner.to_owned(),
                dataset: ds.to_owned(),
            });
        }
        let owner = if !provider.is_empty() {
            provider.to_owned()
        } else {
            let d = self.in_force.directory.load();
            match d.directory.dataset(dataset) {
                Some((owner, _)) => owner.to_owned(),
                None => {
                    return Err(invalid(format!(
                        "dataset `{dataset}` is not in the directory (known: {}); write <owner>/<dataset> to ask about a dataset that is no longer listed",
                        d.directory.dataset_ids()
                    )));
                }
            }
        };
        Ok(AuditFilter::Dataset {
            owner,
            dataset: dataset.to_owned(),
        })
    }

    /// One page of a query.
    pub async fn page(
        &self,
        filters: Filters,
        order: AuditOrder,
        limit: usize,
        after: Option<AuditCursor>,
    ) -> Result<qianlian_raft_store::audit_query::AuditPage, ServiceError> {
        Ok(self
            .notary
            .audit_query(AuditQuery {
                filters: filters.filters,
                since_unix_ms: filters.since_unix_ms,
                until_unix_ms: filters.until_unix_ms,
                order,
                after,
                limit,
            })
            .await?)
    }

    async fn query(
        &self,
        req: Request<QueryAccessesRequest>,
    ) -> Result<QueryAccessesResponse, ServiceError> {
        require(&req, &[Role::Inspector], "querying the access trail")?;
        let r = req.into_inner();
        let filters = self.filters(r.filter)?;
        let order = if r.oldest_first {
            AuditOrder::OldestFirst
        } else {
            AuditOrder::NewestFirst
        };
        let page = self
            .page(filters, order, page_size(r.limit)?, cursor(&r.cursor)?)
            .await?;
        Ok(QueryAccessesResponse {
            entries: page
                .hits
                .iter()
                .map(convert::access_entry)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next.map(|c| c.to_token()).unwrap_or_default(),
            tree_size: page.tree_size,
        })
    }

    /// The accesses to data about the subject a bearer token names, newest first.
    pub async fn my_accesses(
        &self,
        authorization: Option<&str>,
        limit: u32,
        cursor_token: &str,
    ) -> Result<MyAccessesResponse, ServiceError> {
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "this node does not take citizens' tokens; its operator must set audit.token_keys, audit.token_issuer and audit.token_audience".into(),
            )
        })?;
        let token = token::bearer(authorization)
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        let subject = tokens
            .subject(token)
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        let filters = Filters {
            filters: vec![
                AuditFilter::AnySubject(self.subject_hashes(&subject)?),
                AuditFilter::Side(Side::Provider),
            ],
            ..Filters::default()
        };
        let page = self
            .page(
                filters,
                AuditOrder::NewestFirst,
                page_size(limit)?,
                cursor(cursor_token)?,
            )
            .await?;
        let accesses = page
            .hits
            .iter()
            .filter_map(convert::subject_access)
            .collect();
        Ok(MyAccessesResponse {
            accesses,
            next_cursor: page.next.map(|c| c.to_token()).unwrap_or_default(),
            tree_size: page.tree_size,
        })
    }

    fn stream(&self, req: Request<StreamLogRequest>) -> Result<LogStream, ServiceError> {
        require(
            &req,
            &[Role::Inspector, Role::Operator, Role::Node],
            "streaming the log",
        )?;
        let r = req.into_inner();
        let size = self.notary.tree_size();
        let end = if r.end == 0 { size } else { r.end };
        if end > size {
            return Err(invalid(format!(
                "end {end} is beyond the log (size {size}); ask for at most {size}, or 0 for all"
            )));
        }
        if r.start > end {
            return Err(invalid(format!(
                "start {} is after end {end}: nothing to stream",
                r.start
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let notary = self.notary.clone();
        tokio::spawn(async move {
            let mut next = r.start;
            while next < end {
                let max = STREAM_CHUNK.min((end - next) as usize);
                let chunk = match notary.entries(next, max).await {
                    Ok(records) if !records.is_empty() => LogChunk {
                        first_index: next,
                        tree_size: end,
                        records,
                    },
                    Ok(_) => {
                        let _ = tx
                            .send(Err(ServiceError::Inconsistent(format!(
                                "log index {next} is missing below the log size"
                            ))
                            .into()))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ServiceError::from(e).into())).await;
                        return;
                    }
                };
                next += chunk.records.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query_accesses(
        &self,
        request: Request<QueryAccessesRequest>,
    ) -> Result<Response<QueryAccessesResponse>, Status> {
        Ok(Response::new(self.query(request).await?))
    }

    async fn my_accesses(
        &self,
        request: Request<MyAccessesRequest>,
    ) -> Result<Response<MyAccessesResponse>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let r = request.into_inner();
        Ok(Response::new(
            AuditService::my_accesses(self, auth.as_deref(), r.limit, &r.cursor).await?,
        ))
    }

    async fn export_evidence(
        &self,
        request: Request<ExportEvidenceRequest>,
    ) -> Result<Response<ExportEvidenceResponse>, Status> {
        require(&request, &[Role::Inspector], "exporting evidence")?;
        Ok(Response::new(
            self.evidence_bundle(request.into_inner()).await?,
        ))
    }

    type StreamLogStream = LogStream;

    async fn stream_log(
        &self,
        request: Request<StreamLogRequest>,
    ) -> Result<Response<LogStream>, Status> {
        Ok(Response::new(self.stream(request)?))
    }
}

/// One access to a subject's data as JSON, as the HTTP view and `audit mine` write it.
pub fn access_json(a: &SubjectAccess) -> serde_json::Value {
    serde_json::json!({
        "log_index": a.log_index,
        "record_hash": hex::encode(&a.record_hash),
        "time_unix_ms": a.time_unix_ms,
        "consumer": a.consumer,
        "provider": a.provider,
        "dataset": a.dataset,
        "action": a.action,
        "purpose": a.purpose,
        "decision": a.decision,
        "fields": a.fields,
    })
}

/// Query string of `GET /v1/audit/my-accesses`.
#[derive(Debug, serde::Deserialize)]
struct MyAccessesQuery {
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    cursor: String,
}

async fn http_my_accesses(
    axum::extract::State(service): axum::extract::State<AuditService>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<MyAccessesQuery>, axum::extract::rejection::QueryRejection>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    let err = |code: StatusCode, m: String| (code, axum::Json(serde_json::json!({ "error": m })));
    let q = match query {
        Ok(q) => q.0,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("query string: {e}; use ?limit=N&cursor=C"),
            );
        }
    };
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match service.my_accesses(auth, q.limit, &q.cursor).await {
        Ok(r) => {
            let accesses: Vec<serde_json::Value> = r.accesses.iter().map(access_json).collect();
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({
                    "accesses": accesses,
                    "next_cursor": r.next_cursor,
                    "tree_size": r.tree_size,
                })),
            )
        }
        Err(e) => {
            let code = match &e {
                ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                ServiceError::FailedPrecondition(_) | ServiceError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = match e {
                ServiceError::Internal(m) => {
                    tracing::error!(error = %m, "internal error");
                    "internal error in the gateway".to_owned()
                }
                other => other.to_string(),
            };
            err(code, message)
        }
    }
}

/// The path of the citizen view over HTTP/JSON.
pub const HTTP_MY_ACCESSES_PATH: &str = "/v1/audit/my-accesses";

/// `GET /v1/audit/my-accesses`: the citizen view over HTTP/JSON.
pub fn http_routes(service: AuditService) -> axum::Router {
    axum::Router::new()
        .route(HTTP_MY_ACCESSES_PATH, axum::routing::get(http_my_accesses))
        .with_state(service)
}
