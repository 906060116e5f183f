//! The Licenses service: e-licenses issued, logged, suspended, revoked and verified.
//!
//! Issuance signs the claims with the issuing department's key (COSE_Sign1, see
//! `qianlian_verifier::license`) and appends a license-issued record holding the license hash and
//! a keyed hash of the holder, never the holder's identifier in clear. Status changes are log
//! records too, and the status is replicated state: every node answers from what it applied.
//!
//! Online verification follows the same order of checks as the offline verifier
//! (`verify_offline`): parse, issuer known, signature, issuer authorised, on record, status,
//! dates; the first failing check names the verdict. Here "on record" and "status" come from
//! the node's applied state instead of a trust bundle.
//!
//! Verification and trust bundles are public. Watching a holder's licenses is not: it needs the
//! holder's bearer token (answering for that holder only) or a department or inspector
//! certificate. Evidence is proven against the node's shared cosigned checkpoint
//! (`Notary::shared_checkpoint`), so public calls do not make the members cosign per call.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ed25519_dalek::SigningKey;
use qianlian_proto::v1::licenses_server::Licenses;
use qianlian_proto::v1::verify_license_request::Document;
use qianlian_proto::v1::{
    ChangeLicenseStatusRequest, ChangeLicenseStatusResponse, GetTrustBundleRequest,
    GetTrustBundleResponse, IssueLicenseRequest, IssueLicenseResponse, VerifyLicenseRequest,
    VerifyLicenseResponse, VerifyLicensesRequest, VerifyLicensesResponse, WatchLicensesRequest,
    WatchLicensesResponse, WatchedRecord,
};
use qianlian_raft_store::notary::{LicenseCurrentStatus, Notary};
use qianlian_raft_store::record::{
    Caller, LicenseIssuedRecord, LicenseStatusChange, LicenseStatusRecord, Record,
};
use qianlian_verifier::Hash;
use qianlian_verifier::license::{
    DepartmentEntry, HolderBundle, LicenseClaims, LicenseEvidence, LicenseType, TrustBundleFile,
    VerdictStatus, VerifiedLicenses, from_qr_payload, license_hash, open_license, sign_license,
    to_qr_payload,
};
use tonic::{Request, Response, Status};

use crate::domain::directory::{Directory, DirectoryEntry};
use crate::domain::identifier::{ResidentId, UnifiedSocialCreditCode};
use crate::domain::identity::{PeerIdentity, Role};
use crate::domain::policy::{AccessRequest, Policy};
use crate::node::time::now_unix;
use crate::node::tls::ConnInfo;
use crate::services::audit::token::{self, TokenVerifier};
use crate::services::convert;
use crate::services::error::{ServiceError, caller};

/// Everything the license service needs; built once at start.
#[derive(Clone)]
pub struct LicenseService {
    pub notary: Notary,
    pub policy: Arc<ArcSwap<Policy>>,
    /// The department directory in force (replicated, or the node's local file before that).
    pub directory: Arc<arc_swap::ArcSwap<crate::node::cluster_config::DirectoryInForce>>,
    /// Department id → (signing key, key id) for the departments this node issues for.
    pub signing_keys: Arc<HashMap<String, (SigningKey, String)>>,
    /// HMAC key for holder identifiers.
    pub subject_key: Option<crate::domain::subject::SubjectKey>,
    /// Node checkpoint verifier keys (vkey strings) for exported trust bundles.
    pub trust_node_keys: Vec<String>,
    pub min_cosigners: usize,
    /// Licenses this node already verified: verifying one again skips parsing and Ed25519.
    pub verified: Arc<VerifiedLicenses>,
    /// The cosigned checkpoint and inclusion proofs that verifications hand out.
    pub evidence_cache: Arc<EvidenceCache>,
    /// Checks holders' bearer tokens (the identity provider of `audit mine`); `None`: holders
    /// cannot watch their own licenses, only department and inspector certificates can.
    pub tokens: Option<Arc<TokenVerifier>>,
}

/// Licenses remembered by [`LicenseService::verified`] (their claims, about 1 KiB each).
pub const VERIFIED_LICENSES: usize = 20_000;

/// How long a verification may hand out the same cosigned checkpoint (if it covers the
/// license's issuance). Collecting cosignatures asks every member; a checkpoint a second old is
/// as good a proof of issuance as a new one, while revocation comes from the current state.
const CHECKPOINT_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

use qianlian_proto::contract::MAX_VERIFY_BATCH;

/// Inclusion proofs kept against the current cached checkpoint.
const CACHED_PROOFS: usize = 4096;

/// The evidence verifications share: one cosigned checkpoint at a time (see
/// [`CHECKPOINT_REUSE`]) and the inclusion proofs already computed against it.
#[derive(Debug, Default)]
pub struct EvidenceCache {
    latest: std::sync::Mutex<Option<CachedCheckpoint>>,
}

