//! `qianlian bench`: drive a running gateway over real mutual TLS, or an etcd cluster for
//! comparison, and report throughput, latency percentiles, errors and CPU time.
//!
//! Each client has its own connection and waits for each answer (closed loop), so the figures
//! include the TLS stack, the policy decision and the Raft commit. Connections are opened before
//! the clock starts; then comes the warm-up, then the measured window, in which every answered
//! call's latency is kept. CPU time of the generator and of the named node processes is read
//! from `/proc` at both ends of the measured window.
//!
//! - [`report`]: the figures of a run and their CSV / JSON forms; CPU accounting.
//! - [`etcd`]: the etcd v3 `KV.Put` client of the comparison.
//!
//! Not measured yet: audit queries (the gateway has no audit query API so far).

pub mod etcd;
pub mod report;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use qianlian_proto::v1::audit_client::AuditClient;
use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::licenses_client::LicensesClient;
use qianlian_proto::v1::notary_client::NotaryClient;
use qianlian_proto::v1::verify_license_request::Document;
use qianlian_proto::v1::{
    AccessFilter, GetLogEntryRequest, GetRecordRequest, IssueLicenseRequest, PutRecordRequest,
    QueryAccessesRequest, RecordRef, VerifyLicenseRequest, VerifyLicensesRequest,
};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use self::etcd::EtcdClient;
use self::report::CpuSample;
pub use self::report::{BenchReport, OutFormat};
use crate::profile::Profile;
use qianlian_gateway::domain::identifier::UnifiedSocialCreditCode;
use qianlian_proto::contract::{LOG_INDEX_HEADER, MAX_VERIFY_BATCH};

/// Which call each client repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// GetRecord the policy allows: one notarized access record per call. A refusal is an
    /// error here.
    Read,
    /// GetRecord for a purpose the policy does not grant: one notarized refusal per call
    /// (counted as `denied`). An allowed read is an error here.
    DeniedRead,
    /// PutRecord by the owner with a fresh key each time: one notarized access record and one
    /// record-store write per call.
    Put,
    /// IssueLicense (business license) by market-regulation: sign, notarize, prove.
    Issue,
    /// VerifyLicense of one QR payload: open, check signature, policy, state and proof.
    Verify,
    /// etcd v3 `KV.Put` of a fresh key with a value of `value_bytes` bytes.
    EtcdPut,
    /// QueryAccesses as an inspector (`--as audit-office`): the newest 100 accesses by housing,
    /// through the audit indexes.
    AuditQuery,
    /// `grpc.health.v1.Health/Check` over mutual TLS: one authenticated gRPC call with no work
    /// behind it, the floor under every other workload.
    Health,
}

impl Workload {
    /// Every workload, in the order the CLI lists them.
    pub const ALL: [Workload; 8] = [
        Workload::Read,
        Workload::DeniedRead,
        Workload::Put,
        Workload::Issue,
        Workload::Verify,
        Workload::EtcdPut,
        Workload::AuditQuery,
        Workload::Health,
    ];

    /// The workload's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::DeniedRead => "denied-read",
            Workload::Put => "put",
            Workload::Issue => "issue",
            Workload::Verify => "verify",
            Workload::EtcdPut => "etcd-put",
            Workload::AuditQuery => "audit-query",
            Workload::Health => "health",
        }
    }

    /// Inverse of [`Workload::name`].
    pub fn parse(name: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload `{name}`: use one of {}", names.join(", "))
            })
    }
}

