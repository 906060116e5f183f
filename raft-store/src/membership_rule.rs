//! Which Raft membership changes a node lets into its log.
//!
//! openraft lets a leader change the membership at will, and a membership entry takes effect on
//! a node as soon as it is appended there. So the check cannot wait for the state machine: the
//! peer service checks every membership entry of an `AppendEntries` before Raft sees it. Where
//! the directory in force lists operator keys, an entry is let in only as a step of the last
//! membership change the operators signed ([`MembershipRule::Signed`]), whose record the state
//! machine applied after checking its signatures like any configuration change:
//! - the membership before the entry and the entry itself stay within the signed change: every
//!   voter set is the signed `from` or `to` voters, every member is a member of `from` or `to`
//!   at the same address;
//! - the entry ends at the signed voters and holds every member of `to`.
//!
//! openraft's joint consensus (`from`, then `from` and `to`, then `to`) passes; a captured leader
//! adding its own node, dropping a voter or moving a member to another address does not. The
//! only membership let in without a signature is a node's first (the one `cluster init` makes,
//! received by a node that belongs to no cluster yet).
//!
//! A snapshot carries a membership too: the state machine installs one only if its membership
//! is one the snapshot's own last signed change allows ([`check_snapshot_membership`]).

use qianlian_verifier::record::MemberSet;

use crate::types::NodeId;

/// What membership changes the operators have authorised, as this node has applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipRule {
    /// The directory in force lists no operator key (or none is replicated yet): membership
    /// changes need no signature, as before operators signed them.
    Open,
    /// Operators sign membership changes; the last change they signed (`from`, `to`), if any.
    Signed(Option<(MemberSet, MemberSet)>),
}

/// A Raft membership as the gate reads it: the voter sets of its configurations (one, or two
/// while joint) and every member with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub configs: Vec<Vec<NodeId>>,
    pub members: Vec<(NodeId, String)>,
}

impl MembershipView {
    /// The view of an openraft membership.
    pub fn of(m: &openraft::Membership<NodeId, openraft::BasicNode>) -> MembershipView {
        MembershipView {
            configs: m
                .get_joint_config()
                .iter()
                .map(|c| c.iter().copied().collect())
                .collect(),
            members: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }

    /// The view of a signed member set.
    pub fn of_set(set: &MemberSet) -> MembershipView {
        MembershipView {
            configs: vec![set.voters.clone()],
            members: set
                .members
                .iter()
                .map(|m| (m.id, m.address.clone()))
                .collect(),
        }
    }

    /// No member at all: a node that belongs to no cluster yet.
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.configs.iter().all(Vec::is_empty)
    }
}

impl std::fmt::Display for MembershipView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let configs: Vec<String> = self.configs.iter().map(|c| format!("{c:?}")).collect();
        write!(f, "voters {}, members ", configs.join(" and "))?;
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(id, a)| format!("{id} at {a}"))
            .collect();
        f.write_str(&members.join(", "))
    }
}

/// Whether `m` stays within the change from `from` to `to`; why not otherwise.
fn within(m: &MembershipView, from: &MemberSet, to: &MemberSet) -> Result<(), String> {
    if let Some(c) = m
        .configs
        .iter()
        .find(|c| **c != from.voters && **c != to.voters)
    {
        return Err(format!(
            "voters {c:?} are neither the signed change's old voters {:?} nor its new ones {:?}",
            from.voters, to.voters
        ));
    }
    for (id, addr) in &m.members {
        let signed = [from.address(*id), to.address(*id)];
        if !signed.contains(&Some(addr.as_str())) {
            return Err(match signed {
                [None, None] => format!("node {id} is not a member in the signed change"),
                _ => format!("node {id} is at {addr}, not at the address the signed change gives"),
            });
        }
    }
    Ok(())
}

/// Check the membership of a snapshot (`snapshot`) against the rule of the snapshot's own
/// state, given this node's applied membership `current`: the same as this node's, the signed
/// change's `from` (taken before Raft made the change), or a step within it that ends at its
/// voters. Without any signed change, only this node's membership, or any for a node that has
/// none yet (an initial member catching up).
pub fn check_snapshot_membership(
    rule: &MembershipRule,
    current: &MembershipView,
    snapshot: &MembershipView,
) -> Result<(), String> {
    let signed = match rule {
        MembershipRule::Open => return Ok(()),
        _ if snapshot == current => return Ok(()),
        MembershipRule::Signed(None) if current.is_empty() => return Ok(()),
        MembershipRule::Signed(None) => {
            return Err(format!(
                "its membership ({snapshot}) is not this node's ({current}), and no operator signed a membership change"
            ));
        }
        MembershipRule::Signed(Some(signed)) => signed,
    };
    let (from, _) = signed;
    if *snapshot == MembershipView::of_set(from) {
        return Ok(());
    }
    check_membership_entries(
        rule,
        &MembershipView::of_set(from),
        std::slice::from_ref(snapshot),
    )
    .map_err(|e| format!("its membership is not one the operators signed: {e}"))
}

