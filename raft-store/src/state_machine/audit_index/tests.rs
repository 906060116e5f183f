//! The audit index against a naive scan of the records, on the real state machine.

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;

use super::super::{StateMachineConfig, StateMachineStore, StateReader};
use super::*;
use crate::audit_query::{AuditFilter, field};
use crate::db::{AUDIT_BUCKET_MS, Db, END_KEY};
use crate::record::{
    AccessRecord, Action, Caller, ConfigChange, ConfigRecord, Decision, ExchangeRecord,
    LicenseIssuedRecord, MemberSet, Side, SubjectHash,
};
use crate::types::{Entry, Request};
use rocksdb::Direction;

type TestResult = Result<(), Box<dyn std::error::Error>>;

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

const CONSUMERS: [&str; 4] = ["housing", "tax", "public-security", "civil-affairs"];
const PROVIDERS: [&str; 3] = ["market-regulation", "natural-resources", "a/b"];
const DATASETS: [&str; 3] = ["enterprise-registration", "permits", "c"];
const PURPOSES: [&str; 3] = ["credit-check", "permit-review", ""];
const START_MS: u64 = 1_764_000_000_000;

fn pick(rng: &mut Rng, values: &[&'static str]) -> &'static str {
    values[rng.below(values.len() as u64) as usize]
}

fn caller(department: &str) -> Caller {
    Caller {
        department: department.into(),
        role: "department".into(),
        cert_fingerprint: "ab".repeat(32),
    }
}

fn subject(n: u64) -> SubjectHash {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&n.to_be_bytes());
    SubjectHash(h)
}

/// Varied records: mostly exchanges, some legacy accesses, config and license records between.
/// Times grow with jitter, so equal and out-of-order times occur, also across buckets.
fn generate(rng: &mut Rng, count: u64, clock: &mut u64) -> Vec<Record> {
    let mut out = Vec::new();
    for _ in 0..count {
        // Steps of about a tenth of an audit bucket: a bucket holds a few records of a common
        // value and records of one bucket land in the next.
        *clock += rng.below(3) * 12;
        let time = (*clock + rng.below(5) * 12).saturating_sub(2 * 12);
        let consumer = pick(rng, &CONSUMERS).to_string();
        let owner = pick(rng, &PROVIDERS).to_string();
        let dataset = pick(rng, &DATASETS).to_string();
        let key = format!("k{}", rng.below(30));
        let action = [Action::Read, Action::Write, Action::Query][rng.below(3) as usize];
        let decision = if rng.below(10) == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let purpose = pick(rng, &PURPOSES).to_string();
        let kind = rng.below(20);
        let record = match kind {
            0..=14 => {
                let mut subjects: Vec<SubjectHash> =
                    (0..rng.below(4)).map(|_| subject(rng.below(40))).collect();
                subjects.sort();
                subjects.dedup();
                Record::Exchange(ExchangeRecord {
                    request_id: format!("r{}", rng.next()),
                    time_unix_ms: START_MS + time,
                    caller: caller(&consumer),
                    side: if rng.below(2) == 0 {
                        Side::Provider
                    } else {
                        Side::Consumer
                    },
                    gateway: owner.clone(),
                    owner,
                    dataset,
                    action,
                    key,
                    purpose,
                    decision,
                    policy_version: rng.below(3),
                    rule: "p".into(),
                    disclosed_fields: vec![],
                    result_count: 1,
                    subjects,
                    request_digest: [1; 32],
                    response_digest: None,
                    trace_id: String::new(),
                })
            }
            15..=17 => Record::Access(AccessRecord {
                request_id: format!("r{}", rng.next()),
                time_unix_ms: START_MS + time,
                caller: caller(&consumer),
                owner,
                dataset,
                key,
                action,
                purpose,
                decision,
                policy_version: ["0", "1", "01"][rng.below(3) as usize].into(),
                rule: "p".into(),
                request_digest: [2; 32],
                response_digest: None,
            }),
            18 => Record::Config(ConfigRecord {
                request_id: format!("r{}", rng.next()),
                time_unix_ms: START_MS + time,
                caller: caller("ops"),
                change: match rng.below(3) {
                    0 => ConfigChange::Policy {
                        model: "m".into(),
                        rules: format!("{}", rng.next()),
                    },
                    1 => ConfigChange::Directory {
                        toml: format!("{}", rng.next()),
                    },
                    _ => {
                        let id = rng.below(9) + 2;
                        let from = MemberSet::new([(1, "https://n1:7400".to_owned())], [1]);
                        let to = from.with_learner(id, &format!("https://n{id}:7400"));
                        ConfigChange::Membership { from, to }
                    }
                },
            }),
            _ => Record::LicenseIssued(LicenseIssuedRecord {
                request_id: format!("r{}", rng.next()),
                time_unix_ms: START_MS + time,
                caller: caller(&consumer),
                license_hash: [rng.below(250) as u8; 32],
                license_type: "business-license".into(),
                number: "1".into(),
                department: "market-regulation".into(),
                holder_hash: [3; 32],
                valid_from: 0,
                valid_until: None,
            }),
        };
        out.push(record);
    }
    out
}

fn random_filter(rng: &mut Rng) -> AuditFilter {
    match rng.below(11) {
        0 => AuditFilter::Consumer(pick(rng, &CONSUMERS).into()),
        1 => AuditFilter::Provider(pick(rng, &PROVIDERS).into()),
        2 => AuditFilter::Dataset {
            owner: pick(rng, &PROVIDERS).into(),
            dataset: pick(rng, &DATASETS).into(),
        },
        3 => AuditFilter::Key(format!("k{}", rng.below(32))),
        4 => {
            AuditFilter::Action([Action::Read, Action::Write, Action::Query][rng.below(3) as usize])
        }
        5 => AuditFilter::Decision(if rng.below(2) == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        }),
        6 => AuditFilter::Purpose(pick(rng, &PURPOSES).into()),
        7 => AuditFilter::PolicyVersion(rng.below(4)),
        8 => AuditFilter::Subject(subject(rng.below(42))),
        // The forms one person may be named by: zero to three hashes, a record in any.
        9 => AuditFilter::AnySubject((0..rng.below(4)).map(|_| subject(rng.below(42))).collect()),
        _ => AuditFilter::Side(if rng.below(2) == 0 {
            Side::Provider
        } else {
            Side::Consumer
        }),
    }
}

