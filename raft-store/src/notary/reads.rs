//! Reads of the log as this node applied it: records and the configuration in force, audit
//! queries, roots and proofs, license state. Each waits until what this node answered at commit
//! is applied, so a caller reads its own writes.

use std::time::Duration;

use qianlian_verifier::{Hash, leaf_hash};

use super::Notary;
use super::error::NotaryError;
use crate::audit_query::{AuditPage, AuditQuery};
use crate::db::StoreError;
use crate::license::LicenseView;
use crate::record::{ConfigKind, ConfigRecord, Record};
use crate::state_machine::{ConfigPointer, ConfigPointers};

impl Notary {
    /// The record at `log_index` as applied on this node: its canonical bytes and leaf hash.
    /// `None` at or beyond the tree size. A stored value that is not a record is
    /// [`NotaryError::Storage`] ([`StoreError::Corrupt`]).
    pub async fn entry(&self, log_index: u64) -> Result<Option<(Vec<u8>, Hash)>, NotaryError> {
        self.settled().await?;
        let bytes = self.inner.reader.record(log_index).await?;
        Ok(bytes.map(|bytes| {
            let hash = leaf_hash(&bytes);
            (bytes, hash)
        }))
    }

    /// The cluster configuration of `kind` in force on this node: its version, log index and
    /// record; `None` before the first record of the kind.
    pub async fn config(
        &self,
        kind: ConfigKind,
    ) -> Result<Option<(ConfigPointer, ConfigRecord)>, NotaryError> {
        Ok(self
            .config_signed(kind)
            .await?
            .and_then(|(p, r)| match r.into_content() {
                Record::Config(c) => Some((p, c)),
                _ => None,
            }))
    }

    /// [`Notary::config`] as it is in the log: with the operator signatures it carries.
    pub async fn config_signed(
        &self,
        kind: ConfigKind,
    ) -> Result<Option<(ConfigPointer, Record)>, NotaryError> {
        self.settled().await?;
        let Some(pointer) = self.inner.reader.config_pointers().get(kind) else {
            return Ok(None);
        };
        let bytes = self.inner.reader.record(pointer.log_index).await?;
        match bytes.map(|b| Record::decode(&b)) {
            Some(Ok(r)) if matches!(r.content(), Record::Config(c) if c.change.kind() == kind) => {
                Ok(Some((pointer, r)))
            }
            _ => Err(NotaryError::Storage(StoreError::corrupt(
                format!("record {}", pointer.log_index),
                format!(
                    "the {} in force points here, but this is not one",
                    kind.as_str()
                ),
            ))),
        }
    }