/// Check the membership entries `entries` (in log order) against `rule`, starting from the
/// membership `before` them. Each entry is the membership before the next.
pub fn check_membership_entries(
    rule: &MembershipRule,
    before: &MembershipView,
    entries: &[MembershipView],
) -> Result<(), String> {
    let signed = match rule {
        MembershipRule::Open => return Ok(()),
        MembershipRule::Signed(signed) => signed.as_ref(),
    };
    let mut before = before;
    for entry in entries {
        if before.is_empty() {
            // A node's first membership: the one its cluster was initialised with.
            before = entry;
            continue;
        }
        let Some((from, to)) = signed else {
            return Err(format!(
                "the membership change to {entry} carries no operator signature: operators sign membership changes (`qianlian cluster add-learner|promote|remove` with an operator's signing key)"
            ));
        };
        within(before, from, to).map_err(|e| {
            format!("the membership in force ({before}) is not the one the last signed change started from: {e}")
        })?;
        within(entry, from, to)
            .map_err(|e| format!("the membership change to {entry} was not signed: {e}"))?;
        if entry.configs.last() != Some(&to.voters) {
            return Err(format!(
                "the membership change to {entry} does not end at the signed voters {:?}",
                to.voters
            ));
        }
        if let Some(m) = to
            .members
            .iter()
            .find(|m| !entry.members.iter().any(|(id, _)| *id == m.id))
        {
            return Err(format!(
                "the membership change to {entry} leaves out node {}, a member in the signed change",
                m.id
            ));
        }
        before = entry;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[u64], voters: &[u64]) -> MemberSet {
        MemberSet::new(
            members
                .iter()
                .map(|id| (*id, format!("https://n{id}:7400"))),
            voters.iter().copied(),
        )
    }

    fn view(configs: &[&[u64]], members: &[u64]) -> MembershipView {
        MembershipView {
            configs: configs.iter().map(|c| c.to_vec()).collect(),
            members: members
                .iter()
                .map(|id| (*id, format!("https://n{id}:7400")))
                .collect(),
        }
    }

    fn refused(
        rule: &MembershipRule,
        before: &MembershipView,
        entries: &[MembershipView],
    ) -> String {
        match check_membership_entries(rule, before, entries) {
            Ok(()) => panic!("{entries:?} let in under {rule:?}"),
            Err(e) => e,
        }
    }

    fn signed(from: MemberSet, to: MemberSet) -> MembershipRule {
        MembershipRule::Signed(Some((from, to)))
    }

    #[test]
    fn open_rule_lets_every_change_in() -> Result<(), String> {
        let any = view(&[&[9]], &[9]);
        let rule = MembershipRule::Open;
        check_membership_entries(&rule, &view(&[&[1]], &[1]), &[any])
    }

    #[test]
    fn a_first_membership_needs_no_signature_and_later_ones_do() -> Result<(), String> {
        let empty = view(&[], &[]);
        let init = view(&[&[1, 2, 3]], &[1, 2, 3]);
        let rule = MembershipRule::Signed(None);
        check_membership_entries(&rule, &empty, std::slice::from_ref(&init))?;
        let add = view(&[&[1, 2, 3]], &[1, 2, 3, 4]);
        let e = refused(&rule, &init, &[add]);
        assert!(e.contains("carries no operator signature"), "{e}");
        Ok(())
    }

    #[test]
    fn the_signed_steps_pass_in_one_batch_or_one_by_one() -> Result<(), String> {
        let from = set(&[1, 2, 3, 4], &[1, 2, 3]);
        let to = set(&[1, 2, 3, 4], &[1, 2, 3, 4]);
        let rule = signed(from, to);
        let before = view(&[&[1, 2, 3]], &[1, 2, 3, 4]);
        let joint = view(&[&[1, 2, 3], &[1, 2, 3, 4]], &[1, 2, 3, 4]);
        let uniform = view(&[&[1, 2, 3, 4]], &[1, 2, 3, 4]);
        check_membership_entries(&rule, &before, &[joint.clone(), uniform.clone()])?;
        check_membership_entries(&rule, &before, std::slice::from_ref(&joint))?;
        check_membership_entries(&rule, &joint, &[uniform])?;
        Ok(())
    }

    #[test]
    fn a_learner_added_and_a_voter_removed_as_signed() -> Result<(), String> {
        let rule = signed(set(&[1, 2, 3], &[1, 2, 3]), set(&[1, 2, 3, 4], &[1, 2, 3]));
        let before = view(&[&[1, 2, 3]], &[1, 2, 3]);
        check_membership_entries(&rule, &before, &[view(&[&[1, 2, 3]], &[1, 2, 3, 4])])?;

        let rule = signed(set(&[1, 2, 3], &[1, 2, 3]), set(&[1, 2], &[1, 2]));
        let joint = view(&[&[1, 2, 3], &[1, 2]], &[1, 2, 3]);
        check_membership_entries(&rule, &before, &[joint, view(&[&[1, 2]], &[1, 2])])?;
        Ok(())
    }

    #[test]
    fn changes_beyond_the_signed_one_are_refused() -> Result<(), String> {
        let from = set(&[1, 2, 3], &[1, 2, 3]);
        let to = set(&[1, 2, 3, 4], &[1, 2, 3]);
        let rule = signed(from, to);
        let before = view(&[&[1, 2, 3]], &[1, 2, 3]);
        // Another node than the one signed for.
        let e = refused(&rule, &before, &[view(&[&[1, 2, 3]], &[1, 2, 3, 9])]);
        assert!(e.contains("node 9 is not a member"), "{e}");
        // The signed learner made a voter.
        let e = refused(
            &rule,
            &before,
            &[view(&[&[1, 2, 3], &[1, 2, 3, 4]], &[1, 2, 3, 4])],
        );
        assert!(e.contains("neither"), "{e}");
        // A voter dropped while the learner is added.
        let e = refused(&rule, &before, &[view(&[&[1, 2]], &[1, 2, 4])]);
        assert!(e.contains("neither"), "{e}");
        // The signed member at another address.
        let mut moved = view(&[&[1, 2, 3]], &[1, 2, 3, 4]);
        moved.members[3].1 = "https://evil:7400".into();
        let e = refused(&rule, &before, &[moved]);
        assert!(e.contains("not at the address"), "{e}");
        // A member of the signed change left out.
        let e = refused(&rule, &before, &[view(&[&[1, 2, 3]], &[1, 2, 3])]);
        assert!(e.contains("leaves out node 4"), "{e}");
        Ok(())
    }

    #[test]
    fn snapshots_carry_a_membership_the_operators_signed() -> Result<(), String> {
        let three = view(&[&[1, 2, 3]], &[1, 2, 3]);
        let learner = view(&[&[1, 2, 3]], &[1, 2, 3, 4]);
        let rule = signed(set(&[1, 2, 3], &[1, 2, 3]), set(&[1, 2, 3, 4], &[1, 2, 3]));
        // Before the Raft change, after it, and this node's own.
        check_snapshot_membership(&rule, &three, &three)?;
        check_snapshot_membership(&rule, &three, &learner)?;
        check_snapshot_membership(&rule, &view(&[&[1]], &[1]), &three)?;
        let e = match check_snapshot_membership(&rule, &three, &view(&[&[1, 2, 3]], &[1, 2, 3, 9]))
        {
            Ok(()) => panic!("a snapshot with an unsigned member was installed"),
            Err(e) => e,
        };
        assert!(e.contains("not one the operators signed"), "{e}");
        // No signed change: an initial member with nothing yet takes the cluster's membership,
        // a member takes only its own.
        let none = MembershipRule::Signed(None);
        check_snapshot_membership(&none, &view(&[], &[]), &three)?;
        assert!(check_snapshot_membership(&none, &three, &learner).is_err());
        check_snapshot_membership(&MembershipRule::Open, &three, &learner)
    }

    #[test]
    fn a_signed_change_does_not_apply_to_another_membership() -> Result<(), String> {
        // Signed as adding learner 4 to {1,2,3}; the cluster is {1,2,3,5} (5 a learner): 5
        // would be dropped without the two signatures removing it needs.
        let rule = signed(set(&[1, 2, 3], &[1, 2, 3]), set(&[1, 2, 3, 4], &[1, 2, 3]));
        let before = view(&[&[1, 2, 3]], &[1, 2, 3, 5]);
        let e = refused(&rule, &before, &[view(&[&[1, 2, 3]], &[1, 2, 3, 4])]);
        assert!(
            e.contains("not the one the last signed change started from"),
            "{e}"
        );
        Ok(())
    }
}