fn random_query(rng: &mut Rng, span: u64) -> AuditQuery {
    let filters = (0..rng.below(4)).map(|_| random_filter(rng)).collect();
    let since = (rng.below(3) == 0).then(|| START_MS + rng.below(span));
    let until = (rng.below(3) == 0).then(|| START_MS + rng.below(span + 10));
    AuditQuery {
        filters,
        since_unix_ms: since,
        until_unix_ms: until,
        order: if rng.below(2) == 0 {
            AuditOrder::NewestFirst
        } else {
            AuditOrder::OldestFirst
        },
        after: None,
        limit: [1, 2, 7, 50, 1000][rng.below(5) as usize],
    }
}

/// What `q` must answer, with every page, from the first `bound` records.
fn naive(records: &[Record], bound: u64, q: &AuditQuery) -> Vec<u64> {
    let mut found: Vec<(u64, u64)> = records
        .iter()
        .enumerate()
        .take(bound as usize)
        .filter(|(_, r)| q.matches(r))
        .map(|(i, r)| (r.time_unix_ms(), i as u64))
        .collect();
    found.sort_unstable();
    if q.order == AuditOrder::NewestFirst {
        found.reverse();
    }
    found.into_iter().map(|(_, i)| i).collect()
}

/// Every page of `q`, concatenated, checking each page's shape.
async fn all_pages(reader: &StateReader, q: &AuditQuery) -> Result<Vec<u64>, ReadError> {
    let mut q = q.clone();
    let mut out = Vec::new();
    let mut bound = None;
    loop {
        let page = reader.audit_query(q.clone()).await?;
        assert!(page.hits.len() <= q.limit.clamp(1, MAX_PAGE));
        assert_eq!(*bound.get_or_insert(page.tree_size), page.tree_size);
        for hit in &page.hits {
            assert_eq!(hit.record_hash, leaf_hash(&hit.bytes));
            assert_eq!(Record::decode(&hit.bytes).ok().as_ref(), Some(&hit.record));
        }
        out.extend(page.hits.iter().map(|h| h.log_index));
        match page.next {
            Some(next) => {
                assert_eq!(page.hits.len(), q.limit.clamp(1, MAX_PAGE));
                q.after = Some(next);
            }
            None => return Ok(out),
        }
    }
}

