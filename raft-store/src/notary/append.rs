//! Appending records, one or a batch, through the group-commit batcher.

use tokio::sync::oneshot;

use super::Notary;
use super::error::NotaryError;
use super::group_commit::{self, ANSWER_GRACE, Pending};
use super::receipt::Receipt;
use crate::record::Record;
use qianlian_verifier::record::Originator;

impl Notary {
    /// Append `record` to the notarization log. Returns once it is committed on a majority, with
    /// its log index and leaf hash: a small batch as soon as the commit is known
    /// ([`crate::commit_receipts`]), a larger one once the leader applied it. Reads through this
    /// notary wait until the node applied what it answered, so they see the record. Any node takes
    /// appends: a follower forwards them to the leader.
    ///
    /// Errors: [`NotaryError::InvalidRecord`] for a record that breaks [`Record::check`]
    /// (nothing was recorded); [`NotaryError::Unavailable`] when there is no leader or it
    /// cannot be reached within `commit_timeout` (nothing was recorded), or when the commit
    /// takes longer than `commit_timeout` (`CommitTimedOut`: the outcome is unknown);
    /// [`NotaryError::Storage`] and [`NotaryError::ShutDown`] as documented there.
    pub async fn append(&self, record: Record) -> Result<Receipt, NotaryError> {
        self.append_one(record, None).await
    }

    /// [`Notary::append`] for an unsealed record that this node seals as `originator` (whose
    /// public key must be this node's checkpoint key) when the group-commit batch it joins is
    /// formed: one signature for every record sealed in that batch, which every node then
    /// verifies once (see `qianlian_verifier::record::batch`). The origin check runs on
    /// every node when the record applies, as for any record.
    pub async fn append_sealed(
        &self,
        record: Record,
        originator: Originator,
    ) -> Result<Receipt, NotaryError> {
        self.append_one(record, Some(originator)).await
    }

    /// One record, sealed here as `seal_as` if given.
    #[tracing::instrument(
        name = "notary.append",
        level = "info",
        skip_all,
        fields(
            records = 1,
            log_index = tracing::field::Empty,
            error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    )]
    async fn append_one(
        &self,
        record: Record,
        seal_as: Option<Originator>,
    ) -> Result<Receipt, NotaryError> {
        let receipts = self.submit(vec![vec![record]], seal_as).await;
        record_outcome(&receipts);
        receipts?
            .pop()
            .ok_or_else(|| NotaryError::Internal("an append was answered without a receipt".into()))
    }

    /// Append `records`, in order, and return their receipts in the same order. Up to
    /// `max_batch` records share one Raft entry and get consecutive log indices; a longer list
    /// is split into such entries. Errors as [`Notary::append`]; on an error some entries of a
    /// long list may have been committed.
    #[tracing::instrument(
        name = "notary.append_batch",
        level = "info",
        skip_all,
        fields(
            records = records.len(),
            log_index = tracing::field::Empty,
            error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    )]
    pub async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Receipt>, NotaryError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let chunks = records
            .chunks(self.inner.max_batch)
            .map(<[Record]>::to_vec)
            .collect();
        let receipts = self.submit(chunks, None).await;
        record_outcome(&receipts);
        receipts
    }

    /// Queue each chunk as one group-commit request and collect the receipts in order.
    /// `seal_as`: the originator a single record is to be sealed as by this node.
    async fn submit(
        &self,
        chunks: Vec<Vec<Record>>,
        seal_as: Option<Originator>,
    ) -> Result<Vec<Receipt>, NotaryError> {
        // Refuse before anything is queued: a record in the log stays there for good.
        for (i, record) in chunks.iter().flatten().enumerate() {
            record
                .check()
                .map_err(|e| NotaryError::InvalidRecord(format!("record {i} of the batch: {e}")))?;
            // A record this node seals is sealed with a key the directory lists for it (the
            // caller looked it up); its seal exists only once the batch is formed.
            if seal_as.is_some() {
                continue;
            }
            // Every node runs the same check when it applies the record; refusing here saves
            // the round and tells the caller before anything is queued.
            self.inner
                .reader
                .check_origin(record)
                .await
                .map_err(|e| NotaryError::Refused {
                    reason: format!("record {i} of the batch: {e}"),
                    appended: 0,
                })?;
        }
        let timeout = self.inner.commit_timeout;
        let waited = tokio::time::timeout(timeout + ANSWER_GRACE, async {
            let mut answers = Vec::with_capacity(chunks.len());
            for records in chunks {
                let (reply, answer) = oneshot::channel();
                self.inner
                    .queue
                    .send(Pending {
                        leaves: match &seal_as {
                            Some(_) => records
                                .iter()
                                .map(|r| qianlian_verifier::leaf_hash(&r.encode()))
                                .collect(),
                            None => Vec::new(),
                        },
                        records,
                        reply,
                        forwarded: false,
                        grouped: false,
                        verified: false,
                    })
                    .await
                    .map_err(|_| NotaryError::ShutDown)?;
                answers.push(answer);
            }
            let mut receipts = Vec::new();
            for answer in answers {
                receipts.extend(answer.await.map_err(|_| NotaryError::ShutDown)??);
            }
            Ok(receipts)
        })
        .await;
        waited.unwrap_or(Err(NotaryError::commit_timed_out(timeout)))
    }

    /// Records the origin check refused on this node since it started (for metrics).
    pub fn records_refused(&self) -> u64 {
        self.inner.reader.refused()
    }

    /// Counters of the group-commit batches this node formed (for metrics).
    pub fn batch_stats(&self) -> &group_commit::BatchStats {
        &self.inner.batch_stats
    }
}

/// Record an append's outcome on its span: the first log index, or the error.
fn record_outcome(result: &Result<Vec<Receipt>, NotaryError>) {
    let span = tracing::Span::current();
    match result {
        Ok(receipts) => {
            if let Some(first) = receipts.first() {
                // As a signed integer: span exporters write u64 as text.
                span.record(
                    "log_index",
                    i64::try_from(first.log_index).unwrap_or(i64::MAX),
                );
            }
        }
        Err(e) => {
            span.record("error", tracing::field::display(e));
            span.record("otel.status_code", "ERROR");
        }
    }
}
