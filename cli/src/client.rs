//! `qianlian client`: every call of the gateway from the command line, with a dev profile
//! (`--as housing`) or explicit certificate files.

use qianlian_verifier::record::MemberSet;
use std::path::{Path, PathBuf};

use crate::profile::Profile;

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{GetLogEntryRequest, GetRecordRequest, PutRecordRequest, RecordRef};

use qianlian_gateway::domain::dataset;
use qianlian_proto::contract::{LEADER_HEADER, LOG_INDEX_HEADER, RECORD_HASH_HEADER};

/// Render a refused call: code, message and the receipt if the refusal was notarized.
pub fn describe_status(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let md = s.metadata();
    if let (Some(i), Some(h)) = (md.get(LOG_INDEX_HEADER), md.get(RECORD_HASH_HEADER)) {
        out.push_str(&format!(
            "\nnotarized: log index {}, record hash {}",
            i.to_str().unwrap_or("?"),
            h.to_str().unwrap_or("?")
        ));
    }
    out
}

fn owner_of(dataset_id: &str) -> anyhow::Result<&'static str> {
    dataset::builtin(dataset_id)
        .map(|(owner, _)| owner)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown dataset `{dataset_id}`; known datasets: {}",
                dataset::known_ids()
            )
        })
}

/// `client put`: store a record of the caller's own dataset.
pub async fn put(
    profile: &Profile,
    dataset_id: &str,
    key: &str,
    json: Vec<u8>,
) -> anyhow::Result<()> {
    let mut c = ExchangeClient::new(profile.connect().await?);
    let resp = c
        .put_record(PutRecordRequest {
            record: Some(RecordRef {
                department: owner_of(dataset_id)?.to_owned(),
                dataset: dataset_id.to_owned(),
                key: key.to_owned(),
            }),
            payload: json,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let r = resp.receipt.unwrap_or_default();
    println!(
        "stored {dataset_id}/{key}\nnotarized: log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    Ok(())
}

/// `client get`: read a record for a declared purpose.
pub async fn get(
    profile: &Profile,
    dataset_id: &str,
    key: &str,
    purpose: &str,
) -> anyhow::Result<()> {
    let mut c = ExchangeClient::new(profile.connect().await?);
    let resp = c
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: owner_of(dataset_id)?.to_owned(),
                dataset: dataset_id.to_owned(),
                key: key.to_owned(),
            }),
            purpose: purpose.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let payload: serde_json::Value = serde_json::from_slice(&resp.payload)?;
    println!("{}", serde_json::to_string_pretty(&payload)?);
    print_disclosure(
        &resp.disclosed_fields,
        resp.policy_version,
        &resp.rule,
        resp.receipt.as_ref(),
        resp.consumer_receipt.as_ref(),
    );
    Ok(())
}

fn print_disclosure(
    fields: &[String],
    policy_version: u64,
    rule: &str,
    receipt: Option<&qianlian_proto::v1::Receipt>,
    consumer: Option<&qianlian_proto::v1::Receipt>,
) {
    println!("disclosed fields: {}", fields.join(", "));
    println!("policy version {policy_version}: {rule}");
    let r = receipt.cloned().unwrap_or_default();
    println!(
        "notarized: log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    if let Some(c) = consumer {
        println!(
            "forwarded; this gateway's record: log index {}, record hash {}",
            c.log_index,
            hex::encode(&c.record_hash)
        );
    }
}

/// `client query`: find records by indexed fields (`field=value`, all must hold).
pub async fn query(
    profile: &Profile,
    dataset_id: &str,
    conditions: &[String],
    purpose: &str,
    limit: u32,
) -> anyhow::Result<()> {
    let mut matches = Vec::new();
    for c in conditions {
        let (field, value) = c
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("condition `{c}` must be field=value"))?;
        matches.push(qianlian_proto::v1::FieldMatch {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    let mut c = ExchangeClient::new(profile.connect().await?);
    let resp = c
        .query_records(qianlian_proto::v1::QueryRecordsRequest {
            department: owner_of(dataset_id)?.to_owned(),
            dataset: dataset_id.to_owned(),
            r#match: matches,
            purpose: purpose.to_owned(),
            limit,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    for r in &resp.records {
        let payload: serde_json::Value = serde_json::from_slice(&r.payload)?;
        println!("{}\t{}", r.key, payload);
    }
    println!("{} record(s)", resp.records.len());
    print_disclosure(
        &resp.disclosed_fields,
        resp.policy_version,
        &resp.rule,
        resp.receipt.as_ref(),
        resp.consumer_receipt.as_ref(),
    );
    Ok(())
}

/// `call` at `profile`'s node; when that node answers FAILED_PRECONDITION naming the leader
/// (an operation that runs on the leader), `call` once more there. Statuses become errors
/// that say what to do.
async fn following_leader<T, Fut>(
    profile: &Profile,
    call: impl Fn(Profile) -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<Result<T, tonic::Status>>>,
{
    match call(profile.clone()).await? {
        Ok(r) => Ok(r),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            let Some(leader) = s
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
            else {
                anyhow::bail!(describe_status(&s));
            };
            eprintln!("{} is not the leader; asking {leader}", profile.endpoint);
            let mut at_leader = profile.clone();
            at_leader.endpoint = leader.to_owned();
            call(at_leader)
                .await?
                .map_err(|s| anyhow::anyhow!(describe_status(&s)))
        }
        Err(s) => anyhow::bail!(describe_status(&s)),
    }
}

/// `policy apply` / `directory apply`: validate locally, then append to the cluster.
pub async fn apply_config(
    profile: &Profile,
    kind: &str,
    text: String,
    model: Option<String>,
    signed_record: Vec<u8>,
) -> anyhow::Result<()> {
    use qianlian_proto::v1::ConfigVersion;
    use qianlian_proto::v1::admin_client::AdminClient;
    async fn call(
        profile: &Profile,
        kind: &str,
        text: &str,
        model: &Option<String>,
        signed_record: &[u8],
    ) -> anyhow::Result<Result<ConfigVersion, tonic::Status>> {
        let mut c = AdminClient::new(profile.connect().await?);
        let resp = match kind {
            "policy" => {
                c.apply_policy(qianlian_proto::v1::ApplyPolicyRequest {
                    model: model.clone().unwrap_or_default(),
                    rules: text.to_owned(),
                    signed_record: signed_record.to_vec(),
                })
                .await
            }
            _ => {
                c.apply_directory(qianlian_proto::v1::ApplyDirectoryRequest {
                    toml: text.to_owned(),
                    signed_record: signed_record.to_vec(),
                })
                .await
            }
        };
        Ok(resp.map(tonic::Response::into_inner))
    }
    // Configuration changes run on the leader.
    let (text, model, signed_record) = (&text, &model, &signed_record);
    let resp = following_leader(profile, move |p| async move {
        call(&p, kind, text, model, signed_record).await
    })
    .await?;
    println!(
        "{} version {} in force from log index {}",
        resp.kind, resp.version, resp.log_index
    );
    Ok(())
}

/// The version of `kind` in force and, for a policy, its model; `(0, None)` before the first.
pub async fn config_in_force(
    profile: &Profile,
    kind: &str,
) -> anyhow::Result<(u64, Option<String>)> {
    use qianlian_proto::v1::admin_client::AdminClient;
    let mut c = AdminClient::new(profile.connect().await?);
    match c
        .get_config(qianlian_proto::v1::GetConfigRequest { kind: kind.into() })
        .await
    {
        Ok(resp) => {
            let resp = resp.into_inner();
            let version = resp.version.unwrap_or_default().version;
            Ok((version, Some(resp.model).filter(|m| !m.is_empty())))
        }
        Err(s) if s.code() == tonic::Code::NotFound => Ok((0, None)),
        Err(s) => Err(anyhow::anyhow!(describe_status(&s))),
    }
}

/// `policy show` / `directory show`: the version in force and its text.
pub async fn show_config(profile: &Profile, kind: &str) -> anyhow::Result<()> {
    use qianlian_proto::v1::admin_client::AdminClient;
    let mut c = AdminClient::new(profile.connect().await?);
    let resp = c
        .get_config(qianlian_proto::v1::GetConfigRequest { kind: kind.into() })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let v = resp.version.unwrap_or_default();
    println!(
        "# {} version {} (log index {})",
        v.kind, v.version, v.log_index
    );
    if resp.signed_by.is_empty() {
        println!("# not signed by an operator");
    } else {
        println!("# signed by {}", resp.signed_by.join(", "));
    }
    if !resp.model.is_empty() {
        println!("# model\n{}\n# rules", resp.model);
    }
    println!("{}", resp.text);
    Ok(())
}

/// `client log get`: read one record of the notarization log.
pub async fn log_get(profile: &Profile, index: u64) -> anyhow::Result<()> {
    let mut c = NotaryClient::new(profile.connect().await?);
    let resp = c
        .get_log_entry(GetLogEntryRequest { log_index: index })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let r = resp.receipt.unwrap_or_default();
    println!(
        "log index {}, record hash {}",
        r.log_index,
        hex::encode(&r.record_hash)
    );
    println!("{}", resp.record_json);
    Ok(())
}

/// Checkpoint signing keys to trust: the given vkey files, or every node key of the dev PKI.
pub fn trusted_keys(
    files: &[PathBuf],
    dev_dir: Option<&Path>,
) -> anyhow::Result<Vec<qianlian_verifier::NoteVerifier>> {
    let mut paths = files.to_vec();
    if paths.is_empty()
        && let Some(dir) = dev_dir
        && let Ok(rd) = std::fs::read_dir(dir.join("pki").join("nodes"))
    {
        paths.extend(
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".note.pub")),
        );
    }
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            qianlian_verifier::NoteVerifier::from_vkey(text.trim())
                .map_err(|e| anyhow::anyhow!("{}: not a note verifier key: {e}", p.display()))
        })
        .collect()
}

/// Check a checkpoint's signatures with the trusted keys; returns (size, root, signers).
fn check_checkpoint(
    c: &qianlian_proto::v1::Checkpoint,
    trust: &[qianlian_verifier::NoteVerifier],
    min_signers: usize,
) -> anyhow::Result<(u64, [u8; 32], Vec<String>)> {
    let v = qianlian_verifier::open_checkpoint(&c.note, trust)
        .map_err(|e| anyhow::anyhow!("checkpoint does not verify with the trusted keys: {e}"))?
        .require_signers(min_signers)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((v.checkpoint.size, v.checkpoint.root, v.signers))
}

/// `client checkpoint`: fetch, verify and print the latest cosigned checkpoint.
pub async fn checkpoint(
    profile: &Profile,
    trust: &[qianlian_verifier::NoteVerifier],
    min_signers: usize,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let mut c = NotaryClient::new(profile.connect().await?);
    let cp = c
        .get_checkpoint(qianlian_proto::v1::GetCheckpointRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner()
        .checkpoint
        .unwrap_or_default();
    print!("{}", cp.note);
    if let Some(path) = out {
        std::fs::write(path, &cp.note)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if trust.is_empty() {
        println!("(not verified: no trusted node keys; pass --trust FILE)");
    } else {
        let (size, _, signers) = check_checkpoint(&cp, trust, min_signers)?;
        println!(
            "verified: tree size {size}, signed by {} of {} trusted nodes: {}",
            signers.len(),
            trust.len(),
            signers.join(", ")
        );
    }
    Ok(())
}

/// `client proof inclusion`: prove one record is in the log, checked locally.
pub async fn prove_inclusion(
    profile: &Profile,
    index: u64,
    trust: &[qianlian_verifier::NoteVerifier],
    min_signers: usize,
) -> anyhow::Result<()> {
    let mut c = NotaryClient::new(profile.connect().await?);
    let r = c
        .get_inclusion_proof(qianlian_proto::v1::GetInclusionProofRequest {
            record: Some(qianlian_proto::v1::get_inclusion_proof_request::Record::LogIndex(index)),
            tree_size: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let cp = r
        .checkpoint
        .ok_or_else(|| anyhow::anyhow!("the node sent no checkpoint"))?;
    let (size, root, signers) = check_checkpoint(&cp, trust, min_signers)?;
    let proof = to_hashes(&r.proof)?;
    let leaf: [u8; 32] = r
        .record_hash
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("record hash is not 32 bytes"))?;
    qianlian_verifier::verify_inclusion(&leaf, index, size, &proof, &root)
        .map_err(|e| anyhow::anyhow!("inclusion proof does not verify: {e}"))?;
    println!(
        "verified: log index {index} (record hash {}) is in the log of size {size}, checkpoint signed by {}",
        hex::encode(leaf),
        signers.join(", ")
    );
    Ok(())
}

/// `client proof consistency`: prove the log of size `old` is a prefix of the latest one.
pub async fn prove_consistency(
    profile: &Profile,
    old_size: u64,
    old_root: Option<[u8; 32]>,
    trust: &[qianlian_verifier::NoteVerifier],
    min_signers: usize,
) -> anyhow::Result<()> {
    let mut c = NotaryClient::new(profile.connect().await?);
    let r = c
        .get_consistency_proof(qianlian_proto::v1::GetConsistencyProofRequest {
            old_size,
            new_size: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    let cp = r
        .checkpoint
        .ok_or_else(|| anyhow::anyhow!("the node sent no checkpoint"))?;
    let (size, root, _) = check_checkpoint(&cp, trust, min_signers)?;
    let proof = to_hashes(&r.proof)?;
    let Some(old_root) = old_root else {
        println!(
            "consistency proof from size {old_size} to {size}: {} hashes (pass --old-root HEX, from a checkpoint you kept, to verify it)",
            proof.len()
        );
        return Ok(());
    };
    qianlian_verifier::verify_consistency(old_size, size, &old_root, &root, &proof)
        .map_err(|e| anyhow::anyhow!("consistency proof does not verify: {e}"))?;
    println!("verified: the log of size {old_size} is a prefix of the log of size {size}");
    Ok(())
}

/// Proof hashes as received, each checked to be 32 bytes.
pub(crate) fn to_hashes(v: &[Vec<u8>]) -> anyhow::Result<Vec<[u8; 32]>> {
    v.iter()
        .map(|h| {
            h.as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("proof hash is not 32 bytes"))
        })
        .collect()
}

/// A membership operation for `qianlian cluster`.
#[derive(Debug, Clone)]
pub enum ClusterOp {
    Init(Vec<(u64, String)>),
    /// The node, its address, and the signed change (empty: unsigned).
    AddLearner(u64, String, Vec<u8>),
    Promote(u64, Vec<u8>),
    Remove(u64, Vec<u8>),
    Status,
}

async fn cluster_call(
    profile: &Profile,
    op: &ClusterOp,
) -> Result<qianlian_proto::v1::ClusterStatus, tonic::Status> {
    use qianlian_proto::v1::admin_client::AdminClient;
    use qianlian_proto::v1::{
        AddLearnerRequest, InitClusterRequest, Member, NodeRequest, StatusRequest,
    };
    let channel = profile
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = AdminClient::new(channel);
    let r = match op {
        ClusterOp::Init(members) => {
            c.init_cluster(InitClusterRequest {
                members: members
                    .iter()
                    .map(|(id, a)| Member {
                        node_id: *id,
                        address: a.clone(),
                    })
                    .collect(),
            })
            .await
        }
        ClusterOp::AddLearner(id, a, signed) => {
            c.add_learner(AddLearnerRequest {
                member: Some(Member {
                    node_id: *id,
                    address: a.clone(),
                }),
                signed_record: signed.clone(),
            })
            .await
        }
        ClusterOp::Promote(id, signed) => {
            c.promote(NodeRequest {
                node_id: *id,
                signed_record: signed.clone(),
            })
            .await
        }
        ClusterOp::Remove(id, signed) => {
            c.remove(NodeRequest {
                node_id: *id,
                signed_record: signed.clone(),
            })
            .await
        }
        ClusterOp::Status => c.status(StatusRequest {}).await,
    };
    r.map(tonic::Response::into_inner)
}

/// The membership in force at the leader, and the profile that reaches the leader (asked at
/// `profile`, following the leader once).
pub async fn members(profile: &Profile) -> anyhow::Result<(Profile, MemberSet)> {
    let describe = |s: tonic::Status| anyhow::anyhow!(describe_status(&s));
    let mut at = profile.clone();
    let mut status = cluster_call(&at, &ClusterOp::Status)
        .await
        .map_err(describe)?;
    // A change is checked against the leader's membership: read it there.
    if status.leader_id != status.node_id {
        let Some(leader) = status.voters.iter().find(|m| m.node_id == status.leader_id) else {
            anyhow::bail!(
                "node {} knows no leader; retry when the cluster has elected one",
                status.node_id
            );
        };
        eprintln!(
            "{} is not the leader; asking {}",
            at.endpoint, leader.address
        );
        at.endpoint = leader.address.clone();
        status = cluster_call(&at, &ClusterOp::Status)
            .await
            .map_err(describe)?;
    }
    let members = MemberSet::new(
        status
            .voters
            .iter()
            .chain(&status.learners)
            .map(|m| (m.node_id, m.address.clone())),
        status.voters.iter().map(|m| m.node_id),
    );
    Ok((at, members))
}

/// Whether the node at `profile` already belongs to an initialised cluster (it knows voters).
pub async fn cluster_is_initialised(profile: &Profile) -> anyhow::Result<bool> {
    let status = cluster_call(profile, &ClusterOp::Status)
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?;
    Ok(!status.voters.is_empty())
}

/// `qianlian cluster …`: run a membership operation, following the leader once if the node
/// asked is not the leader.
pub async fn cluster(profile: &Profile, op: ClusterOp) -> anyhow::Result<()> {
    let op = &op;
    let status = following_leader(
        profile,
        move |p| async move { Ok(cluster_call(&p, op).await) },
    )
    .await?;
    let list = |m: &[qianlian_proto::v1::Member]| {
        if m.is_empty() {
            "-".to_owned()
        } else {
            m.iter()
                .map(|m| format!("{}={}", m.node_id, m.address))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    println!(
        "node {}: leader {}, term {}\nvoters:   {}\nlearners: {}\nlog: {} records, raft index {} (applied {}, snapshot {}, purged to {})",
        status.node_id,
        if status.leader_id == 0 {
            "none".to_owned()
        } else {
            status.leader_id.to_string()
        },
        status.term,
        list(&status.voters),
        list(&status.learners),
        status.tree_size,
        status.last_log_index,
        status.applied_index,
        status.snapshot_index,
        status.purged_index
    );
    Ok(())
}