async fn open(dir: &std::path::Path) -> Result<(Db, StateMachineStore), StoreError> {
    let db = Db::open(&dir.join("raft"))?;
    let sm =
        StateMachineStore::new(db.clone(), StateMachineConfig::new(dir.join("snapshots"))).await?;
    Ok((db, sm))
}

/// Apply `records` in entries of at most `chunk`, from Raft index `first_log` on.
async fn apply(
    sm: &mut StateMachineStore,
    first_log: u64,
    records: &[Record],
    chunk: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut log = first_log;
    let mut entries = Vec::new();
    for part in records.chunks(chunk) {
        entries.push(Entry {
            log_id: log_id(1, 1, log),
            payload: openraft::EntryPayload::Normal(Request::Append {
                records: part.into(),
            }),
        });
        log += 1;
    }
    // Several apply calls of several entries each.
    while !entries.is_empty() {
        let rest = entries.split_off(entries.len().min(3));
        sm.apply(std::mem::replace(&mut entries, rest)).await?;
    }
    Ok(log)
}

/// A state machine holding `count` generated records, and those records.
async fn filled(
    dir: &std::path::Path,
    count: u64,
) -> Result<(Db, StateMachineStore, Vec<Record>), Box<dyn std::error::Error>> {
    let (db, mut sm) = open(dir).await?;
    let mut rng = Rng(7);
    let mut clock = 0;
    let records = generate(&mut rng, count, &mut clock);
    apply(&mut sm, 1, &records, 97).await?;
    Ok((db, sm, records))
}

#[tokio::test]
async fn queries_page_through_exactly_what_a_scan_finds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, sm, records) = filled(dir.path(), 3000).await?;
    let reader = sm.reader();
    let span = records.iter().map(Record::time_unix_ms).max().unwrap_or(0) - START_MS;
    let mut rng = Rng(11);
    let mut nonempty = 0;
    for n in 0..400 {
        let q = random_query(&mut rng, span);
        let want = naive(&records, 3000, &q);
        nonempty += usize::from(!want.is_empty());
        let got = all_pages(&reader, &q).await?;
        assert_eq!(got, want, "query {n}: {q:?}");
    }
    assert!(nonempty > 100, "only {nonempty} queries found anything");

    // Two different values of one field match nothing; the same twice is the same as once.
    let both = AuditQuery {
        filters: vec![
            AuditFilter::Consumer("housing".into()),
            AuditFilter::Consumer("tax".into()),
        ],
        ..AuditQuery::default()
    };
    assert!(all_pages(&reader, &both).await?.is_empty());
    let twice = AuditQuery {
        filters: vec![
            AuditFilter::Consumer("tax".into()),
            AuditFilter::Consumer("tax".into()),
        ],
        limit: 1000,
        ..AuditQuery::default()
    };
    assert_eq!(
        all_pages(&reader, &twice).await?,
        naive(&records, 3000, &twice)
    );
    // Any of several subjects: exactly the records naming one of them, each once, in order,
    // page by page; none of them: nothing.
    for order in [AuditOrder::NewestFirst, AuditOrder::OldestFirst] {
        let any = AuditQuery {
            filters: vec![
                AuditFilter::AnySubject(vec![subject(3), subject(5), subject(3)]),
                AuditFilter::Decision(Decision::Allow),
            ],
            order,
            limit: 7,
            ..AuditQuery::default()
        };
        let got = all_pages(&reader, &any).await?;
        let one = |s| AuditQuery {
            filters: vec![
                AuditFilter::Subject(subject(s)),
                AuditFilter::Decision(Decision::Allow),
            ],
            ..any.clone()
        };
        let (three, five) = (
            naive(&records, 3000, &one(3)),
            naive(&records, 3000, &one(5)),
        );
        assert!(!three.is_empty() && !five.is_empty());
        assert_eq!(got, naive(&records, 3000, &any), "{order:?}");
        assert!(got.iter().all(|i| three.contains(i) || five.contains(i)));
        assert!(three.iter().chain(&five).all(|i| got.contains(i)));
    }
    let none = AuditQuery {
        filters: vec![AuditFilter::AnySubject(Vec::new())],
        ..AuditQuery::default()
    };
    assert!(all_pages(&reader, &none).await?.is_empty());
    // A small posting list costs about its length, not the log's.
    let rare = AuditQuery {
        filters: vec![
            AuditFilter::Subject(subject(3)),
            AuditFilter::Decision(Decision::Allow),
        ],
        limit: 1000,
        ..AuditQuery::default()
    };
    let page = reader.audit_query(rare.clone()).await?;
    let hits = naive(&records, 3000, &rare).len() as u64;
    assert!(
        page.examined <= 4 * hits + 8,
        "{} entries read for {hits} hits",
        page.examined
    );
    // A limit of 0 is a limit of 1; a cursor beyond the tree is out of range.
    let one = reader
        .audit_query(AuditQuery {
            limit: 0,
            ..AuditQuery::default()
        })
        .await?;
    assert_eq!(one.hits.len(), 1);
    let beyond = AuditCursor {
        tree_size: 3001,
        time_unix_ms: 0,
        log_index: 0,
    };
    assert!(matches!(
        reader
            .audit_query(AuditQuery {
                after: Some(beyond),
                ..AuditQuery::default()
            })
            .await,
        Err(ReadError::Range(RangeError::TreeSize { .. }))
    ));
    Ok(())
}

