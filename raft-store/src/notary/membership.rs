//! The cluster as this node sees it, and changes to its membership.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers};

use super::error::NotaryError;
use super::{Notary, NotaryStatus};

impl Notary {
    /// This node's view of the cluster.
    pub fn status(&self) -> NotaryStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let addr = |id: u64| {
            membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        NotaryStatus {
            node_id: self.inner.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_raft_index: metrics.last_log_index,
            applied_raft_index: metrics.last_applied.map(|id| id.index),
            tree_size: self.tree_size(),
            voters: membership.voter_ids().map(|id| (id, addr(id))).collect(),
            learners: membership.learner_ids().map(|id| (id, addr(id))).collect(),
            snapshot_raft_index: metrics.snapshot.map(|id| id.index),
            purged_raft_index: metrics.purged.map(|id| id.index),
            millis_since_quorum_ack: metrics.millis_since_quorum_ack,
            replication: metrics
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            election_timeout_max_ms: self.inner.raft.config().election_timeout_max,
        }
    }

    /// Wait until a leader is known; returns its id. `Unavailable` (`NoLeader`) after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, NotaryError> {
        let waited = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        match waited {
            Ok(metrics) => metrics.current_leader.ok_or_else(NotaryError::no_leader),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(NotaryError::ShutDown),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(NotaryError::no_leader()),
        }
    }

    /// Form a new cluster of `members` (node id → advertised address) on a node that was never
    /// initialised. Call it on one node; the others join by election.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), NotaryError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => Err(NotaryError::Membership(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(f.into()),
        }
    }

    /// On the leader: add node `node_id` at `addr` as a learner (it receives the log but does
    /// not vote). Returns once the change is committed, not when the learner has caught up.
    pub async fn add_learner(
        &self,
        node_id: u64,
        addr: impl Into<String>,
    ) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let added = tokio::time::timeout(
            timeout,
            self.inner
                .raft
                .add_learner(node_id, BasicNode::new(addr.into()), false),
        )
        .await
        .map_err(|_| NotaryError::commit_timed_out(timeout))?;
        added.map(|_| ()).map_err(NotaryError::from)
    }

    /// On the leader: make exactly `voters` the voting members (each must already be a member
    /// or learner); nodes dropped from the voters stay as learners. Returns once committed.
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let changed = tokio::time::timeout(
            timeout,
            self.inner
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters), true),
        )
        .await
        .map_err(|_| NotaryError::commit_timed_out(timeout))?;
        changed.map(|_| ()).map_err(NotaryError::from)
    }

    /// On the leader: remove node `node_id` from the cluster, voter or learner; it no longer
    /// receives the log. Returns once the change is committed. Removing a voter changes the
    /// majority; removing the last voter is refused by openraft ([`NotaryError::Membership`]).
    pub async fn remove_node(&self, node_id: u64) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        let is_voter = self.status().voters.contains_key(&node_id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        // `retain = false`: a removed voter does not stay on as a learner.
        let changed =
            tokio::time::timeout(timeout, self.inner.raft.change_membership(change, false))
                .await
                .map_err(|_| NotaryError::commit_timed_out(timeout))?;
        changed.map(|_| ()).map_err(NotaryError::from)
    }
}
