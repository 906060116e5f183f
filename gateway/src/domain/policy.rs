//! Access decisions: the Casbin model and rules from `policies/`, indexed by owner department.
//!
//! Rules are validated line by line before Casbin sees them, so a broken policy is refused with
//! its file and line. Each owner department gets its own enforcer holding only the rules of its
//! domain: a decision scans that department's rules, not the whole province's. Enforcers are
//! immutable after load; `decide` takes `&self` and never serialises concurrent requests.
//!
//! A policy never changes once loaded (a new version is a new `Policy`), and a decision depends
//! only on the five fields asked, so each policy remembers the decisions it made: a repeated
//! question (the same department reading the same dataset for the same purpose) is a hash lookup
//! instead of a scan of the owner's rules.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::RwLock;

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};

use crate::domain::identity::PeerIdentity;

/// The loaded policy could not be used. The operator's files are at fault; the node does not
/// start (or keeps its old policy) until they are fixed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid Casbin model: {reason}")]
    Model { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Rule {
        path: String,
        line: usize,
        reason: String,
    },
    /// A role name of the policy is also a department id. Casbin matches a rule's subject
    /// against the caller's id as well as its roles, so a rule for the role would let the
    /// department of that id in without any `g` rule.
    #[error(
        "{origin}: `{id}` is both a role (the second field of a `g` rule) and a department id: a rule for the role would also let department `{id}` itself in; rename the role (roles and departments must not share names)"
    )]
    RoleIsDepartment { origin: String, id: String },
    #[error("policy engine error: {0}")]
    Engine(String),
}

/// One parsed line of the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `p, subject, owner, dataset, action, purpose, fields`; a rule written without `fields`
    /// gets `*` (every field).
    Allow(Vec<String>),
    /// `g, department, role, owner`
    Role(Vec<String>),
}

/// The outcome of one access decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The rule that allowed the access, or a sentence naming the rule that is missing.
    pub rule: String,
    /// The fields the allowing rule discloses.
    pub fields: Fields,
}

/// Which fields of a record a rule discloses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fields {
    /// Every field (`*`).
    All,
    /// Only these top-level fields, sorted (`name|status|address`).
    Only(Vec<String>),
}

impl Fields {
    /// Parse a rule's fields column: `*` or names separated by `|`.
    pub fn parse(text: &str) -> Result<Fields, String> {
        if text == "*" {
            return Ok(Fields::All);
        }
        let mut names = Vec::new();
        for name in text.split('|') {
            let name = name.trim();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(format!(
                    "field name `{name}` must be 1 to 64 of a-z, 0-9 and `_`; write fields as `*` or `name|status`"
                ));
            }
            names.push(name.to_owned());
        }
        names.sort();
        names.dedup();
        Ok(Fields::Only(names))
    }

    /// Whether field `name` is disclosed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Fields::All => true,
            Fields::Only(names) => names.binary_search_by(|n| n.as_str().cmp(name)).is_ok(),
        }
    }
}

/// What is being asked of whom.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    pub caller: &'a PeerIdentity,
    pub owner: &'a str,
    pub dataset: &'a str,
    pub action: &'a str,
    pub purpose: &'a str,
}

/// Most decisions a policy remembers; past this, further questions are decided each time.
/// Distinct questions are departments × datasets × actions × purposes: a few thousand.
const MEMO_CAPACITY: usize = 16_384;

/// A loaded, immutable policy.
pub struct Policy {
    version: u64,
    by_owner: HashMap<String, Enforcer>,
    /// Role names (second fields of `g` rules): never department ids.
    roles: BTreeSet<String>,
    /// Decisions made so far, keyed by [`memo_key`].
    memo: RwLock<HashMap<String, Decision>>,
}