#[tokio::test]
async fn paging_holds_to_the_first_pages_tree_size_while_the_log_grows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm, mut records) = filled(dir.path(), 1000).await?;
    let reader = sm.reader();
    let mut rng = Rng(5);
    // Times restart inside the range already paged, so new records interleave with old ones.
    let mut clock = 0;
    let mut log = 1000;
    for order in [AuditOrder::NewestFirst, AuditOrder::OldestFirst] {
        let q = AuditQuery {
            filters: vec![AuditFilter::Action(Action::Read)],
            order,
            limit: 13,
            ..AuditQuery::default()
        };
        let bound = records.len() as u64;
        let want = naive(&records, bound, &q);
        let mut got = Vec::new();
        let mut next = q.clone();
        loop {
            let page = reader.audit_query(next.clone()).await?;
            assert_eq!(page.tree_size, bound);
            got.extend(page.hits.iter().map(|h| h.log_index));
            let more = generate(&mut rng, 20, &mut clock);
            log = apply(&mut sm, log, &more, 7).await?;
            records.extend(more);
            match page.next {
                Some(cursor) => next.after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(got, want, "{order:?}");
        assert!(reader.tree_size() > bound);
    }
    Ok(())
}

/// Pages of a fixed set of queries, for comparing two nodes.
async fn answers(reader: &StateReader) -> Result<Vec<AuditPage>, ReadError> {
    let mut rng = Rng(99);
    let mut out = Vec::new();
    for _ in 0..60 {
        let q = random_query(&mut rng, 3000);
        // The answer, not its cost: how many chunks were read depends on how the index was
        // written (applies or a build), which differs between the nodes compared.
        let mut page = reader.audit_query(q).await?;
        page.examined = 0;
        out.push(page);
    }
    for kind in ConfigKind::ALL {
        let history = reader.config_history(kind).await?;
        out.push(AuditPage {
            hits: Vec::new(),
            next: None,
            tree_size: history.len() as u64,
            examined: history.iter().map(|p| p.log_index).sum(),
        });
    }
    Ok(out)
}

#[tokio::test]
async fn an_installed_snapshot_gets_the_same_index() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let (_l, mut leader, _) = filled(leader_dir.path(), 2000).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let follower_dir = tempfile::tempdir()?;
    let (follower_db, mut follower) = open(follower_dir.path()).await?;
    // A different history the install replaces.
    let mut clock = 0;
    let other = generate(&mut Rng(1), 300, &mut clock);
    apply(&mut follower, 1, &other, 50).await?;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(
        answers(&follower.reader()).await?,
        answers(&leader.reader()).await?
    );
    // Nothing of the replaced generation's index is left: the full check passes on reopen.
    follower_db.close();
    let (_db, reopened) = open(follower_dir.path()).await?;
    reopened.check_integrity().await?;
    assert_eq!(
        answers(&reopened.reader()).await?,
        answers(&leader.reader()).await?
    );
    Ok(())
}

#[tokio::test]
async fn a_database_without_the_index_gets_it_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, sm, _) = filled(dir.path(), 1500).await?;
    let want = answers(&sm.reader()).await?;
    drop(sm);
    // As a node of the version before the index left it: no entries, no marker.
    db.with(|db| {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(db::cf(db, CF_AUDIT)?, vec![0u8], END_KEY.to_vec());
        batch.delete_cf(db::cf(db, CF_SM_META)?, KEY_AUDIT_INDEXED);
        db.write(batch)?;
        Ok(())
    })?;
    let bare = db.with(|db| {
        Ok(db
            .iterator_cf(db::cf(db, CF_AUDIT)?, IteratorMode::Start)
            .count())
    })?;
    assert_eq!(bare, 0);
    db.close();
    let (_db, sm) = open(dir.path()).await?;
    sm.check_integrity().await?;
    assert_eq!(answers(&sm.reader()).await?, want);
    Ok(())
}

