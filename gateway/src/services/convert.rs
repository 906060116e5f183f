//! The node's types in their `qianlian.v1` wire form, and wire values back, in one place.
//!
//! Plain mappings only: no IO, no decisions. Hashes go on the wire as their 32 bytes, and an
//! absent index or leader as 0.

use std::collections::BTreeMap;

use qianlian_proto::v1;
use qianlian_proto::v1::LicenseStatusChange as WireChange;
use qianlian_raft_store::audit_query::AuditHit;
use qianlian_raft_store::notary::{CosignedCheckpoint, NotaryStatus, Receipt};
use qianlian_raft_store::record::{
    ConfigChange, ConfigKind, Decision, LicenseStatusChange, Record,
};

use crate::services::error::ServiceError;

/// The wire form of a receipt.
pub fn receipt(r: &Receipt) -> v1::Receipt {
    v1::Receipt {
        log_index: r.log_index,
        record_hash: r.record_hash.to_vec(),
    }
}

/// The wire form of a cosigned checkpoint.
pub fn checkpoint(c: CosignedCheckpoint) -> v1::Checkpoint {
    v1::Checkpoint {
        note: c.note,
        tree_size: c.size,
        root_hash: c.root.to_vec(),
        signers: c.signers,
    }
}

/// The wire form of a Merkle proof, inclusion or consistency: its hashes in order.
pub fn proof(hashes: &[[u8; 32]]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.to_vec()).collect()
}

/// The wire form of this node's view of the cluster.
pub fn cluster_status(s: &NotaryStatus) -> v1::ClusterStatus {
    let members = |m: &BTreeMap<u64, String>| {
        m.iter()
            .map(|(id, a)| v1::Member {
                node_id: *id,
                address: a.clone(),
            })
            .collect()
    };
    v1::ClusterStatus {
        node_id: s.node_id,
        leader_id: s.leader.unwrap_or(0),
        term: s.term,
        voters: members(&s.voters),
        learners: members(&s.learners),
        tree_size: s.tree_size,
        last_log_index: s.last_raft_index.unwrap_or(0),
        applied_index: s.applied_raft_index.unwrap_or(0),
        snapshot_index: s.snapshot_raft_index.unwrap_or(0),
        purged_index: s.purged_raft_index.unwrap_or(0),
    }
}

/// The version of a replicated configuration and the log index of its record.
pub fn config_version(kind: ConfigKind, version: u64, log_index: u64) -> v1::ConfigVersion {
    v1::ConfigVersion {
        kind: kind.as_str().into(),
        version,
        log_index,
    }
}

/// A replicated configuration as a document: a policy's model and rules, a directory's TOML
/// with no model, or a membership change as JSON (`from`, `to`) with no model.
pub fn config_document(version: v1::ConfigVersion, change: ConfigChange) -> v1::ConfigDocument {
    let (model, text) = match change {
        ConfigChange::Policy { model, rules } => (model, rules),
        ConfigChange::Directory { toml } => (String::new(), toml),
        ConfigChange::Membership { from, to } => (
            String::new(),
            serde_json::to_string_pretty(&serde_json::json!({ "from": from, "to": to }))
                .unwrap_or_default(),
        ),
    };
    v1::ConfigDocument {
        version: Some(version),
        model,
        text,
        signed_by: Vec::new(),
    }
}

/// One record an audit query matched: its receipt, canonical bytes and JSON form.
pub fn access_entry(h: &AuditHit) -> Result<v1::AccessEntry, ServiceError> {
    Ok(v1::AccessEntry {
        receipt: Some(receipt(&Receipt {
            log_index: h.log_index,
            record_hash: h.record_hash,
        })),
        record: h.bytes.clone(),
        record_json: serde_json::to_string(&h.record)
            .map_err(|e| ServiceError::Internal(e.to_string()))?,
    })
}

/// An exchange record as the data subject it names sees it; `None` for other records.
pub fn subject_access(h: &AuditHit) -> Option<v1::SubjectAccess> {
    let Record::Exchange(x) = h.record.content() else {
        return None;
    };
    Some(v1::SubjectAccess {
        log_index: h.log_index,
        record_hash: h.record_hash.to_vec(),
        time_unix_ms: x.time_unix_ms,
        consumer: x.caller.department.clone(),
        provider: x.owner.clone(),
        dataset: x.dataset.clone(),
        action: x.action.as_str().to_owned(),
        purpose: x.purpose.clone(),
        decision: match x.decision {
            Decision::Allow => "allow".into(),
            Decision::Deny => "deny".into(),
        },
        fields: x.disclosed_fields.clone(),
    })
}

/// The license status change a request asks for; `None` for an unspecified or unknown value.
pub fn license_status_change(change: i32) -> Option<LicenseStatusChange> {
    match WireChange::try_from(change) {
        Ok(WireChange::Suspend) => Some(LicenseStatusChange::Suspended),
        Ok(WireChange::Reinstate) => Some(LicenseStatusChange::Reinstated),
        Ok(WireChange::Revoke) => Some(LicenseStatusChange::Revoked),
        _ => None,
    }
}
