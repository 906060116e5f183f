//! The development PKI: a root CA, one server certificate per gateway node and one client
//! certificate per department, inspector and operator, written as PEM files.
//!
//! Layout under the output folder:
//! `ca.crt`, `ca.key`, `nodes/<id>.crt|key`, `nodes/<id>.note.key|note.pub` (checkpoint signing),
//! `clients/<id>.crt|key`, `clients/<operator>.sign.key` (an operator's signature on policy and
//! directory changes), `departments/<id>.license.key`, `departments.toml` (the directory, with
//! every department's and operator's public keys).
//! Identity lives in one SAN URI (`spiffe://<trust-domain>/dept/<id>` or `.../node/<id>`) and the
//! role in the subject OU, which is what [`crate::domain::identity::parse_peer`] reads back.
//! Existing files are never overwritten unless `force` is set: re-running adds what is missing
//! (a new department) with the existing CA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use qianlian_verifier::NoteSigner;
use qianlian_verifier::license::DepartmentKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::domain::identity::{Role, validate_id};

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiPlan {
    pub out: PathBuf,
    pub trust_domain: String,
    pub departments: Vec<String>,
    pub inspectors: Vec<String>,
    pub operators: Vec<String>,
    /// Gateway nodes, each `<name>` (an operator's node) or `<name>=<department>` (the gateway of
    /// that department, named in its certificate); defaults to one per department, named after
    /// it, when empty. A member of a cluster is named `node-<member id>`.
    pub nodes: Vec<String>,
    /// Extra DNS names or IP addresses for node certificates (besides localhost and the node's
    /// name): `<host>` goes into every node certificate, `<node>=<host>[,<host>…]` into that
    /// node's only.
    pub node_hosts: Vec<String>,
    /// Display names of departments (id, name), e.g. Chinese names; default: the id.
    pub names: Vec<(String, String)>,
    /// Validity of leaf certificates, in days.
    pub leaf_days: i64,
    pub force: bool,
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct PkiReport {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// The PKI could not be generated. Input errors name the offending value; IO errors the path.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "{0} exists but its key does not: restore it, or pass --force to generate a new CA (every certificate must then be reissued)"
    )]
    Incomplete(String),
}

const CA_DAYS: i64 = 3650;

/// Generate (or complete) the PKI described by `plan`.
pub fn init(plan: &PkiPlan) -> Result<PkiReport, PkiError> {
    validate_trust_domain(&plan.trust_domain)?;
    let mut ids = Vec::new();
    for (list, what) in [
        (&plan.departments, "department id"),
        (&plan.inspectors, "inspector id"),
        (&plan.operators, "operator id"),
    ] {
        for id in list {
            validate_id(id).map_err(|reason| PkiError::Invalid { what, reason })?;
        }
        ids.extend(list.iter().cloned());
    }
    node_specs(plan)?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(PkiError::Invalid {
            what: "client id",
            reason: format!(
                "`{dup}` is named twice; every department, inspector and operator needs its own id"
            ),
        });
    }

    let mut report = PkiReport::default();
    mkdir(&plan.out)?;
    mkdir(&plan.out.join("nodes"))?;
    mkdir(&plan.out.join("clients"))?;

    let issuer = ca(plan, &mut report)?;

    for node in node_specs(plan)? {
        let base = plan.out.join("nodes").join(&node.name);
        signed_leaf(plan, &base, &node, Role::Node, &issuer, &mut report)?;
        note_key(plan, &base, &node.name, &mut report)?;
    }
    for id in &plan.departments {
        license_key(plan, id, &mut report)?;
    }
    for id in &plan.operators {
        ed25519_key(
            plan,
            &plan.out.join("clients").join(format!("{id}.sign.key")),
            "operator signing key",
            &mut report,
        )?;
    }
    write_registry(plan, &mut report)?;
    subject_key(plan, &mut report)?;
    for (list, role) in [
        (&plan.departments, Role::Department),
        (&plan.inspectors, Role::Inspector),
        (&plan.operators, Role::Operator),
    ] {
        for id in list {
            let base = plan.out.join("clients").join(id);
            leaf(plan, &base, id, role, &issuer, &mut report)?;
        }
    }
    Ok(report)
}

