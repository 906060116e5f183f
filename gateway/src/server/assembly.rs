//! The gRPC services of a node, built from its configuration and its open storage.

use std::collections::HashMap;
use std::sync::Arc;

use qianlian_raft_store::notary::Notary;

use super::error::{StartError, read_to_string};
use super::local::LocalConfiguration;
use crate::domain::directory::Directory;
use crate::domain::subject::SubjectKey;
use crate::node::cluster_config::InForce;
use crate::node::config::NodeConfig;
use crate::node::forward::{Forwarder, HttpAdapter};
use crate::node::metrics::Metrics;
use crate::node::records::RecordStore;
use crate::node::tls;
use crate::services::admin::AdminService;
use crate::services::audit::AuditService;
use crate::services::audit::token::TokenVerifier;
use crate::services::catalog::CatalogService;
use crate::services::exchange::ExchangeService;
use crate::services::license::LicenseService;

/// The services a node serves, besides the log's own.
#[derive(Debug)]
pub(super) struct Services {
    pub exchange: ExchangeService,
    pub licenses: LicenseService,
    pub admin: AdminService,
    pub audit: AuditService,
    pub catalog: CatalogService,
}

impl Services {
    /// Check every file the services need now, so a bad one stops the node with its path.
    pub fn assemble(
        config: &NodeConfig,
        local: LocalConfiguration,
        store: RecordStore,
        notary: &Notary,
        metrics: Option<Arc<Metrics>>,
        node_key: &qianlian_verifier::ed25519_dalek::SigningKey,
    ) -> Result<Services, StartError> {
        let in_force = local.in_force;
        // One identity provider for citizens: `audit mine` and license watches.
        let tokens = TokenVerifier::from_settings(&config.audit)?.map(Arc::new);
        let licenses = license_service(config, notary, &in_force, &local.directory, &tokens)?;
        // One seal for everything this node writes for a department.
        let seal = Arc::new(crate::node::seal::NodeSeal::new(
            node_key.verifying_key().to_bytes(),
            in_force.directory.clone(),
        ));
        let catalog = CatalogService {
            notary: notary.clone(),
            in_force: in_force.clone(),
            seal: seal.clone(),
        };
        let exchange = ExchangeService {
            metrics,
            in_force: in_force.clone(),
            store,
            notary: notary.clone(),
            limits: config.limits,
            department: config.gateway.department.clone(),
            forwarder: forwarder(config)?,
            adapters: adapters(config)?,
            subject_key: licenses.subject_key.clone(),
            seal: Some(seal),
        };
        let audit = AuditService {
            notary: notary.clone(),
            in_force: in_force.clone(),
            subject_key: exchange.subject_key.clone(),
            tokens,
            trust_node_keys: licenses.trust_node_keys.clone(),
            min_cosigners: licenses.min_cosigners,
        };
        let admin = AdminService {
            notary: notary.clone(),
            in_force,
            local_policy: Some(local.policy_texts),
            local_directory: local.directory_text,
        };
        Ok(Services {
            exchange,
            licenses,
            admin,
            audit,
            catalog,
        })
    }
}

/// The HTTP/JSON backends of `[[gateway.adapter]]`, by dataset, each with its CA bundle read.
fn adapters(config: &NodeConfig) -> Result<HashMap<String, HttpAdapter>, StartError> {
    let mut out = HashMap::new();
    for a in &config.gateway.adapters {
        let ca = match &a.ca {
            Some(p) => tls::load_certs(p)?,
            None => Vec::new(),
        };
        let adapter = HttpAdapter::new(&a.url, config.gateway.forward_timeout, &ca)?;
        out.insert(a.dataset.clone(), adapter);
    }
    Ok(out)
}

/// The license service from the `[licenses]` settings; the departments it issues for are
/// looked up in the local `directory`.
fn license_service(
    config: &NodeConfig,
    notary: &Notary,
    in_force: &InForce,
    directory: &Directory,
    tokens: &Option<Arc<TokenVerifier>>,
) -> Result<LicenseService, StartError> {
    let l = &config.licenses;
    let mut signing_keys = std::collections::HashMap::new();
    for p in &l.signing_keys {
        let key = crate::node::pki::read_license_key(p)
            .map_err(|e| StartError::License(e.to_string()))?;
        let public = key.verifying_key();
        let dept = directory
            .department
            .iter()
            .find(|e| e.keys.iter().any(|k| k.public_key == public.as_bytes()))
            .ok_or_else(|| {
                StartError::License(format!(
                    "{}: this key is not in the department directory (licenses.directory); run `qianlian pki init` for the department or fix the path",
                    p.display()
                ))
            })?;
        let key_id = crate::node::pki::license_key_id(&dept.id, &public);
        signing_keys.insert(dept.id.clone(), (key, key_id));
    }
    let subject_key = match &l.subject_key {
        Some(p) => {
            let text = read_to_string(p)?;
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    StartError::License(format!(
                        "{}: a subject key is 64 hex digits (licenses.subject_key)",
                        p.display()
                    ))
                })?;
            Some(SubjectKey::new(bytes))
        }
        None => None,
    };
    let mut trust_node_keys = Vec::new();
    for p in &l.trust_node_keys {
        let text = read_to_string(p)?;
        qianlian_verifier::NoteVerifier::from_vkey(text.trim()).map_err(|e| {
            StartError::License(format!("{}: not a node verifier key: {e}", p.display()))
        })?;
        trust_node_keys.push(text.trim().to_owned());
    }
    Ok(LicenseService {
        notary: notary.clone(),
        policy: in_force.policy.clone(),
        directory: in_force.directory.clone(),
        signing_keys: Arc::new(signing_keys),
        subject_key,
        trust_node_keys,
        min_cosigners: l.min_cosigners,
        verified: Arc::new(qianlian_verifier::license::VerifiedLicenses::new(
            crate::services::license::VERIFIED_LICENSES,
        )),
        evidence_cache: Arc::default(),
        tokens: tokens.clone(),
    })
}

/// How requests for other departments' data reach their gateways: with the department's
/// client certificate (`[gateway]`), if set.
fn forwarder(config: &NodeConfig) -> Result<Option<Arc<Forwarder>>, StartError> {
    let (Some(cert), Some(key)) = (&config.gateway.client_cert, &config.gateway.client_key) else {
        return Ok(None);
    };
    // The CRLs are checked when the TLS state loads; here they are only read.
    let ca = tls::load_certs(&config.tls.ca)?;
    let crls = match &config.tls.crl {
        Some(p) => crate::node::crl::CrlSet::load(p, &ca)
            .map_err(tls::TlsError::from)?
            .ders(),
        None => Vec::new(),
    };
    Ok(Some(Arc::new(Forwarder::new(
        &ca,
        tls::load_certs(cert)?,
        tls::load_key(key)?,
        crls,
        config.gateway.forward_timeout,
        config.trust_domain.clone(),
    )?)))
}
