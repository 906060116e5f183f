//! What the node's ports serve: the gRPC services, health, reflection and the HTTP/JSON routes
//! on the main port; the Raft RPCs (node certificates only) there too, or on a port of their
//! own with `[raft] listen`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use qianlian_proto::v1::admin_server::AdminServer;
use qianlian_proto::v1::audit_server::AuditServer;
use qianlian_proto::v1::catalog_server::CatalogServer;
use qianlian_proto::v1::exchange_server::ExchangeServer;
use qianlian_proto::v1::licenses_server::LicensesServer;
use qianlian_proto::v1::notary_server::NotaryServer;
use qianlian_raft_store::network::CallingNode;
use qianlian_raft_store::notary::Notary;
use tonic::service::Routes;
use tonic::{Request, Status};
use tonic_health::pb::health_server::{Health, HealthServer};

use super::assembly::Services;
use super::error::StartError;
use crate::domain::identity::Role;
use crate::node::config::Limits;
use crate::node::metrics::KnownPaths;
use crate::node::tls::{ConnInfo, TlsState};
use crate::services::notary::NotaryService;

/// Largest gRPC message accepted: the payload limit plus room for the envelope.
fn max_message(limits: &Limits) -> usize {
    limits.max_payload_bytes + 64 * 1024
}

/// Raft RPCs are for gateway nodes only. The node certificate's name, member id and department
/// go to the Raft service, which serves only current members in their own name.
#[allow(clippy::result_large_err)]
fn nodes_only(mut req: Request<()>) -> Result<Request<()>, Status> {
    match req.extensions().get::<ConnInfo>().map(|c| &c.peer) {
        Some(Some(Ok(id))) if id.role == Role::Node => {
            let caller = CallingNode {
                name: id.department.clone(),
                member_id: CallingNode::member_id_of(&id.department),
                department: id.node_department.clone(),
            };
            req.extensions_mut().insert(caller);
            Ok(req)
        }
        Some(Some(Ok(id))) => Err(Status::permission_denied(format!(
            "Raft traffic is for gateway nodes; {id} is not a node certificate"
        ))),
        _ => Err(Status::unauthenticated(
            "Raft traffic needs a node client certificate",
        )),
    }
}

/// The paths [`routes`] serves, for request metrics: the methods of every gRPC service
/// (from their descriptors) and the HTTP routes.
pub(super) fn known_paths() -> KnownPaths {
    let [livez, readyz] = crate::node::health::HTTP_PATHS;
    KnownPaths::new(
        &[
            qianlian_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ],
        &[
            crate::services::license::HTTP_VERIFY_PATH,
            crate::services::audit::HTTP_MY_ACCESSES_PATH,
            crate::services::catalog::HTTP_CATALOG_PATH,
            livez,
            readyz,
        ],
    )
}

/// A check made on every call before the service sees it.
type Gate = fn(Request<()>) -> Result<Request<()>, Status>;

/// The Raft service behind its gate.
pub(super) type RaftRoutes = tonic::service::interceptor::InterceptedService<
    qianlian_proto::v1::raft_server::RaftServer<qianlian_raft_store::network::RaftService>,
    Gate,
>;

/// The Raft RPCs, for node certificates only.
pub(super) fn raft_service(notary: &Notary) -> RaftRoutes {
    tonic::service::interceptor::InterceptedService::new(notary.raft_service(), nodes_only as _)
}

/// Every service of the main port but Raft's; `ready` answers the HTTP readiness probe;
/// reflection only when `reflection` (config `grpc_reflection`).
pub(super) fn routes(
    services: Services,
    notary: &Notary,
    health: HealthServer<impl Health>,
    ready: Arc<AtomicBool>,
    tls: Arc<TlsState>,
    limits: &Limits,
    reflection: bool,
) -> Result<Routes, StartError> {
    let Services {
        exchange,
        licenses,
        admin,
        audit,
        catalog,
    } = services;
    let max = max_message(limits);
    let reflection = reflection
        .then(|| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(qianlian_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| StartError::Reflection(e.to_string()))
        })
        .transpose()?;
    // gRPC services and the HTTP/JSON routes share one port.
    let http = crate::services::license::http_routes(licenses.clone())
        .merge(crate::services::audit::http_routes(audit.clone()))
        .merge(crate::services::catalog::http_routes(catalog.clone()))
        .merge(crate::node::health::http_routes(ready, tls));
    let mut routes = Routes::from(http).add_service(health);
    if let Some(reflection) = reflection {
        routes = routes.add_service(reflection);
    }
    Ok(routes
        .add_service(
            ExchangeServer::new(exchange)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(NotaryServer::new(NotaryService {
            notary: notary.clone(),
        }))
        .add_service(AdminServer::new(admin))
        .add_service(
            AuditServer::new(audit)
                .max_encoding_message_size(crate::services::audit::evidence::MAX_BUNDLE_BYTES),
        )
        .add_service(LicensesServer::new(licenses))
        .add_service(CatalogServer::new(catalog)))
}
