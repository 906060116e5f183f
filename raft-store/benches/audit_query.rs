//! Audit queries on a log of generated exchange records, through the real state machine.
//!
//! Setup fills a state machine with `QIANLIAN_AUDIT_RECORDS` (default 1,000,000) exchange
//! records through the apply path (entries of 1,024 records, four entries per apply call, as
//! group commit produces them) and prints the fill rate. The data lives in a temporary
//! directory, or in `QIANLIAN_BENCH_DIR` if set, where a log already filled to that size is
//! reused.
//!
//! The records: 8 consumer departments, 4 providers with 5 datasets each, 100,000 keys, one or
//! two of 1,000,000 subjects each, 6 purposes, 2% denied, times 3 ms apart with up to 4 ms of
//! jitter. Twenty planted subjects appear 50 times each, spread over the log.
//!
//! Measured (after a warm-up; p50 and p99 of many repetitions):
//! - `subject`: a planted subject (about 50 hits), newest first, one page of 100;
//! - `consumer+dataset+window`: one consumer and one dataset in a window holding about 50 of
//!   them, at a random place in the log;
//! - `deny newest 100`: decision = deny, newest first, the first page of 100;
//! - `consumer walk 1000`: ten pages of 100 by one consumer, each page from the last's cursor.
//!
//! Then `audit verify`'s work on the whole log: every record read in order (as `StreamLog`
//! serves them), hashed and folded into the tree by `LogVerifier`, and the root compared with
//! the stored one; printed as records per second.

use std::path::Path;
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use qianlian_raft_store::audit_query::{AuditFilter, AuditOrder, AuditQuery};
use qianlian_raft_store::db::Db;
use qianlian_raft_store::record::{
    Action, Caller, Decision, ExchangeRecord, Record, Side, SubjectHash,
};
use qianlian_raft_store::state_machine::{StateMachineConfig, StateMachineStore, StateReader};
use qianlian_raft_store::types::{Entry, Request};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const CONSUMERS: [&str; 8] = [
    "housing",
    "tax",
    "public-security",
    "civil-affairs",
    "health",
    "education",
    "transport",
    "social-security",
];
const PROVIDERS: [&str; 4] = [
    "market-regulation",
    "natural-resources",
    "civil-registry",
    "human-resources",
];
const PURPOSES: [&str; 6] = [
    "credit-check",
    "permit-review",
    "benefit-eligibility",
    "tax-assessment",
    "case-investigation",
    "statistics",
];
const START_MS: u64 = 1_764_000_000_000;
const STEP_MS: u64 = 3;
const PLANTED: u64 = 20;
const PLANTED_EACH: u64 = 50;
const RECORDS_PER_ENTRY: u64 = 1024;
const ENTRIES_PER_APPLY: u64 = 4;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn subject(n: u64) -> SubjectHash {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&n.to_be_bytes());
    h[8] = 0x5a;
    SubjectHash(h)
}

fn planted(p: u64) -> SubjectHash {
    subject(u64::MAX - p)
}

fn dataset(provider: usize, n: u64) -> String {
    format!("{}-dataset-{n}", &PROVIDERS[provider][..4])
}

fn record(rng: &mut Rng, i: u64, total: u64) -> Record {
    let consumer = CONSUMERS[rng.below(8) as usize];
    let provider = rng.below(4) as usize;
    let mut subjects: Vec<SubjectHash> = (0..1 + rng.below(2))
        .map(|_| subject(rng.below(1_000_000)))
        .collect();
    let stride = (total / (PLANTED * PLANTED_EACH)).max(1);
    if i.is_multiple_of(stride) {
        subjects.push(planted((i / stride) % PLANTED));
    }
    subjects.sort();
    subjects.dedup();
    Record::Exchange(ExchangeRecord {
        request_id: format!("{:032x}", rng.next()),
        time_unix_ms: START_MS + i * STEP_MS + rng.below(5),
        caller: Caller {
            department: consumer.into(),
            role: "department".into(),
            cert_fingerprint: "ab".repeat(32),
        },
        side: Side::Provider,
        gateway: PROVIDERS[provider].into(),
        owner: PROVIDERS[provider].into(),
        dataset: dataset(provider, rng.below(5)),
        action: [Action::Read, Action::Read, Action::Query, Action::Write][rng.below(4) as usize],
        key: format!("9152010{:011}", rng.below(100_000)),
        purpose: PURPOSES[rng.below(6) as usize].into(),
        decision: if rng.below(50) == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policy_version: 1 + i / 200_000,
        rule: "p, dept, dataset, read".into(),
        disclosed_fields: vec!["name".into(), "status".into()],
        result_count: 1,
        subjects,
        request_digest: [7; 32],
        response_digest: Some([8; 32]),
        trace_id: String::new(),
    })
}

