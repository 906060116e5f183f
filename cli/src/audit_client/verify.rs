//! `audit verify` and `audit check`: the inspector's integrity checks.
//!
//! `verify` streams every record of the log (from a running node, or from a stopped node's data
//! folder), recomputes the RFC 6962 tree, and checks its root at the size of every cosigned
//! checkpoint it is given (files kept from earlier) or fetches (the node's latest), and that each
//! checkpoint extends the one before (a consistency proof from the node, or recomputed from the
//! records of a data folder). When a root does not match, it finds the first record that differs
//! from what the checkpoint commits to, with O(log n) inclusion proofs checked against the
//! trusted root. `check` verifies an evidence bundle with the verifier crate alone.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qianlian_proto::v1::audit_client::AuditClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{
    GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest, StreamLogRequest,
    get_inclusion_proof_request,
};
use qianlian_raft_store::offline::OfflineLog;
use qianlian_verifier::audit::{
    EvidenceBundle, LogError, LogSummary, LogVerifier, TrustedKeys, TrustedRoot, check_bundle,
    check_consistency, locate_first_bad,
};
use qianlian_verifier::license::TrustBundleFile;
use qianlian_verifier::{Hash, MemoryTree, NoteVerifier, open_checkpoint};
use tonic::transport::Channel;

use crate::client::{describe_status, to_hashes};
use crate::profile::Profile;

/// Where the log is read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A running node, over mutual TLS (inspector or operator certificate).
    Node(Profile),
    /// A stopped node's data folder (`data_dir` of its config).
    DataDir(PathBuf),
}

/// Records read per call from a data folder.
const CHUNK: usize = 2000;

/// A checkpoint that verified: where it came from, its size, root and signers.
#[derive(Debug, Clone)]
struct Trusted {
    origin: String,
    size: u64,
    root: Hash,
    signers: Vec<String>,
}

fn open(note: &str, origin: &str, trust: &[NoteVerifier], k: usize) -> anyhow::Result<Trusted> {
    let v = open_checkpoint(note, trust)
        .map_err(|e| anyhow::anyhow!("does not verify with the trusted node keys: {e}"))?
        .require_signers(k)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Trusted {
        origin: origin.to_owned(),
        size: v.checkpoint.size,
        root: v.checkpoint.root,
        signers: v.signers,
    })
}

/// Progress on a terminal (bar with rate and time left), or a plain line every few seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} records  {per_sec}  {eta} left",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!(
                    "verified {}/{} records ({:.0}/s)",
                    self.done,
                    self.total,
                    self.rate()
                );
            }
            None => {}
        }
    }

    fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-6)
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `audit verify`. `Ok(false)` when the log does not verify (the report says where).
pub async fn verify(
    source: Source,
    checkpoint_files: &[PathBuf],
    trust: &[NoteVerifier],
    k: usize,
) -> anyhow::Result<bool> {
    if trust.is_empty() {
        anyhow::bail!(
            "no trusted node keys: pass --trust <node>.note.pub (repeatable), or --as <name> with a dev profile"
        );
    }
    let mut trusted = open_files(checkpoint_files, trust, k)?;
    let log = Log::open(&source).await?;
    trusted.extend(log.latest_checkpoint(trust, k).await?);
    let trusted = by_size(trusted)?;
    let end = trusted.last().map(|t| t.size).unwrap_or_default();
    let available = match &log {
        Log::DataDir(offline) => offline.tree_size(),
        Log::Node(_) => end,
    };
    if end > available {
        println!(
            "FAILED: a checkpoint of size {end} is trusted, but the data folder holds only {available} records: records were removed"
        );
        return Ok(false);
    }
    let mut verifier = match LogVerifier::new(
        trusted
            .iter()
            .map(|t| TrustedRoot::from((t.size, t.root)))
            .collect(),
    ) {
        Ok(v) => v,
        Err(e) => {
            println!("FAILED: {e}");
            return Ok(false);
        }
    };

    let mut findings = Findings {
        ok: true,
        consistent: Vec::new(),
    };
    if let Log::Node(channel) = &log {
        node_consistency(channel, &trusted, &mut findings).await?;
    }
    let mut progress = Progress::new(end);
    let mismatches = log.stream(&mut verifier, end, &mut progress).await?;
    progress.finish();
    let rate = progress.rate();
    let summary = verifier.finish();
    if summary.size < end {
        println!(
            "FAILED: the log ends at {} records, before the checkpoint of size {end}",
            summary.size
        );
        return Ok(false);
    }
    if let Log::DataDir(_) = &log {
        folder_consistency(&summary.leaves, &trusted, &mut findings)?;
    }
    report_matches(&summary, &trusted, &mut findings);
    // The smallest mismatching checkpoint holds the first altered record.
    if let Some(first) = trusted
        .iter()
        .find(|t| !summary.matched.iter().any(|m| m.tree_size == t.size))
    {
        findings.ok = false;
        report_altered(&log, first, summary.leaves.clone(), &mismatches).await?;
    }
    report_verified(&findings, trusted.len(), summary.size, rate);
    Ok(findings.ok)
}