/// The five fields of a question in one string, joined by U+001F; `None` (not remembered) if a
/// field holds that separator, which checked departments, datasets and purposes never do.
fn memo_key(req: &AccessRequest<'_>) -> Option<String> {
    let parts = [
        req.caller.department.as_str(),
        req.owner,
        req.dataset,
        req.action,
        req.purpose,
    ];
    if parts.iter().any(|p| p.contains('\u{1f}')) {
        return None;
    }
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        key.push_str(part);
        key.push('\u{1f}');
    }
    Some(key)
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("owners", &self.by_owner.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Policy {
    /// Load and validate the model and rule files, as version 0: the node's local policy,
    /// used until the cluster has a replicated one.
    pub async fn load(model_path: &Path, policy_path: &Path) -> Result<Policy, PolicyError> {
        let model = read(model_path)?;
        let rules = read(policy_path)?;
        Self::from_text(&model, &rules, 0, model_path, policy_path).await
    }

    /// Build policy `version` from the texts of the model and the rules; the paths only name
    /// the sources in error messages.
    pub async fn from_text(
        model_text: &str,
        rules_text: &str,
        version: u64,
        model_path: &Path,
        policy_path: &Path,
    ) -> Result<Policy, PolicyError> {
        check_model(model_text, model_path)?;
        let rules = parse_rules(rules_text, policy_path)?;
        let mut roles = BTreeSet::new();
        let mut departments = BTreeSet::new();
        for rule in &rules {
            match rule {
                Rule::Allow(f) => departments.insert(f[1].as_str()),
                Rule::Role(f) => {
                    roles.insert(f[1].clone());
                    departments.insert(f[0].as_str());
                    departments.insert(f[2].as_str())
                }
            };
        }
        if let Some(id) = departments.iter().find(|d| roles.contains(**d)) {
            return Err(PolicyError::RoleIsDepartment {
                origin: policy_path.display().to_string(),
                id: (*id).to_owned(),
            });
        }
        // Owner department -> (its `p` rules, its `g` rules).
        type Rules = Vec<Vec<String>>;
        let mut grouped: HashMap<String, (Rules, Rules)> = HashMap::new();
        for rule in rules {
            match rule {
                Rule::Allow(f) => grouped.entry(f[1].clone()).or_default().0.push(f),
                Rule::Role(f) => grouped.entry(f[2].clone()).or_default().1.push(f),
            }
        }
        let mut by_owner = HashMap::new();
        for (owner, (allows, roles)) in grouped {
            let model =
                DefaultModel::from_str(model_text)
                    .await
                    .map_err(|e| PolicyError::Model {
                        path: model_path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            let mut e = Enforcer::new(model, MemoryAdapter::default())
                .await
                .map_err(|e| PolicyError::Model {
                    path: model_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            if !allows.is_empty() {
                e.add_policies(allows)
                    .await
                    .map_err(|e| PolicyError::Engine(e.to_string()))?;
            }
            if !roles.is_empty() {
                e.add_grouping_policies(roles)
                    .await
                    .map_err(|e| PolicyError::Engine(e.to_string()))?;
            }
            // A matcher that cannot evaluate only shows when used: try it once now.
            e.enforce(("-", owner.as_str(), "-", "-", "-"))
                .map_err(|e| PolicyError::Model {
                    path: model_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            by_owner.insert(owner, e);
        }
        Ok(Policy {
            version,
            by_owner,
            roles,
            memo: RwLock::new(HashMap::new()),
        })
    }

    /// Refuse department ids that are role names of this policy ([`PolicyError::RoleIsDepartment`]);
    /// `source` names the departments' origin (a directory file, the directory in force).
    pub fn check_departments<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        source: &str,
    ) -> Result<(), PolicyError> {
        match ids.into_iter().find(|id| self.roles.contains(*id)) {
            Some(id) => Err(PolicyError::RoleIsDepartment {
                origin: source.to_owned(),
                id: id.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The policy version recorded with every decision: the number of policy records in the
    /// log up to the one that made this policy, or 0 for the node's local files.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Decide one access.
    #[tracing::instrument(name = "policy.decide", level = "info", skip_all, fields(
        caller = %req.caller.department, owner = req.owner, dataset = req.dataset,
        action = req.action, purpose = req.purpose, policy_version = self.version))]
    pub fn decide(&self, req: AccessRequest<'_>) -> Result<Decision, PolicyError> {
        let Some(key) = memo_key(&req) else {
            return self.evaluate(req);
        };
        // A poisoned lock only means a panic between two map operations: the map is whole.
        if let Some(known) = self
            .memo
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(known.clone());
        }
        let decision = self.evaluate(req)?;
        let mut memo = self.memo.write().unwrap_or_else(|e| e.into_inner());
        if memo.len() < MEMO_CAPACITY {
            memo.insert(key, decision.clone());
        }
        Ok(decision)
    }

    /// Decide one access with the owner's Casbin enforcer, without the memory of past
    /// decisions: what the first asking of a question costs. [`Policy::decide`] is the same
    /// answer, remembered.
    pub fn evaluate(&self, req: AccessRequest<'_>) -> Result<Decision, PolicyError> {
        let missing = || Decision {
            fields: Fields::Only(Vec::new()),
            allowed: false,
            rule: format!(
                "policy {} has no rule letting {} {} {}/{} for purpose {}",
                self.version,
                req.caller.department,
                req.action,
                req.owner,
                req.dataset,
                if req.purpose.is_empty() {
                    "(none)"
                } else {
                    req.purpose
                }
            ),
        };
        if self.roles.contains(&req.caller.department) {
            // Casbin would take the caller's id for the role of that name and grant the role's
            // rules; a certificate for such an id gets nothing.
            return Ok(Decision {
                fields: Fields::Only(Vec::new()),
                allowed: false,
                rule: format!(
                    "department id `{}` is a role name in policy {}; a department may not be named like a role, so nothing is granted to it",
                    req.caller.department, self.version
                ),
            });
        }
        let Some(enforcer) = self.by_owner.get(req.owner) else {
            return Ok(missing());
        };
        let (allowed, matched) = enforcer
            .enforce_ex((
                req.caller.department.as_str(),
                req.owner,
                req.dataset,
                req.action,
                req.purpose,
            ))
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        if !allowed {
            return Ok(missing());
        }
        let Some(matched) = matched.first() else {
            return Err(PolicyError::Engine(
                "the policy engine allowed without naming the rule".into(),
            ));
        };
        let fields = matched
            .get(5)
            .map(|f| Fields::parse(f))
            .transpose()
            .map_err(PolicyError::Engine)?
            .unwrap_or(Fields::All);
        Ok(Decision {
            allowed: true,
            rule: format!("p, {}", matched.join(", ")),
            fields,
        })
    }
}

/// The gateway asks five-field questions; the model must have the sections to answer them.
fn check_model(text: &str, path: &Path) -> Result<(), PolicyError> {
    let err = |reason: String| PolicyError::Model {
        path: path.display().to_string(),
        reason,
    };
    for section in [
        "[request_definition]",
        "[policy_definition]",
        "[policy_effect]",
        "[matchers]",
    ] {
        if !text.lines().any(|l| l.trim() == section) {
            return Err(err(format!("missing section {section}")));
        }
    }
    let r = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("r =").or_else(|| l.strip_prefix("r=")))
        .ok_or_else(|| err("missing `r = ...` request definition".into()))?;
    let fields = r.split(',').count();
    if fields != 5 {
        return Err(err(format!(
            "the request definition must have 5 fields (sub, dom, obj, act, purpose), found {fields}"
        )));
    }
    let p = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("p =").or_else(|| l.strip_prefix("p=")))
        .ok_or_else(|| err("missing `p = ...` policy definition".into()))?;
    let fields = p.split(',').count();
    if fields != 6 {
        return Err(err(format!(
            "the policy definition must have 6 fields (sub, dom, obj, act, purpose, fields), found {fields}"
        )));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Parse the rule file: `#` comments and blank lines are skipped; every other line must be a
/// complete `p` or `g` rule with non-empty fields of the allowed characters.
pub fn parse_rules(text: &str, path: &Path) -> Result<Vec<Rule>, PolicyError> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| PolicyError::Rule {
            path: path.display().to_string(),
            line: i + 1,
            reason,
        };
        let fields: Vec<String> = line.split(',').map(|f| f.trim().to_owned()).collect();
        let (kind, rest) = fields
            .split_first()
            .ok_or_else(|| err("empty rule".into()))?;
        let (want, names) = match kind.as_str() {
            "p" => (5, "subject, owner, dataset, action, purpose[, fields]"),
            "g" => (3, "department, role, owner"),
            other => {
                return Err(err(format!(
                    "unknown rule type `{other}`; lines start with `p` (allow) or `g` (role)"
                )));
            }
        };
        let mut rest = rest.to_vec();
        if kind == "p" && rest.len() == want + 1 {
            let fields = rest.pop().unwrap_or_default();
            Fields::parse(&fields).map_err(|reason| err(format!("field 6: {reason}")))?;
            rest.push(fields);
        } else if rest.len() != want {
            return Err(err(format!(
                "a `{kind}` rule needs {want} fields ({names}), found {}",
                rest.len()
            )));
        } else if kind == "p" {
            rest.push("*".into());
        }
        for (n, f) in rest.iter().take(want).enumerate() {
            let ok = !f.is_empty()
                && (f == "*"
                    || f.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            if !ok {
                return Err(err(format!(
                    "field {} (`{f}`) must be `*` or lowercase letters, digits and `-`",
                    n + 1
                )));
            }
        }
        if kind == "g" && rest.iter().any(|f| f == "*") {
            return Err(err("a `g` rule cannot use `*`".into()));
        }
        if kind == "p" && rest[1] == "*" {
            return Err(err(
                "the owner department of a `p` rule cannot be `*`; name the department".into(),
            ));
        }
        rules.push(if kind == "p" {
            Rule::Allow(rest)
        } else {
            Rule::Role(rest)
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests;