    /// Every config record of `kind` applied on this node, in log order, with its log index and
    /// version (1 for the first): the history of the policy or of the directory. Read from the
    /// audit index; each record is checked to be of that kind ([`NotaryError::Storage`] if not).
    pub async fn config_history(
        &self,
        kind: ConfigKind,
    ) -> Result<Vec<ConfigPointer>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.config_history(kind).await?)
    }

    /// One page of the access records applied on this node that match `query` (see
    /// [`crate::audit_query`] for the semantics and the cost). Pass the page's `next` as the next
    /// query's `after` to continue: every page is read at the first page's tree size.
    /// [`NotaryError::Range`] for a cursor beyond this node's tree (issued by a node further
    /// ahead; retry once this one caught up), [`NotaryError::Storage`] if a record the index
    /// lists is missing or is not what the index says.
    pub async fn audit_query(&self, query: AuditQuery) -> Result<AuditPage, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.audit_query(query).await?)
    }

    /// Canonical bytes of the records at log indices `start..min(start + max, tree_size)`, in
    /// order (empty from the tree size on), read with one iterator: the log streamed to an
    /// integrity verifier page by page. `max` bounds the memory a call takes.
    pub async fn entries(&self, start: u64, max: usize) -> Result<Vec<Vec<u8>>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.entries(start, max).await?)
    }

    /// Follow changes of the cluster configuration in force on this node: the receiver sees a
    /// new value when a config record is applied or a snapshot installed.
    pub fn watch_config(&self) -> tokio::sync::watch::Receiver<ConfigPointers> {
        self.inner.reader.watch_config()
    }

    /// Number of records on this node's log: those applied, and those a caller already holds a
    /// receipt for while this node is applying them (see [`crate::commit_receipts`]). The next
    /// record gets at least this log index; every read here waits until these records are applied.
    pub fn tree_size(&self) -> u64 {
        self.inner.reader.known_size()
    }

    /// Wait until every record this node answered at commit is applied here, so that reads
    /// see a caller's own writes. Immediate unless an answer is only microseconds old.
    pub(super) async fn settled(&self) -> Result<(), NotaryError> {
        let timeout = self.inner.commit_timeout;
        self.inner.reader.settle(timeout).await.map_err(|applied| {
            NotaryError::Internal(format!(
                "this node committed records it has not applied within {timeout:?} \
                 (applied: {applied}); its state machine is stuck, see its log"
            ))
        })
    }

    /// Wait until this node has applied at least `at_least` records; returns the tree size.
    /// [`NotaryError::Unavailable`] (`CommitTimedOut`) if it has not within `timeout`.
    pub async fn wait_for_tree_size(
        &self,
        at_least: u64,
        timeout: Duration,
    ) -> Result<u64, NotaryError> {
        self.inner
            .reader
            .wait_for_tree_size(at_least, timeout)
            .await
            .map_err(|_| NotaryError::commit_timed_out(timeout))
    }

    /// The RFC 6962 root `MTH(D[0:tree_size])` of this node's log, for any `tree_size` up to
    /// the applied size (the empty tree's root, `SHA-256()`, for 0). [`NotaryError::Range`]
    /// beyond it.
    pub async fn root_at(&self, tree_size: u64) -> Result<Hash, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.root_at(tree_size).await?)
    }

    /// The RFC 6962 inclusion proof `PATH(log_index, D[0:tree_size])`, bottom-up: check it with
    /// `qianlian_verifier::verify_inclusion`. [`NotaryError::Range`] if `tree_size` is beyond
    /// the applied tree or `log_index >= tree_size`.
    pub async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: u64,
    ) -> Result<Vec<Hash>, NotaryError> {
        self.settled().await?;
        Ok(self
            .inner
            .reader
            .inclusion_proof(log_index, tree_size)
            .await?)
    }

    /// The RFC 6962 consistency proof `PROOF(old_size, D[0:new_size])`, bottom-up (empty when
    /// `old_size` is 0 or equals `new_size`): check it with
    /// `qianlian_verifier::verify_consistency`. [`NotaryError::Range`] if `new_size` is beyond
    /// the applied tree or `old_size > new_size`.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, NotaryError> {
        self.settled().await?;
        Ok(self
            .inner
            .reader
            .consistency_proof(old_size, new_size)
            .await?)
    }

    /// The log index of the first record whose leaf hash (its [`Receipt::record_hash`]) is
    /// `record_hash`, or `None` if this node has applied no such record.
    ///
    /// [`Receipt::record_hash`]: super::receipt::Receipt::record_hash
    pub async fn index_of(&self, record_hash: &Hash) -> Result<Option<u64>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.index_of(*record_hash).await?)
    }

    /// The e-license whose hash (SHA-256 of its COSE_Sign1 bytes) is `license_hash`, as of the
    /// records applied on this node: its first issuance record and log index, its current
    /// status and every status record of it. `None` if no applied record issues it. A status
    /// record committed on the leader shows here once this node applied it (a heartbeat later
    /// on a follower; wait with [`Notary::wait_for_tree_size`] for a known log index).
    ///
    /// Rules (see [`crate::license`]): the first issuance counts; a status record of a license
    /// not issued before it is ignored; `Revoked` is final; `Suspended` lasts until a later
    /// `Reinstated`. A stored state that contradicts the records is
    /// [`NotaryError::Storage`] ([`StoreError::Corrupt`]).
    pub async fn license(&self, license_hash: &Hash) -> Result<Option<LicenseView>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.license(*license_hash).await?)
    }

    /// Log indices, ascending, of every record about holder `holder_hash` (the keyed hash of
    /// the holder's identifier) applied on this node: each issuance record naming it (a
    /// repeated issuance too) and each status record of a license first issued to it, whether
    /// or not it changed the status. Empty for an unknown holder.
    pub async fn holder_records(&self, holder_hash: &Hash) -> Result<Vec<u64>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.holder_records(*holder_hash).await?)
    }

    /// The catalog entries in force on this node, by dataset: each with the log index of its
    /// record, its leaf hash and the record.
    pub async fn catalog(
        &self,
    ) -> Result<Vec<(u64, Hash, qianlian_verifier::record::GovernanceRecord)>, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.catalog().await?)
    }

    /// The version of `dataset`'s catalog entry in force on this node; 0 for none.
    pub async fn catalog_version(&self, dataset: &str) -> Result<u64, NotaryError> {
        self.settled().await?;
        Ok(self.inner.reader.governance().catalog_version(dataset))
    }
}