fn validate_trust_domain(td: &str) -> Result<(), PkiError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Invalid {
            what: "trust domain",
            reason: format!(
                "`{td}` must be a lowercase DNS-style name such as gov.example (letters, digits, `-`, `.`)"
            ),
        })
    }
}

/// Load the existing CA, or create one.
fn ca(plan: &PkiPlan, report: &mut PkiReport) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let crt = plan.out.join("ca.crt");
    let key = plan.out.join("ca.key");
    if crt.exists() && !plan.force {
        if !key.exists() {
            return Err(PkiError::Incomplete(crt.display().to_string()));
        }
        let key_pem = read(&key)?;
        let crt_pem = read(&crt)?;
        let key_pair = KeyPair::from_pem(&key_pem)?;
        report.kept.push(crt);
        return Ok(Issuer::from_ca_cert_pem(&crt_pem, key_pair)?);
    }
    let key_pair = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Qianlian");
    // A distinct name per CA: a certificate from another Qianlian PKI then fails as an
    // unknown issuer instead of as a bad signature under a look-alike name.
    let tag: u32 = rand::random();
    dn.push(
        DnType::CommonName,
        format!("Qianlian root CA {} {tag:08x}", plan.trust_domain),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key_pair)?;
    write(&key, &key_pair.serialize_pem(), true)?;
    write(&crt, &cert.pem(), false)?;
    report.written.extend([crt, key]);
    Ok(Issuer::new(params, key_pair))
}

/// Parameters of a leaf certificate for `id` with `role`, valid from `not_before` to `not_after`.
pub fn leaf_params(
    trust_domain: &str,
    id: &str,
    role: Role,
    hosts: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Qianlian");
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::CommonName, id);
    params.distinguished_name = dn;
    let uri = format!("spiffe://{trust_domain}/{}/{id}", role.uri_kind());
    let mut sans = vec![SanType::URI(uri.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if role == Role::Node {
        // Node certificates serve gRPC and also authenticate the node to its peers.
        let mut names = vec!["localhost".to_owned(), id.to_owned()];
        names.extend(hosts.iter().cloned());
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(name.try_into()?)),
            }
        }
        sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        sans.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.subject_alt_names = sans;
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

/// One node certificate to write: its name, the department it serves, its host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub department: Option<String>,
    pub hosts: Vec<String>,
}

/// The nodes of `plan` with their departments and host names (see [`PkiPlan::nodes`] and
/// [`PkiPlan::node_hosts`]). Errors name the value and the form expected.
pub fn node_specs(plan: &PkiPlan) -> Result<Vec<NodeSpec>, PkiError> {
    let invalid = |what, reason: String| PkiError::Invalid { what, reason };
    let mut nodes: Vec<NodeSpec> = Vec::new();
    if plan.nodes.is_empty() {
        nodes.extend(plan.departments.iter().map(|d| NodeSpec {
            name: d.clone(),
            department: Some(d.clone()),
            hosts: Vec::new(),
        }));
    }
    for spec in &plan.nodes {
        let (name, department) = match spec.split_once('=') {
            Some((n, d)) => (n, Some(d)),
            None => (spec.as_str(), None),
        };
        validate_id(name).map_err(|r| invalid("node id", format!("--node `{spec}`: {r}")))?;
        if let Some(d) = department {
            validate_id(d).map_err(|r| {
                invalid(
                    "node department",
                    format!("--node `{spec}` (write <node>=<department>): {r}"),
                )
            })?;
        }
        if nodes.iter().any(|n| n.name == name) {
            return Err(invalid("node id", format!("node `{name}` is named twice")));
        }
        nodes.push(NodeSpec {
            name: name.to_owned(),
            department: department.map(str::to_owned),
            hosts: Vec::new(),
        });
    }
    let mut shared = Vec::new();
    for host in &plan.node_hosts {
        match host.split_once('=') {
            None => shared.push(host.clone()),
            Some((name, list)) => {
                let node = nodes.iter_mut().find(|n| n.name == name).ok_or_else(|| {
                    invalid(
                        "host",
                        format!(
                            "--host `{host}` names node `{name}`, which is not one of the nodes ({}); write <node>=<host>[,<host>...] with a node given by --node",
                            plan_node_names(plan)
                        ),
                    )
                })?;
                for h in list.split(',').map(str::trim) {
                    if h.is_empty() {
                        return Err(invalid(
                            "host",
                            format!("--host `{host}` has an empty host name"),
                        ));
                    }
                    node.hosts.push(h.to_owned());
                }
            }
        }
    }
    for node in &mut nodes {
        let own = std::mem::take(&mut node.hosts);
        node.hosts = shared.iter().cloned().chain(own).collect();
    }
    Ok(nodes)
}

