//! `qianlian bench`: drive a running gateway over real mutual TLS and report throughput and
//! latency percentiles. Each client has its own connection and waits for each answer (closed
//! loop), so the figures include the TLS stack, the policy decision and the Raft commit.

use std::time::{Duration, Instant};

use qianlian_proto::v1::exchange_client::ExchangeClient;
use qianlian_proto::v1::licenses_client::LicensesClient;
use qianlian_proto::v1::verify_license_request::Document;
use qianlian_proto::v1::{
    GetRecordRequest, IssueLicenseRequest, PutRecordRequest, RecordRef, VerifyLicenseRequest,
};

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
    /// IssueLicense (business license) by market-regulation: sign, notarize, prove.
    Issue,
    /// VerifyLicense of one QR payload: open, check signature, policy, state and proof.
    Verify,
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
    /// The first error seen, if any, to say what went wrong.
    pub first_error: Option<String>,
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
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first error: {e})")?;
        }
        Ok(())
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
    // The license every verify call checks, issued once before the clock starts.
    let qr = if plan.workload == Workload::Verify {
        let mut c = LicensesClient::new(profiles[0].connect().await?);
        let r = c
            .issue_license(issue_request(u64::MAX))
            .await
            .map_err(|s| anyhow::anyhow!("issuing the license to verify: {}", s.message()))?;
        r.into_inner().qr_payload
    } else {
        String::new()
    };
    let mut tasks = Vec::new();
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    for client_no in 0..plan.clients.max(1) {
        let channel = profiles[client_no % profiles.len()].connect().await?;
        let plan = plan.clone();
        let qr = qr.clone();
        tasks.push(tokio::spawn(async move {
            let mut lic = LicensesClient::new(channel.clone());
            let mut c = ExchangeClient::new(channel);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error: Option<String> = None;
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
                    Workload::Issue => lic
                        .issue_license(issue_request(((client_no as u64) << 32) | n))
                        .await
                        .map(|_| ()),
                    Workload::Verify => lic
                        .verify_license(VerifyLicenseRequest {
                            document: Some(Document::Qr(qr.clone())),
                        })
                        .await
                        .and_then(|r| {
                            if r.get_ref().verdict == "genuine" {
                                Ok(())
                            } else {
                                Err(tonic::Status::internal(r.into_inner().reason))
                            }
                        }),
                };
                if t0 >= measure_from {
                    match r {
                        // A notarized refusal is a served request too.
                        Ok(_) => lat.push(t0.elapsed()),
                        Err(s) if s.code() == tonic::Code::PermissionDenied => {
                            lat.push(t0.elapsed())
                        }
                        Err(s) => {
                            errors += 1;
                            first_error
                                .get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                        }
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, f) = t.await?;
        all.extend(l);
        errors += e;
        first_error = first_error.or(f);
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
        first_error,
    })
}