#[tokio::test]
async fn the_integrity_check_finds_a_removed_or_added_entry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, sm, records) = filled(dir.path(), 500).await?;
    sm.check_integrity().await?;
    let (index, record) = records
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(r, Record::Exchange(_)))
        .ok_or("no exchange")?;
    let time = record.time_unix_ms();
    let at = position(time, index as u64);
    let consumer = match record {
        Record::Exchange(r) => r.caller.department.clone(),
        _ => String::new(),
    };
    let term = (
        field::CONSUMER,
        audit_query::value_digest(field::CONSUMER, consumer.as_bytes()),
    );
    let positions = |value: &[u8]| -> Vec<u128> {
        let raw = audit_positions(value).unwrap_or_default();
        (0..raw.len() / AUDIT_POSITION_LEN)
            .map(|i| audit_position(raw, i))
            .collect()
    };
    // The chunk that lists the record under its consumer.
    let (listed, listed_value) = db.with(move |db| {
        let from = audit_key(0, term.0, &term.1, audit_bucket(time), 0);
        for item in db.iterator_cf(
            db::cf(db, CF_AUDIT)?,
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (key, value) = item?;
            if positions(&value).contains(&at) {
                let key: [u8; AUDIT_KEY_LEN] = key
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::corrupt("audit key", "wrong length"))?;
                return Ok((key, value.to_vec()));
            }
        }
        Err(StoreError::corrupt(
            "audit index",
            "the record is not listed",
        ))
    })?;
    let added = position(time, index as u64 + 100_000);
    let deny = audit_key(
        0,
        field::DECISION,
        &audit_query::value_digest(field::DECISION, b"deny"),
        audit_bucket(time),
        index as u64 + 100_000,
    );
    let without: Vec<u128> = positions(&listed_value)
        .into_iter()
        .filter(|p| *p != at)
        .collect();
    let moved: Vec<u128> = positions(&listed_value)
        .into_iter()
        .map(|p| {
            if p == at {
                position(time + AUDIT_BUCKET_MS, p as u64)
            } else {
                p
            }
        })
        .collect();
    // An entry removed, one added, one moved out of its bucket, a chunk that is not a list.
    let damages: [(&str, [u8; AUDIT_KEY_LEN], Vec<u8>); 4] = [
        ("removed", listed, encode_audit_positions(without)),
        ("added", deny, encode_audit_positions([added])),
        ("moved", listed, encode_audit_positions(moved)),
        ("not a list", listed, vec![1, 2, 3]),
    ];
    for (name, key, value) in damages {
        db.with(move |db| Ok(db.put_cf(db::cf(db, CF_AUDIT)?, key, value)?))?;
        let checked = sm.check_integrity().await;
        assert!(
            matches!(checked, Err(IntegrityError::AuditIndex { .. })),
            "{name}: {checked:?}"
        );
        // Undo, and the check passes again.
        let before = (key == listed).then(|| listed_value.clone());
        db.with(move |db| {
            let cf = db::cf(db, CF_AUDIT)?;
            match before {
                Some(value) => db.put_cf(cf, key, value)?,
                None => db.delete_cf(cf, key)?,
            }
            Ok(())
        })?;
        sm.check_integrity().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_index_of_the_older_layout_is_rebuilt_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, sm, records) = filled(dir.path(), 1200).await?;
    let want = answers(&sm.reader()).await?;
    drop(sm);
    // As a node of the version before buckets left it: one key per entry, empty values, no
    // layout marker, the index covering the whole tree.
    db.with(|db| {
        let cf = db::cf(db, CF_AUDIT)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, vec![0u8], END_KEY.to_vec());
        for (index, record) in records.iter().enumerate() {
            for (tag, digest) in audit_query::terms(record) {
                let mut key = generation_prefix(0).to_vec();
                key.push(tag);
                key.extend_from_slice(&digest);
                key.extend_from_slice(&record.time_unix_ms().to_be_bytes());
                key.extend_from_slice(&(index as u64).to_be_bytes());
                batch.put_cf(cf, key, []);
            }
        }
        batch.delete_cf(db::cf(db, CF_SM_META)?, KEY_AUDIT_LAYOUT);
        db.write(batch)?;
        Ok(())
    })?;
    db.close();
    let (db, sm) = open(dir.path()).await?;
    sm.check_integrity().await?;
    assert_eq!(answers(&sm.reader()).await?, want);
    let keys = db.with(|db| {
        Ok(db
            .iterator_cf(db::cf(db, CF_AUDIT)?, IteratorMode::Start)
            .map(|item| item.map(|(key, _)| key.len()))
            .collect::<Result<Vec<_>, _>>()?)
    })?;
    assert!(keys.iter().all(|len| *len == AUDIT_KEY_LEN), "{keys:?}");
    // Far fewer keys than entries: a bucket holds every entry of its list.
    let entries: usize = records.iter().map(|r| audit_query::terms(r).len()).sum();
    assert!(
        keys.len() * 2 < entries,
        "{} keys for {entries} entries",
        keys.len()
    );
    Ok(())
}