/// The checkpoints kept in files, each verified with the trusted node keys.
fn open_files(files: &[PathBuf], trust: &[NoteVerifier], k: usize) -> anyhow::Result<Vec<Trusted>> {
    let mut trusted = Vec::new();
    for f in files {
        let note = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        let t = open(&note, &f.display().to_string(), trust, k)
            .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", f.display()))?;
        trusted.push(t);
    }
    Ok(trusted)
}

/// The checkpoints to verify against, smallest first, without repeats.
fn by_size(mut trusted: Vec<Trusted>) -> anyhow::Result<Vec<Trusted>> {
    if trusted.is_empty() {
        anyhow::bail!(
            "no checkpoint to verify against: pass --checkpoint FILE (a cosigned checkpoint kept earlier)"
        );
    }
    trusted.sort_by_key(|t| t.size);
    trusted.dedup_by(|a, b| a.size == b.size && a.root == b.root);
    Ok(trusted)
}

/// An opened [`Source`].
enum Log {
    Node(Channel),
    DataDir(OfflineLog),
}

impl Log {
    async fn open(source: &Source) -> anyhow::Result<Log> {
        Ok(match source {
            Source::DataDir(dir) => Log::DataDir(OfflineLog::open(dir).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}; give the node's data_dir (the folder holding `raft`), with the node stopped",
                    dir.display()
                )
            })?),
            Source::Node(p) => Log::Node(p.connect().await?),
        })
    }

    /// The source's own latest checkpoint. A node's must verify; a data folder's stored one is
    /// left out, with a note, when it does not.
    async fn latest_checkpoint(
        &self,
        trust: &[NoteVerifier],
        k: usize,
    ) -> anyhow::Result<Option<Trusted>> {
        match self {
            Log::Node(channel) => {
                let cp = NotaryClient::new(channel.clone())
                    .get_checkpoint(GetCheckpointRequest::default())
                    .await
                    .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                    .into_inner()
                    .checkpoint
                    .ok_or_else(|| anyhow::anyhow!("the node sent no checkpoint"))?;
                let t = open(&cp.note, "the node's latest", trust, k)
                    .map_err(|e| anyhow::anyhow!("the node's latest checkpoint {e}"))?;
                Ok(Some(t))
            }
            Log::DataDir(offline) => match offline.checkpoint_note() {
                Some(note) => match open(&note, "the node's stored checkpoint", trust, k) {
                    Ok(t) => Ok(Some(t)),
                    Err(e) => {
                        println!("not used: the data folder's stored checkpoint {e}");
                        Ok(None)
                    }
                },
                None => {
                    println!("the data folder holds no signed checkpoint");
                    Ok(None)
                }
            },
        }
    }

    /// Streams records `0..end` into `verifier`; returns the checkpoints the records do not
    /// reproduce, as the verifier found them.
    async fn stream(
        &self,
        verifier: &mut LogVerifier,
        end: u64,
        progress: &mut Progress,
    ) -> anyhow::Result<Vec<LogError>> {
        let mut mismatches = Vec::new();
        let mut push = |verifier: &mut LogVerifier, bytes: &[u8]| {
            if let Err(e) = verifier.push(bytes) {
                mismatches.push(e);
            }
        };
        match self {
            Log::Node(channel) => {
                let mut stream = AuditClient::new(channel.clone())
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .stream_log(StreamLogRequest { start: 0, end })
                    .await
                    .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                    .into_inner();
                while let Some(chunk) = stream
                    .message()
                    .await
                    .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
                {
                    if chunk.first_index != verifier.size() {
                        anyhow::bail!(
                            "the node sent records from log index {} where {} was expected",
                            chunk.first_index,
                            verifier.size()
                        );
                    }
                    for r in &chunk.records {
                        push(verifier, r);
                    }
                    progress.advance(chunk.records.len() as u64);
                }
            }
            Log::DataDir(offline) => {
                while verifier.size() < end {
                    let max = CHUNK.min((end - verifier.size()) as usize);
                    let records = offline
                        .records(verifier.size(), max)
                        .map_err(|e| anyhow::anyhow!("reading the data folder: {e}"))?;
                    if records.is_empty() {
                        break;
                    }
                    for r in &records {
                        push(verifier, r);
                    }
                    progress.advance(records.len() as u64);
                }
            }
        }
        Ok(mismatches)
    }

    /// The first of the `size` records (`leaves`) that differs from what `root` commits to,
    /// found with inclusion proofs from the source; the inner error says why it was not found.
    async fn locate_first_bad(
        &self,
        leaves: Vec<Hash>,
        size: u64,
        root: Hash,
    ) -> anyhow::Result<Result<Option<u64>, String>> {
        Ok(match self {
            Log::Node(channel) => {
                let ch = channel.clone();
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    locate_first_bad(&leaves, size, root, |i| {
                        handle.block_on(fetch_proof(ch.clone(), i, size))
                    })
                    .map_err(|e| e.to_string())
                })
                .await?
            }
            Log::DataDir(offline) => locate_first_bad(&leaves, size, root, |i| {
                offline.inclusion_proof(i, size).map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string()),
        })
    }
}

