//! Who may call this node's peer service, and what a forwarding node may append.
//!
//! The server's TLS layer (the gateway) reads the caller's node certificate into a
//! [`CallingNode`] and puts it in the request's extensions; this module never parses
//! certificates. A call is served only when:
//! - the certificate names a member id (`spiffe://<trust-domain>/node/node-<id>`) and that id is a
//!   member (voter or learner) of the membership in force on this node, read at the call, so a
//!   removed member is refused at once. A node that belongs to no cluster yet (empty
//!   membership) accepts any member id: it learns its cluster from the leader's first call;
//! - the sender a Raft message names (the candidate of a `Vote`, the leader of an
//!   `AppendEntries` or `InstallSnapshot`) is that member id.
//!
//! `Forward` further limits the records by what the sending node may originate
//! ([`may_originate`]). Refusals are counted in [`AuthorityStats`]; snapshots that do not
//! extend this node's signed tree are refused by the state machine (`snapshots_refused`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::record::{Record, Side};
use crate::types::NodeId;

/// The node that makes a peer call, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingNode {
    /// The certificate's node name, e.g. `node-2`.
    pub name: String,
    /// The member id the name carries (`node-<id>`), if any.
    pub member_id: Option<NodeId>,
    /// The department whose gateway the node is, if its certificate names one. A node without
    /// one is an operator's node and may forward any record that passes `Record::check`.
    pub department: Option<String>,
}

impl CallingNode {
    /// The member id a node name carries: `node-<id>` with `id` ≥ 1 in decimal, no leading zero.
    pub fn member_id_of(name: &str) -> Option<NodeId> {
        let digits = name.strip_prefix("node-")?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok()
    }
}

impl std::fmt::Display for CallingNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.department {
            Some(d) => write!(f, "node `{}` (gateway of `{d}`)", self.name),
            None => write!(f, "node `{}`", self.name),
        }
    }
}

/// Refusals of peer calls since the node started, for metrics.
#[derive(Debug, Default)]
pub struct AuthorityStats {
    /// Calls from a certificate that names no member id, or a member id not in the cluster.
    pub not_member: AtomicU64,
    /// Raft messages whose sender differs from the calling certificate's member id.
    pub wrong_sender: AtomicU64,
    /// Forwarded batches refused for a record the sending node may not originate.
    pub forward_refused: AtomicU64,
    /// `AppendEntries` refused for a membership change the operators did not sign.
    pub membership_refused: AtomicU64,
}

impl AuthorityStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// Why a peer call was refused; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefusal {
    /// The call came with no node certificate read by the TLS layer.
    #[error("`{call}` needs a node certificate")]
    NoCertificate { call: &'static str },
    /// The certificate names no member id.
    #[error(
        "`{call}` is for cluster members: the certificate of node `{name}` names no member id (a member's node certificate is spiffe://<trust-domain>/node/node-<member id>)"
    )]
    NoMemberId { call: &'static str, name: String },
    /// The member id is not in the membership in force here.
    #[error(
        "`{call}` is for cluster members: node `{name}` (member {id}) is not one; members are {members}"
    )]
    NotMember {
        call: &'static str,
        name: String,
        id: NodeId,
        members: String,
    },
    /// The message names another sender than the certificate.
    #[error(
        "`{call}` names node {sender} as its sender but comes from the certificate of node `{name}` (member {id}); a member sends only in its own name"
    )]
    WrongSender {
        call: &'static str,
        sender: NodeId,
        name: String,
        id: NodeId,
    },
}

/// Check that `caller` may make `call` given the members in force (`members`, empty when this
/// node belongs to no cluster yet) and the sender the message names, if it names one.
pub fn authorize_call(
    call: &'static str,
    caller: Option<&CallingNode>,
    members: &BTreeSet<NodeId>,
    sender: Option<NodeId>,
) -> Result<NodeId, CallRefusal> {
    let caller = caller.ok_or(CallRefusal::NoCertificate { call })?;
    let id = caller.member_id.ok_or_else(|| CallRefusal::NoMemberId {
        call,
        name: caller.name.clone(),
    })?;
    if !members.is_empty() && !members.contains(&id) {
        return Err(CallRefusal::NotMember {
            call,
            name: caller.name.clone(),
            id,
            members: members
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match sender {
        Some(sender) if sender != id => Err(CallRefusal::WrongSender {
            call,
            sender,
            name: caller.name.clone(),
            id,
        }),
        _ => Ok(id),
    }
}

/// Whether `from` may forward `record` for the leader to append. `issuer` is the issuing
/// department of the license a status record changes, as this node knows it (`None`: unknown).
///
/// Every record must pass `Record::check`. A department's node may forward only what its own
/// gateway writes: access records whose caller or owner is its department, exchange records it
/// wrote as gateway (as provider, for its department's data), licenses its department issues and
/// status changes of them; never configuration changes, which operators apply at the leader.
pub fn may_originate(
    from: &CallingNode,
    record: &Record,
    issuer: Option<&str>,
) -> Result<(), String> {
    record.check().map_err(|e| e.to_string())?;
    let Some(dept) = from.department.as_deref() else {
        return Ok(());
    };
    match record {
        // What a sealed record may carry is what its inner record may be.
        Record::Sealed(s) => may_originate(from, &s.record, issuer),
        Record::Authorized(a) => may_originate(from, &a.record, issuer),
        Record::BatchSealed(s) => may_originate(from, &s.record, issuer),
        // The state machine checks that its key may sign each record it covers.
        Record::BatchSignature(_) => Ok(()),
        Record::Governance(g) if g.department == dept => Ok(()),
        Record::Governance(g) => Err(format!(
            "{from} may not forward a governance step of `{}`: only its own department's",
            g.department
        )),
        Record::Config(c) => Err(format!(
            "{from} may not forward a {} change: configuration changes are applied by an operator at the leader",
            c.change.kind().as_str()
        )),
        Record::Access(a) if a.caller.department == dept || a.owner == dept => Ok(()),
        Record::Access(a) => Err(format!(
            "{from} may not forward an access record of caller `{}` on `{}`'s data: neither is its department",
            a.caller.department, a.owner
        )),
        Record::Exchange(x) if x.gateway != dept => Err(format!(
            "{from} may not forward an exchange record written by the gateway of `{}`",
            x.gateway
        )),
        Record::Exchange(x) if x.side == Side::Provider && x.owner != dept => Err(format!(
            "{from} may not forward a provider record for `{}`'s data",
            x.owner
        )),
        Record::Exchange(_) => Ok(()),
        Record::LicenseIssued(l) if l.department == dept => Ok(()),
        Record::LicenseIssued(l) => Err(format!(
            "{from} may not forward the issuance of a license of `{}`",
            l.department
        )),
        Record::LicenseStatus(s) => match issuer {
            Some(i) if i == dept => Ok(()),
            Some(i) => Err(format!(
                "{from} may not change the status of a license issued by `{i}`"
            )),
            None => Err(format!(
                "{from} may not change the status of license {}: no such license is in the log",
                hex::encode(s.license_hash)
            )),
        },
    }
}

#[cfg(test)]
mod tests;
