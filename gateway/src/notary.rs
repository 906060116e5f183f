//! The Notary service: read the notarization log back, record by record.
//!
//! Inspectors, operators and nodes may read any record; a department may read the records it
//! is a party to (as caller or as owner), so one department cannot watch another's traffic.

use qianlian_proto::v1::notary_server::Notary as NotaryApi;
use qianlian_proto::v1::{GetLogEntryRequest, GetLogEntryResponse, Receipt};
use qianlian_raft_store::notary::Notary;
use qianlian_raft_store::record::Record;
use tonic::{Request, Response, Status};

use crate::error::{ServiceError, caller};
use crate::identity::Role;

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
        let party = match &record {
            Record::Access(a) => a.caller.department == who.department || a.owner == who.department,
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
            receipt: Some(Receipt {
                log_index: index,
                record_hash: hash.to_vec(),
            }),
            record: bytes,
            record_json,
        })
    }
}

#[tonic::async_trait]
impl NotaryApi for NotaryService {
    async fn get_log_entry(
        &self,
        request: Request<GetLogEntryRequest>,
    ) -> Result<Response<GetLogEntryResponse>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
}
