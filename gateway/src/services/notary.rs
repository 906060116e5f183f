//! The Notary service: read the notarization log back, record by record, with the checkpoints
//! and proofs that let anyone check it was not rewritten.
//!
//! Records: inspectors, operators and nodes may read any record; a department may read the
//! records it is a party to (as caller or as owner), so one department cannot watch another's
//! traffic. Checkpoints and proofs hold only hashes: they are public, no certificate needed.
//! Being public, they are answered from the node's shared cosigned checkpoint (at most
//! `checkpoint_max_age` old, default 1 s), so callers do not make the node ask every member to
//! cosign again.

use qianlian_proto::v1::get_inclusion_proof_request::Record as ProofTarget;
use qianlian_proto::v1::notary_server::Notary as NotaryApi;
use qianlian_proto::v1::{
    Checkpoint, GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetInclusionProofRequest, GetInclusionProofResponse,
    GetLogEntryRequest, GetLogEntryResponse,
};
use qianlian_raft_store::notary::{Notary, Receipt};
use qianlian_raft_store::record::Record;
use tonic::{Request, Response, Status};

use crate::domain::identity::Role;
use crate::services::convert;
use crate::services::error::{ServiceError, caller};

/// gRPC face of the notarization log.
#[derive(Debug, Clone)]
pub struct NotaryService {
    pub notary: Notary,
}

impl NotaryService {
    async fn get(
        &self,
        req: Request<GetLogEntryRequest>,
    ) -> Result<GetLogEntryResponse, ServiceError> {
        let who = caller(&req)?;
        let index = req.get_ref().log_index;
        let Some((bytes, hash)) = self.notary.entry(index).await? else {
            return Err(ServiceError::NotFound {
                message: format!(
                    "log index {index} is beyond the end of the log (size {})",
                    self.notary.tree_size()
                ),
                receipt: None,
            });
        };
        let record = Record::decode(&bytes)
            .map_err(|e| ServiceError::Internal(format!("log index {index}: {e}")))?;
        let party = match record.content() {
            Record::Access(a) => a.caller.department == who.department || a.owner == who.department,
            Record::LicenseIssued(l) => l.department == who.department,
            Record::LicenseStatus(l) => l.caller.department == who.department,
            Record::Exchange(x) => {
                x.caller.department == who.department
                    || x.owner == who.department
                    || x.gateway == who.department
            }
            // Policy and directory govern every department: all may read them. A batch
            // signature holds a key and a root, nothing of a department's: any party to a record
            // it covers needs it to prove the record's origin.
            Record::Config(_) | Record::BatchSignature(_) => true,
            // The catalog is published for every department to read.
            Record::Governance(g) => match &g.step {
                qianlian_verifier::record::GovernanceStep::Catalog(_) => true,
            },
            // `content` strips the seal.
            Record::Sealed(_) | Record::Authorized(_) | Record::BatchSealed(_) => false,
        };
        if who.role == Role::Department && !party {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "department `{}` is not a party to log index {index}; only inspectors read other departments' records",
                    who.department
                ),
                receipt: None,
            });
        }
        let record_json = serde_json::to_string_pretty(&record)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(GetLogEntryResponse {
            receipt: Some(convert::receipt(&Receipt {
                log_index: index,
                record_hash: hash,
            })),
            record: bytes,
            record_json,
        })
    }
}

impl NotaryService {
    /// The tree size to prove against: the one asked for, or that of the shared cosigned
    /// checkpoint (at most a second stale, see `Notary::shared_checkpoint`), which is handed
    /// back with the proof so the two always match. `covering` is the least size the proof
    /// needs: a shared checkpoint smaller than that is renewed when this node has that many
    /// records.
    async fn size_or_latest(
        &self,
        size: u64,
        covering: u64,
    ) -> Result<(u64, Option<Checkpoint>), ServiceError> {
        if size != 0 {
            return Ok((size, None));
        }
        let c = self.notary.shared_checkpoint_covering(covering).await?;
        Ok((c.size, Some(convert::checkpoint(c))))
    }

    async fn inclusion(
        &self,
        req: GetInclusionProofRequest,
    ) -> Result<GetInclusionProofResponse, ServiceError> {
        let index = match req.record {
            Some(ProofTarget::LogIndex(i)) => i,
            Some(ProofTarget::RecordHash(h)) => {
                let h: [u8; 32] = h.as_slice().try_into().map_err(|_| {
                    ServiceError::InvalidArgument(format!(
                        "record_hash must be 32 bytes (SHA-256), got {}",
                        h.len()
                    ))
                })?;
                self.notary
                    .index_of(&h)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound {
                        message: format!("no record with hash {} in the log", hex::encode(h)),
                        receipt: None,
                    })?
            }
            None => {
                return Err(ServiceError::InvalidArgument(
                    "name the record by `log_index` or `record_hash`".into(),
                ));
            }
        };
        let (size, checkpoint) = self
            .size_or_latest(req.tree_size, index.saturating_add(1))
            .await?;
        if index >= size {
            return Err(ServiceError::InvalidArgument(format!(
                "log index {index} is not in a tree of size {size}; ask for a tree size above {index}"
            )));
        }
        let (_, hash) = self
            .notary
            .entry(index)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                message: format!("log index {index} is beyond the end of the log"),
                receipt: None,
            })?;
        let proof = self.notary.inclusion_proof(index, size).await?;
        Ok(GetInclusionProofResponse {
            log_index: index,
            record_hash: hash.to_vec(),
            tree_size: size,
            proof: convert::proof(&proof),
            checkpoint,
        })
    }

    async fn consistency(
        &self,
        req: GetConsistencyProofRequest,
    ) -> Result<GetConsistencyProofResponse, ServiceError> {
        let (new_size, checkpoint) = self.size_or_latest(req.new_size, req.old_size).await?;
        if req.old_size > new_size {
            return Err(ServiceError::InvalidArgument(format!(
                "old_size {} is larger than new_size {new_size}",
                req.old_size
            )));
        }
        let proof = self
            .notary
            .consistency_proof(req.old_size, new_size)
            .await?;
        Ok(GetConsistencyProofResponse {
            old_size: req.old_size,
            new_size,
            proof: convert::proof(&proof),
            checkpoint,
        })
    }
}

#[tonic::async_trait]
impl NotaryApi for NotaryService {
    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        let c = self
            .notary
            .shared_checkpoint_covering(request.get_ref().min_tree_size)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(GetCheckpointResponse {
            checkpoint: Some(convert::checkpoint(c)),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        Ok(Response::new(self.inclusion(request.into_inner()).await?))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        Ok(Response::new(self.consistency(request.into_inner()).await?))
    }

    async fn get_log_entry(
        &self,
        request: Request<GetLogEntryRequest>,
    ) -> Result<Response<GetLogEntryResponse>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
}
