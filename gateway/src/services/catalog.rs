//! The Catalog service: each department publishes the catalog entries of the datasets it owns,
//! and every department and inspector reads them.
//!
//! Who may do what:
//! - publish: a department certificate, for a dataset the directory in force lists under that
//!   department, at a node the directory lists as one of that department's gateways (the entry
//!   is sealed by the gateway's key, and every node checks that seal, the ownership and the
//!   version again when it applies the record); operators, inspectors, nodes and other
//!   departments are refused, and so is a version that does not follow the one in force;
//! - list and read: any department or inspector certificate; anonymous callers are refused.

use std::sync::Arc;

use qianlian_proto::v1::catalog_server::Catalog as CatalogApi;
use qianlian_proto::v1::{
    CatalogEntry as WireEntry, CatalogEntryView, CatalogField as WireField, GetEntryRequest,
    ListEntriesRequest, ListEntriesResponse, PublishEntryRequest,
};
use qianlian_raft_store::notary::Notary;
use qianlian_raft_store::record::Record;
use qianlian_verifier::record::{
    CatalogEntry, CatalogField, FieldClass, GovernanceRecord, GovernanceStep, SharingClass,
    UpdateFrequency,
};
use tonic::{Request, Response, Status};

use crate::domain::identity::{PeerIdentity, Role};
use crate::node::cluster_config::InForce;
use crate::node::seal::NodeSeal;
use crate::services::error::{ServiceError, caller};

/// gRPC face of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogService {
    pub notary: Notary,
    pub in_force: InForce,
    pub seal: Arc<NodeSeal>,
}

fn readers_only(who: &PeerIdentity) -> Result<(), ServiceError> {
    match who.role {
        Role::Department | Role::Inspector => Ok(()),
        Role::Operator | Role::Node => Err(ServiceError::PermissionDenied {
            message: format!(
                "the catalog is read with a department or inspector certificate; {} certificates cannot read it",
                who.role.as_str()
            ),
            receipt: None,
        }),
    }
}

impl CatalogService {
    async fn publish(
        &self,
        req: Request<PublishEntryRequest>,
    ) -> Result<CatalogEntryView, ServiceError> {
        let who = caller(&req)?;
        if who.role != Role::Department {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "only the department that owns a dataset publishes its catalog entry, with its department certificate; {} certificates cannot publish",
                    who.role.as_str()
                ),
                receipt: None,
            });
        }
        let wire = req.into_inner().entry.ok_or_else(|| {
            ServiceError::InvalidArgument(
                "`entry` is required: the catalog entry to publish".into(),
            )
        })?;
        let entry = from_wire(wire)?;
        let department = who.department.clone();
        {
            let in_force = self.in_force.directory.load();
            match in_force.directory.dataset(&entry.dataset) {
                Some((owner, _)) if owner == department => {}
                Some((owner, _)) => {
                    return Err(ServiceError::PermissionDenied {
                        message: format!(
                            "dataset `{}` belongs to {owner}: only its owner publishes its catalog entry",
                            entry.dataset
                        ),
                        receipt: None,
                    });
                }
                None => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "no dataset `{}` in the directory in force; the datasets are: {}",
                        entry.dataset,
                        in_force.directory.dataset_ids()
                    )));
                }
            }
        }
        if self.seal.originator(&department).is_none() {
            return Err(ServiceError::FailedPrecondition(format!(
                "this node is not a gateway of {department} in the directory in force: publish through your department's own gateway, whose key seals the entry"
            )));
        }
        let in_force = self.notary.catalog_version(&entry.dataset).await?;
        if entry.version != in_force + 1 {
            return Err(ServiceError::FailedPrecondition(format!(
                "version {} of `{}` does not follow version {in_force} in force: publish version {}",
                entry.version,
                entry.dataset,
                in_force + 1
            )));
        }
        let record = GovernanceRecord {
            time_unix_ms: crate::node::time::now_ms(),
            department: department.clone(),
            step: GovernanceStep::Catalog(entry),
        };
        record
            .check()
            .map_err(|e| ServiceError::InvalidArgument(format!("catalog entry: {e}")))?;
        let receipt = self
            .seal
            .append(
                &self.notary,
                Record::Governance(record.clone()),
                &department,
            )
            .await?;
        Ok(view(
            receipt.log_index,
            &record,
            receipt.record_hash.to_vec(),
        ))
    }

    async fn list(
        &self,
        req: Request<ListEntriesRequest>,
    ) -> Result<ListEntriesResponse, ServiceError> {
        readers_only(&caller(&req)?)?;
        let entries = self
            .notary
            .catalog()
            .await?
            .iter()
            .map(|(index, hash, record)| view(*index, record, hash.to_vec()))
            .collect();
        Ok(ListEntriesResponse { entries })
    }

    async fn get(&self, req: Request<GetEntryRequest>) -> Result<CatalogEntryView, ServiceError> {
        readers_only(&caller(&req)?)?;
        let dataset = &req.get_ref().dataset;
        self.notary
            .catalog()
            .await?
            .iter()
            .find(|(_, _, r)| r.dataset() == dataset)
            .map(|(index, hash, record)| view(*index, record, hash.to_vec()))
            .ok_or_else(|| ServiceError::NotFound {
                message: format!(
                    "no catalog entry for `{dataset}`: its owner has not published one"
                ),
                receipt: None,
            })
    }
}

