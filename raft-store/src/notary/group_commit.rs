//! Group commit: many concurrent appends share one Raft entry, one replication round and one
//! fsync, and any node takes writes.
//!
//! Callers queue batches of records (usually one record) with a reply channel. One batcher task
//! takes a permit for a write, then drains whatever is waiting (up to `max_batch` records) into
//! ONE write. At most `max_in_flight` writes run at once; while they do, new requests pile up in
//! the channel and leave together in the next batch, so the batch size follows the load without
//! a timer: an idle node commits a lone record at once, a busy one hundreds per entry.
//!
//! Where the write goes depends on who leads, looked up for each batch:
//! - this node: one `client_write`;
//! - another node: the whole batch travels to it in one `Forward` call, and the leader appends
//!   it through its own group commit (where it may share an entry with the leader's own
//!   requests) and answers the receipts;
//! - nobody known: wait for a leader.
//!
//! A batch that was itself forwarded here is never forwarded again (two nodes that each believe
//! the other leads must not pass it back and forth): if this node no longer leads, its sender is
//! told and retries. Retries happen only when nothing can have been recorded (no leader, leader
//! unreachable, leadership moved before proposing), and only until `commit_timeout` has passed
//! since the batch left; when an attempt may have been recorded but gave no answer, the callers
//! get `CommitTimedOut` (outcome unknown) rather than a second copy of their record.
//!
//! Each caller gets its own receipts: record `i` of an entry has log index `first_index + i` and
//! the leaf hash of its canonical bytes, as the state machine computes them when applying it. A
//! small batch on the leader gets them as soon as its entry is committed
//! ([`crate::commit_receipts`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResult;
use qianlian_verifier::Hash;
use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio::time::error::Elapsed;

use super::error::{LeaderHint, NotaryError, Unavailability, UnavailableReason};
use super::receipt::Receipt;
use crate::commit_receipts::EarlyReceipts;
use crate::network::{ForwardRefusal, PeerCallError, Peers};
use crate::record::Record;
use crate::state_machine::StateReader;
use crate::types::{NodeId, Request, Response, TypeConfig};
use qianlian_verifier::record::{BatchSignatureRecord, SignerRole};

/// Extra time an append waits beyond `commit_timeout`, so that the batcher's own, more precise
/// answer (which is bounded by `commit_timeout`) arrives before the caller gives up.
pub(super) const ANSWER_GRACE: Duration = Duration::from_millis(250);

/// Pause between attempts when nothing was recorded and a retry may help (a new leader, a
/// leader that is restarting).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A batch of records waiting for its Raft entry.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) records: Vec<Record>,
    pub(super) reply: oneshot::Sender<Result<Vec<Receipt>, NotaryError>>,
    /// Sent here by a follower's `Forward`: never forwarded again.
    pub(super) forwarded: bool,
    /// For a request this node seals when the batch is formed, the log leaf hash of each
    /// record (empty: none is sealed here); computed by the caller's task, so the batcher only
    /// signs their root.
    pub(super) leaves: Vec<Hash>,
    /// Forwarded by a peer whose seals this node verified when it received them.
    pub(super) verified: bool,
    /// Part of a group under one batch signature (the signature record too): it stays in its
    /// batch even when its caller has left, so that the signature covers exactly the records
    /// before it.
    pub(super) grouped: bool,
}

/// How the batcher batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_batch: usize,
    pub(super) max_in_flight: usize,
    pub(super) commit_timeout: Duration,
}

/// Counters of the batches this node formed, for metrics: their number, the records in them,
/// a histogram of batch sizes (upper bounds 1, 2, 4, … 1024 records, then larger), and how many
/// batches written here were answered at commit, before the apply ([`crate::commit_receipts`]).
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub records: std::sync::atomic::AtomicU64,
    pub size_buckets: [std::sync::atomic::AtomicU64; 12],
    pub answered_at_commit: std::sync::atomic::AtomicU64,
}

/// The upper bounds of [`BatchStats::size_buckets`]; the last bucket takes everything larger.
pub const BATCH_SIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

impl BatchStats {
    fn record(&self, size: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let size = size as u64;
        self.batches.fetch_add(1, Relaxed);
        self.records.fetch_add(size, Relaxed);
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|b| size <= *b)
            .unwrap_or(BATCH_SIZE_BOUNDS.len());
        self.size_buckets[bucket].fetch_add(1, Relaxed);
    }
}

/// What a batch needs to be written: the local Raft node, and the way to the leader.
#[derive(Clone)]
pub(super) struct Committer {
    pub(super) stats: Arc<BatchStats>,
    pub(super) node_id: NodeId,
    pub(super) raft: openraft::Raft<TypeConfig>,
    pub(super) early: Arc<EarlyReceipts>,
    pub(super) peers: Peers,
    pub(super) limits: Limits,
    /// The applied state: this node's key (to seal batches) and its verified signatures.
    pub(super) reader: StateReader,
}

