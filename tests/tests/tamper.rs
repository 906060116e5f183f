//! A node whose stored log was altered refuses to start and says where.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qianlian_proto::v1::{PutRecordRequest, RecordRef};
use rocksdb::{DB, Options};
use support::*;

/// Start a node that is expected to refuse; return its exit status and stderr.
fn serve_expecting_refusal(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let log = config.with_file_name("refusal.log");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started on altered data instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn node_with_records(env: &Env, n: u64) -> std::path::PathBuf {
    let node = env.start();
    let mut owner = exchange(env, &node, "market-regulation").await;
    for i in 0..n {
        owner
            .put_record(PutRecordRequest {
                record: Some(RecordRef {
                    department: "market-regulation".into(),
                    dataset: "enterprise-registration".into(),
                    key: uscc(i),
                }),
                payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
            })
            .await
            .expect("put");
    }
    drop(owner);
    assert!(node.stop().success());
    env.path().join("data").join("raft")
}

fn open_raw(path: &std::path::Path) -> DB {
    let cfs = DB::list_cf(&Options::default(), path).expect("list column families");
    DB::open_cf(&Options::default(), path, cfs).expect("open the node's RocksDB")
}

#[tokio::test]
async fn one_changed_byte_in_a_stored_record_is_named_by_its_log_index() {
    let env = Env::new();
    let raft = node_with_records(&env, 12).await;
    {
        let db = open_raw(&raft);
        let cf = db.cf_handle("records").expect("records column family");
        // Records are stored in log order: the eighth entry is log index 7, whatever the key
        // layout of the current storage generation.
        let (key, value) = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .nth(7)
            .expect("record 7 is stored")
            .expect("read");
        let mut value = value.to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        db.put_cf(cf, key, value).expect("tamper");
        db.flush_cf(cf).expect("flush");
    }
    let config = env.path().join("node.toml");
    let (status, err) = serve_expecting_refusal(&config);
    eprintln!("refusal: {err}");
    assert!(!status.success());
    assert!(
        err.contains("log index 7"),
        "the refusal must name log index 7:\n{err}"
    );
}

#[tokio::test]
async fn one_flipped_byte_in_a_database_file_stops_the_node() {
    let env = Env::new();
    let raft = node_with_records(&env, 200).await;
    let sst = {
        let db = open_raw(&raft);
        for name in ["records", "log"] {
            if let Some(cf) = db.cf_handle(name) {
                db.flush_cf(cf).expect("flush");
            }
        }
        let files = db.live_files().expect("live files");
        files
            .into_iter()
            .filter(|f| f.column_family_name == "records")
            .max_by_key(|f| f.size)
            .map(|f| raft.join(f.name.trim_start_matches('/')))
            .expect("the records column family has a table file")
    };
    let mut bytes = std::fs::read(&sst).expect("read table file");
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0xff;
    std::fs::write(&sst, bytes).expect("write table file");
    let (status, err) = serve_expecting_refusal(&env.path().join("node.toml"));
    eprintln!("refusal: {err}");
    assert!(
        !status.success(),
        "the node must not serve from a damaged file"
    );
    assert!(err.contains("error"), "{err}");
}
