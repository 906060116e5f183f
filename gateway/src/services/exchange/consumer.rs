//! The consumer's side: a request for another department's data is forwarded over mutual TLS
//! to the owner's gateway, found in the directory. What comes back is checked against its
//! digest and recorded as consumer, under the request id this gateway drew for the call
//! (never the caller's), which the owner's record carries too; the owner's refusal is passed
//! on with this gateway's receipt. What the owner's gateway says is bounded before it goes
//! into this gateway's record: [`MAX_OWNER_TEXT`] bytes of text, [`MAX_OWNER_FIELDS`] field
//! names.

use std::collections::BTreeSet;

use qianlian_proto::contract::POLICY_VERSION_HEADER;
use qianlian_proto::v1::{
    GetRecordRequest, GetRecordResponse, QueryRecordsRequest, QueryRecordsResponse,
};
use qianlian_raft_store::notary::Receipt;
use qianlian_raft_store::record::{Action, Side, SubjectHash};
use tonic::{Code, Status};

use super::{Call, Checked, ExchangeService, Outcome, query_digest, sha256};
use crate::domain::identity::{PeerIdentity, Role};
use crate::domain::policy::Fields;
use crate::node::forward::{ForwardError, Forwarder, OwnerGateway};
use crate::services::convert;
use crate::services::error::ServiceError;

/// Most bytes of the owner's words (its rule, its status message) this gateway records.
pub const MAX_OWNER_TEXT: usize = 1024;
/// Most disclosed field names of the owner's answer this gateway records, each at most 64
/// bytes (a field name's longest).
pub const MAX_OWNER_FIELDS: usize = 256;