/// What to drive.
#[derive(Debug, Clone)]
pub enum Target {
    /// Gateway nodes; clients are spread round-robin over them.
    Gateway(Vec<Profile>),
    /// etcd members' client URLs; clients are spread round-robin over them.
    Etcd(Vec<String>),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub workload: Workload,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Read workloads: the record read and the purpose declared.
    pub dataset: String,
    pub owner: String,
    pub key: String,
    pub purpose: String,
    /// etcd-put: bytes per value (use the `record_bytes` of a notarized run to compare alike).
    pub value_bytes: usize,
    /// verify: how many distinct licenses are issued before the clock starts and verified in
    /// turn (1: every call checks the same QR code, as at a busy counter).
    pub licenses: usize,
    /// verify: documents per call. Above 1, each call is one `VerifyLicenses` with this many
    /// documents, and each document counts as one request (latencies stay per call).
    pub batch: usize,
    /// Processes whose CPU time is reported as the nodes' (e.g. the gateway or etcd members).
    pub node_pids: Vec<u32>,
    /// Free text naming the setup in reports.
    pub label: String,
}

/// Most licenses a verify run issues first.
pub const MAX_LICENSES: usize = 100_000;

/// A typical business license for the issue and verify workloads.
fn issue_request(n: u64) -> IssueLicenseRequest {
    let holder = UnifiedSocialCreditCode::generate(n % 1_000_000_000);
    IssueLicenseRequest {
        license_type: "business-license".into(),
        number: format!("GZ-BENCH-{n}"),
        holder_name: "贵州黔云数据科技有限公司".into(),
        holder_id: holder.as_str().to_owned(),
        valid_from: 0,
        valid_until: 0,
        fields: [
            ("legal_representative".to_owned(), "张伟".to_owned()),
            ("registered_capital".to_owned(), "1000万元".to_owned()),
            (
                "address".to_owned(),
                "贵州省贵阳市观山湖区林城西路10号".to_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

/// One client's connection.
// One per client, made before the clock starts: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Gateway {
        exchange: ExchangeClient<Channel>,
        licenses: LicensesClient<Channel>,
        audit: AuditClient<Channel>,
        health: HealthClient<Channel>,
    },
    Etcd(EtcdClient),
}

/// How one call ended.
enum Outcome {
    /// Answered as expected; the log index of its record when it has one.
    Ok(Option<u64>),
    /// This many documents verified as expected in one call.
    Verified(usize),
    /// Refused by policy, the refusal notarized at this log index.
    Denied(u64),
    /// Failed, or answered otherwise than the workload expects: `(kind, message)`.
    Failed(String, String),
}

fn failed(s: &tonic::Status) -> Outcome {
    Outcome::Failed(format!("{:?}", s.code()), s.message().to_owned())
}

/// The log index a notarized refusal carries in its metadata.
fn refusal_index(s: &tonic::Status) -> Option<u64> {
    s.metadata()
        .get(LOG_INDEX_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// What one client measured.
#[derive(Default)]
struct ClientTally {
    latencies: Vec<Duration>,
    ok: usize,
    denied: usize,
    error_kinds: BTreeMap<String, usize>,
    first_error: Option<String>,
    last_index: Option<u64>,
}

impl ClientTally {
    /// Counts a measured call that started at `t0` and has just ended with `outcome`.
    fn record(&mut self, outcome: Outcome, t0: Instant) {
        match outcome {
            Outcome::Ok(index) => {
                self.latencies.push(t0.elapsed());
                self.ok += 1;
                self.last_index = index.or(self.last_index);
            }
            Outcome::Verified(documents) => {
                self.latencies.push(t0.elapsed());
                self.ok += documents;
            }
            Outcome::Denied(index) => {
                self.latencies.push(t0.elapsed());
                self.denied += 1;
                self.last_index = Some(index);
            }
            Outcome::Failed(kind, message) => {
                self.first_error
                    .get_or_insert_with(|| format!("{kind}: {message}"));
                *self.error_kinds.entry(kind).or_default() += 1;
            }
        }
    }

    /// Adds this client's counts to `report` and its latencies to `latencies`.
    fn add_to(self, report: &mut BenchReport, latencies: &mut Vec<Duration>) {
        latencies.extend(self.latencies);
        report.ok += self.ok;
        report.denied += self.denied;
        for (kind, n) in self.error_kinds {
            *report.error_kinds.entry(kind).or_default() += n;
        }
        report.first_error = report.first_error.take().or(self.first_error);
    }
}

/// Per-client state the calls need.
struct CallContext<'a> {
    plan: &'a BenchPlan,
    client_no: usize,
    qrs: &'a [String],
    value: &'a [u8],
}

impl CallContext<'_> {
    /// The document of verification number `turn`: the licenses are verified in turn.
    fn document(&self, turn: u64) -> VerifyLicenseRequest {
        let qr = self
            .qrs
            .get(turn as usize % self.qrs.len().max(1))
            .cloned()
            .unwrap_or_default();
        VerifyLicenseRequest {
            document: Some(Document::Qr(qr)),
        }
    }
}

async fn call(conn: &mut Conn, cx: &CallContext<'_>, n: u64) -> Outcome {
    let plan = cx.plan;
    match (conn, plan.workload) {
        (Conn::Gateway { exchange, .. }, Workload::Read) => {
            match exchange.get_record(read_request(plan)).await {
                Ok(r) => Outcome::Ok(r.into_inner().receipt.map(|r| r.log_index)),
                Err(s) => failed(&s),
            }
        }
        (Conn::Gateway { exchange, .. }, Workload::DeniedRead) => denied_read(exchange, plan).await,
        (Conn::Gateway { exchange, .. }, Workload::Put) => put(exchange, cx.client_no, n).await,
        (Conn::Gateway { licenses, .. }, Workload::Issue) => {
            let request = issue_request(((cx.client_no as u64) << 32) | n);
            match licenses.issue_license(request).await {
                Ok(_) => Outcome::Ok(None),
                Err(s) => failed(&s),
            }
        }
        (Conn::Gateway { licenses, .. }, Workload::Verify) if plan.batch > 1 => {
            verify_batch(licenses, cx, n).await
        }
        (Conn::Gateway { licenses, .. }, Workload::Verify) => verify(licenses, cx, n).await,
        (Conn::Gateway { audit, .. }, Workload::AuditQuery) => audit_query(audit).await,
        (Conn::Gateway { health, .. }, Workload::Health) => {
            match health.check(HealthCheckRequest::default()).await {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Outcome::Ok(None),
                Ok(r) => Outcome::Failed(
                    "NotServing".into(),
                    format!("health status {}", r.get_ref().status),
                ),
                Err(s) => failed(&s),
            }
        }
        (Conn::Etcd(etcd), Workload::EtcdPut) => {
            let key = format!("qianlian-bench/{:05}/{n:012}", cx.client_no).into_bytes();
            match etcd.put(key, cx.value.to_vec()).await {
                Ok(()) => Outcome::Ok(None),
                Err(s) => failed(&s),
            }
        }
        (Conn::Etcd(etcd), w) => Outcome::Failed(
            "Unexpected".into(),
            format!(
                "workload {} runs against a gateway, not etcd at {}",
                w.name(),
                etcd.endpoint()
            ),
        ),
        (Conn::Gateway { .. }, Workload::EtcdPut) => Outcome::Failed(
            "Unexpected".into(),
            "workload etcd-put needs --etcd URLS".into(),
        ),
    }
}

/// The read and denied-read workloads' GetRecord.
fn read_request(plan: &BenchPlan) -> GetRecordRequest {
    GetRecordRequest {
        record: Some(RecordRef {
            department: plan.owner.clone(),
            dataset: plan.dataset.clone(),
            key: plan.key.clone(),
        }),
        purpose: plan.purpose.clone(),
    }
}

/// A read the policy must refuse, and notarize the refusal of.
async fn denied_read(exchange: &mut ExchangeClient<Channel>, plan: &BenchPlan) -> Outcome {
    match exchange.get_record(read_request(plan)).await {
        Ok(_) => Outcome::Failed(
            "Unexpected".into(),
            format!(
                "the policy allowed the read for purpose `{}`; declare a --purpose no rule grants",
                plan.purpose
            ),
        ),
        Err(s) if s.code() == tonic::Code::PermissionDenied => match refusal_index(&s) {
            Some(index) => Outcome::Denied(index),
            None => Outcome::Failed(
                "PermissionDenied".into(),
                format!("refused without a notarized record: {}", s.message()),
            ),
        },
        Err(s) => failed(&s),
    }
}

/// Call `n` of client `client_no` writes a record of its own.
async fn put(exchange: &mut ExchangeClient<Channel>, client_no: usize, n: u64) -> Outcome {
    // Distinct keys per client and call: 2^20 calls per client before reuse.
    let i = ((client_no as u64) << 20) | (n & 0xF_FFFF);
    let put = PutRecordRequest {
        record: Some(RecordRef {
            department: "market-regulation".into(),
            dataset: "enterprise-registration".into(),
            key: UnifiedSocialCreditCode::generate(1_000_000 + i)
                .as_str()
                .to_owned(),
        }),
        payload: format!(r#"{{"name":"bench {i}","status":"存续"}}"#).into_bytes(),
    };
    match exchange.put_record(put).await {
        Ok(r) => Outcome::Ok(r.into_inner().receipt.map(|r| r.log_index)),
        Err(s) => failed(&s),
    }
}

/// One VerifyLicense; the license must be genuine.
async fn verify(licenses: &mut LicensesClient<Channel>, cx: &CallContext<'_>, n: u64) -> Outcome {
    // Clients start at different licenses and go through all of them in turn.
    let request = cx.document((cx.client_no as u64).wrapping_add(n));
    match licenses.verify_license(request).await {
        Ok(r) if r.get_ref().verdict == "genuine" => Outcome::Ok(None),
        Ok(r) => {
            let r = r.into_inner();
            Outcome::Failed(
                "Unexpected".into(),
                format!("verdict {}: {}", r.verdict, r.reason),
            )
        }
        Err(s) => failed(&s),
    }
}

/// One VerifyLicenses of `plan.batch` documents; every one must be genuine.
async fn verify_batch(
    licenses: &mut LicensesClient<Channel>,
    cx: &CallContext<'_>,
    n: u64,
) -> Outcome {
    let batch = cx.plan.batch;
    // Clients start at different licenses and go through all of them in turn.
    let first = (cx.client_no as u64).wrapping_add(n.wrapping_mul(batch as u64));
    let documents = (0..batch as u64)
        .map(|i| cx.document(first.wrapping_add(i)))
        .collect();
    match licenses
        .verify_licenses(VerifyLicensesRequest { documents })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            match r.verdicts.iter().find(|v| v.verdict != "genuine") {
                None if r.verdicts.len() == batch => Outcome::Verified(batch),
                None => Outcome::Failed(
                    "Unexpected".into(),
                    format!("{} verdicts for {} documents", r.verdicts.len(), batch),
                ),
                Some(v) => Outcome::Failed(
                    "Unexpected".into(),
                    format!("verdict {}: {}", v.verdict, v.reason),
                ),
            }
        }
        Err(s) => failed(&s),
    }
}

/// The newest 100 accesses by housing.
async fn audit_query(audit: &mut AuditClient<Channel>) -> Outcome {
    let request = QueryAccessesRequest {
        filter: Some(AccessFilter {
            consumer: "housing".into(),
            ..AccessFilter::default()
        }),
        oldest_first: false,
        limit: 100,
        cursor: String::new(),
    };
    match audit.query_accesses(request).await {
        Ok(_) => Outcome::Ok(None),
        Err(s) => failed(&s),
    }
}

/// Open one connection per client, before the clock starts.
async fn connect_all(target: &Target, plan: &BenchPlan) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(plan.clients);
    for client_no in 0..plan.clients {
        let conn = match target {
            Target::Gateway(profiles) => {
                let channel = profiles[client_no % profiles.len()].connect().await?;
                Conn::Gateway {
                    exchange: ExchangeClient::new(channel.clone()),
                    licenses: LicensesClient::new(channel.clone()),
                    audit: AuditClient::new(channel.clone()),
                    health: HealthClient::new(channel),
                }
            }
            Target::Etcd(endpoints) => {
                let endpoint = &endpoints[client_no % endpoints.len()];
                let probe = format!("qianlian-bench/probe/{client_no}").into_bytes();
                Conn::Etcd(EtcdClient::connect(endpoint, &probe).await?)
            }
        };
        conns.push(conn);
    }
    Ok(conns)
}

