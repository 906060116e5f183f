//! `qianlian bench`: drive a running gateway over real mutual TLS and report throughput and
//! latency percentiles. Each client has its own connection and waits for each answer (closed
//! loop), so the figures include the TLS stack, the policy decision and the Raft commit.

use std::time::{Duration, Instant};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::{GetRecordRequest, RecordRef};

use crate::client::Profile;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
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

/// Run notarized reads (allowed or denied, as the plan's purpose makes them) against `profile`.
pub async fn reads(profile: &Profile, plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    let mut tasks = Vec::new();
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    for _ in 0..plan.clients.max(1) {
        let channel = profile.connect().await?;
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ExchangeClient::new(channel);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = c
                    .get_record(GetRecordRequest {
                        record: Some(RecordRef {
                            department: plan.owner.clone(),
                            dataset: plan.dataset.clone(),
                            key: plan.key.clone(),
                        }),
                        purpose: plan.purpose.clone(),
                    })
                    .await;
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
