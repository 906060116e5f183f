//! Service errors and their mapping to gRPC statuses, in one place.
//!
//! Callers from other departments get a precise reason (which rule is missing, which key rule
//! was broken) and, for notarized refusals, the receipt in the status metadata; never internal
//! details, which go to the node's log instead.

use qianlian_proto::contract::{
    LEADER_HEADER, LOG_INDEX_HEADER, POLICY_VERSION_HEADER, RECORD_HASH_HEADER,
};
use qianlian_raft_store::notary::{NotaryError, Receipt, UnavailableReason};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::domain::identity::PeerIdentity;
use crate::node::tls::ConnInfo;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No usable client certificate. The caller must present a valid one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request breaks a rule; the message says which. Retrying unchanged cannot help.
    #[error("{0}")]
    InvalidArgument(String),
    /// Refused by policy or role; the refusal is on the record when `receipt` is set.
    #[error("{message}")]
    PermissionDenied {
        message: String,
        receipt: Option<Receipt>,
    },
    /// Allowed, but no such record; the access is on the record.
    #[error("{message}")]
    NotFound {
        message: String,
        receipt: Option<Receipt>,
    },
    /// The log could not commit in time (no leader, no quorum). Retrying later may help.
    #[error("{0}")]
    Unavailable(String),
    /// The request is valid but cannot be served by this node in its present set-up; the
    /// message says where or how it can be.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A change that only the Raft leader makes reached another node. `leader` is the
    /// leader's address when this node knows it, sent in the `x-qianlian-leader` metadata;
    /// the same call sent there can succeed.
    #[error("{message}")]
    NotLeader {
        message: String,
        leader: Option<String>,
    },
    /// A fault inside this node; details are in its log.
    #[error("{0}")]
    Internal(String),
    /// This node's state does not yet agree with itself (a record in the log but not in
    /// force, a log index missing below the log's size). Not the caller's fault; the message
    /// names no secret and is passed on. A retry may help once the node has caught up.
    #[error("{0}")]
    Inconsistent(String),
    /// A status from another department's gateway, passed on as it came.
    #[error("{0}")]
    Forwarded(Status),
    /// A limit of the node's edge was hit (calls per second from one source); the message names
    /// the limit. Retrying after a pause helps.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The call took longer than the node allows (`limits.request_timeout_ms`). Whether a write
    /// was recorded is unknown; check before retrying.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A notarized refusal with the version of the policy that decided.
    #[error("{message}")]
    Refused {
        message: String,
        receipt: Receipt,
        policy_version: u64,
    },
}

impl From<NotaryError> for ServiceError {
    fn from(e: NotaryError) -> Self {
        match e {
            NotaryError::Unavailable(m) => {
                let outcome = match m.reason {
                    // The record may still commit: the caller must not assume either way.
                    UnavailableReason::CommitTimedOut(_) => {
                        "the record may still be committed; check the log before retrying"
                    }
                    _ => "nothing was recorded or changed; retry later",
                };
                ServiceError::Unavailable(format!(
                    "the notarization log cannot commit right now ({m}); {outcome}"
                ))
            }
            // A proof or checkpoint asked for a size or index the log does not have.
            NotaryError::Range(r) => ServiceError::InvalidArgument(r.to_string()),
            NotaryError::InvalidRecord(m) => ServiceError::InvalidArgument(m),
            e @ NotaryError::Refused { .. } => ServiceError::PermissionDenied {
                message: e.to_string(),
                receipt: None,
            },
            NotaryError::NoCheckpoint(m) => ServiceError::Unavailable(format!(
                "no signed checkpoint yet ({m}); retry once the log has records"
            )),
            other => ServiceError::Internal(format!("notarization log: {other}")),
        }
    }
}

fn with_receipt(mut status: Status, receipt: Option<Receipt>) -> Status {
    if let Some(r) = receipt {
        let md = status.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(r.log_index.to_string()) {
            md.insert(LOG_INDEX_HEADER, v);
        }
        if let Ok(v) = MetadataValue::try_from(hex::encode(r.record_hash)) {
            md.insert(RECORD_HASH_HEADER, v);
        }
    }
    status
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::PermissionDenied { message, receipt } => {
                with_receipt(Status::permission_denied(message), receipt)
            }
            ServiceError::NotFound { message, receipt } => {
                with_receipt(Status::not_found(message), receipt)
            }
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::NotLeader { message, leader } => {
                let mut s = Status::failed_precondition(message);
                if let Some(addr) = leader
                    && let Ok(v) = MetadataValue::try_from(addr)
                {
                    s.metadata_mut().insert(LEADER_HEADER, v);
                }
                s
            }
            ServiceError::Forwarded(s) => s,
            ServiceError::Refused {
                message,
                receipt,
                policy_version,
            } => {
                let mut s = with_receipt(Status::permission_denied(message), Some(receipt));
                if let Ok(v) = MetadataValue::try_from(policy_version.to_string()) {
                    s.metadata_mut().insert(POLICY_VERSION_HEADER, v);
                }
                s
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::new(
                    Code::Internal,
                    "internal error in the gateway; the operator can find details in its log",
                )
            }
            ServiceError::Inconsistent(m) => Status::internal(m),
            ServiceError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ServiceError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        }
    }
}

/// The authenticated caller of a request, or UNAUTHENTICATED saying what is wrong.
pub fn caller<T>(req: &Request<T>) -> Result<PeerIdentity, ServiceError> {
    match req.extensions().get::<ConnInfo>().map(|c| &c.peer) {
        Some(Some(Ok(id))) => Ok(id.clone()),
        Some(Some(Err(e))) => Err(ServiceError::Unauthenticated(e.to_string())),
        Some(None) | None => Err(ServiceError::Unauthenticated(
            "this service needs a client certificate: connect with your department's certificate and key".into(),
        )),
    }
}

/// A service error as an HTTP/JSON answer: the status that fits and `{"error": message}`;
/// internal details go to the node's log, not to the caller.
pub fn http_error(e: ServiceError) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    let code = match &e {
        ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        ServiceError::PermissionDenied { .. } | ServiceError::Refused { .. } => {
            StatusCode::FORBIDDEN
        }
        ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
        ServiceError::FailedPrecondition(_) => StatusCode::CONFLICT,
        ServiceError::Unavailable(_)
        | ServiceError::NotLeader { .. }
        | ServiceError::Inconsistent(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        ServiceError::Forwarded(_) => StatusCode::BAD_GATEWAY,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match e {
        ServiceError::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            "internal error in the gateway".to_owned()
        }
        other => other.to_string(),
    };
    (code, axum::Json(serde_json::json!({ "error": message })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_leader_names_the_leader_in_the_metadata_when_it_knows_it() {
        let status = Status::from(ServiceError::NotLeader {
            message: "node 2 is not the leader".into(),
            leader: Some("https://10.0.0.1:7400".into()),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "node 2 is not the leader");
        assert_eq!(
            status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("https://10.0.0.1:7400")
        );
        let status = Status::from(ServiceError::NotLeader {
            message: "no leader is known".into(),
            leader: None,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.metadata().get(LEADER_HEADER).is_none());
    }

    #[test]
    fn an_inconsistent_state_is_internal_and_says_what() {
        let status = Status::from(ServiceError::Inconsistent("log index 7 is missing".into()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "log index 7 is missing");
    }
}