/// At most `max` bytes of `text` (cut at a character boundary, the cut said), control
/// characters as spaces: the owner's gateway is another department's, and what it says must
/// not make this gateway's records or messages as large or as strange as it likes.
fn bounded(text: &str, max: usize) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    if text.len() <= max {
        return clean(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", clean(&text[..end]), text.len() - end)
}

/// The owner's list of disclosed fields, bounded in count and length.
fn bounded_fields(fields: &[String]) -> Vec<String> {
    fields
        .iter()
        .take(MAX_OWNER_FIELDS)
        .map(|f| bounded(f, 64))
        .collect()
}

/// The owner's answer, or the transport's status; a gateway that is not the one the directory
/// pins was sent nothing, so there is nothing to record: the caller learns why at once.
fn forwarded<T>(answer: Result<T, ForwardError>) -> Result<Result<T, Status>, ServiceError> {
    match answer {
        Ok(t) => Ok(Ok(t)),
        Err(ForwardError::Status(status)) => Ok(Err(status)),
        Err(ForwardError::WrongGateway(why)) => Err(ServiceError::FailedPrecondition(why)),
    }
}

impl ExchangeService {
    /// The consumer's side of a read: forward to the owner's gateway, check and notarize what
    /// comes back.
    pub(super) async fn forward_get(
        &self,
        call: Call,
        checked: Checked,
        msg: GetRecordRequest,
    ) -> Result<GetRecordResponse, ServiceError> {
        self.check_own_department(&call.who, &checked)?;
        let (forwarder, owner) = self.forwarder_for(&checked)?;
        let url = owner.url.clone();
        let purpose = msg.purpose.clone();
        let answer = forwarded(forwarder.get(&owner, msg, &call.request_id).await)?;
        let (outcome, result) = match answer {
            Ok(resp) => (self.read_outcome(&checked, &resp)?, Ok(resp)),
            Err(status) => {
                let outcome = self.owner_answer(&checked, &url, &status, BTreeSet::new())?;
                (outcome, Err(status))
            }
        };
        let receipt = self
            .notarize(
                &call,
                Side::Consumer,
                &checked,
                Action::Read,
                &purpose,
                &outcome,
            )
            .await?;
        match result {
            Ok(mut resp) => {
                resp.consumer_receipt = Some(convert::receipt(&receipt));
                Ok(resp)
            }
            Err(status) if status.code() == Code::PermissionDenied => {
                Err(ServiceError::PermissionDenied {
                    message: forwarded_message(&status, &receipt),
                    receipt: Some(receipt),
                })
            }
            Err(status) => Err(ServiceError::NotFound {
                message: forwarded_message(&status, &receipt),
                receipt: Some(receipt),
            }),
        }
    }

    /// The consumer's side of a query: forward to the owner's gateway, check and notarize
    /// what comes back. `subjects` are those the query's conditions name.
    pub(super) async fn forward_query(
        &self,
        call: Call,
        checked: Checked,
        msg: QueryRecordsRequest,
        subjects: BTreeSet<SubjectHash>,
    ) -> Result<QueryRecordsResponse, ServiceError> {
        self.check_own_department(&call.who, &checked)?;
        let (forwarder, owner) = self.forwarder_for(&checked)?;
        let url = owner.url.clone();
        let purpose = msg.purpose.clone();
        let answer = forwarded(forwarder.query(&owner, msg, &call.request_id).await)?;
        let (outcome, result) = match answer {
            Ok(resp) => (self.query_outcome(&checked, &resp, subjects)?, Ok(resp)),
            Err(status) => {
                let outcome = self.owner_answer(&checked, &url, &status, subjects)?;
                (outcome, Err(status))
            }
        };
        let receipt = self
            .notarize(
                &call,
                Side::Consumer,
                &checked,
                Action::Query,
                &purpose,
                &outcome,
            )
            .await?;
        match result {
            Ok(mut resp) => {
                resp.consumer_receipt = Some(convert::receipt(&receipt));
                Ok(resp)
            }
            Err(status) => Err(ServiceError::PermissionDenied {
                message: forwarded_message(&status, &receipt),
                receipt: Some(receipt),
            }),
        }
    }

    /// What the consumer records for a record the owner's gateway disclosed, once its payload
    /// matches the digest the owner notarized.
    fn read_outcome(
        &self,
        checked: &Checked,
        resp: &GetRecordResponse,
    ) -> Result<Outcome, ServiceError> {
        if sha256(&resp.payload).as_slice() != resp.payload_digest.as_slice() {
            return Err(ServiceError::Internal(format!(
                "the gateway of `{}` sent a payload that does not match its digest",
                checked.owner
            )));
        }
        let mut subjects = BTreeSet::new();
        self.subjects_in(&checked.dataset, &resp.payload, &mut subjects)?;
        Ok(Outcome {
            decision: crate::domain::policy::Decision {
                allowed: true,
                rule: bounded(&resp.rule, MAX_OWNER_TEXT),
                fields: Fields::All,
            },
            policy_version: resp.policy_version,
            disclosed: bounded_fields(&resp.disclosed_fields),
            result_count: 1,
            subjects,
            response_digest: Some(sha256(&resp.payload)),
        })
    }

    /// What the consumer records for the records the owner's gateway disclosed for a query,
    /// once they match the digest the owner notarized.
    fn query_outcome(
        &self,
        checked: &Checked,
        resp: &QueryRecordsResponse,
        mut subjects: BTreeSet<SubjectHash>,
    ) -> Result<Outcome, ServiceError> {
        if query_digest(&resp.records).as_slice() != resp.payload_digest.as_slice() {
            return Err(ServiceError::Internal(format!(
                "the gateway of `{}` sent records that do not match their digest",
                checked.owner
            )));
        }
        for r in &resp.records {
            self.subjects_in(&checked.dataset, &r.payload, &mut subjects)?;
        }
        Ok(Outcome {
            decision: crate::domain::policy::Decision {
                allowed: true,
                rule: bounded(&resp.rule, MAX_OWNER_TEXT),
                fields: Fields::All,
            },
            policy_version: resp.policy_version,
            disclosed: bounded_fields(&resp.disclosed_fields),
            result_count: resp.records.len() as u32,
            subjects,
            response_digest: Some(query_digest(&resp.records)),
        })
    }

    /// A forwarded request must come from this gateway's own department.
    fn check_own_department(
        &self,
        who: &PeerIdentity,
        checked: &Checked,
    ) -> Result<(), ServiceError> {
        let own = self.department.as_deref().unwrap_or_default();
        if who.role != Role::Department || who.department != own {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "this is the gateway of `{own}`: it forwards requests of `{own}` only; {who} must call its own gateway, or the owner's gateway ({}) directly",
                    checked.gateway.as_deref().unwrap_or("not in the directory")
                ),
                receipt: None,
            });
        }
        Ok(())
    }

    fn forwarder_for(&self, checked: &Checked) -> Result<(&Forwarder, OwnerGateway), ServiceError> {
        let forwarder = self.forwarder.as_deref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this gateway has no client certificate for forwarding; set gateway.client_cert and gateway.client_key".into(),
            )
        })?;
        let url = checked.gateway.clone().ok_or_else(|| {
            ServiceError::Unavailable(format!(
                "the directory names no gateway for `{}`; an operator must add it with `qianlian directory apply`",
                checked.owner
            ))
        })?;
        let owner = OwnerGateway {
            department: checked.owner.clone(),
            url,
            cert_fingerprint: checked.gateway_pin,
        };
        Ok((forwarder, owner))
    }

    /// The answer of an owner's gateway that did not decide: unreachable, too slow, or broken.
    fn owner_unreachable(&self, checked: &Checked, url: &str, status: &Status) -> ServiceError {
        let timeout = self
            .forwarder
            .as_ref()
            .map(|f| f.timeout())
            .unwrap_or_default();
        ServiceError::Unavailable(format!(
            "the gateway of department `{}` ({url}) did not answer within {timeout:?}: {}; nothing was disclosed, try again later",
            checked.owner,
            bounded(status.message(), MAX_OWNER_TEXT)
        ))
    }

    /// What the consumer records when the owner's gateway refused, or found no record: the
    /// owner's words and policy version. An owner that did not decide (unreachable, too slow)
    /// or refused the request as invalid gives the error to return at once, unrecorded.
    fn owner_answer(
        &self,
        checked: &Checked,
        url: &str,
        status: &Status,
        subjects: BTreeSet<SubjectHash>,
    ) -> Result<Outcome, ServiceError> {
        match status.code() {
            Code::PermissionDenied | Code::NotFound => Ok(Outcome {
                decision: crate::domain::policy::Decision {
                    allowed: status.code() == Code::NotFound,
                    rule: format!(
                        "answered by the gateway of `{}`: {}",
                        checked.owner,
                        bounded(status.message(), MAX_OWNER_TEXT)
                    ),
                    fields: Fields::All,
                },
                policy_version: status
                    .metadata()
                    .get(POLICY_VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                disclosed: Vec::new(),
                result_count: 0,
                subjects,
                response_digest: None,
            }),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                Err(self.owner_unreachable(checked, url, status))
            }
            _ => Err(ServiceError::Forwarded(status.clone())),
        }
    }
}