async fn open(dir: &Path) -> BenchResult<(Db, StateMachineStore)> {
    let db = Db::open(&dir.join("raft"))?;
    let sm =
        StateMachineStore::new(db.clone(), StateMachineConfig::new(dir.join("snapshots"))).await?;
    Ok((db, sm))
}

async fn fill(sm: &mut StateMachineStore, total: u64) -> BenchResult<()> {
    let started = Instant::now();
    let mut rng = Rng(42);
    let mut next = sm.reader().tree_size();
    let mut log = next / RECORDS_PER_ENTRY + 1;
    let mut last_report = Instant::now();
    while next < total {
        let mut entries = Vec::new();
        for _ in 0..ENTRIES_PER_APPLY {
            let end = (next + RECORDS_PER_ENTRY).min(total);
            if next == end {
                break;
            }
            let records = (next..end).map(|i| record(&mut rng, i, total)).collect();
            entries.push(Entry {
                log_id: log_id(1, 1, log),
                payload: EntryPayload::Normal(Request::Append { records }),
            });
            log += 1;
            next = end;
        }
        sm.apply(entries).await?;
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!("  filled {next} of {total}");
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fill: {total} records in {secs:.1} s ({:.0} records/s, including generation)",
        total as f64 / secs
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

struct Row {
    name: &'static str,
    hits: f64,
    examined: f64,
    p50: Duration,
    p99: Duration,
}

/// Run `run` `warmup + reps` times (each returning hits and entries examined); time the last
/// `reps`.
async fn measure<F, Fut>(name: &'static str, warmup: usize, reps: usize, mut run: F) -> Row
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (u64, u64)>,
{
    for i in 0..warmup {
        run(i).await;
    }
    let mut times = Vec::with_capacity(reps);
    let (mut hits, mut examined) = (0u64, 0u64);
    for i in 0..reps {
        let started = Instant::now();
        let (h, e) = run(warmup + i).await;
        times.push(started.elapsed());
        hits += h;
        examined += e;
    }
    times.sort();
    Row {
        name,
        hits: hits as f64 / reps as f64,
        examined: examined as f64 / reps as f64,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
    }
}

async fn page(reader: &StateReader, q: AuditQuery) -> (u64, u64) {
    match reader.audit_query(q).await {
        Ok(page) => (page.hits.len() as u64, page.examined),
        Err(e) => panic!("query failed: {e}"),
    }
}

async fn run(dir: &Path, total: u64) -> BenchResult<()> {
    let (_db, sm) = filled(dir, total).await?;
    let reader = sm.reader();
    let rows = vec![
        subject_row(&reader).await,
        window_row(&reader, total).await,
        deny_row(&reader).await,
        consumer_walk_row(&reader).await,
    ];
    verify_log(&reader, total).await?;
    print_rows(rows);
    Ok(())
}

/// The state machine in `dir` holding `total` records (filled now, or reused), checked whole.
async fn filled(dir: &Path, total: u64) -> BenchResult<(Db, StateMachineStore)> {
    let (db, mut sm) = open(dir).await?;
    let have = sm.reader().tree_size();
    if have > total {
        return Err(format!("{} holds {have} records, more than {total}", dir.display()).into());
    }
    if have < total {
        fill(&mut sm, total).await?;
    } else {
        println!("fill: reusing {have} records in {}", dir.display());
    }
    let started = Instant::now();
    let report = sm.check_integrity().await?;
    println!(
        "integrity check (records, tree, licenses, audit index): {} records in {:.1} s",
        report.records,
        started.elapsed().as_secs_f64()
    );
    Ok((db, sm))
}

/// A planted subject, about 50 hits.
async fn subject_row(reader: &StateReader) -> Row {
    measure("subject (~50)", 20, 300, |i| {
        let reader = reader.clone();
        async move {
            let q = AuditQuery {
                filters: vec![AuditFilter::Subject(planted(i as u64 % PLANTED))],
                limit: 100,
                ..AuditQuery::default()
            };
            page(&reader, q).await
        }
    })
    .await
}

/// One consumer and one dataset in a window holding about 50 of them, at random places.
async fn window_row(reader: &StateReader, total: u64) -> Row {
    let span_ms = total * STEP_MS;
    let mut rng = Rng(3);
    let windows: Vec<(usize, usize, u64)> = (0..400)
        .map(|_| (rng.below(8) as usize, rng.below(4) as usize, rng.below(5)))
        .collect();
    let mut starts = Rng(4);
    let window_ms = 8 * 20 * PLANTED_EACH * STEP_MS;
    let starts: Vec<u64> = (0..400)
        .map(|_| START_MS + starts.below(span_ms.saturating_sub(window_ms).max(1)))
        .collect();
    measure("consumer+dataset+window (~50)", 20, 300, |i| {
        let reader = reader.clone();
        let (c, p, d) = windows[i % windows.len()];
        let since = starts[i % starts.len()];
        async move {
            let q = AuditQuery {
                filters: vec![
                    AuditFilter::Consumer(CONSUMERS[c].into()),
                    AuditFilter::Dataset {
                        owner: PROVIDERS[p].into(),
                        dataset: dataset(p, d),
                    },
                ],
                since_unix_ms: Some(since),
                until_unix_ms: Some(since + window_ms),
                limit: 1000,
                ..AuditQuery::default()
            };
            page(&reader, q).await
        }
    })
    .await
}

/// Decision = deny, newest first, the first page of 100.
async fn deny_row(reader: &StateReader) -> Row {
    measure("deny newest-first page of 100", 20, 300, |_| {
        let reader = reader.clone();
        async move {
            let q = AuditQuery {
                filters: vec![AuditFilter::Decision(Decision::Deny)],
                order: AuditOrder::NewestFirst,
                limit: 100,
                ..AuditQuery::default()
            };
            page(&reader, q).await
        }
    })
    .await
}

/// Ten pages of 100 by one consumer, each page from the last's cursor.
async fn consumer_walk_row(reader: &StateReader) -> Row {
    measure("consumer walk 1000 (10 pages)", 5, 100, |i| {
        let reader = reader.clone();
        async move {
            let mut q = AuditQuery {
                filters: vec![AuditFilter::Consumer(CONSUMERS[i % 8].into())],
                order: AuditOrder::NewestFirst,
                limit: 100,
                ..AuditQuery::default()
            };
            let (mut hits, mut examined) = (0, 0);
            for _ in 0..10 {
                let page = match reader.audit_query(q.clone()).await {
                    Ok(page) => page,
                    Err(e) => panic!("query failed: {e}"),
                };
                hits += page.hits.len() as u64;
                examined += page.examined;
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            (hits, examined)
        }
    })
    .await
}

/// `audit verify`'s work on the whole log: every record read in order, hashed and folded into
/// the tree, the root compared with the stored one.
async fn verify_log(reader: &StateReader, total: u64) -> BenchResult<()> {
    let started = Instant::now();
    let root = reader.root_at(total).await?;
    let mut verifier = qianlian_verifier::audit::LogVerifier::new(vec![(total, root).into()])?;
    while verifier.size() < total {
        for bytes in reader.entries(verifier.size(), 2000).await? {
            verifier.push(&bytes)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let summary = verifier.finish();
    if !summary.is_intact() {
        return Err("the generated log does not verify against its own root".into());
    }
    println!(
        "verify: {total} records read, hashed and checked against the root in {secs:.1} s ({:.0} records/s)",
        total as f64 / secs
    );
    Ok(())
}

fn print_rows(rows: Vec<Row>) {
    println!();
    println!(
        "{:<32} {:>8} {:>10} {:>10} {:>10}",
        "query", "hits", "examined", "p50", "p99"
    );
    for row in rows {
        println!(
            "{:<32} {:>8.1} {:>10.1} {:>10.3?} {:>10.3?}",
            row.name, row.hits, row.examined, row.p50, row.p99
        );
    }
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick
    // check, not a fill of a million records.
    let benching = std::env::args().any(|a| a == "--bench");
    let total: u64 = match std::env::var("QIANLIAN_AUDIT_RECORDS") {
        Ok(v) => v.parse()?,
        Err(_) if benching => 1_000_000,
        Err(_) => 20_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("audit_query: {total} records");
    match std::env::var_os("QIANLIAN_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            runtime.block_on(run(Path::new(&dir), total))
        }
        None => {
            let dir = tempfile::tempdir()?;
            runtime.block_on(run(dir.path(), total))
        }
    }
}