#[derive(Debug)]
struct CachedCheckpoint {
    taken: std::time::Instant,
    checkpoint: qianlian_raft_store::notary::CosignedCheckpoint,
    /// Log index → inclusion proof in the tree of `checkpoint.size`.
    proofs: HashMap<u64, Vec<Hash>>,
}

impl EvidenceCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CachedCheckpoint>> {
        // Poisoned only by a panic inside a map operation; the cache is still usable.
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached checkpoint if it covers `index` and is recent, with the proof of `index` if
    /// one was computed.
    fn get(
        &self,
        index: u64,
    ) -> Option<(
        qianlian_raft_store::notary::CosignedCheckpoint,
        Option<Vec<Hash>>,
    )> {
        let latest = self.lock();
        let cached = latest.as_ref()?;
        if cached.checkpoint.size <= index || cached.taken.elapsed() >= CHECKPOINT_REUSE {
            return None;
        }
        Some((
            cached.checkpoint.clone(),
            cached.proofs.get(&index).cloned(),
        ))
    }

    /// Keep `checkpoint` (replacing an older one and its proofs) and `proof` of `index` in it.
    fn put(
        &self,
        checkpoint: &qianlian_raft_store::notary::CosignedCheckpoint,
        index: u64,
        proof: &[Hash],
    ) {
        let mut latest = self.lock();
        match latest.as_mut() {
            // Still the latest (the log did not grow): good for another while, proofs too.
            Some(c) if c.checkpoint.note == checkpoint.note => {
                c.taken = std::time::Instant::now();
            }
            _ => {
                *latest = Some(CachedCheckpoint {
                    taken: std::time::Instant::now(),
                    checkpoint: checkpoint.clone(),
                    proofs: HashMap::new(),
                });
            }
        }
        if let Some(cached) = latest.as_mut()
            && cached.proofs.len() < CACHED_PROOFS
        {
            cached.proofs.insert(index, proof.to_vec());
        }
    }
}

impl std::fmt::Debug for LicenseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseService")
            .field(
                "departments_with_keys",
                &self.signing_keys.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn invalid(m: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(m.into())
}

fn hash32(bytes: &[u8], what: &str) -> Result<Hash, ServiceError> {
    bytes.try_into().map_err(|_| {
        invalid(format!(
            "{what} must be 32 bytes (SHA-256), got {}",
            bytes.len()
        ))
    })
}

/// Normalise a holder identifier: a unified social credit code or a resident identity number.
/// Both are 18 characters and a credit code may be all digits, so each rule is tried; the
/// error names both when neither holds.
pub fn normalise_holder_id(id: &str) -> Result<String, ServiceError> {
    // Folded first (case, full-width forms, spaces), as the subject hash folds it.
    let folded = crate::domain::subject::normalise(id);
    let id = folded.as_str();
    let as_credit_code = UnifiedSocialCreditCode::parse(id).map(|c| c.as_str().to_owned());
    let as_resident = ResidentId::parse(id).map(|r| r.as_str().to_owned());
    match (as_credit_code, as_resident) {
        (Ok(c), _) => Ok(c),
        (_, Ok(r)) => Ok(r),
        (Err(c), Err(r)) => Err(invalid(format!(
            "holder_id is neither a unified social credit code ({c}) nor a resident identity number ({r})"
        ))),
    }
}

fn check_reason(reason: &str) -> Result<(), ServiceError> {
    let ok = (1..=32).contains(&reason.len())
        && reason
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "reason `{reason}` must be a code of 1 to 32 lowercase letters, digits and `-`, e.g. business-closed"
        )))
    }
}

/// A verdict and the checkpoint its evidence is proven against, if it has evidence.
type Verdict = (
    VerifyLicenseResponse,
    Option<qianlian_raft_store::notary::CosignedCheckpoint>,
);

/// Where a license's bytes come from when they are needed: a QR payload seen before stands
/// for its license (by hash) without base45 and inflate.
enum Source {
    Bytes(Vec<u8>),
    Qr(String),
}

/// A verdict on a document that holds no readable claims: only the status and its reason.
fn bare_verdict(status: VerdictStatus, reason: String) -> VerifyLicenseResponse {
    VerifyLicenseResponse {
        verdict: status.as_str().to_owned(),
        reason,
        ..Default::default()
    }
}

fn qr_tampered(e: String) -> VerifyLicenseResponse {
    bare_verdict(VerdictStatus::Tampered, format!("QR payload: {e}"))
}

