//! Three real node processes on loopback: nothing acknowledged is lost when nodes crash, a
//! minority outage blocks nothing, a majority outage fails fast, and every node ends with the
//! same tree.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::{GetLogEntryRequest, GetRecordRequest, RecordRef};
use support::cluster::Cluster;
use support::*;
use tokio::sync::Mutex;
use tonic::Code;

/// One notarized call (a read the policy refuses); returns the receipt if it was acknowledged.
async fn notarized_call(
    c: &mut ExchangeClient<tonic::transport::Channel>,
) -> Result<(u64, String), tonic::Status> {
    let s = c
        .get_record(GetRecordRequest {
            record: Some(RecordRef {
                department: "market-regulation".into(),
                dataset: "enterprise-registration".into(),
                key: uscc(1),
            }),
            purpose: "marketing".into(),
        })
        .await
        .expect_err("no rule allows marketing");
    if s.code() != Code::PermissionDenied {
        return Err(s);
    }
    let md = s.metadata();
    let index = md
        .get("x-qianlian-log-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("index");
    let hash = md
        .get("x-qianlian-record-hash")
        .and_then(|v| v.to_str().ok())
        .expect("hash")
        .to_owned();
    Ok((index, hash))
}

type Acked = Arc<Mutex<Vec<(u64, String)>>>;

/// Writers that each stick to one node and move to the next when it fails.
fn spawn_writers(
    cluster: &Cluster,
    n: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> Vec<tokio::task::JoinHandle<()>> {
    let endpoints: Vec<String> = (1..=cluster.ports.len())
        .map(|i| cluster.endpoint(i))
        .collect();
    let (cert, key) = cluster.env.identity("housing");
    let tls_config = tls(&cluster.env.pki().join("ca.crt"), Some((&cert, &key)));
    (0..n)
        .map(|w| {
            let endpoints = endpoints.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            let tls_config = tls_config.clone();
            tokio::spawn(async move {
                let mut target = w % endpoints.len();
                while !stop.load(Ordering::Relaxed) {
                    let ch = tonic::transport::Channel::from_shared(endpoints[target].clone())
                        .expect("endpoint")
                        .tls_config(tls_config.clone())
                        .expect("tls")
                        .connect_timeout(Duration::from_secs(1))
                        .timeout(Duration::from_secs(15))
                        .connect()
                        .await;
                    let Ok(ch) = ch else {
                        target = (target + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let mut c = ExchangeClient::new(ch);
                    while !stop.load(Ordering::Relaxed) {
                        match notarized_call(&mut c).await {
                            Ok(r) => acked.lock().await.push(r),
                            Err(_) => {
                                target = (target + 1) % endpoints.len();
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged record is on every running node, with the same hash.
async fn check_acked_everywhere(cluster: &Cluster, acked: &[(u64, String)]) {
    for i in cluster.running() {
        let mut c = NotaryClient::new(cluster.channel(i, "audit-office").await.expect("connect"));
        for (index, hash) in acked {
            let e = c
                .get_log_entry(GetLogEntryRequest { log_index: *index })
                .await
                .unwrap_or_else(|s| panic!("node {i} lost acknowledged log index {index}: {s}"))
                .into_inner();
            let got: String = e
                .receipt
                .expect("receipt")
                .record_hash
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(&got, hash, "node {i}, log index {index}");
        }
    }
}

fn dedup_check(acked: &[(u64, String)]) {
    let mut idx: Vec<u64> = acked.iter().map(|a| a.0).collect();
    idx.sort_unstable();
    let before = idx.len();
    idx.dedup();
    assert_eq!(before, idx.len(), "two acknowledgements share a log index");
}

async fn crash_and_recover(kill_leader: bool) {
    let mut cluster = Cluster::start(3, "");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers = spawn_writers(&cluster, 6, stop.clone(), acked.clone());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let victim = if kill_leader { leader } else { leader % 3 + 1 };
    let before = acked.lock().await.len();
    assert!(before > 0, "writes flowed before the crash");
    cluster.kill(victim);

    // Writes go on with two of three nodes (after a new election if the leader died). How soon
    // depends on the election and on the machine's load; the bound only stops a hang.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let during = acked.lock().await.len();
        if during >= before + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not continue without node {victim} ({before} -> {during})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.start_node(victim);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }

    let acked = acked.lock().await.clone();
    dedup_check(&acked);
    let max = acked.iter().map(|a| a.0).max().expect("acked") + 1;
    let (size, _) = cluster.converge(max, Duration::from_secs(30)).await;
    assert!(size >= max);
    check_acked_everywhere(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_loses_nothing_acknowledged() {
    crash_and_recover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_killed_under_load_loses_nothing_acknowledged() {
    crash_and_recover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_outage_blocks_nothing_and_a_majority_outage_fails_fast() {
    let mut cluster = Cluster::start(3, "[raft]\ncommit_timeout_ms = 2000\n");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = leader % 3 + 1;
    cluster.stop(follower);
    let mut c = ExchangeClient::new(cluster.channel(leader, "housing").await.expect("connect"));
    for _ in 0..20 {
        notarized_call(&mut c)
            .await
            .expect("one node down blocks nothing");
    }
    let other = (1..=3)
        .find(|i| *i != leader && *i != follower)
        .expect("third node");
    cluster.stop(other);
    let t0 = Instant::now();
    let err = notarized_call(&mut c).await.expect_err("no majority");
    let took = t0.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        took < Duration::from_secs(8),
        "the refusal came after {took:?}, not within the 2 s commit timeout plus a margin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_from_an_empty_data_folder_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(
        3,
        "[raft]\nsnapshot_every = 20\nlog_kept_after_snapshot = 5\n",
    );
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let victim = leader % 3 + 1;
    let mut c = ExchangeClient::new(cluster.channel(leader, "housing").await.expect("connect"));
    let mut acked = Vec::new();
    // One call at a time: one Raft entry each, so the log passes several snapshot points.
    for _ in 0..120 {
        acked.push(notarized_call(&mut c).await.expect("write"));
    }
    let status = cluster.status(leader).await.expect("status");
    assert!(
        status.snapshot_index > 0,
        "the leader took a snapshot: {status:?}"
    );
    assert!(
        status.purged_index > 0,
        "the leader purged its log: {status:?}"
    );

    cluster.stop(victim);
    let data = cluster.dir(victim).join("data");
    std::fs::remove_dir_all(&data).expect("empty the data folder");
    for _ in 0..30 {
        acked.push(notarized_call(&mut c).await.expect("write with two nodes"));
    }
    cluster.start_node(victim);
    let max = acked.iter().map(|a| a.0).max().expect("acked") + 1;
    cluster.converge(max, Duration::from_secs(30)).await;
    // Raft's metrics name the installed snapshot a moment after the tree reaches its size.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = cluster
            .status(victim)
            .await
            .expect("status of the restarted node");
        if s.snapshot_index > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the empty node caught up from a snapshot, not by replaying a purged log: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_acked_everywhere(&cluster, &acked).await;
}