/// What the checks found so far: whether all held, and which pairs of checkpoints (old size,
/// new size) are consistent.
struct Findings {
    ok: bool,
    consistent: Vec<(u64, u64)>,
}

impl Findings {
    /// Checks that `new` extends `old`; a failure is printed at once.
    fn check_consistency(&mut self, old: &Trusted, new: &Trusted, proof: &[Hash]) {
        match check_consistency((old.size, old.root), (new.size, new.root), proof) {
            Ok(()) => self.consistent.push((old.size, new.size)),
            Err(e) => {
                println!("FAILED: {e}");
                self.ok = false;
            }
        }
    }
}

/// Each trusted checkpoint extends the one before: consistency proofs from the node.
async fn node_consistency(
    channel: &Channel,
    trusted: &[Trusted],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    for pair in trusted.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let r = NotaryClient::new(channel.clone())
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: old.size,
                new_size: new.size,
            })
            .await
            .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
            .into_inner();
        findings.check_consistency(old, new, &to_hashes(&r.proof)?);
    }
    Ok(())
}

/// Each trusted checkpoint extends the one before: consistency proofs recomputed from a data
/// folder's streamed records (`leaves`).
fn folder_consistency(
    leaves: &[Hash],
    trusted: &[Trusted],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    if trusted.len() < 2 {
        return Ok(());
    }
    let tree = MemoryTree::from_leaf_hashes(leaves.to_vec());
    for pair in trusted.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let proof = tree
            .consistency_proof(old.size, new.size)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        findings.check_consistency(old, new, &proof);
    }
    Ok(())
}