/// The owner's words, and where this gateway recorded them.
fn forwarded_message(status: &Status, receipt: &Receipt) -> String {
    format!(
        "{} (forwarded; this gateway's record is at log index {})",
        bounded(status.message(), MAX_OWNER_TEXT),
        receipt.log_index
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owners_words_are_bounded_before_they_are_recorded() {
        let short = "policy v3 has no rule letting housing read";
        assert_eq!(bounded(short, MAX_OWNER_TEXT), short);
        // 1.2 MB of three-byte characters after seven bytes (the cut lands on a boundary at
        // 1024), a control character inside.
        let long = format!("拒绝\n{}", "字".repeat(400_000));
        let b = bounded(&long, MAX_OWNER_TEXT);
        assert!(b.len() <= MAX_OWNER_TEXT + 32, "{} bytes", b.len());
        assert!(b.starts_with("拒绝 字"), "control characters become spaces");
        assert!(
            b.ends_with(&format!("… ({} more bytes)", long.len() - MAX_OWNER_TEXT)),
            "{b}"
        );
        let many: Vec<String> = (0..100_000)
            .map(|i| format!("f{i}{}", "x".repeat(100)))
            .collect();
        let f = bounded_fields(&many);
        assert_eq!(f.len(), MAX_OWNER_FIELDS);
        assert!(f.iter().all(|n| n.len() <= 64 + 32));
    }
}
