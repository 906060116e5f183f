//! Checkpoints and license status lists: signed by this node, cosigned by the other members that
//! computed the same body.
//!
//! [`Notary::checkpoint`] and [`Notary::status_list_at`] ask every member each time they are
//! called. The calls anyone may make use the shared heads instead
//! ([`Notary::shared_checkpoint`], [`Notary::shared_status_list_at`]): one kept head of each
//! kind, refreshed one at a time as the log grows (see `head_cache`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

use super::Notary;
use super::error::NotaryError;
use super::head_cache::{CosignStats, Fresh};
use crate::checkpoint::{self, CosignRefusal, Cosignature, CosignedCheckpoint};
use crate::license::CosignedStatusList;

/// Pause before asking a member again that has not applied the tree size yet.
const COSIGN_RETRY: Duration = Duration::from_millis(50);

impl Notary {
    /// The license status list as of the tree size of this node's latest checkpoint (see
    /// [`Notary::status_list_at`]); the applied size on a node whose key came after its last
    /// apply. [`NotaryError::NoCheckpoint`] without a signing key.
    pub async fn status_list(&self) -> Result<CosignedStatusList, NotaryError> {
        self.settled().await?;
        let size = match self.inner.reader.checkpoint() {
            Some(own) => own.size,
            None => self.tree_size(),
        };
        self.status_list_at(size).await
    }

    /// The license status list as of the first `tree_size` records, signed by this node and
    /// cosigned by every other member that computes the identical body within
    /// `cosign_timeout` (asked in parallel, again while a member has not applied that size, as
    /// for [`Notary::checkpoint`]).
    ///
    /// The body (`qianlian_verifier::license::StatusList`): this node's origin; the tree head
    /// (size, root) at `tree_size`; `time`, the time of the last record below `tree_size`
    /// (`time_unix_ms / 1000` of record `tree_size - 1`, 0 for the empty tree); and every
    /// license suspended or revoked by the status records below `tree_size`, with the time and
    /// reason of the record that did it. The time comes from the replicated record, not a
    /// node's clock, so every node computes the same body for the same size; it is the time
    /// the gateway that wrote that record decided, so it is as true as that gateway's clock.
    /// Any size up to the applied one can be listed: later changes are left out.
    ///
    /// [`NotaryError::Range`] beyond the applied tree, [`NotaryError::NoCheckpoint`] without a
    /// signing key.
    pub async fn status_list_at(&self, tree_size: u64) -> Result<CosignedStatusList, NotaryError> {
        self.settled().await?;
        let list = self.inner.reader.status_list(tree_size).await?;
        let own = self
            .inner
            .reader
            .signer()
            .sign_status_list(&list)
            .map_err(|e| NotaryError::Internal(e.to_string()))?
            .ok_or_else(|| {
                NotaryError::NoCheckpoint(
                    "this node has no checkpoint signing key configured".into(),
                )
            })?;
        let cosignatures = self.cosignatures(Cosigned::StatusList, tree_size).await;
        let (note, signers) = checkpoint::add_cosignatures(&own, cosignatures)
            .map_err(|e| NotaryError::Internal(e.to_string()))?;
        Ok(CosignedStatusList {
            note,
            tree_size,
            signers,
        })
    }

    /// The latest checkpoint this node applied, as a signed note carrying this node's signature
    /// and the cosignatures of every other current member (voters and learners) that answers
    /// within `cosign_timeout` (asked in parallel) having computed the same root. A member that
    /// has not applied that size yet is asked again while the timeout lasts (followers apply a
    /// commit a heartbeat after the leader). Members that do not answer in time or sign another
    /// root are left out: the verifier demands k of n with the keys it trusts.
    ///
    /// [`NotaryError::NoCheckpoint`] if this node has no signing key.
    pub async fn checkpoint(&self) -> Result<CosignedCheckpoint, NotaryError> {
        self.settled().await?;
        match self.inner.reader.checkpoint() {
            Some(own) => {
                let cosignatures = self.cosignatures(Cosigned::Checkpoint, own.size).await;
                checkpoint::cosigned(&own, cosignatures)
                    .map_err(|e| NotaryError::Internal(e.to_string()))
            }
            // A key configured after the last apply: sign the applied head now.
            None => self.checkpoint_at(self.tree_size()).await,
        }
    }

    /// The checkpoint of the first `tree_size` records, signed now by this node and cosigned as
    /// [`Notary::checkpoint`] is. [`NotaryError::Range`] beyond the applied tree,
    /// [`NotaryError::NoCheckpoint`] without a signing key.
    pub async fn checkpoint_at(&self, tree_size: u64) -> Result<CosignedCheckpoint, NotaryError> {
        let root = self.root_at(tree_size).await?;
        let own = self
            .inner
            .reader
            .signer()
            .sign(tree_size, root)
            .map_err(|e| NotaryError::Internal(e.to_string()))?
            .ok_or_else(|| {
                NotaryError::NoCheckpoint(
                    "this node has no checkpoint signing key configured".into(),
                )
            })?;
        let cosignatures = self.cosignatures(Cosigned::Checkpoint, tree_size).await;
        checkpoint::cosigned(&own, cosignatures).map_err(|e| NotaryError::Internal(e.to_string()))
    }

    /// The cosigned checkpoint for calls anyone may make: the one this node collected last,
    /// while its refresh started less than `checkpoint_max_age` ago (default 1 s), or while the
    /// log has not grown since and every current member cosigned it; otherwise a new one, made
    /// as [`Notary::checkpoint`] makes it. One refresh runs at a time and every caller arriving
    /// meanwhile shares its result; refreshes start at least 100 ms apart. So however many
    /// callers there are, this node asks each member at most ten times a second, and about once
    /// a second while the log grows slowly. Errors as [`Notary::checkpoint`].
    pub async fn shared_checkpoint(&self) -> Result<CosignedCheckpoint, NotaryError> {
        self.shared_checkpoint_covering(0).await
    }

