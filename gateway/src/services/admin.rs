//! The Admin service: Raft membership and the cluster's replicated configuration (policy and
//! directory), for operator certificates only.
//!
//! Membership and configuration changes run on the leader. A node that is not the leader
//! refuses with FAILED_PRECONDITION and names the leader in the `x-qianlian-leader` metadata,
//! which the CLI follows once. A configuration record is thus appended by the leader from the
//! operator's own call, whose operator certificate the leader checked: the leader refuses
//! configuration records forwarded by a department's node.
//!
//! Once the directory in force lists operator keys, a change must also carry the signatures of
//! operators (`signed_record`, made by the CLI with the operators' keys); every node checks
//! them before the change applies, so neither the leader nor a stolen operator certificate
//! alone can change the configuration. A membership change is recorded the same way (from which
//! membership to which) before Raft makes it, and every node lets the Raft change into its log
//! only as the recorded step (`qianlian_raft_store::network` membership gate).

use std::collections::{BTreeMap, BTreeSet};

use qianlian_proto::v1::admin_server::Admin;
use qianlian_proto::v1::{
    AddLearnerRequest, ApplyDirectoryRequest, ApplyPolicyRequest, ClusterStatus, ConfigDocument,
    ConfigVersion, GetConfigRequest, InitClusterRequest, NodeRequest, StatusRequest,
};
use qianlian_raft_store::notary::{Notary, NotaryError, UnavailableReason};
use qianlian_raft_store::record::{Caller, ConfigChange, ConfigKind, MemberSet, Record};
use tonic::{Request, Response, Status};

use crate::domain::identity::{PeerIdentity, Role};
use crate::services::convert;
use crate::services::error::{ServiceError, caller};

/// gRPC face of cluster membership and configuration.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub notary: Notary,
    pub in_force: crate::node::cluster_config::InForce,
    /// The node's local policy (model, rules) and directory text, appended to the log when the
    /// cluster is initialised from this node.
    pub local_policy: Option<(String, String)>,
    pub local_directory: Option<String>,
}

/// How long an apply waits for this node to switch to the new version.
const SWITCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn operator<T>(req: &Request<T>) -> Result<PeerIdentity, ServiceError> {
    let who = caller(req)?;
    if who.role != Role::Operator {
        return Err(ServiceError::PermissionDenied {
            message: format!(
                "cluster administration needs an operator certificate; {who} is not an operator"
            ),
            receipt: None,
        });
    }
    Ok(who)
}

fn as_caller(who: &PeerIdentity) -> Caller {
    Caller {
        department: who.department.clone(),
        role: who.role.as_str().to_owned(),
        cert_fingerprint: who.fingerprint_hex(),
    }
}

fn kind_of(name: &str) -> Result<ConfigKind, ServiceError> {
    ConfigKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "unknown config kind `{name}`; use policy, directory or membership"
            ))
        })
}

fn check_address(addr: &str) -> Result<(), ServiceError> {
    if !addr.starts_with("https://") || addr.len() <= "https://".len() {
        return Err(ServiceError::InvalidArgument(format!(
            "member address `{addr}` must be an https:// URL the other nodes can reach, e.g. https://10.0.0.7:7400"
        )));
    }
    Ok(())
}

fn check_node_id(id: u64) -> Result<(), ServiceError> {
    if id == 0 {
        return Err(ServiceError::InvalidArgument("node ids start at 1".into()));
    }
    Ok(())
}

/// Map a membership error: a non-leader names the leader so the caller can go there.
fn membership_error(e: NotaryError) -> ServiceError {
    if let NotaryError::Unavailable(u) = &e
        && u.reason == UnavailableReason::NotLeader
    {
        return ServiceError::NotLeader {
            message: format!(
                "this node is not the leader ({u}); send membership changes to the leader"
            ),
            leader: u.leader.as_ref().and_then(|l| l.addr.clone()),
        };
    }
    match e {
        NotaryError::Membership(m) => ServiceError::FailedPrecondition(m),
        other => ServiceError::from(other),
    }
}

impl AdminService {
    fn cluster_status(&self) -> ClusterStatus {
        convert::cluster_status(&self.notary.status())
    }

    /// Refuse on a follower before trying, so the caller gets the leader's address at once.
    fn require_leader(&self, what: &str) -> Result<(), ServiceError> {
        let s = self.notary.status();
        if s.leader == Some(s.node_id) {
            return Ok(());
        }
        let addr = s
            .leader
            .and_then(|l| s.voters.get(&l).or_else(|| s.learners.get(&l)).cloned());
        let message = match (s.leader, &addr) {
            (Some(l), Some(a)) => format!(
                "node {} is not the leader; node {l} at {a} is: send {what} there",
                s.node_id
            ),
            _ => format!(
                "node {} is not the leader and no leader is known; retry when the cluster has elected one",
                s.node_id
            ),
        };
        Err(ServiceError::NotLeader {
            message,
            leader: addr,
        })
    }