fn plan_node_names(plan: &PkiPlan) -> String {
    if plan.nodes.is_empty() {
        plan.departments.join(", ")
    } else {
        plan.nodes
            .iter()
            .map(|n| n.split('=').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Name `department` in a node certificate's subject (organizationIdentifier), which
/// [`crate::domain::identity::parse_peer`] reads back as `node_department`.
pub fn set_node_department(params: &mut CertificateParams, department: &str) {
    params.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 97]),
        rcgen::DnValue::Utf8String(department.to_owned()),
    );
}

/// A leaf certificate and key for `node` (its name, hosts and, for a node, its department) in
/// `role` at `base`.crt/.key, kept when both exist unless `plan.force`.
fn signed_leaf(
    plan: &PkiPlan,
    base: &Path,
    node: &NodeSpec,
    role: Role,
    issuer: &Issuer<'_, KeyPair>,
    report: &mut PkiReport,
) -> Result<(), PkiError> {
    let crt = base.with_extension("crt");
    let key = base.with_extension("key");
    if crt.exists() && key.exists() && !plan.force {
        report.kept.push(crt);
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(
        &plan.trust_domain,
        &node.name,
        role,
        &node.hosts,
        now - Duration::hours(1),
        now + Duration::days(plan.leaf_days),
    )?;
    if let Some(d) = &node.department {
        set_node_department(&mut params, d);
    }
    let key_pair = KeyPair::generate()?;
    let cert = params.signed_by(&key_pair, issuer)?;
    write(&key, &key_pair.serialize_pem(), true)?;
    write(&crt, &cert.pem(), false)?;
    report.written.extend([crt, key]);
    Ok(())
}

fn leaf(
    plan: &PkiPlan,
    base: &Path,
    id: &str,
    role: Role,
    issuer: &Issuer<'_, KeyPair>,
    report: &mut PkiReport,
) -> Result<(), PkiError> {
    let node = NodeSpec {
        name: id.to_owned(),
        department: None,
        hosts: Vec::new(),
    };
    signed_leaf(plan, base, &node, role, issuer, report)
}

/// The key id of a department's license signing key: `<department>:<8 hex of SHA-256(key)>`.
pub fn license_key_id(department: &str, key: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    format!("{department}:{}", hex::encode(&digest[..4]))
}

/// A department's Ed25519 license signing key, `departments/<id>.license.key` (PKCS#8 PEM).
fn license_key(plan: &PkiPlan, id: &str, report: &mut PkiReport) -> Result<(), PkiError> {
    let dir = plan.out.join("departments");
    mkdir(&dir)?;
    ed25519_key(
        plan,
        &dir.join(format!("{id}.license.key")),
        "license key",
        report,
    )
}

/// A new Ed25519 signing key at `path` (PKCS#8 PEM, owner-only), unless one is there.
fn ed25519_key(
    plan: &PkiPlan,
    path: &Path,
    what: &'static str,
    report: &mut PkiReport,
) -> Result<(), PkiError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    if path.exists() && !plan.force {
        report.kept.push(path.to_owned());
        return Ok(());
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| PkiError::Invalid {
            what,
            reason: e.to_string(),
        })?;
    write(path, &pem, true)?;
    report.written.push(path.to_owned());
    Ok(())
}