fn view(log_index: u64, record: &GovernanceRecord, leaf_hash: Vec<u8>) -> CatalogEntryView {
    let GovernanceStep::Catalog(entry) = &record.step;
    CatalogEntryView {
        entry: Some(to_wire(entry)),
        owner: record.department.clone(),
        log_index,
        leaf_hash,
        time_unix_ms: record.time_unix_ms,
    }
}

/// The names of the classification, sharing and frequency values, as the API spells them.
pub fn class_name(c: FieldClass) -> &'static str {
    match c {
        FieldClass::Public => "public",
        FieldClass::Internal => "internal",
        FieldClass::Personal => "personal",
        FieldClass::Sensitive => "sensitive",
    }
}

pub fn sharing_name(s: SharingClass) -> &'static str {
    match s {
        SharingClass::Unconditional => "unconditional",
        SharingClass::Conditional => "conditional",
        SharingClass::NotShared => "not-shared",
    }
}

pub fn frequency_name(f: UpdateFrequency) -> &'static str {
    match f {
        UpdateFrequency::RealTime => "real-time",
        UpdateFrequency::Daily => "daily",
        UpdateFrequency::Weekly => "weekly",
        UpdateFrequency::Monthly => "monthly",
        UpdateFrequency::Quarterly => "quarterly",
        UpdateFrequency::Yearly => "yearly",
        UpdateFrequency::Irregular => "irregular",
    }
}

fn parse<T: Copy>(
    what: &str,
    value: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, ServiceError> {
    all.iter()
        .copied()
        .find(|v| name(*v) == value)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            ServiceError::InvalidArgument(format!(
                "{what} `{value}` is not one of: {}",
                names.join(", ")
            ))
        })
}

const CLASSES: [FieldClass; 4] = [
    FieldClass::Public,
    FieldClass::Internal,
    FieldClass::Personal,
    FieldClass::Sensitive,
];
const SHARING: [SharingClass; 3] = [
    SharingClass::Unconditional,
    SharingClass::Conditional,
    SharingClass::NotShared,
];
const FREQUENCIES: [UpdateFrequency; 7] = [
    UpdateFrequency::RealTime,
    UpdateFrequency::Daily,
    UpdateFrequency::Weekly,
    UpdateFrequency::Monthly,
    UpdateFrequency::Quarterly,
    UpdateFrequency::Yearly,
    UpdateFrequency::Irregular,
];