    async fn init(
        &self,
        request: Request<InitClusterRequest>,
    ) -> Result<ClusterStatus, ServiceError> {
        let who = operator(&request)?;
        let req = request.into_inner();
        if req.members.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "name at least one member: --node <id>=https://<host>:<port>".into(),
            ));
        }
        let mut members = BTreeMap::new();
        for m in &req.members {
            check_node_id(m.node_id)?;
            check_address(&m.address)?;
            if members.insert(m.node_id, m.address.clone()).is_some() {
                return Err(ServiceError::InvalidArgument(format!(
                    "node {} is named twice",
                    m.node_id
                )));
            }
        }
        if !members.contains_key(&self.notary.status().node_id) {
            return Err(ServiceError::InvalidArgument(format!(
                "the node receiving InitCluster (node {}) must be one of the members",
                self.notary.status().node_id
            )));
        }
        self.notary
            .initialize(members)
            .await
            .map_err(membership_error)?;
        let _ = self
            .notary
            .wait_for_leader(std::time::Duration::from_secs(10))
            .await;
        tracing::info!("cluster initialised");
        crate::node::cluster_config::seed(
            &self.notary,
            as_caller(&who),
            self.local_policy.clone(),
            self.local_directory.clone(),
        )
        .await?;
        Ok(self.cluster_status())
    }

    /// The membership in force, as a member set.
    fn members(&self) -> MemberSet {
        let s = self.notary.status();
        MemberSet::new(
            s.voters.clone().into_iter().chain(s.learners.clone()),
            s.voters.keys().copied(),
        )
    }

    /// Record the membership change from the membership in force to `to` (as operators signed
    /// it in `signed_record`, or unsigned where no operator keys are in force) and wait until
    /// this node applied it. Only then may the Raft change follow: every node lets it into its
    /// log only as the step this record names.
    async fn record_membership(
        &self,
        who: &PeerIdentity,
        from: MemberSet,
        to: MemberSet,
        signed_record: &[u8],
    ) -> Result<(), ServiceError> {
        let record = match Self::signed_or_unsigned(who, ConfigKind::Membership, signed_record)? {
            Some((record, ConfigChange::Membership { from: f, to: t })) => {
                if f != from || t != to {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "the signed change goes from [{f}] to [{t}], but this request changes [{from}] to [{to}]; nothing changed: sign the change against the membership in force (`qianlian cluster status`)"
                    )));
                }
                record
            }
            Some(_) => {
                return Err(ServiceError::InvalidArgument(
                    "signed_record is not a membership change".into(),
                ));
            }
            None => crate::node::cluster_config::config_record(
                as_caller(who),
                ConfigChange::Membership { from, to },
            ),
        };
        let receipt = self.notary.append(record).await?;
        self.notary
            .wait_for_tree_size(receipt.log_index + 1, SWITCH_TIMEOUT)
            .await?;
        Ok(())
    }

    async fn add(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<ClusterStatus, ServiceError> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let m = req
            .member
            .ok_or_else(|| ServiceError::InvalidArgument("`member` is required".into()))?;
        check_node_id(m.node_id)?;
        check_address(&m.address)?;
        self.require_leader("membership changes")?;
        let from = self.members();
        if from.address(m.node_id).is_some() {
            return Err(ServiceError::FailedPrecondition(format!(
                "node {} is already a member; remove it first to give it another address",
                m.node_id
            )));
        }
        let to = from.with_learner(m.node_id, &m.address);
        self.record_membership(&who, from, to, &req.signed_record)
            .await?;
        self.notary
            .add_learner(m.node_id, m.address.clone())
            .await
            .map_err(membership_error)?;
        tracing::info!(node_id = m.node_id, address = %m.address, "learner added");
        Ok(self.cluster_status())
    }

    async fn make_voter(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<ClusterStatus, ServiceError> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let id = req.node_id;
        self.require_leader("membership changes")?;
        let s = self.notary.status();
        if s.voters.contains_key(&id) {
            return Err(ServiceError::FailedPrecondition(format!(
                "node {id} is already a voter"
            )));
        }
        if !s.learners.contains_key(&id) {
            return Err(ServiceError::FailedPrecondition(format!(
                "node {id} is not a learner; add it first with `qianlian cluster add-learner`"
            )));
        }
        let mut voters: BTreeSet<u64> = s.voters.keys().copied().collect();
        voters.insert(id);
        let from = self.members();
        let to = from.with_voter(id);
        self.record_membership(&who, from, to, &req.signed_record)
            .await?;
        self.notary
            .change_membership(voters)
            .await
            .map_err(membership_error)?;
        tracing::info!(node_id = id, "learner promoted to voter");
        Ok(self.cluster_status())
    }

    async fn remove_member(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<ClusterStatus, ServiceError> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let id = req.node_id;
        self.require_leader("membership changes")?;
        let s = self.notary.status();
        if !s.voters.contains_key(&id) && !s.learners.contains_key(&id) {
            return Err(ServiceError::NotFound {
                message: format!("node {id} is not a member"),
                receipt: None,
            });
        }
        if s.voters.contains_key(&id) && s.voters.len() == 1 {
            return Err(ServiceError::FailedPrecondition(
                "cannot remove the last voter: the log would have no one to commit it".into(),
            ));
        }
        let from = self.members();
        let to = from.without(id);
        self.record_membership(&who, from, to, &req.signed_record)
            .await?;
        self.notary
            .remove_node(id)
            .await
            .map_err(membership_error)?;
        tracing::info!(node_id = id, "node removed");
        Ok(self.cluster_status())
    }

    /// The record a request asks to append: the operators' signed record, or an unsigned one
    /// made here from `change` (which nodes refuse where operator keys are in force).
    fn signed_or_unsigned(
        who: &PeerIdentity,
        kind: ConfigKind,
        signed_record: &[u8],
    ) -> Result<Option<(Record, ConfigChange)>, ServiceError> {
        if signed_record.is_empty() {
            return Ok(None);
        }
        let how = match kind {
            ConfigKind::Membership => "qianlian cluster".to_owned(),
            other => format!("qianlian {} apply", other.as_str()),
        };
        let bad = |why: String| {
            ServiceError::InvalidArgument(format!(
                "signed_record: {why}; nothing changed (make it with `{how}`)"
            ))
        };
        let record = Record::decode(signed_record).map_err(|e| bad(e.to_string()))?;
        let Record::Authorized(authorized) = &record else {
            return Err(bad("not a config record with operator signatures".into()));
        };
        let Some(config) = authorized.config() else {
            return Err(bad("not a config record".into()));
        };
        if config.change.kind() != kind {
            return Err(bad(format!(
                "a {} change, sent as a {} change",
                config.change.kind().as_str(),
                kind.as_str()
            )));
        }
        let signers: Vec<&str> = authorized
            .signatures
            .iter()
            .map(|s| s.originator.department.as_str())
            .collect();
        if !signers.contains(&who.department.as_str()) {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "{who} did not sign this change (signed by: {}); the submitting operator must be one of its signers",
                    if signers.is_empty() {
                        "nobody".to_owned()
                    } else {
                        signers.join(", ")
                    }
                ),
                receipt: None,
            });
        }
        let change = config.change.clone();
        Ok(Some((record, change)))
    }

    /// A new policy, validated exactly as every node will build it; an empty model keeps the
    /// one in force.
    async fn policy_change(&self, req: ApplyPolicyRequest) -> Result<ConfigChange, ServiceError> {
        let model = if req.model.trim().is_empty() {
            match self.notary.config(ConfigKind::Policy).await? {
                Some((_, r)) => match r.change {
                    ConfigChange::Policy { model, .. } => model,
                    _ => String::new(),
                },
                None => self
                    .local_policy
                    .as_ref()
                    .map(|(m, _)| m.clone())
                    .unwrap_or_default(),
            }
        } else {
            req.model
        };
        // The old policy stays if this fails.
        let refused = |e: crate::domain::policy::PolicyError| {
            ServiceError::InvalidArgument(format!("policy refused, nothing changed: {e}"))
        };
        let policy = crate::domain::policy::Policy::from_text(
            &model,
            &req.rules,
            0,
            std::path::Path::new("model"),
            std::path::Path::new("rules"),
        )
        .await
        .map_err(refused)?;
        let directory = self.in_force.directory.load();
        policy
            .check_departments(
                directory.directory.department.iter().map(|d| d.id.as_str()),
                &format!("the directory in force (version {})", directory.version),
            )
            .map_err(refused)?;
        Ok(ConfigChange::Policy {
            model,
            rules: req.rules,
        })
    }

    /// A new directory, validated, with no department named like a role of the policy in
    /// force; the old one stays if this fails.
    fn directory_change(&self, toml: String) -> Result<ConfigChange, ServiceError> {
        let refused = |e: String| {
            ServiceError::InvalidArgument(format!("directory refused, nothing changed: {e}"))
        };
        let directory = crate::domain::directory::Directory::from_toml(&toml, "directory")
            .map_err(|e| refused(e.to_string()))?;
        let policy = self.in_force.policy.load();
        policy
            .check_departments(
                directory.department.iter().map(|d| d.id.as_str()),
                "directory",
            )
            .map_err(|e| {
                refused(format!(
                    "{e}; the policy in force is version {}",
                    policy.version()
                ))
            })?;
        Ok(ConfigChange::Directory { toml })
    }

    async fn config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<ConfigDocument, ServiceError> {
        operator(&request)?;
        let kind = kind_of(&request.into_inner().kind)?;
        let Some((p, record)) = self.notary.config(kind).await? else {
            return Err(ServiceError::NotFound {
                message: format!(
                    "the cluster has no replicated {} yet; nodes use their local files until `qianlian {} apply`",
                    kind.as_str(),
                    kind.as_str()
                ),
                receipt: None,
            });
        };
        let mut doc = convert::config_document(
            convert::config_version(kind, p.version, p.log_index),
            record.change,
        );
        if let Some((_, Record::Authorized(a))) = self.notary.config_signed(kind).await? {
            doc.signed_by = a
                .signatures
                .iter()
                .map(|s| s.originator.department.clone())
                .collect();
        }
        Ok(doc)
    }

    /// Append a validated config change (`signed`: as operators signed it; otherwise an
    /// unsigned record of `change`) and wait until this node has switched to it.
    async fn apply(
        &self,
        who: &PeerIdentity,
        change: ConfigChange,
        signed: Option<Record>,
    ) -> Result<ConfigVersion, ServiceError> {
        let kind = change.kind();
        self.require_leader(&format!("{} changes", kind.as_str()))?;
        let record = signed
            .unwrap_or_else(|| crate::node::cluster_config::config_record(as_caller(who), change));
        let receipt = self.notary.append(record).await?;
        // The version is the count of this kind's records up to this one: read it back.
        self.notary
            .wait_for_tree_size(receipt.log_index + 1, SWITCH_TIMEOUT)
            .await?;
        let version = self
            .notary
            .config(kind)
            .await?
            .filter(|(p, _)| p.log_index >= receipt.log_index)
            .map(|(p, _)| p.version)
            .ok_or_else(|| {
                ServiceError::Inconsistent(
                    "the config record was applied but is not in force".into(),
                )
            })?;
        if !self.in_force.wait_for(kind, version, SWITCH_TIMEOUT).await {
            return Err(ServiceError::Unavailable(format!(
                "{} version {version} is in the log at index {} but this node has not switched to it yet",
                kind.as_str(),
                receipt.log_index
            )));
        }
        tracing::info!(kind = kind.as_str(), version, log_index = receipt.log_index, operator = %who, "configuration applied");
        Ok(convert::config_version(kind, version, receipt.log_index))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init_cluster(
        &self,
        request: Request<InitClusterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.init(request).await?))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.add(request).await?))
    }

    async fn promote(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.make_voter(request).await?))
    }

    async fn remove(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.remove_member(request).await?))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        operator(&request)?;
        Ok(Response::new(self.cluster_status()))
    }

    async fn apply_policy(
        &self,
        request: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ConfigVersion>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let (signed, req) =
            match Self::signed_or_unsigned(&who, ConfigKind::Policy, &req.signed_record)? {
                Some((record, ConfigChange::Policy { model, rules })) => (
                    Some(record),
                    ApplyPolicyRequest {
                        model,
                        rules,
                        signed_record: Vec::new(),
                    },
                ),
                _ => (None, req),
            };
        if signed.is_some() && req.model.trim().is_empty() {
            return Err(ServiceError::InvalidArgument(
                "a signed policy change must carry its model: the signatures cover the whole policy".into(),
            )
            .into());
        }
        let change = self.policy_change(req).await?;
        Ok(Response::new(self.apply(&who, change, signed).await?))
    }

    async fn apply_directory(
        &self,
        request: Request<ApplyDirectoryRequest>,
    ) -> Result<Response<ConfigVersion>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let (signed, toml) =
            match Self::signed_or_unsigned(&who, ConfigKind::Directory, &req.signed_record)? {
                Some((record, ConfigChange::Directory { toml })) => (Some(record), toml),
                _ => (None, req.toml),
            };
        let change = self.directory_change(toml)?;
        Ok(Response::new(self.apply(&who, change, signed).await?))
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<ConfigDocument>, Status> {
        Ok(Response::new(self.config(request).await?))
    }
}
