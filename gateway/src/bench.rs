//! `qianlian bench`: drive a running gateway over real mutual TLS and report throughput and
//! latency percentiles. Each client has its own connection and waits for each answer (closed
//! loop), so the figures include the TLS stack, the policy decision and the Raft commit.

use std::time::{Duration, Instant};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, PutRecordRequest, RecordRef};

use crate::client::Profile;
use crate::identifier::UnifiedSocialCreditCode;

/// Which call each client repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// GetRecord for a declared purpose (allowed or denied, as the policy says): one notarized
    /// access record per call.
    Read,
    /// PutRecord by the owner with a fresh key each time: one notarized access record and one
    /// record-store write per call.
    Put,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub workload: Workload,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub dataset: String,
    pub owner: String,
    pub key: String,
    pub purpose: String,
}

/// Measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s = {:.0} req/s, {} errors; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.requests,
            self.seconds,
            self.requests as f64 / self.seconds,
            self.errors,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run the plan's workload against `profile` (closed loop, one connection per client).
///
/// Clients are spread round-robin over `profiles` (one per node for a cluster).
pub async fn run(profiles: &[Profile], plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(!profiles.is_empty(), "no endpoint to measure");
    let mut tasks = Vec::new();
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    for client_no in 0..plan.clients.max(1) {
        let channel = profiles[client_no % profiles.len()].connect().await?;
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ExchangeClient::new(channel);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut n: u64 = 0;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                n += 1;
                let r = match plan.workload {
                    Workload::Read => c
                        .get_record(GetRecordRequest {
                            record: Some(RecordRef {
                                department: plan.owner.clone(),
                                dataset: plan.dataset.clone(),
                                key: plan.key.clone(),
                            }),
                            purpose: plan.purpose.clone(),
                        })
                        .await
                        .map(|_| ()),
                    Workload::Put => {
                        // Distinct keys per client and call: 2^20 calls per client before reuse.
                        let i = ((client_no as u64) << 20) | (n & 0xF_FFFF);
                        c.put_record(PutRecordRequest {
                            record: Some(RecordRef {
                                department: "market-regulation".into(),
                                dataset: "enterprise-registration".into(),
                                key: UnifiedSocialCreditCode::generate(1_000_000 + i)
                                    .as_str()
                                    .to_owned(),
                            }),
                            payload: format!(r#"{{"name":"bench {i}","status":"存续"}}"#)
                                .into_bytes(),
                        })
                        .await
                        .map(|_| ())
                    }
                };
                if t0 >= measure_from {
                    match r {
                        // A notarized refusal is a served request too.
                        Ok(_) => lat.push(t0.elapsed()),
                        Err(s) if s.code() == tonic::Code::PermissionDenied => {
                            lat.push(t0.elapsed())
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchReport {
        requests: all.len(),
        errors,
        seconds: plan.duration.as_secs_f64(),
        p50: pick(0.50),
        p90: pick(0.90),
        p99: pick(0.99),
        max: all.last().copied().unwrap_or_default(),
    })
}