/// A catalog entry from the wire, its enumerated values checked (the rest is checked with
/// the record).
pub fn from_wire(w: WireEntry) -> Result<CatalogEntry, ServiceError> {
    let fields = w
        .fields
        .into_iter()
        .map(|f| {
            Ok(CatalogField {
                class: parse(
                    &format!("field `{}`: classification", f.name),
                    &f.classification,
                    &CLASSES,
                    class_name,
                )?,
                name: f.name,
                shareable: f.shareable,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(CatalogEntry {
        dataset: w.dataset,
        version: w.version,
        title_zh: w.title_zh,
        title_en: w.title_en,
        description: w.description,
        fields,
        sharing: parse("sharing", &w.sharing, &SHARING, sharing_name)?,
        purposes: w.purposes,
        update_frequency: parse(
            "update_frequency",
            &w.update_frequency,
            &FREQUENCIES,
            frequency_name,
        )?,
        legal_basis: w.legal_basis,
    })
}

/// A catalog entry for the wire.
pub fn to_wire(e: &CatalogEntry) -> WireEntry {
    WireEntry {
        dataset: e.dataset.clone(),
        version: e.version,
        title_zh: e.title_zh.clone(),
        title_en: e.title_en.clone(),
        description: e.description.clone(),
        fields: e
            .fields
            .iter()
            .map(|f| WireField {
                name: f.name.clone(),
                classification: class_name(f.class).into(),
                shareable: f.shareable,
            })
            .collect(),
        sharing: sharing_name(e.sharing).into(),
        purposes: e.purposes.clone(),
        update_frequency: frequency_name(e.update_frequency).into(),
        legal_basis: e.legal_basis.clone(),
    }
}

#[tonic::async_trait]
impl CatalogApi for CatalogService {
    async fn publish_entry(
        &self,
        req: Request<PublishEntryRequest>,
    ) -> Result<Response<CatalogEntryView>, Status> {
        Ok(Response::new(self.publish(req).await?))
    }

    async fn list_entries(
        &self,
        req: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        Ok(Response::new(self.list(req).await?))
    }

    async fn get_entry(
        &self,
        req: Request<GetEntryRequest>,
    ) -> Result<Response<CatalogEntryView>, Status> {
        Ok(Response::new(self.get(req).await?))
    }
}

/// The HTTP/JSON paths of the catalog.
pub const HTTP_CATALOG_PATH: &str = "/v1/catalog";
pub const HTTP_CATALOG_ENTRY_PATH: &str = "/v1/catalog/{dataset}";

/// A catalog entry as a department writes it: in JSON over HTTP (as `qianlian catalog show`
/// prints it, less what the log adds) or in TOML for `qianlian catalog publish` (one `[[field]]`
/// table per field). Lists may come in any order.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryDocument {
    pub dataset: String,
    /// The next version after the entry in force; the CLI looks it up when it is left out.
    pub version: Option<u64>,
    pub title_zh: String,
    pub title_en: String,
    pub description: String,
    pub sharing: String,
    #[serde(default)]
    pub purposes: Vec<String>,
    pub update_frequency: String,
    pub legal_basis: String,
    #[serde(default, alias = "field")]
    pub fields: Vec<FieldDocument>,
}

/// One field of an [`EntryDocument`].
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDocument {
    pub name: String,
    pub class: String,
    #[serde(default)]
    pub shareable: bool,
}

impl EntryDocument {
    /// The entry for the wire as version `version`, its fields sorted by name and its purposes
    /// sorted without repeats (the order the record requires).
    pub fn into_wire(self, version: u64) -> WireEntry {
        let mut fields: Vec<WireField> = self
            .fields
            .into_iter()
            .map(|f| WireField {
                name: f.name,
                classification: f.class,
                shareable: f.shareable,
            })
            .collect();
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        let mut purposes = self.purposes;
        purposes.sort();
        purposes.dedup();
        WireEntry {
            dataset: self.dataset,
            version,
            title_zh: self.title_zh,
            title_en: self.title_en,
            description: self.description,
            fields,
            sharing: self.sharing,
            purposes,
            update_frequency: self.update_frequency,
            legal_basis: self.legal_basis,
        }
    }
}

/// A catalog entry view as JSON.
pub fn view_json(v: &CatalogEntryView) -> serde_json::Value {
    let e = v.entry.clone().unwrap_or_default();
    let fields: Vec<serde_json::Value> = e
        .fields
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "class": f.classification,
                "shareable": f.shareable,
            })
        })
        .collect();
    serde_json::json!({
        "dataset": e.dataset,
        "version": e.version,
        "owner": v.owner,
        "title_zh": e.title_zh,
        "title_en": e.title_en,
        "description": e.description,
        "sharing": e.sharing,
        "purposes": e.purposes,
        "update_frequency": e.update_frequency,
        "legal_basis": e.legal_basis,
        "fields": fields,
        "log_index": v.log_index,
        "leaf_hash": hex::encode(&v.leaf_hash),
        "time_unix_ms": v.time_unix_ms,
    })
}

