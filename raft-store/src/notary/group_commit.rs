//! Group commit: many concurrent appends share one Raft entry, one replication round and one
//! fsync.
//!
//! Callers queue `(record, reply)` pairs on a channel. One batcher task takes a permit for a
//! write, then drains whatever is waiting (up to `max_batch`) into ONE `client_write`. At most
//! `max_in_flight` writes run at once; while they do, new requests pile up in the channel and
//! leave together in the next batch, so the batch size follows the load without a timer: an
//! idle node commits a lone record at once, a busy one commits hundreds per entry.
//!
//! Each caller gets its own receipt: record `i` of a batch has log index `first_index + i` and
//! the leaf hash the state machine computed when applying it.

use std::sync::Arc;
use std::time::Duration;

use qianlian_verifier::Hash;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{NotaryError, Receipt};
use crate::record::Record;
use crate::types::{Request, TypeConfig};

/// One append waiting for its batch.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) record: Record,
    pub(super) reply: oneshot::Sender<Result<Receipt, NotaryError>>,
}

/// How the batcher batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_batch: usize,
    pub(super) max_in_flight: usize,
    pub(super) commit_timeout: Duration,
}

/// Run the batcher until every sender is gone (or the task is aborted at shutdown).
pub(super) async fn run(
    raft: openraft::Raft<TypeConfig>,
    mut queue: mpsc::Receiver<Pending>,
    limits: Limits,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        // The permit first: while every write is busy, requests accumulate in the queue.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(limits.max_batch.min(queue.len() + 1));
        batch.push(first);
        while batch.len() < limits.max_batch {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch, limits.commit_timeout).await;
            drop(permit);
        });
    }
}

/// Write one batch as one Raft entry and answer every caller in it.
async fn commit(raft: &openraft::Raft<TypeConfig>, batch: Vec<Pending>, timeout: Duration) {
    // A caller that already gave up was told "outcome unknown": leaving its record out is
    // within that answer and spares the log a record nobody holds a receipt for.
    let (records, replies): (Vec<Record>, Vec<_>) = batch
        .into_iter()
        .filter(|p| !p.reply.is_closed())
        .map(|p| (p.record, p.reply))
        .unzip();
    if records.is_empty() {
        return;
    }
    let count = records.len();
    let written =
        tokio::time::timeout(timeout, raft.client_write(Request::Append { records })).await;
    let outcome: Result<(u64, Vec<Hash>), NotaryError> = match written {
        Err(_) => Err(NotaryError::commit_timed_out(timeout)),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(response)) if response.data.hashes.len() == count => {
            Ok((response.data.first_index, response.data.hashes))
        }
        Ok(Ok(response)) => Err(NotaryError::Internal(format!(
            "a batch of {count} records was answered with {} hashes",
            response.data.hashes.len()
        ))),
    };
    match outcome {
        Ok((first_index, hashes)) => {
            for ((reply, record_hash), log_index) in
                replies.into_iter().zip(hashes).zip(first_index..)
            {
                // A caller that left meanwhile has nobody to tell.
                let _ = reply.send(Ok(Receipt {
                    log_index,
                    record_hash,
                }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