    /// As [`Notary::shared_checkpoint`], of at least `min_size` records when this node has
    /// applied that many (after waiting for the records it answered at commit): a kept head
    /// that is smaller is replaced at once, no sooner than 100 ms after the previous refresh
    /// started. When this node has fewer records the head is smaller than `min_size`; the
    /// caller checks. Errors as [`Notary::checkpoint`].
    pub async fn shared_checkpoint_covering(
        &self,
        min_size: u64,
    ) -> Result<CosignedCheckpoint, NotaryError> {
        if min_size > self.tree_size() {
            self.settled().await?;
        }
        let applied = self.tree_size();
        let need = if min_size <= applied { min_size } else { 0 };
        let members = self.member_ids_to_ask();
        let max_age = self.inner.head_max_age;
        let (this, members) = (self, &members);
        self.inner
            .checkpoints
            .get(
                |k| {
                    k.size >= need
                        && (k.started.elapsed() < max_age
                            || (k.size == applied && k.complete && k.members == *members))
                },
                |size| size >= need,
                move || async move {
                    let cp = this.checkpoint().await?;
                    Ok(Fresh {
                        size: cp.size,
                        complete: cp.signers.len() > members.len(),
                        members: members.to_vec(),
                        value: cp,
                    })
                },
            )
            .await
    }

    /// The ids of the members a shared head asks to cosign (this node excluded).
    fn member_ids_to_ask(&self) -> Vec<u64> {
        self.members_to_ask()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The license status list at `tree_size` for calls anyone may make, kept and shared as
    /// [`Notary::shared_checkpoint`] is: the one collected last if it is of `tree_size` and
    /// recent or complete, otherwise a new one as [`Notary::status_list_at`] makes it. Errors
    /// as [`Notary::status_list_at`].
    pub async fn shared_status_list_at(
        &self,
        tree_size: u64,
    ) -> Result<CosignedStatusList, NotaryError> {
        let members = self.member_ids_to_ask();
        let max_age = self.inner.head_max_age;
        let (this, members) = (self, &members);
        self.inner
            .status_lists
            .get(
                |k| {
                    k.size == tree_size
                        && (k.started.elapsed() < max_age || (k.complete && k.members == *members))
                },
                |size| size == tree_size,
                move || async move {
                    let list = this.status_list_at(tree_size).await?;
                    Ok(Fresh {
                        size: list.tree_size,
                        complete: list.signers.len() > members.len(),
                        members: members.to_vec(),
                        value: list,
                    })
                },
            )
            .await
    }

    /// Cosignature requests this node sent and answered since it started.
    pub fn cosign_stats(&self) -> &CosignStats {
        &self.inner.cosign_stats
    }

    /// The other current members (voters and learners) with an address, in id order.
    fn members_to_ask(&self) -> Vec<(u64, String)> {
        let status = self.status();
        let mut members: Vec<_> = status
            .voters
            .into_iter()
            .chain(status.learners)
            .filter(|(id, addr)| *id != self.inner.node_id && !addr.is_empty())
            .collect();
        members.sort_by_key(|(id, _)| *id);
        members
    }

    /// Ask every other member to cosign `what` at `tree_size`, in parallel, each within
    /// `cosign_timeout`; returns the answers that came.
    async fn cosignatures(&self, what: Cosigned, tree_size: u64) -> Vec<Cosignature> {
        let timeout = self.inner.cosign_timeout;
        let mut asked = JoinSet::new();
        for (id, addr) in self.members_to_ask() {
            let peers = self.inner.peers.clone();
            let stats = self.inner.cosign_stats.clone();
            asked.spawn(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                let cosignature = loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let asked = async {
                        match what {
                            Cosigned::Checkpoint => {
                                stats
                                    .checkpoint_requests_sent
                                    .fetch_add(1, Ordering::Relaxed);
                                peers.cosign(&addr, tree_size, left).await
                            }
                            Cosigned::StatusList => {
                                stats
                                    .status_list_requests_sent
                                    .fetch_add(1, Ordering::Relaxed);
                                peers.cosign_status(&addr, tree_size, left).await
                            }
                        }
                    };
                    let answer = tokio::time::timeout(left, asked).await;
                    match answer {
                        Ok(Ok(Ok(cosignature))) => break Some(cosignature),
                        // A follower learns of a commit a moment after the leader: ask again
                        // while the budget lasts.
                        Ok(Ok(Err(CosignRefusal::NotYet { .. })))
                            if tokio::time::Instant::now() + COSIGN_RETRY < deadline =>
                        {
                            tokio::time::sleep(COSIGN_RETRY).await;
                        }
                        Ok(Ok(Err(refusal))) => {
                            tracing::debug!(member = id, ?what, %refusal, "no cosignature");
                            break None;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(member = id, ?what, error = %e, "no cosignature");
                            break None;
                        }
                        Err(_) => break None,
                    }
                };
                (id, cosignature)
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = asked.join_next().await {
            if let Ok((id, Some(cosignature))) = answer {
                answers.push((id, cosignature));
            }
        }
        // In member order, so the same members give the same note.
        answers.sort_by_key(|(id, _)| *id);
        answers.into_iter().map(|(_, c)| c).collect()
    }
}

/// What a member is asked to cosign.
#[derive(Debug, Clone, Copy)]
enum Cosigned {
    Checkpoint,
    StatusList,
}