fn check_plan(target: &Target, plan: &BenchPlan) -> anyhow::Result<()> {
    anyhow::ensure!(plan.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(!plan.duration.is_zero(), "--seconds must be positive");
    anyhow::ensure!(
        (1..=MAX_LICENSES).contains(&plan.licenses),
        "--licenses must be 1 to {MAX_LICENSES}: each is issued (and notarized) before the clock starts"
    );
    anyhow::ensure!(
        (1..=MAX_VERIFY_BATCH).contains(&plan.batch),
        "--batch must be 1 to {}: the documents one VerifyLicenses call takes",
        MAX_VERIFY_BATCH
    );
    anyhow::ensure!(
        plan.batch == 1 || plan.workload == Workload::Verify,
        "--batch is for --workload verify; {} sends one request per call",
        plan.workload.name()
    );
    match target {
        Target::Gateway(p) => {
            anyhow::ensure!(!p.is_empty(), "no gateway endpoint to measure");
            anyhow::ensure!(
                plan.workload != Workload::EtcdPut,
                "workload etcd-put measures etcd: pass --etcd http://HOST:PORT[,…] and --value-size"
            );
        }
        Target::Etcd(e) => {
            anyhow::ensure!(!e.is_empty(), "no etcd endpoint to measure");
            anyhow::ensure!(
                plan.workload == Workload::EtcdPut,
                "--etcd measures etcd puts: use --workload etcd-put (workload {} runs against a gateway)",
                plan.workload.name()
            );
            anyhow::ensure!(
                plan.value_bytes > 0,
                "etcd-put needs --value-size BYTES: the size of one notarized access record (the record_bytes a denied-read run reports)"
            );
        }
    }
    Ok(())
}

/// Run the plan's workload against `target` (closed loop, one connection per client).
pub async fn run(target: &Target, plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    check_plan(target, plan)?;
    // Fail on a wrong --node-pid before any load is sent.
    CpuSample::take(&plan.node_pids)?;
    let qrs = std::sync::Arc::new(issue_licenses(target, plan).await?);
    let conns = connect_all(target, plan).await?;

    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let pids = plan.node_pids.clone();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let first = CpuSample::take(&pids)?;
        tokio::time::sleep_until(end.into()).await;
        let last = CpuSample::take(&pids)?;
        anyhow::Ok(first.until(&last))
    });
    let value = vec![b'v'; plan.value_bytes];
    let mut tasks = Vec::new();
    for (client_no, mut conn) in conns.into_iter().enumerate() {
        let plan = plan.clone();
        let qrs = qrs.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let cx = CallContext {
                plan: &plan,
                client_no,
                qrs: &qrs,
                value: &value,
            };
            (client_no, drive(&mut conn, &cx, measure_from, end).await)
        }));
    }

    let mut report = BenchReport {
        label: plan.label.clone(),
        workload: plan.workload.name().to_owned(),
        clients: plan.clients,
        seconds: plan.duration.as_secs_f64(),
        value_bytes: (plan.workload == Workload::EtcdPut).then_some(plan.value_bytes),
        ..BenchReport::default()
    };
    let mut latencies = Vec::new();
    let mut last_record: Option<(usize, u64)> = None;
    for t in tasks {
        let (client_no, tally) = t.await?;
        if let Some(index) = tally.last_index {
            last_record = Some((client_no, index));
        }
        tally.add_to(&mut report, &mut latencies);
    }
    let (generator_cpu, nodes_cpu) = cpu.await??;
    report.generator_cpu_s = generator_cpu;
    report.nodes_cpu_s = nodes_cpu;
    report.requests = report.ok + report.denied;
    report.errors = report.error_kinds.values().sum();
    report.throughput = report.requests as f64 / report.seconds;
    report::fill_percentiles(&mut report, &mut latencies);
    if let (Target::Gateway(profiles), Some((client_no, index))) = (target, last_record) {
        report.record_bytes = record_size(&profiles[client_no % profiles.len()], index).await;
    }
    Ok(report)
}