/// The verdict on a correctly signed license on the record, issued at `issued_index`: its
/// status first, then its dates at `now` (unix seconds).
fn status_verdict(
    status: LicenseCurrentStatus,
    claims: &LicenseClaims,
    issuer: &DirectoryEntry,
    issued_index: u64,
    now: i64,
) -> (VerdictStatus, String) {
    match status {
        LicenseCurrentStatus::Revoked {
            index,
            since_unix,
            reason,
        } => (
            VerdictStatus::Revoked,
            format!("revoked since {since_unix} (unix), reason {reason}, log index {index}"),
        ),
        LicenseCurrentStatus::Suspended {
            index,
            since_unix,
            reason,
        } => (
            VerdictStatus::Suspended,
            format!("suspended since {since_unix} (unix), reason {reason}, log index {index}"),
        ),
        LicenseCurrentStatus::Valid if now < claims.valid_from => (
            VerdictStatus::NotYetValid,
            format!("valid from {} (unix)", claims.valid_from),
        ),
        LicenseCurrentStatus::Valid if claims.valid_until.is_some_and(|u| now >= u) => (
            VerdictStatus::Expired,
            format!(
                "expired at {} (unix)",
                claims.valid_until.unwrap_or_default()
            ),
        ),
        LicenseCurrentStatus::Valid => (
            VerdictStatus::Genuine,
            format!(
                "signed by {} ({}) and on the record at log index {issued_index}",
                issuer.name, issuer.id
            ),
        ),
    }
}

fn caller_record(who: &PeerIdentity) -> Caller {
    Caller {
        department: who.department.clone(),
        role: who.role.as_str().to_owned(),
        cert_fingerprint: who.fingerprint_hex(),
    }
}

impl LicenseService {
    /// `record` sealed with `department`'s license key, if this node holds it; otherwise as it
    /// is (and refused by every node if the department publishes node keys).
    fn seal(&self, record: Record, department: &str) -> Record {
        let Some((key, key_id)) = self.signing_keys.get(department) else {
            return record;
        };
        let originator = qianlian_verifier::record::Originator {
            role: qianlian_verifier::record::SignerRole::LicenseIssuer,
            department: department.to_owned(),
            key_id: key_id.clone(),
            public_key: key.verifying_key().to_bytes(),
        };
        Record::Sealed(Box::new(qianlian_verifier::record::SealedRecord::seal(
            record, originator, key,
        )))
    }

    fn directory(
        &self,
    ) -> Result<Arc<crate::node::cluster_config::DirectoryInForce>, ServiceError> {
        let d = self.directory.load_full();
        if d.directory.department.is_empty() {
            return Err(ServiceError::Unavailable(
                "this node has no department directory; its operator must set licenses.directory or apply one with `qianlian directory apply`"
                    .into(),
            ));
        }
        Ok(d)
    }