#[tokio::test]
async fn config_history_lists_every_version_in_log_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, mut sm, mut records) = filled(dir.path(), 600).await?;
    // A config record whose time is earlier than those before it: versions follow the log.
    records.push(Record::Config(ConfigRecord {
        request_id: "late".into(),
        time_unix_ms: START_MS,
        caller: caller("ops"),
        change: ConfigChange::Policy {
            model: "m".into(),
            rules: "late".into(),
        },
    }));
    apply(&mut sm, 1000, &records[600..], 1).await?;
    let reader = sm.reader();
    for kind in ConfigKind::ALL {
        let want: Vec<u64> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Record::Config(c) if c.change.kind() == kind))
            .map(|(i, _)| i as u64)
            .collect();
        assert!(want.len() > 3, "{kind:?}");
        let history = reader.config_history(kind).await?;
        let indices: Vec<u64> = history.iter().map(|p| p.log_index).collect();
        assert_eq!(indices, want);
        let versions: Vec<u64> = history.iter().map(|p| p.version).collect();
        assert_eq!(versions, (1..=want.len() as u64).collect::<Vec<_>>());
        assert_eq!(history.last().copied(), reader.config_pointers().get(kind));
    }
    Ok(())
}

#[tokio::test]
async fn entries_reads_ranges_of_the_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_db, sm, records) = filled(dir.path(), 300).await?;
    let reader = sm.reader();
    let bytes: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    assert_eq!(reader.entries(0, 10).await?, bytes[..10].to_vec());
    assert_eq!(reader.entries(120, 55).await?, bytes[120..175].to_vec());
    assert_eq!(reader.entries(297, 10).await?, bytes[297..].to_vec());
    assert_eq!(reader.entries(0, 1000).await?, bytes);
    assert!(reader.entries(300, 10).await?.is_empty());
    assert!(reader.entries(u64::MAX, usize::MAX).await?.is_empty());
    assert!(reader.entries(5, 0).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_offline_log_reads_altered_records_and_the_stored_tree() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, sm, records) = filled(dir.path(), 200).await?;
    let reader = sm.reader();
    let proof = reader.inclusion_proof(42, 200).await?;
    let root = reader.root_at(200).await?;
    drop(sm);
    let mut altered = records[42].encode();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let forged = altered.clone();
    db.with(move |db| {
        db.put_cf(db::cf(db, CF_RECORDS)?, record_key(0, 42), forged)?;
        Ok(())
    })?;
    db.close();

    let offline = crate::offline::OfflineLog::open(dir.path())?;
    assert_eq!(offline.tree_size(), 200);
    assert_eq!(offline.checkpoint_note(), None);
    let read = offline.records(40, 5)?;
    assert_eq!(read[2], altered);
    assert_eq!(read[0], records[40].encode());
    let (leaf, stored_proof) = offline.inclusion_proof(42, 200)?;
    assert_eq!(leaf, records[42].hash());
    assert_ne!(leaf, leaf_hash(&altered));
    assert_eq!(stored_proof, proof);
    qianlian_verifier::verify_inclusion(&leaf, 42, 200, &stored_proof, &root)?;
    assert!(offline.inclusion_proof(200, 200).is_err());
    assert!(offline.inclusion_proof(0, 201).is_err());
    assert!(crate::offline::OfflineLog::open(&dir.path().join("nothing")).is_err());
    Ok(())
}