/// The licenses verify calls check, issued before the clock starts (none for other workloads).
async fn issue_licenses(target: &Target, plan: &BenchPlan) -> anyhow::Result<Vec<String>> {
    let mut qrs = Vec::new();
    if let (Target::Gateway(profiles), Workload::Verify) = (target, plan.workload) {
        let mut c = LicensesClient::new(profiles[0].connect().await?);
        for i in 0..plan.licenses.max(1) as u64 {
            let r = c
                .issue_license(issue_request(u64::MAX - i))
                .await
                .map_err(|s| anyhow::anyhow!("issuing the license to verify: {}", s.message()))?;
            qrs.push(r.into_inner().qr_payload);
        }
    }
    Ok(qrs)
}

/// One client's closed loop: call after call until `end`, tallying the calls that start from
/// `measure_from` on (the earlier ones are the warm-up).
async fn drive(
    conn: &mut Conn,
    cx: &CallContext<'_>,
    measure_from: Instant,
    end: Instant,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut n: u64 = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        n += 1;
        let outcome = call(conn, cx, n).await;
        if t0 < measure_from {
            continue;
        }
        tally.record(outcome, t0);
    }
    tally
}

/// Size of the canonical bytes of the record at `index`, read back from the node that
/// notarized it (waiting briefly for a follower to apply it); `None` if it cannot be read.
async fn record_size(profile: &Profile, index: u64) -> Option<usize> {
    let mut notary = NotaryClient::new(profile.connect().await.ok()?);
    for _ in 0..20 {
        match notary
            .get_log_entry(GetLogEntryRequest { log_index: index })
            .await
        {
            Ok(r) => return Some(r.into_inner().record.len()),
            Err(s) if s.code() == tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_round_trip_and_unknown_ones_are_listed() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()), Ok(w));
        }
        let e = Workload::parse("audit").err().unwrap_or_default();
        assert!(e.contains("denied-read") && e.contains("etcd-put"), "{e}");
    }

    fn plan(workload: Workload, value_bytes: usize) -> BenchPlan {
        BenchPlan {
            workload,
            clients: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            dataset: String::new(),
            owner: String::new(),
            key: String::new(),
            purpose: String::new(),
            value_bytes,
            licenses: 1,
            batch: 1,
            node_pids: Vec::new(),
            label: String::new(),
        }
    }

    #[test]
    fn etcd_runs_need_the_etcd_workload_and_a_value_size() {
        let etcd = Target::Etcd(vec!["http://127.0.0.1:2379".into()]);
        assert!(check_plan(&etcd, &plan(Workload::EtcdPut, 300)).is_ok());
        let gateway = Target::Gateway(Vec::new());
        let mut none = plan(Workload::Verify, 0);
        none.licenses = 0;
        let e = check_plan(&gateway, &none).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("--licenses must be 1 to"));
        let e = check_plan(&etcd, &plan(Workload::EtcdPut, 0)).err();
        assert!(e.is_some_and(|e| e.to_string().contains("--value-size")));
        assert!(check_plan(&etcd, &plan(Workload::Read, 300)).is_err());
        let gw = Target::Gateway(Vec::new());
        assert!(check_plan(&gw, &plan(Workload::Read, 0)).is_err());
    }
}