    /// Keyed hash of a holder identifier: the cluster's one subject hash
    /// ([`crate::domain::subject::SubjectKey::hash`]), so a holder's licenses and the accesses
    /// to their data are named alike.
    pub fn holder_hash(&self, holder_id: &str) -> Result<Hash, ServiceError> {
        let key = self.subject_key.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "this node has no subject key; its operator must set licenses.subject_key".into(),
            )
        })?;
        Ok(key.hash(holder_id).0)
    }

    /// May `department` issue `license_type`? The policy says, with action `issue` in the
    /// department's own domain.
    fn may_issue(&self, department: &str, license_type: LicenseType) -> Result<bool, ServiceError> {
        let who = PeerIdentity {
            department: department.to_owned(),
            role: Role::Department,
            cert_fingerprint: [0; 32],
            node_department: None,
        };
        self.policy
            .load()
            .decide(AccessRequest {
                caller: &who,
                owner: department,
                dataset: license_type.slug(),
                action: "issue",
                purpose: "issue",
            })
            .map(|d| d.allowed)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Evidence for the record at `index`, against the latest cosigned checkpoint.
    async fn evidence(
        &self,
        index: u64,
    ) -> Result<
        (
            LicenseEvidence,
            qianlian_raft_store::notary::CosignedCheckpoint,
        ),
        ServiceError,
    > {
        let (cp, proof) = self.proof_of_issuance(index).await?;
        let (record, _) = self
            .notary
            .entry(index)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("log index {index} vanished")))?;
        Ok((
            LicenseEvidence {
                log_index: index,
                tree_size: cp.size,
                inclusion_proof: proof,
                checkpoint: cp.note.clone(),
                record,
            },
            cp,
        ))
    }

    /// A cosigned checkpoint covering log index `index` and the inclusion proof of `index` in
    /// it, from [`LicenseService::evidence_cache`] while it is recent. A record forwarded to the
    /// leader may not be applied here yet: this waits (bounded) until the checkpoint covers it.
    async fn proof_of_issuance(
        &self,
        index: u64,
    ) -> Result<(qianlian_raft_store::notary::CosignedCheckpoint, Vec<Hash>), ServiceError> {
        let cp = match self.evidence_cache.get(index) {
            Some((cp, Some(proof))) => return Ok((cp, proof)),
            Some((cp, None)) => cp,
            None => {
                self.notary
                    .wait_for_tree_size(index + 1, std::time::Duration::from_secs(5))
                    .await?;
                self.notary.shared_checkpoint_covering(index + 1).await?
            }
        };
        if cp.size <= index {
            return Err(ServiceError::Internal(format!(
                "checkpoint of size {} does not cover log index {index}",
                cp.size
            )));
        }
        let proof = self.notary.inclusion_proof(index, cp.size).await?;
        self.evidence_cache.put(&cp, index, &proof);
        Ok((cp, proof))
    }

    async fn issue(
        &self,
        req: Request<IssueLicenseRequest>,
    ) -> Result<IssueLicenseResponse, ServiceError> {
        let who = caller(&req)?;
        let r = req.into_inner();
        if who.role != Role::Department {
            return Err(ServiceError::PermissionDenied {
                message: format!("only departments issue licenses; {who} is not a department"),
                receipt: None,
            });
        }
        let license_type: LicenseType = r.license_type.parse().map_err(|_| {
            invalid(format!(
                "unknown license_type `{}`; use business-license, real-estate-certificate or construction-permit",
                r.license_type
            ))
        })?;
        if !self.may_issue(&who.department, license_type)? {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "policy {} has no rule letting {} issue {}",
                    self.policy.load().version(),
                    who.department,
                    license_type.slug()
                ),
                receipt: None,
            });
        }
        let (key, key_id) = self.signing_keys.get(&who.department).ok_or_else(|| {
            ServiceError::Unavailable(format!(
                "this gateway holds no license signing key for {}; its operator must add it to licenses.signing_keys",
                who.department
            ))
        })?;
        let holder_id = normalise_holder_id(&r.holder_id)?;
        let now = now_unix();
        let claims = LicenseClaims {
            license_type,
            number: r.number.trim().to_owned(),
            holder_name: r.holder_name.trim().to_owned(),
            holder_id: holder_id.clone(),
            department: who.department.clone(),
            issuer_key_id: key_id.clone(),
            issued_at: now,
            valid_from: if r.valid_from == 0 { now } else { r.valid_from },
            valid_until: (r.valid_until != 0).then_some(r.valid_until),
            fields: r.fields.into_iter().collect(),
        };
        claims.check().map_err(|e| invalid(e.to_string()))?;
        let license = sign_license(&claims, key).map_err(|e| invalid(e.to_string()))?;
        let hash = license_hash(&license);
        let record = Record::LicenseIssued(LicenseIssuedRecord {
            request_id: crate::node::request_id::new_request_id(),
            time_unix_ms: now as u64 * 1000,
            caller: caller_record(&who),
            license_hash: hash,
            license_type: license_type.slug().to_owned(),
            number: claims.number.clone(),
            department: who.department.clone(),
            holder_hash: self.holder_hash(&holder_id)?,
            valid_from: claims.valid_from,
            valid_until: claims.valid_until,
        });
        let record = self.seal(record, &who.department);
        let receipt = self.notary.append(record).await?;
        tracing::info!(department = %who.department, license_type = license_type.slug(), log_index = receipt.log_index, "license issued");
        let (evidence, _) = self.evidence(receipt.log_index).await?;
        let bundle = HolderBundle::new(license.clone(), Some(evidence));
        Ok(IssueLicenseResponse {
            qr_payload: to_qr_payload(&license),
            license_hash: hash.to_vec(),
            receipt: Some(convert::receipt(&receipt)),
            holder_bundle_json: bundle.to_json(),
            claims_json: claims.to_json().to_string(),
            license,
        })
    }

    async fn change(
        &self,
        req: Request<ChangeLicenseStatusRequest>,
    ) -> Result<ChangeLicenseStatusResponse, ServiceError> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let hash = hash32(&r.license_hash, "license_hash")?;
        let change = convert::license_status_change(r.change)
            .ok_or_else(|| invalid("`change` must be suspend, reinstate or revoke"))?;
        check_reason(&r.reason)?;
        let view = self
            .notary
            .license(&hash)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                message: format!(
                    "no license with hash {} is on the record",
                    hex::encode(hash)
                ),
                receipt: None,
            })?;
        if who.role != Role::Department || who.department != view.issued.department {
            return Err(ServiceError::PermissionDenied {
                message: format!(
                    "only the issuer `{}` may change this license's status; {who} is not",
                    view.issued.department
                ),
                receipt: None,
            });
        }
        match (&view.status, change) {
            (LicenseCurrentStatus::Revoked { .. }, _) => {
                return Err(ServiceError::InvalidArgument(
                    "the license is revoked; revocation is final".into(),
                ));
            }
            (LicenseCurrentStatus::Valid, LicenseStatusChange::Reinstated) => {
                return Err(invalid(
                    "the license is not suspended; nothing to reinstate",
                ));
            }
            _ => {}
        }
        let record = Record::LicenseStatus(LicenseStatusRecord {
            request_id: crate::node::request_id::new_request_id(),
            time_unix_ms: now_unix() as u64 * 1000,
            caller: caller_record(&who),
            license_hash: hash,
            change,
            reason: r.reason.clone(),
        });
        // Sealed by the issuer's license key: every node refuses a status change without it.
        let record = self.seal(record, &view.issued.department);
        let receipt = self.notary.append(record).await?;
        let status = match self.notary.license(&hash).await?.map(|v| v.status) {
            Some(LicenseCurrentStatus::Revoked { .. }) => "revoked",
            Some(LicenseCurrentStatus::Suspended { .. }) => "suspended",
            _ => "valid",
        };
        tracing::info!(department = %who.department, status, log_index = receipt.log_index, "license status changed");
        Ok(ChangeLicenseStatusResponse {
            receipt: Some(convert::receipt(&receipt)),
            status: status.into(),
        })
    }

    /// The online verdict for a license (COSE bytes) or a QR payload.
    pub async fn verify_document(
        &self,
        doc: Option<Document>,
    ) -> Result<VerifyLicenseResponse, ServiceError> {
        let (mut verdict, checkpoint) = self.verdict(doc).await?;
        verdict.checkpoint = checkpoint.map(convert::checkpoint);
        Ok(verdict)
    }

    /// The verdicts for many documents, in order, with the checkpoint most of them are proven
    /// against given once. A document that is not one (no `qr` or `license`) fails the call
    /// and names its position; a forged or unknown one gets its verdict like any other.
    pub async fn verify_documents(
        &self,
        documents: Vec<VerifyLicenseRequest>,
    ) -> Result<VerifyLicensesResponse, ServiceError> {
        if documents.is_empty() {
            return Err(invalid(
                "give at least one document (`qr` or `license`) in `documents`",
            ));
        }
        if documents.len() > MAX_VERIFY_BATCH {
            return Err(invalid(format!(
                "{} documents in one call; at most {MAX_VERIFY_BATCH}: split the batch",
                documents.len()
            )));
        }
        let mut verdicts = Vec::with_capacity(documents.len());
        let mut shared: Option<qianlian_raft_store::notary::CosignedCheckpoint> = None;
        for (i, d) in documents.into_iter().enumerate() {
            let (mut verdict, checkpoint) =
                self.verdict(d.document).await.map_err(|e| match e {
                    ServiceError::InvalidArgument(m) => invalid(format!("document {i}: {m}")),
                    other => other,
                })?;
            match (checkpoint, &shared) {
                (Some(c), Some(s)) if c.note == s.note => {}
                (Some(c), Some(_)) => verdict.checkpoint = Some(convert::checkpoint(c)),
                (Some(c), None) => shared = Some(c),
                (None, _) => {}
            }
            verdicts.push(verdict);
        }
        Ok(VerifyLicensesResponse {
            verdicts,
            checkpoint: shared.map(convert::checkpoint),
        })
    }

    /// The verdict for one document, and the checkpoint its evidence (if any) is proven
    /// against, for the caller to attach. The checks run in the offline verifier's order.
    async fn verdict(&self, doc: Option<Document>) -> Result<Verdict, ServiceError> {
        let (hash, source) = match self.identify(doc)? {
            Ok(found) => found,
            Err(unreadable) => return Ok((unreadable, None)),
        };
        let in_force = self.directory()?;
        let (dept, claims) = match self.signed_claims(&hash, source, &in_force.directory) {
            Ok(signed) => signed,
            Err(refused) => return Ok((*refused, None)),
        };
        let mut out = VerifyLicenseResponse {
            claims_json: claims.to_json().to_string(),
            license_hash: hash.to_vec(),
            ..Default::default()
        };
        let set = |out: &mut VerifyLicenseResponse, s: VerdictStatus, reason: String| {
            out.verdict = s.as_str().to_owned();
            out.reason = reason;
        };
        if dept.id != claims.department {
            set(
                &mut out,
                VerdictStatus::IssuerNotAuthorised,
                format!(
                    "signed with a key of `{}` but names `{}` as issuer",
                    dept.id, claims.department
                ),
            );
            return Ok((out, None));
        }
        if !self.may_issue(&dept.id, claims.license_type)? {
            set(
                &mut out,
                VerdictStatus::IssuerNotAuthorised,
                format!("`{}` may not issue {}", dept.id, claims.license_type.slug()),
            );
            return Ok((out, None));
        }
        let Some(view) = self.notary.license(&hash).await? else {
            set(
                &mut out,
                VerdictStatus::NotOnRecord,
                "correctly signed, but its issuance is not on the record".into(),
            );
            return Ok((out, None));
        };
        let (cp, proof) = self.proof_of_issuance(view.issued_index).await?;
        out.log_index = view.issued_index;
        out.tree_size = cp.size;
        out.inclusion_proof = convert::proof(&proof);
        let (status, reason) =
            status_verdict(view.status, &claims, dept, view.issued_index, now_unix());
        set(&mut out, status, reason);
        Ok((out, Some(cp)))
    }

    /// The hash of the license a document holds and where its bytes are; a QR payload that
    /// does not decode is the verdict instead.
    fn identify(
        &self,
        doc: Option<Document>,
    ) -> Result<Result<(Hash, Source), VerifyLicenseResponse>, ServiceError> {
        Ok(Ok(match doc {
            Some(Document::Qr(q)) => {
                let q = q.trim();
                match self.verified.qr_hash(q) {
                    Some(hash) => (hash, Source::Qr(q.to_owned())),
                    None => match from_qr_payload(q) {
                        Ok(b) => {
                            let hash = license_hash(&b);
                            self.verified.remember_qr(q, hash);
                            (hash, Source::Bytes(b))
                        }
                        Err(e) => return Ok(Err(qr_tampered(e.to_string()))),
                    },
                }
            }
            Some(Document::License(b)) => (license_hash(&b), Source::Bytes(b)),
            None => return Err(invalid("give the license as `qr` or `license` bytes")),
        }))
    }

    /// The issuing department and the claims of a license whose signature verifies with a
    /// key the directory names; otherwise the verdict (tampered, unknown issuer). A license
    /// verified before (same bytes, its key id still naming the same key) is not opened and
    /// checked again.
    fn signed_claims<'d>(
        &self,
        hash: &Hash,
        source: Source,
        directory: &'d Directory,
    ) -> Result<(&'d DirectoryEntry, LicenseClaims), Box<VerifyLicenseResponse>> {
        if let Some((dept, found)) = self.verified.get(hash, |kid| directory.key_bytes(kid)) {
            return Ok((dept, found.claims));
        }
        let bytes = match source {
            Source::Bytes(b) => b,
            // Remembered as a QR payload but no longer as a verified license.
            Source::Qr(q) => {
                from_qr_payload(&q).map_err(|e| Box::new(qr_tampered(e.to_string())))?
            }
        };
        let unverified = open_license(&bytes)
            .map_err(|e| Box::new(bare_verdict(VerdictStatus::Tampered, e.to_string())))?;
        let Some((dept, key)) = directory.key(unverified.key_id()) else {
            let mut v = bare_verdict(
                VerdictStatus::UnknownIssuer,
                format!(
                    "no department in the directory has key `{}`",
                    unverified.key_id()
                ),
            );
            v.license_hash = hash.to_vec();
            return Err(Box::new(v));
        };
        let claims = self
            .verified
            .verify(&unverified, &key)
            .map_err(|e| Box::new(bare_verdict(VerdictStatus::Tampered, e.to_string())))?;
        Ok((dept, claims))
    }

    /// The holder a watch may see: the one named, for a department or inspector certificate;
    /// the token's own holder for a bearer token (an empty `holder_id` means that holder).
    fn watched_holder(
        &self,
        peer: Option<&Result<PeerIdentity, crate::domain::identity::IdentityError>>,
        authorization: Option<&str>,
        holder_id: &str,
    ) -> Result<String, ServiceError> {
        let certificate = match peer {
            Some(Ok(id)) if matches!(id.role, Role::Department | Role::Inspector) => {
                if holder_id.trim().is_empty() {
                    return Err(invalid(
                        "name the holder: holder_id is a unified social credit code or a resident identity number",
                    ));
                }
                return normalise_holder_id(holder_id);
            }
            Some(Ok(id)) => Some(id.clone()),
            Some(Err(e)) => return Err(ServiceError::Unauthenticated(e.to_string())),
            None => None,
        };
        let Some(authorization) = authorization else {
            return Err(match certificate {
                Some(id) => ServiceError::PermissionDenied {
                    message: format!(
                        "{id} may not watch licenses: only the holder (with a bearer token), departments and inspectors may"
                    ),
                    receipt: None,
                },
                None => ServiceError::Unauthenticated(
                    "watching licenses needs the holder's bearer token (`authorization: Bearer <token>` from the identity provider) or a department or inspector client certificate".into(),
                ),
            });
        };
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "this node does not take holders' tokens; its operator must set audit.token_keys, audit.token_issuer and audit.token_audience".into(),
            )
        })?;
        let subject = token::bearer(Some(authorization))
            .and_then(|t| tokens.subject(t))
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        if !holder_id.trim().is_empty() && normalise_holder_id(holder_id)? != subject {
            return Err(ServiceError::PermissionDenied {
                message: "a holder's token watches only that holder's licenses: holder_id names someone else (leave it empty to watch your own)".into(),
                receipt: None,
            });
        }
        Ok(subject)
    }

    async fn watch(
        &self,
        req: Request<WatchLicensesRequest>,
    ) -> Result<WatchLicensesResponse, ServiceError> {
        let peer = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.peer.as_ref());
        let authorization = req
            .metadata()
            .get("authorization")
            .map(|v| {
                v.to_str().map_err(|_| {
                    ServiceError::Unauthenticated(
                        "the authorization header is not text: send `Bearer <token>`".into(),
                    )
                })
            })
            .transpose()?;
        let holder = self.watched_holder(peer, authorization, &req.get_ref().holder_id)?;
        let indices = self
            .notary
            .holder_records(&self.holder_hash(&holder)?)
            .await?;
        // Shared with every other public call, renewed only if it misses this holder's latest.
        let covering = indices.iter().max().map_or(0, |i| i + 1);
        let cp = self.notary.shared_checkpoint_covering(covering).await?;
        let mut records = Vec::new();
        for index in indices.into_iter().filter(|i| *i < cp.size) {
            let Some((bytes, _)) = self.notary.entry(index).await? else {
                continue;
            };
            let record =
                Record::decode(&bytes).map_err(|e| ServiceError::Internal(e.to_string()))?;
            records.push(WatchedRecord {
                log_index: index,
                record_json: serde_json::to_string(&record)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?,
                inclusion_proof: convert::proof(
                    &self.notary.inclusion_proof(index, cp.size).await?,
                ),
            });
        }
        Ok(WatchLicensesResponse {
            records,
            checkpoint: Some(convert::checkpoint(cp)),
        })
    }

    /// A trust bundle for offline verifiers: departments (with the types the current policy
    /// lets each issue), node keys, and a status list bound to a cosigned checkpoint.
    pub async fn trust_bundle(&self) -> Result<String, ServiceError> {
        let in_force = self.directory()?;
        let directory = &in_force.directory;
        if self.trust_node_keys.is_empty() {
            return Err(ServiceError::Unavailable(
                "this node exports no trust bundle: its operator must set licenses.trust_node_keys"
                    .into(),
            ));
        }
        let mut departments = Vec::new();
        for d in &directory.department {
            let mut may_issue = Vec::new();
            for t in [
                LicenseType::BusinessLicense,
                LicenseType::RealEstateCertificate,
                LicenseType::ConstructionPermit,
            ] {
                if self.may_issue(&d.id, t)? {
                    may_issue.push(t);
                }
            }
            departments.push(DepartmentEntry {
                id: d.id.clone(),
                name: d.name.clone(),
                keys: d.keys.clone(),
                may_issue,
            });
        }
        // The shared checkpoint and a status list of its size: a trust bundle costs the
        // members no cosignature while the log has not grown. It covers every record this node
        // applied, so a bundle fetched after a revocation lists it; renewals stay spaced.
        let checkpoint = self
            .notary
            .shared_checkpoint_covering(self.notary.tree_size())
            .await?;
        let status = self.notary.shared_status_list_at(checkpoint.size).await?;
        let origin = checkpoint
            .note
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let file = TrustBundleFile {
            version: qianlian_verifier::license::TRUST_BUNDLE_VERSION,
            origin,
            departments,
            node_keys: self.trust_node_keys.clone(),
            min_cosigners: self.min_cosigners,
            checkpoint: checkpoint.note,
            status_list: status.note,
        };
        serde_json::to_string_pretty(&file).map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

#[tonic::async_trait]
impl Licenses for LicenseService {
    async fn issue_license(
        &self,
        request: Request<IssueLicenseRequest>,
    ) -> Result<Response<IssueLicenseResponse>, Status> {
        Ok(Response::new(self.issue(request).await?))
    }

    async fn change_license_status(
        &self,
        request: Request<ChangeLicenseStatusRequest>,
    ) -> Result<Response<ChangeLicenseStatusResponse>, Status> {
        Ok(Response::new(self.change(request).await?))
    }

    async fn verify_license(
        &self,
        request: Request<VerifyLicenseRequest>,
    ) -> Result<Response<VerifyLicenseResponse>, Status> {
        Ok(Response::new(
            self.verify_document(request.into_inner().document).await?,
        ))
    }

    async fn verify_licenses(
        &self,
        request: Request<VerifyLicensesRequest>,
    ) -> Result<Response<VerifyLicensesResponse>, Status> {
        Ok(Response::new(
            self.verify_documents(request.into_inner().documents)
                .await?,
        ))
    }

    async fn watch_licenses(
        &self,
        request: Request<WatchLicensesRequest>,
    ) -> Result<Response<WatchLicensesResponse>, Status> {
        Ok(Response::new(self.watch(request).await?))
    }

    async fn get_trust_bundle(
        &self,
        _request: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        Ok(Response::new(GetTrustBundleResponse {
            trust_bundle_json: self.trust_bundle().await?,
        }))
    }
}

/// Body of `POST /v1/licenses:verify`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpVerifyRequest {
    /// A QR payload, `QL1:...`.
    qr: Option<String>,
    /// The license's COSE bytes, standard base64.
    license: Option<String>,
}