/// Prints the records that do not decode (the first ten) and the checkpoints the records
/// reproduced.
fn report_matches(summary: &LogSummary, trusted: &[Trusted], findings: &mut Findings) {
    for u in summary.undecodable.iter().take(10) {
        println!(
            "FAILED: log index {}: the record does not decode ({})",
            u.log_index, u.error
        );
        findings.ok = false;
    }
    for t in trusted {
        if summary.matched.iter().any(|m| m.tree_size == t.size) {
            println!(
                "checkpoint of size {} ({}, signed by {}): root matches the {} records",
                t.size,
                t.origin,
                t.signers.join(", "),
                t.size
            );
        }
    }
}

/// Prints the first record that differs from what `first`, a checkpoint the records do not
/// reproduce, commits to, then the stream's `mismatches`.
async fn report_altered(
    log: &Log,
    first: &Trusted,
    leaves: Vec<Hash>,
    mismatches: &[LogError],
) -> anyhow::Result<()> {
    let size = first.size;
    match log.locate_first_bad(leaves, size, first.root).await? {
        Ok(Some(i)) => println!(
            "FAILED: log index {i}: the record differs from what the checkpoint of size {size} ({}, signed by {}) commits to; it was altered",
            first.origin,
            first.signers.join(", ")
        ),
        Ok(None) => println!(
            "FAILED: the {size} records do not give the root of the checkpoint of size {size} ({}), but no single record differs",
            first.origin
        ),
        Err(e) => println!(
            "FAILED: the {size} records do not give the root of the checkpoint of size {size} ({}); locating the record failed: {e}",
            first.origin
        ),
    }
    for m in mismatches {
        println!("  {m}");
    }
    Ok(())
}

/// The closing lines: the pairs of checkpoints found consistent, then, when every check held,
/// how many `records` verified against how many `checkpoints`.
fn report_verified(findings: &Findings, checkpoints: usize, records: u64, rate: f64) {
    for (a, b) in &findings.consistent {
        println!("checkpoint of size {b} is consistent with checkpoint of size {a}");
    }
    if findings.ok {
        let n = checkpoints;
        println!(
            "verified: {records} records against {n} checkpoint{} ({rate:.0} records/s)",
            if n == 1 { "" } else { "s" },
        );
    }
}

async fn fetch_proof(channel: Channel, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), String> {
    let r = NotaryClient::new(channel)
        .get_inclusion_proof(GetInclusionProofRequest {
            record: Some(get_inclusion_proof_request::Record::LogIndex(index)),
            tree_size: size,
        })
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    let leaf: Hash = r
        .record_hash
        .as_slice()
        .try_into()
        .map_err(|_| "record hash is not 32 bytes".to_owned())?;
    Ok((leaf, to_hashes(&r.proof).map_err(|e| e.to_string())?))
}

/// `audit check`: verify an evidence bundle offline. `Ok(false)` when it does not verify.
pub fn check(path: &Path, trust_bundle: Option<&Path>) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let pinned = match trust_bundle {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            let file: TrustBundleFile = serde_json::from_str(&t).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a trust bundle ({e}); write one with `qianlian license trust-bundle`",
                    p.display()
                )
            })?;
            Some(
                TrustedKeys::from_trust_bundle(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let bundle = match EvidenceBundle::from_json(&text) {
        Ok(b) => b,
        Err(e) => {
            println!("FAILED: {}: {e}", path.display());
            return Ok(false);
        }
    };
    match check_bundle(&bundle, pinned.as_ref()) {
        Ok(r) => {
            let keys = if r.keys_pinned {
                "keys pinned from the trust bundle".to_owned()
            } else {
                "keys carried by the bundle itself: pass --trust-bundle to pin them".to_owned()
            };
            println!(
                "verified: {} records and {} policy versions are in the log {} of size {}, checkpoint signed by {} ({} needed; {keys})",
                r.records_checked,
                r.policies_checked,
                r.origin,
                r.tree_size,
                r.signers.join(", "),
                r.min_cosigners
            );
            println!("query: {}", bundle.query);
            for (log_index, o) in &r.origins {
                println!(
                    "origin: log index {log_index} sealed by {} {} with key {}",
                    o.department,
                    o.role.as_str(),
                    o.key_id
                );
            }
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(false)
        }
    }
}