type JsonAnswer = (axum::http::StatusCode, axum::Json<serde_json::Value>);

/// A gRPC-shaped request carrying the HTTP request's connection (and with it the caller's
/// certificate identity).
fn with_conn<T>(message: T, conn: Option<crate::node::tls::ConnInfo>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(conn) = conn {
        req.extensions_mut().insert(conn);
    }
    req
}

fn answer(result: Result<serde_json::Value, ServiceError>) -> JsonAnswer {
    match result {
        Ok(v) => (axum::http::StatusCode::OK, axum::Json(v)),
        Err(e) => crate::services::error::http_error(e),
    }
}

async fn http_list(
    axum::extract::State(service): axum::extract::State<CatalogService>,
    conn: Option<axum::Extension<crate::node::tls::ConnInfo>>,
) -> JsonAnswer {
    let req = with_conn(ListEntriesRequest {}, conn.map(|c| c.0));
    answer(service.list(req).await.map(
        |r| serde_json::json!({ "entries": r.entries.iter().map(view_json).collect::<Vec<_>>() }),
    ))
}

async fn http_get(
    axum::extract::State(service): axum::extract::State<CatalogService>,
    axum::extract::Path(dataset): axum::extract::Path<String>,
    conn: Option<axum::Extension<crate::node::tls::ConnInfo>>,
) -> JsonAnswer {
    let req = with_conn(GetEntryRequest { dataset }, conn.map(|c| c.0));
    answer(service.get(req).await.map(|v| view_json(&v)))
}

async fn http_publish(
    axum::extract::State(service): axum::extract::State<CatalogService>,
    conn: Option<axum::Extension<crate::node::tls::ConnInfo>>,
    body: Result<axum::Json<EntryDocument>, axum::extract::rejection::JsonRejection>,
) -> JsonAnswer {
    let document = match body {
        Ok(axum::Json(e)) => e,
        Err(rejection) => {
            return crate::services::error::http_error(ServiceError::InvalidArgument(format!(
                "the body must be a catalog entry in JSON (dataset, version, title_zh, title_en, description, sharing, purposes, update_frequency, legal_basis, fields): {}",
                rejection.body_text()
            )));
        }
    };
    let Some(version) = document.version else {
        return crate::services::error::http_error(ServiceError::InvalidArgument(
            "`version` is required: one more than the entry in force (GET /v1/catalog/{dataset}), 1 for the first".into(),
        ));
    };
    let entry = document.into_wire(version);
    let req = with_conn(
        PublishEntryRequest { entry: Some(entry) },
        conn.map(|c| c.0),
    );
    answer(service.publish(req).await.map(|v| view_json(&v)))
}

/// `GET /v1/catalog`, `GET /v1/catalog/{dataset}` and `POST /v1/catalog`: the catalog over
/// HTTP/JSON, with the same certificates and checks as over gRPC.
pub fn http_routes(service: CatalogService) -> axum::Router {
    axum::Router::new()
        .route(
            HTTP_CATALOG_PATH,
            axum::routing::get(http_list).post(http_publish),
        )
        .route(HTTP_CATALOG_ENTRY_PATH, axum::routing::get(http_get))
        .with_state(service)
}