async fn http_verify(
    axum::extract::State(service): axum::extract::State<LicenseService>,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    use base64::Engine as _;
    let err = |code: StatusCode, m: String| (code, axum::Json(serde_json::json!({ "error": m })));
    let req: HttpVerifyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be JSON {{\"qr\": \"QL1:...\"}} or {{\"license\": \"<base64>\"}}: {e}"
                ),
            );
        }
    };
    let doc = match (req.qr, req.license) {
        (Some(q), None) => Document::Qr(q),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
            Ok(bytes) => Document::License(bytes),
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    format!("license is not base64: {e}"),
                );
            }
        },
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "give exactly one of `qr` and `license`".into(),
            );
        }
    };
    match service.verify_document(Some(doc)).await {
        Ok(v) => (StatusCode::OK, axum::Json(verdict_json(&v))),
        Err(e) => {
            let status: Status = e.into();
            let code = match status.code() {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            err(code, status.message().to_owned())
        }
    }
}

/// The JSON form of a verdict, for apps that do not speak gRPC.
pub fn verdict_json(v: &VerifyLicenseResponse) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    serde_json::json!({
        "verdict": v.verdict,
        "reason": v.reason,
        "claims": serde_json::from_str::<serde_json::Value>(&v.claims_json).unwrap_or(serde_json::Value::Null),
        "license_hash": hex::encode(&v.license_hash),
        "evidence": v.checkpoint.as_ref().map(|c| serde_json::json!({
            "log_index": v.log_index,
            "tree_size": v.tree_size,
            "inclusion_proof": v.inclusion_proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
            "checkpoint": c.note,
        })),
    })
}

