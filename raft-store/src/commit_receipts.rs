//! Receipts at commit: a small write is answered as soon as its Raft entry is committed, without
//! waiting for this node's state machine to apply it.
//!
//! A record's receipt is its log index and its leaf hash. The leaf hash is a hash of the record
//! alone. The log index is the tree size before the entry, which the state machine knows exactly
//! when it has applied everything up to the entry before. openraft answers a write only after the
//! apply (reading the entry back, staging and writing the tree and the indexes, and two task
//! hand-offs); a lone request spends that time waiting although its record is already durable on
//! a majority. So:
//!
//! 1. the batcher registers a small batch ([`EarlyReceipts::register`]) before proposing it;
//! 2. the log store, once an append is durable, tells which log id each registered batch got
//!    ([`EarlyReceipts::appended`]; entries are recognised by their records, and two batches
//!    with equal records would get equal receipts either way);
//! 3. when openraft saves the committed log id ([`EarlyReceipts::committed`], before it hands the
//!    entries to the state machine), every registered entry that comes right after the applied
//!    state (or right after another such entry) learns its first log index;
//! 4. before answering, the node promises the tree size those receipts reach: the notary's reads
//!    wait until the state machine has applied that far ([`StateReader::settle`]), so a caller
//!    still reads its own writes.
//!
//! Whatever does not qualify (a large batch, an entry behind an unapplied one, an entry
//! truncated by a new leader) is answered by the apply, as before. Only the leader's own
//! proposals are registered; a follower's log store sees none.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::EntryPayload;
use qianlian_verifier::{Hash, leaf_hash};
use tokio::sync::oneshot;

use crate::record::Record;
use crate::state_machine::StateReader;
use crate::types::{Entry, LogId, Request};

/// Batches of at most this many records are answered at commit. Larger batches form only under
/// load, where throughput, not a lone request's wait, is what counts, and where copying and
/// comparing their records would cost more than it saves.
pub const EARLY_MAX_RECORDS: usize = 16;

/// The registry shared by the batcher and the log store of one node.
#[derive(Debug)]
pub struct EarlyReceipts {
    waiting: Mutex<Vec<Waiter>>,
    // Number of registered batches: the log store skips the lock when it is zero.
    registered: AtomicUsize,
    next_id: AtomicU64,
    reader: StateReader,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    records: Arc<[Record]>,
    log_id: Option<LogId>,
    // Taken when the first log index is sent.
    answer: Option<oneshot::Sender<u64>>,
}

/// A registered batch. Dropping it withdraws the registration.
#[derive(Debug)]
pub struct Registration {
    early: Arc<EarlyReceipts>,
    id: u64,
    records: Arc<[Record]>,
    /// Resolves with the log index of the batch's first record once its entry is committed and
    /// the index is known without the apply. Never resolves otherwise.
    pub first_index: oneshot::Receiver<u64>,
}

