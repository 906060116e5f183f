//! What this node serves its peers besides Raft: appends they forward, through its own group
//! commit, and cosignatures of its own state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use qianlian_proto::v1::raft_server::RaftServer;
use tokio::sync::{mpsc, oneshot};

use super::error::{NotaryError, Unavailability, UnavailableReason};
use super::group_commit::{ANSWER_GRACE, Pending};
use super::{CosignStats, Notary};
use crate::checkpoint::{CosignRefusal, Cosignature};
use crate::network::{
    AuthorityStats, CallingNode, ForwardRefusal, ForwardedReceipt, LocalNode, MembershipRule,
    RaftService, may_originate,
};
use crate::record::Record;
use crate::state_machine::StateReader;

impl Notary {
    /// The gRPC service peers call (Raft, Forward, Cosign, CosignStatus), with message size
    /// limits set.
    /// Mount it on the node's TLS server and admit node certificates only: Forward appends
    /// records as this node. Set TCP_NODELAY on the accepted sockets: without it, small replies
    /// wait for delayed ACKs and forwarded appends ran five times slower in the cluster test.
    pub fn raft_service(&self) -> RaftServer<RaftService> {
        let node = Arc::new(NodeCalls {
            queue: self.inner.queue.clone(),
            reader: self.inner.reader.clone(),
            commit_timeout: self.inner.commit_timeout,
            cosign_stats: self.inner.cosign_stats.clone(),
            authority_stats: self.inner.authority_stats.clone(),
        });
        RaftService::with_node(self.inner.raft.clone(), node)
            .with_authority(self.inner.authority_stats.clone())
            .into_server()
    }

    /// The same service serving every caller, without checking who calls: only for tests that
    /// run Raft over plain HTTP/2, where no certificate names the caller.
    pub fn raft_service_without_authority(&self) -> RaftServer<RaftService> {
        let node = Arc::new(NodeCalls {
            queue: self.inner.queue.clone(),
            reader: self.inner.reader.clone(),
            commit_timeout: self.inner.commit_timeout,
            cosign_stats: self.inner.cosign_stats.clone(),
            authority_stats: self.inner.authority_stats.clone(),
        });
        RaftService::with_node(self.inner.raft.clone(), node).into_server()
    }

    /// Snapshots refused since this node started because they did not extend its signed tree.
    pub fn snapshots_refused(&self) -> u64 {
        self.inner.reader.snapshots_refused()
    }

    /// Peer calls refused since this node started.
    pub fn authority_stats(&self) -> &AuthorityStats {
        &self.inner.authority_stats
    }

    /// Reach peers with `tls` from now on (a renewed node certificate, a new CA bundle): every
    /// peer's next call connects with it; calls in flight finish on the old connections.
    pub fn set_peer_tls(&self, tls: Option<tonic::transport::ClientTlsConfig>) {
        self.inner.peers.set_tls(tls);
    }
}

/// What this node serves to its peers besides Raft: forwarded appends go through its own group
/// commit (marked, so they are never forwarded again), cosignatures come from its own state.
struct NodeCalls {
    queue: mpsc::Sender<Pending>,
    reader: StateReader,
    commit_timeout: Duration,
    cosign_stats: Arc<CosignStats>,
    authority_stats: Arc<AuthorityStats>,
}

impl NodeCalls {
    /// Refuse the batch unless `from` may originate every record of it.
    async fn check_origin(
        &self,
        from: Option<&CallingNode>,
        records: &[Record],
    ) -> Result<(), ForwardRefusal> {
        let anyone = CallingNode {
            name: "(unchecked)".into(),
            member_id: None,
            department: None,
        };
        let from = from.unwrap_or(&anyone);
        for (i, record) in records.iter().enumerate() {
            let unsealed = record.content();
            let issuer = match unsealed {
                Record::LicenseStatus(s) if from.department.is_some() => self
                    .reader
                    .license(s.license_hash)
                    .await
                    .map_err(|e| ForwardRefusal::Failed {
                        reason: e.to_string(),
                    })?
                    .map(|v| v.issued.department),
                _ => None,
            };
            if let Err(reason) = may_originate(from, record, issuer.as_deref()) {
                AuthorityStats::count(&self.authority_stats.forward_refused);
                tracing::warn!(from = %from, record = i, "forwarded batch refused: {reason}");
                return Err(ForwardRefusal::NotPermitted {
                    reason: format!("record {i} of the batch: {reason}"),
                });
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl LocalNode for NodeCalls {
    async fn membership_rule(&self) -> Result<MembershipRule, String> {
        let authority = self
            .reader
            .membership_authority()
            .map_err(|e| e.to_string())?;
        Ok(match authority.operators_sign {
            false => MembershipRule::Open,
            true => MembershipRule::Signed(authority.last_signed),
        })
    }

    async fn forwarded(
        &self,
        from: Option<&CallingNode>,
        records: Vec<Record>,
    ) -> Result<Vec<ForwardedReceipt>, ForwardRefusal> {
        self.check_origin(from, &records).await?;
        // The sending node's signatures are verified here, in this call's own task, rather than
        // by the batcher, whose writes follow one another; the apply finds them remembered.
        let verified = self.reader.seals_verify(&records);
        let timeout = self.commit_timeout;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            records,
            reply,
            forwarded: true,
            leaves: Vec::new(),
            grouped: false,
            verified,
        };
        let waited = tokio::time::timeout(timeout + ANSWER_GRACE, async {
            self.queue
                .send(pending)
                .await
                .map_err(|_| NotaryError::ShutDown)?;
            answer.await.map_err(|_| NotaryError::ShutDown)?
        })
        .await
        .unwrap_or(Err(NotaryError::commit_timed_out(timeout)));
        match waited {
            Ok(receipts) => Ok(receipts
                .into_iter()
                .map(|r| ForwardedReceipt {
                    log_index: r.log_index,
                    record_hash: r.record_hash,
                })
                .collect()),
            Err(NotaryError::Unavailable(Unavailability {
                reason: UnavailableReason::CommitTimedOut(after),
                ..
            })) => Err(ForwardRefusal::TimedOut {
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            }),
            // Nothing was recorded: the sender retries at the leader it learns of.
            Err(NotaryError::Unavailable(u)) => Err(ForwardRefusal::NotLeader {
                leader: u.leader.map(|l| l.node_id),
            }),
            Err(e) => Err(ForwardRefusal::Failed {
                reason: e.to_string(),
            }),
        }
    }

    async fn cosign(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        self.cosign_stats
            .checkpoint_requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.reader.cosign(tree_size).await
    }

    async fn cosign_status(&self, tree_size: u64) -> Result<Cosignature, CosignRefusal> {
        self.cosign_stats
            .status_list_requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.reader.cosign_status(tree_size).await
    }
}