/// The path of the HTTP/JSON verification.
pub const HTTP_VERIFY_PATH: &str = "/v1/licenses:verify";

/// The HTTP/JSON routes served beside gRPC on the same port.
pub fn http_routes(service: LicenseService) -> axum::Router {
    axum::Router::new()
        .route(HTTP_VERIFY_PATH, axum::routing::post(http_verify))
        .with_state(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_of_both_kinds_are_accepted_and_others_name_both_rules() {
        // An all-digit credit code must not be mistaken for a bad resident number.
        for i in 0..2000u64 {
            let code = UnifiedSocialCreditCode::generate(i);
            assert_eq!(
                normalise_holder_id(code.as_str()).ok().as_deref(),
                Some(code.as_str())
            );
        }
        let person = ResidentId::generate(7);
        let lower = person.as_str().to_lowercase();
        assert_eq!(
            normalise_holder_id(&lower).ok().as_deref(),
            Some(person.as_str())
        );
        let err = normalise_holder_id("12345").expect_err("neither");
        let msg = err.to_string();
        assert!(
            msg.contains("unified social credit code") && msg.contains("resident identity number"),
            "{msg}"
        );
    }
}

#[cfg(test)]
mod evidence_cache_tests {
    use super::*;
    use qianlian_raft_store::notary::CosignedCheckpoint;

    fn checkpoint(size: u64) -> CosignedCheckpoint {
        CosignedCheckpoint {
            note: format!("origin\n{size}\nroot\n"),
            size,
            root: [size as u8; 32],
            signers: Vec::new(),
        }
    }

    #[test]
    fn proofs_are_kept_for_their_checkpoint_and_while_it_is_current() {
        let cache = EvidenceCache::default();
        assert!(cache.get(3).is_none(), "empty");
        let proof = vec![[7u8; 32]];
        cache.put(&checkpoint(10), 3, &proof);
        assert_eq!(
            cache.get(3).map(|(c, p)| (c.size, p)),
            Some((10, Some(proof.clone())))
        );
        // Another index of the same checkpoint: the checkpoint without a proof yet.
        assert_eq!(cache.get(4).map(|(c, p)| (c.size, p)), Some((10, None)));
        // An index the checkpoint does not cover.
        assert!(cache.get(10).is_none());
        // Past its time the checkpoint is not handed out; confirming it as still the latest
        // makes it current again, proofs included.
        if let Some(c) = cache.lock().as_mut() {
            c.taken = std::time::Instant::now() - CHECKPOINT_REUSE;
        }
        assert!(cache.get(3).is_none());
        cache.put(&checkpoint(10), 4, &[]);
        assert_eq!(cache.get(3).map(|(_, p)| p), Some(Some(proof)));
        // A newer checkpoint replaces the old one and its proofs.
        cache.put(&checkpoint(12), 11, &[]);
        assert_eq!(cache.get(3).map(|(c, p)| (c.size, p)), Some((12, None)));
    }
}