impl Registration {
    /// The leaf hash of each registered record, in order: the `record_hash` of their receipts.
    pub fn record_hashes(&self) -> Vec<Hash> {
        self.records
            .iter()
            .map(|r| leaf_hash(&r.encode()))
            .collect()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiting = self.early.waiting();
        if let Some(at) = waiting.iter().position(|w| w.id == self.id) {
            waiting.swap_remove(at);
            self.early.registered.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn records_of(entry: &Entry) -> Option<&[Record]> {
    match &entry.payload {
        EntryPayload::Normal(Request::Append { records }) => Some(records),
        _ => None,
    }
}

impl EarlyReceipts {
    /// A registry whose first indices come from `reader`'s applied state.
    pub fn new(reader: StateReader) -> Arc<EarlyReceipts> {
        Arc::new(EarlyReceipts {
            waiting: Mutex::new(Vec::new()),
            registered: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            reader,
        })
    }

    fn waiting(&self) -> MutexGuard<'_, Vec<Waiter>> {
        // Poisoned only by a panic between plain assignments: the list is still whole.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `records`, about to be proposed as one entry; `None` for an empty batch or one
    /// larger than [`EARLY_MAX_RECORDS`].
    ///
    /// The origin check may refuse a record at the apply, which shifts the indices of those
    /// after it; so a batch is registered only if every record's seal verifies and its
    /// authority depends on the directory alone (no config or license status records, whose
    /// effect or authority depend on more of the state, nor governance steps, which depend on
    /// the catalog), and [`EarlyReceipts::committed`]
    /// checks that authority against the applied directory before it answers.
    pub fn register(self: &Arc<Self>, records: &Arc<[Record]>) -> Option<Registration> {
        self.register_checked(records, false)
    }

    /// [`EarlyReceipts::register`] for records whose seals were verified already (the notary
    /// checks those of its own callers before queueing them): saves one Ed25519 verification
    /// per record on the leader.
    pub fn register_verified(self: &Arc<Self>, records: &Arc<[Record]>) -> Option<Registration> {
        self.register_checked(records, true)
    }

    fn register_checked(
        self: &Arc<Self>,
        records: &Arc<[Record]>,
        seals_verified: bool,
    ) -> Option<Registration> {
        if records.is_empty() || records.len() > EARLY_MAX_RECORDS {
            return None;
        }
        let predictable = records.iter().all(|r| {
            !matches!(
                r.content(),
                Record::Config(_) | Record::LicenseStatus(_) | Record::Governance(_)
            ) && match r {
                Record::Sealed(s) => seals_verified || s.verify_signature().is_ok(),
                Record::BatchSealed(s) => seals_verified || s.verify_signature().is_ok(),
                // A group's authority is decided at the apply: only this node's own
                // (or verified) signatures are predictable.
                Record::BatchSignature(_) => seals_verified,
                _ => true,
            }
        });
        if !predictable {
            return None;
        }
        let (answer, first_index) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let records = records.clone();
        self.waiting().push(Waiter {
            id,
            records: records.clone(),
            log_id: None,
            answer: Some(answer),
        });
        self.registered.fetch_add(1, Ordering::SeqCst);
        Some(Registration {
            early: self.clone(),
            id,
            records,
            first_index,
        })
    }

    /// `entries` are durable in this node's log: each registered batch that one of them holds
    /// learns its log id. Call before reporting the append to openraft.
    pub fn appended(&self, entries: &[Entry]) {
        if self.registered.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut waiting = self.waiting();
        for entry in entries {
            let Some(records) = records_of(entry) else {
                continue;
            };
            if records.len() > EARLY_MAX_RECORDS {
                continue;
            }
            if let Some(w) = waiting
                .iter_mut()
                .find(|w| w.log_id.is_none() && *w.records == *records)
            {
                w.log_id = Some(entry.log_id);
            }
        }
    }

    /// Entries from Raft index `from` on were removed from the log (a new leader's log replaces
    /// them, or a purge): whatever was registered there is no longer there.
    pub fn removed(&self, from: u64, to: Option<u64>) {
        if self.registered.load(Ordering::SeqCst) == 0 {
            return;
        }
        for w in self.waiting().iter_mut() {
            if w.log_id
                .is_some_and(|id| id.index >= from && to.is_none_or(|to| id.index <= to))
            {
                w.log_id = None;
            }
        }
    }

    /// Entries up to `committed` are committed: answer the registered ones whose first log index
    /// is known without applying them. Called by the log store before openraft applies them.
    pub fn committed(&self, committed: &LogId) {
        if self.registered.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut waiting = self.waiting();
        // The state machine may apply meanwhile; it cannot apply beyond `committed`, and an
        // apply that moves past `next` only means the apply answers those entries instead.
        let (mut next, mut size, keys) = self.reader.next_to_apply();
        while next <= committed.index {
            let Some(w) = waiting
                .iter_mut()
                .find(|w| w.log_id.is_some_and(|id| id.index == next))
            else {
                break;
            };
            // The committed id names an entry of this log only at its own index.
            if next == committed.index && w.log_id != Some(*committed) {
                break;
            }
            // Registered entries hold no directory change: the directory applied before `next`
            // is the one in force for every entry of this chain.
            if let Some(keys) = keys.as_deref()
                && !authority_holds(keys, &w.records)
            {
                break;
            }
            let first = size;
            size += w.records.len() as u64;
            if let Some(answer) = w.answer.take() {
                // Promised before anyone is told: a reader after the answer waits for it.
                self.reader.promise(size);
                let _ = answer.send(first);
            }
            next += 1;
        }
    }
}

/// Whether every record of `records` speaks with authority under `keys`: a record a batch
/// signature of `records` covers, as that signature's key; any other, by its own seal.
fn authority_holds(keys: &qianlian_verifier::record::OriginKeys, records: &[Record]) -> bool {
    let mut covered_by = vec![None; records.len()];
    for (p, r) in records.iter().enumerate() {
        if let Record::BatchSignature(s) = r
            && let Some(range) = s.covered(p)
        {
            for slot in &mut covered_by[range] {
                *slot = Some(s);
            }
        }
    }
    records.iter().zip(covered_by).all(|(r, by)| match by {
        Some(s) => keys
            .covered_originator(s, r, None)
            .and_then(|o| keys.check_authority_by(r, None, Some(&o)))
            .is_ok(),
        None => keys.check_authority(r, None).is_ok(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::state_machine::StateMachineStore;
    use crate::state_machine::tests::{append, open, record};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn records(ids: impl IntoIterator<Item = u64>) -> Arc<[Record]> {
        ids.into_iter().map(record).collect()
    }

    /// A state machine that applied Raft entries 1..=3 holding six records, and a registry on
    /// it. Keep the directory while the store is in use.
    async fn applied_three() -> Result<
        (tempfile::TempDir, StateMachineStore, Arc<EarlyReceipts>),
        Box<dyn std::error::Error>,
    > {
        let dir = tempfile::tempdir()?;
        let (_db, mut sm) = open(dir.path()).await?;
        sm.apply(vec![
            append(1, [0, 1]),
            append(2, [2]),
            append(3, [3, 4, 5]),
        ])
        .await?;
        let early = EarlyReceipts::new(sm.reader());
        Ok((dir, sm, early))
    }

    #[tokio::test]
    async fn entries_right_after_the_applied_state_learn_their_index_at_commit() -> TestResult {
        let (_dir, mut sm, early) = applied_three().await?;
        let reader = sm.reader();
        let mut a = early.register(&records([6, 7])).ok_or("not registered")?;
        let mut b = early.register(&records([8])).ok_or("not registered")?;
        let mut c = early.register(&records([9, 10])).ok_or("not registered")?;
        early.appended(&[append(4, [6, 7]), append(5, [8]), append(6, [9, 10])]);
        // Committed up to 5: the entries at 4 and 5, in a row after the applied 3, are known.
        early.committed(&log_id(1, 1, 5));
        assert_eq!(a.first_index.try_recv()?, 6);
        assert_eq!(b.first_index.try_recv()?, 8);
        assert_eq!(c.first_index.try_recv(), Err(TryRecvError::Empty));
        // Entry 6 continues the chain while 4 and 5 are still registered.
        early.committed(&log_id(1, 1, 6));
        assert_eq!(c.first_index.try_recv()?, 9);
        assert_eq!(reader.tree_size(), 6);
        assert_eq!(reader.known_size(), 11);
        // The leaf hashes answered are those the apply computes.
        let applied = sm
            .apply(vec![append(4, [6, 7]), append(5, [8]), append(6, [9, 10])])
            .await?;
        assert_eq!(applied[0].first_index, 6);
        assert_eq!(applied[0].hashes, a.record_hashes());
        assert_eq!(applied[2].hashes, c.record_hashes());
        Ok(())
    }

    #[tokio::test]
    async fn an_entry_behind_an_unapplied_one_is_left_to_the_apply() -> TestResult {
        let (_dir, sm, early) = applied_three().await?;
        let mut r = early.register(&records([7])).ok_or("not registered")?;
        // Entry 4 (not registered: another caller's large batch, say) comes first.
        early.appended(&[append(4, [6]), append(5, [7])]);
        early.committed(&log_id(1, 1, 5));
        assert_eq!(r.first_index.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(sm.reader().known_size(), 6, "nothing promised");
        Ok(())
    }

    #[tokio::test]
    async fn entries_a_new_leader_replaced_are_not_answered() -> TestResult {
        let (_dir, _sm, early) = applied_three().await?;
        let mut r = early.register(&records([6])).ok_or("not registered")?;
        early.appended(&[append(4, [6])]);
        // Truncated, then the new leader's different entry lands at the same index.
        early.removed(4, None);
        early.appended(&[append(4, [99])]);
        early.committed(&log_id(1, 1, 4));
        assert_eq!(r.first_index.try_recv(), Err(TryRecvError::Empty));
        // A commit of another term at the entry's own index names another entry.
        let mut s = early.register(&records([7])).ok_or("not registered")?;
        early.appended(&[append(4, [7])]);
        early.committed(&log_id(2, 2, 4));
        assert_eq!(s.first_index.try_recv(), Err(TryRecvError::Empty));
        early.committed(&log_id(1, 1, 4));
        assert_eq!(s.first_index.try_recv()?, 6);
        Ok(())
    }

    #[tokio::test]
    async fn equal_batches_each_get_an_entry() -> TestResult {
        let (_dir, _sm, early) = applied_three().await?;
        let mut a = early.register(&records([6])).ok_or("not registered")?;
        let mut b = early.register(&records([6])).ok_or("not registered")?;
        early.appended(&[append(4, [6]), append(5, [6])]);
        early.committed(&log_id(1, 1, 5));
        let mut got = [a.first_index.try_recv()?, b.first_index.try_recv()?];
        got.sort_unstable();
        assert_eq!(got, [6, 7]);
        Ok(())
    }

    #[tokio::test]
    async fn only_small_batches_register_and_a_dropped_one_is_gone() -> TestResult {
        let (_dir, _sm, early) = applied_three().await?;
        assert!(early.register(&Arc::from([])).is_none());
        let large = records(6..6 + EARLY_MAX_RECORDS as u64 + 1);
        assert!(early.register(&large).is_none());
        let full = records(6..6 + EARLY_MAX_RECORDS as u64);
        let r = early
            .register(&full)
            .ok_or("a full batch is small enough")?;
        drop(r);
        assert_eq!(early.registered.load(Ordering::SeqCst), 0);
        assert!(early.waiting().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn batches_whose_indices_the_origin_check_could_shift_are_answered_by_the_apply()
    -> TestResult {
        use qianlian_verifier::ed25519_dalek::SigningKey;
        use qianlian_verifier::record::{Originator, SealedRecord, SignerRole};
        let (_dir, _sm, early) = applied_three().await?;
        let originator = Originator {
            role: SignerRole::Gateway,
            department: "market-regulation".into(),
            key_id: "k".into(),
            public_key: [0; 32],
        };
        let sealed = SealedRecord::seal(record(6), originator, &SigningKey::from_bytes(&[1; 32]));
        let mut forged = sealed.clone();
        forged.seal.signature[0] ^= 1;
        let forged = Record::Sealed(Box::new(forged));
        // A seal that does not verify: the apply refuses it and shifts what follows.
        assert!(
            early
                .register(&Arc::from([forged.clone(), record(7)]))
                .is_none()
        );
        // Unless the notary verified it already (it never queues one that fails).
        assert!(early.register_verified(&Arc::from([forged])).is_some());
        assert!(
            early
                .register(&Arc::from([Record::Sealed(Box::new(sealed))]))
                .is_some()
        );
        Ok(())
    }

    #[tokio::test]
    async fn reads_wait_until_what_was_answered_is_applied() -> TestResult {
        let (_dir, mut sm, early) = applied_three().await?;
        let reader = sm.reader();
        let mut r = early.register(&records([6, 7])).ok_or("not registered")?;
        early.appended(&[append(4, [6, 7])]);
        early.committed(&log_id(1, 1, 4));
        assert_eq!(r.first_index.try_recv()?, 6);
        // Not applied yet: a read gives up after its timeout rather than miss the records.
        assert_eq!(reader.settle(Duration::from_millis(20)).await, Err(6));
        let waiting = tokio::spawn({
            let reader = reader.clone();
            async move { reader.settle(Duration::from_secs(5)).await }
        });
        sm.apply(vec![append(4, [6, 7])]).await?;
        assert_eq!(waiting.await?, Ok(()));
        assert_eq!(reader.tree_size(), 8);
        Ok(())
    }
}