/// Run the batcher until every sender is gone (or the task is aborted at shutdown).
pub(super) async fn run(committer: Committer, mut queue: mpsc::Receiver<Pending>) {
    let limits = committer.limits;
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    // A request that did not fit the last batch; it opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        // The permit first: while every write is busy, requests accumulate in the queue.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut count = first.records.len();
        let mut batch = vec![first];
        while count < limits.max_batch {
            match queue.try_recv() {
                Ok(pending) if count + pending.records.len() > limits.max_batch => {
                    carried = Some(pending);
                    break;
                }
                Ok(pending) => {
                    count += pending.records.len();
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        committer.stats.record(count);
        committer.seal(&mut batch);
        if limits.max_in_flight == 1 {
            // One write at a time: the next batch could not leave before this one is done
            // anyway, so write it from here. A task of its own would cost every write two more
            // wake-ups (starting it, and its permit waking this loop).
            committer.commit(batch).await;
            drop(permit);
            continue;
        }
        let committer = committer.clone();
        tokio::spawn(async move {
            committer.commit(batch).await;
            drop(permit);
        });
    }
}

/// Answer every caller in `batch` with `error`.
fn fail(batch: Vec<Pending>, error: &NotaryError) {
    for pending in batch {
        // A caller that left meanwhile has nobody to tell.
        let _ = pending.reply.send(Err(error.clone()));
    }
}

/// Answer every caller in `batch` from the apply's answer: its slice of the records' receipts,
/// or, when the state machine refused one of its records, why.
fn answer_response(batch: Vec<Pending>, response: Response) {
    if response.refused.is_empty() {
        return answer(batch, receipts_from(response.first_index, response.hashes));
    }
    let total: usize = batch.iter().map(|p| p.records.len()).sum();
    if response.hashes.len() + response.refused.len() != total {
        let e = NotaryError::Internal(format!(
            "a batch of {total} records was answered with {} receipts and {} refusals",
            response.hashes.len(),
            response.refused.len()
        ));
        return fail(batch, &e);
    }
    let mut receipts = receipts_from(response.first_index, response.hashes).into_iter();
    let mut refused = response.refused.into_iter().peekable();
    let mut position = 0u32;
    for pending in batch {
        let mut mine = Vec::with_capacity(pending.records.len());
        let mut reasons = Vec::new();
        for _ in 0..pending.records.len() {
            match refused.next_if(|r| r.position == position) {
                Some(r) => reasons.push(r.reason),
                None => mine.extend(receipts.next()),
            }
            position += 1;
        }
        let reply = if reasons.is_empty() {
            Ok(mine)
        } else {
            Err(NotaryError::Refused {
                reason: reasons.join("; "),
                appended: mine.len(),
            })
        };
        let _ = pending.reply.send(reply);
    }
}

/// Answer every caller in `batch` with its slice of `receipts` (in batch order).
fn answer(batch: Vec<Pending>, receipts: Vec<Receipt>) {
    let total: usize = batch.iter().map(|p| p.records.len()).sum();
    if receipts.len() != total {
        let e = NotaryError::Internal(format!(
            "a batch of {total} records was answered with {} receipts",
            receipts.len()
        ));
        return fail(batch, &e);
    }
    let mut receipts = receipts.into_iter();
    for pending in batch {
        let mine: Vec<Receipt> = receipts.by_ref().take(pending.records.len()).collect();
        let _ = pending.reply.send(Ok(mine));
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn records_of(batch: &[Pending]) -> Arc<[Record]> {
    batch
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .collect()
}

fn unavailable(reason: UnavailableReason, leader: Option<LeaderHint>) -> NotaryError {
    NotaryError::Unavailable(Unavailability { reason, leader })
}

/// What one attempt achieved.
enum Attempt {
    /// Every caller has been answered.
    Done,
    /// Nothing was recorded; another attempt may succeed. Carries the callers still waiting
    /// and the error they get if time runs out.
    Retry(Vec<Pending>, NotaryError),
}

impl Committer {
    /// Seal the records of `batch` that ask for it with one signature by this node's key: their
    /// callers' requests go last, in order, so that their records are contiguous, and a batch
    /// signature record right after them covers exactly them. The signature is remembered as
    /// verified (this node made it). A batch is sealed once, when it is formed, and keeps its
    /// signature through any retry or forward.
    ///
    /// A request holding a governance step gets a signature of its own: whether a step may be
    /// taken depends on the log (who owns the dataset, which catalog version is in force), and a
    /// signature applies with all the records it covers or none, so a step refused at the apply
    /// takes no other caller's records with it.
    fn seal(&self, batch: &mut Vec<Pending>) {
        // Without a key nothing is sealed: the records go as they came (and every node refuses
        // those whose department requires a seal, saying why).
        let Some(key) = self.reader.signer().signing_key() else {
            return;
        };
        let (mut ordered, sealed): (Vec<Pending>, Vec<Pending>) = std::mem::take(batch)
            .into_iter()
            .partition(|p| p.leaves.is_empty());
        if sealed.is_empty() {
            *batch = ordered;
            return;
        }
        let (alone, shared): (Vec<Pending>, Vec<Pending>) = sealed.into_iter().partition(|p| {
            p.records
                .iter()
                .any(|r| matches!(r.content(), Record::Governance(_)))
        });
        let groups = (!shared.is_empty())
            .then_some(shared)
            .into_iter()
            .chain(alone.into_iter().map(|p| vec![p]));
        for group in groups {
            let leaves: Vec<Hash> = group
                .iter()
                .flat_map(|p| p.leaves.iter().copied())
                .collect();
            let signature = Record::BatchSignature(Box::new(BatchSignatureRecord::sign(
                SignerRole::Gateway,
                key,
                &leaves,
                now_ms(),
            )));
            self.reader
                .trust_batch(qianlian_verifier::leaf_hash(&signature.encode()));
            ordered.extend(group.into_iter().map(|p| Pending { grouped: true, ..p }));
            // Nobody waits for the signature's own receipt.
            let (reply, _) = oneshot::channel();
            ordered.push(Pending {
                records: vec![signature],
                reply,
                forwarded: false,
                leaves: Vec::new(),
                grouped: true,
                verified: false,
            });
        }
        *batch = ordered;
    }

    /// Write one batch and answer every caller in it, within `commit_timeout`.
    async fn commit(&self, batch: Vec<Pending>) {
        let timeout = self.limits.commit_timeout;
        let deadline = Instant::now() + timeout;
        // A caller that already gave up was told "outcome unknown": leaving its record out is
        // within that answer and spares the log a record nobody holds a receipt for.
        let mut batch: Vec<Pending> = batch
            .into_iter()
            .filter(|p| p.grouped || !p.reply.is_closed())
            .collect();
        loop {
            if batch.is_empty() {
                return;
            }
            // Every wait inside an attempt is bounded by `deadline`, and every path answers
            // the callers or hands them back: none is dropped unanswered.
            let (rest, error) = match self.attempt(batch, deadline).await {
                Attempt::Done => return,
                Attempt::Retry(rest, error) => (rest, error),
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return fail(rest, &error);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            batch = rest
                .into_iter()
                .filter(|p| p.grouped || !p.reply.is_closed())
                .collect();
        }
    }

    /// The leader as this node sees it: its id and advertised address.
    fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone());
        Some((leader, addr))
    }

    async fn attempt(&self, batch: Vec<Pending>, deadline: Instant) -> Attempt {
        let timeout = self.limits.commit_timeout;
        let Some((leader, addr)) = self.leader() else {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let waited = self
                .raft
                .wait(Some(remaining))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await;
            return match waited {
                Ok(_) => Attempt::Retry(batch, NotaryError::no_leader()),
                Err(openraft::metrics::WaitError::ShuttingDown) => {
                    fail(batch, &NotaryError::ShutDown);
                    Attempt::Done
                }
                Err(openraft::metrics::WaitError::Timeout(..)) => {
                    fail(batch, &NotaryError::no_leader());
                    Attempt::Done
                }
            };
        };
        let hint = LeaderHint {
            node_id: leader,
            addr: addr.clone(),
        };
        if leader == self.node_id {
            return self.write_here(batch, deadline).await;
        }

        let (back, batch): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| p.forwarded);
        fail(
            back,
            &unavailable(UnavailableReason::NotLeader, Some(hint.clone())),
        );
        if batch.is_empty() {
            return Attempt::Done;
        }
        let Some(addr) = addr else {
            return Attempt::Retry(
                batch,
                unavailable(UnavailableReason::LeaderUnreachable, Some(hint)),
            );
        };
        let ttl = deadline.saturating_duration_since(Instant::now());
        let forwarded = self
            .peers
            .forward(&addr, records_of(&batch).to_vec(), ttl)
            .await;
        match forwarded {
            Ok(Ok(receipts)) => {
                let receipts = receipts
                    .into_iter()
                    .map(|r| Receipt {
                        log_index: r.log_index,
                        record_hash: r.record_hash,
                    })
                    .collect();
                answer(batch, receipts);
                Attempt::Done
            }
            // Leadership is moving: nothing was recorded there.
            Ok(Err(ForwardRefusal::NotLeader { .. })) => {
                Attempt::Retry(batch, unavailable(UnavailableReason::NotLeader, Some(hint)))
            }
            Ok(Err(ForwardRefusal::TimedOut { .. })) | Err(PeerCallError::OutcomeUnknown(_)) => {
                fail(batch, &NotaryError::commit_timed_out(timeout));
                Attempt::Done
            }
            Ok(Err(ForwardRefusal::Failed { reason })) => {
                let e = NotaryError::Internal(format!(
                    "the leader, node {leader}, failed the forwarded write: {reason}"
                ));
                fail(batch, &e);
                Attempt::Done
            }
            Ok(Err(ForwardRefusal::NotPermitted { reason })) => {
                let e = NotaryError::InvalidRecord(format!(
                    "the leader, node {leader}, refused the forwarded write: {reason}"
                ));
                fail(batch, &e);
                Attempt::Done
            }
            Err(PeerCallError::NotDelivered(e)) => {
                tracing::debug!(leader, error = %e, "forwarding a batch to the leader");
                Attempt::Retry(
                    batch,
                    unavailable(UnavailableReason::LeaderUnreachable, Some(hint)),
                )
            }
        }
    }

    /// Write the batch as one Raft entry on this node, the leader. A small batch is answered
    /// when its entry is committed ([`crate::commit_receipts`]); the apply's answer then only
    /// confirms it.
    async fn write_here(&self, batch: Vec<Pending>, deadline: Instant) -> Attempt {
        let timeout = self.limits.commit_timeout;
        let records = records_of(&batch);
        // Records of this node's own callers had their seals verified on submission; those
        // forwarded by a peer were verified when they arrived (and remembered for the apply).
        let registration = if batch.iter().any(|p| p.forwarded && !p.verified) {
            self.early.register(&records)
        } else {
            self.early.register_verified(&records)
        };
        let request = Request::Append { records };
        let proposed = tokio::time::timeout_at(deadline, self.raft.client_write_ff(request)).await;
        let mut applied = match proposed {
            Err(_) => {
                fail(batch, &NotaryError::commit_timed_out(timeout));
                return Attempt::Done;
            }
            Ok(Err(fatal)) => {
                fail(batch, &NotaryError::from(fatal));
                return Attempt::Done;
            }
            Ok(Ok(applied)) => applied,
        };
        let Some(mut registration) = registration else {
            let written = tokio::time::timeout_at(deadline, applied).await;
            return self.answer_applied(batch, written);
        };
        let first = tokio::time::timeout_at(deadline, async {
            // The answer at commit, when there is one, is sent before openraft hands the entry
            // to the state machine: prefer it, the apply's answer is the same.
            tokio::select! {
                biased;
                Ok(first) = &mut registration.first_index => Ok(first),
                written = &mut applied => Err(written),
            }
        })
        .await;
        match first {
            Err(elapsed) => self.answer_applied(batch, Err(elapsed)),
            Ok(Err(written)) => self.answer_applied(batch, Ok(written)),
            Ok(Ok(first)) => {
                self.stats
                    .answered_at_commit
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                answer(batch, receipts_from(first, registration.record_hashes()));
                drop(registration);
                // The apply's answer follows. Wait for it, so that at most `max_in_flight`
                // writes are under way, and check it. If leadership moved between the commit
                // and the apply, openraft reports a failure for an entry that is committed all
                // the same: the callers already hold its receipts.
                match tokio::time::timeout_at(deadline, applied).await {
                    Ok(Ok(Ok(response))) if response.data.first_index != first => {
                        tracing::error!(
                            early = first,
                            applied = response.data.first_index,
                            "a batch answered at commit was applied at another log index"
                        );
                    }
                    _ => {}
                }
                Attempt::Done
            }
        }
    }

    /// Answer the batch from the apply's answer to its entry (or what came instead).
    fn answer_applied(
        &self,
        batch: Vec<Pending>,
        written: Result<Result<ClientWriteResult<TypeConfig>, RecvError>, Elapsed>,
    ) -> Attempt {
        let timeout = self.limits.commit_timeout;
        match written {
            Err(_) => {
                fail(batch, &NotaryError::commit_timed_out(timeout));
                Attempt::Done
            }
            // The Raft core stopped before answering.
            Ok(Err(_)) => {
                fail(batch, &NotaryError::ShutDown);
                Attempt::Done
            }
            Ok(Ok(Ok(response))) => {
                answer_response(batch, response.data);
                Attempt::Done
            }
            // Leadership moved before the entry was proposed: nothing was recorded.
            Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => Attempt::Retry(batch, f.into()),
            Ok(Ok(Err(e))) => {
                fail(batch, &RaftError::APIError(e).into());
                Attempt::Done
            }
        }
    }
}

/// Receipts of consecutive records from `first` on, with their leaf hashes.
fn receipts_from(first: u64, hashes: Vec<Hash>) -> Vec<Receipt> {
    (first..)
        .zip(hashes)
        .map(|(log_index, record_hash)| Receipt {
            log_index,
            record_hash,
        })
        .collect()
}