/// Read a department's license signing key (PKCS#8 PEM).
pub fn read_license_key(path: &Path) -> Result<ed25519_dalek::SigningKey, PkiError> {
    read_ed25519_key(path, "license key")
}

/// Read an Ed25519 signing key (PKCS#8 PEM): a license key or an operator's signing key.
pub fn read_ed25519_key(
    path: &Path,
    what: &'static str,
) -> Result<ed25519_dalek::SigningKey, PkiError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = read(path)?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| PkiError::Invalid {
        what,
        reason: format!("{}: not an Ed25519 PKCS#8 PEM key ({e})", path.display()),
    })
}

/// The operators whose signing keys are under `clients/` (`<id>.sign.key`), with the operators
/// and keys an earlier directory listed that are not.
fn operator_entries(
    plan: &PkiPlan,
    old: &crate::domain::directory::Directory,
) -> Result<Vec<crate::domain::directory::OperatorEntry>, PkiError> {
    let dir = plan.out.join("clients");
    let found = ids_with_suffix(&dir, ".sign.key")?;
    let mut operators = old.operator.clone();
    for id in found {
        let path = dir.join(format!("{id}.sign.key"));
        let public = read_ed25519_key(&path, "operator signing key")?.verifying_key();
        let key = DepartmentKey::new(license_key_id(&id, &public), &public);
        match operators.iter_mut().find(|o| o.id == id) {
            Some(o) if o.keys.contains(&key) => {}
            Some(o) => o.keys.push(key),
            None => operators.push(crate::domain::directory::OperatorEntry {
                id,
                keys: vec![key],
            }),
        }
    }
    Ok(operators)
}

/// The ids of the files `<id><suffix>` in `dir`, sorted.
fn ids_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<String>, PkiError> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| PkiError::Io {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(suffix))
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// `departments.toml`: every department with a license key under `departments/`, with its
/// public key. Every node loads it to check license signatures; rewritten on each run.
fn write_registry(plan: &PkiPlan, report: &mut PkiReport) -> Result<(), PkiError> {
    let dir = plan.out.join("departments");
    let ids = ids_with_suffix(&dir, ".license.key")?;
    let specs = node_specs(plan)?;
    let path = plan.out.join("departments.toml");
    // Keep names given on earlier runs.
    let old = crate::domain::directory::Directory::load(&path).unwrap_or_default();
    let mut directory = crate::domain::directory::Directory::default();
    for id in ids {
        let key = read_license_key(&dir.join(format!("{id}.license.key")))?;
        let public = key.verifying_key();
        let name = plan
            .names
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, n)| n.clone())
            .or_else(|| old.department(&id).map(|d| d.name.clone()))
            .unwrap_or_else(|| id.clone());
        // Keep gateways and datasets set by the operator; the sample departments get their
        // built-in datasets.
        let kept = old.department(&id);
        let datasets = match kept {
            Some(d) if !d.datasets.is_empty() => d.datasets.clone(),
            _ => crate::domain::dataset::CATALOG
                .iter()
                .filter(|(owner, _)| *owner == id)
                .map(|(_, d)| d.clone())
                .collect(),
        };
        // The nodes that write a department's records seal them with their note keys:
        // published for every node whose certificate names the department (`--node
        // <name>=<department>`, or the default of one node per department, named after it), or,
        // for a department without a gateway of its own, for every node that names no
        // department (an operator's node serves every such department: `qianlian dev`, the
        // compose and Kubernetes examples). Kept as the operator listed them otherwise.
        let node_keys = match kept {
            Some(d) if !d.node_keys.is_empty() => d.node_keys.clone(),
            _ => {
                let own: Vec<_> = specs
                    .iter()
                    .filter(|s| s.department.as_deref() == Some(id.as_str()))
                    .collect();
                let writers = if own.is_empty() {
                    specs.iter().filter(|s| s.department.is_none()).collect()
                } else {
                    own
                };
                let mut keys = Vec::new();
                for spec in writers {
                    if let Some(k) = node_note_key(plan, &spec.name)? {
                        keys.push(k);
                    }
                }
                keys
            }
        };
        directory
            .department
            .push(crate::domain::directory::DirectoryEntry {
                keys: vec![DepartmentKey::new(license_key_id(&id, &public), &public)],
                node_keys,
                gateway: kept.and_then(|d| d.gateway.clone()),
                cert_fingerprint: kept.and_then(|d| d.cert_fingerprint.clone()),
                datasets,
                id,
                name,
            });
    }
    directory.operator = operator_entries(plan, &old)?;
    let text = format!(
        "# The department directory: departments, their license public keys, gateways and datasets.\n# Written by `qianlian pki init`; apply it to a cluster with `qianlian directory apply`.\n\n{}",
        directory.to_toml()
    );
    write(&path, &text, false)?;
    report.written.push(path);
    Ok(())
}

/// `subject.key`: the cluster's key for hashing personal identifiers (HMAC-SHA256), 32 random
/// bytes in hex. Every node of a cluster needs the same one; it never leaves the cluster.
fn subject_key(plan: &PkiPlan, report: &mut PkiReport) -> Result<(), PkiError> {
    let path = plan.out.join("subject.key");
    if path.exists() && !plan.force {
        report.kept.push(path);
        return Ok(());
    }
    write(
        &path,
        &format!("{}\n", hex::encode(rand::random::<[u8; 32]>())),
        true,
    )?;
    report.written.push(path);
    Ok(())
}

/// The directory entry of node `id`'s note key, if the PKI has one.
fn node_note_key(plan: &PkiPlan, id: &str) -> Result<Option<DepartmentKey>, PkiError> {
    let path = plan.out.join("nodes").join(format!("{id}.note.key"));
    if !path.exists() {
        return Ok(None);
    }
    let signer = NoteSigner::from_skey(read(&path)?.trim()).map_err(|e| PkiError::Invalid {
        what: "node note key",
        reason: format!("{}: {e}", path.display()),
    })?;
    Ok(Some(DepartmentKey::new(
        signer.name(),
        &signer.signing_key().verifying_key(),
    )))
}

/// The name a node's checkpoint signatures carry: `<node id>.<trust domain>`.
pub fn note_key_name(trust_domain: &str, node: &str) -> String {
    format!("{node}.{trust_domain}")
}

/// A node's Ed25519 checkpoint-signing key (`<id>.note.key`, signed-note private key form) and
/// its public verifier key (`<id>.note.pub`, `name+keyid+key`), which clients pin.
fn note_key(plan: &PkiPlan, base: &Path, id: &str, report: &mut PkiReport) -> Result<(), PkiError> {
    let key = base.with_extension("note.key");
    let public = base.with_extension("note.pub");
    if key.exists() && public.exists() && !plan.force {
        report.kept.push(key);
        return Ok(());
    }
    let seed: [u8; 32] = rand::random();
    let signer =
        NoteSigner::from_seed(note_key_name(&plan.trust_domain, id), &seed).map_err(|e| {
            PkiError::Invalid {
                what: "node id",
                reason: e.to_string(),
            }
        })?;
    write(&key, &format!("{}\n", signer.to_skey()), true)?;
    write(
        &public,
        &format!("{}\n", signer.verifier().to_vkey()),
        false,
    )?;
    report.written.extend([key, public]);
    Ok(())
}

fn mkdir(path: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    write_file(path, contents.as_bytes(), secret).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Write `contents` to `path`, replacing any file there, with mode 0600 when `secret` (0644
/// otherwise) whatever the old file's mode was. The bytes go to a new file beside `path`,
/// created with that mode and synced, which is then renamed over `path`: a key is never
/// readable by others, not even while it is written, and a crash leaves the old file or the
/// new one, never half of either.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests;
