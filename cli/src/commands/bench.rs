//! `qianlian bench`: closed-loop load against a running gateway, or etcd for comparison.

use std::path::PathBuf;

use clap::Args;
use qianlian_cli::bench::{self, OutFormat, Target, Workload};
use qianlian_cli::profile::{DEFAULT_DEV_DIR, Profile};
use qianlian_gateway::domain::samples::samples;

/// Measure a running gateway (or etcd, for comparison): closed-loop load over mutual TLS,
/// throughput, latency percentiles, errors and CPU time.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub who: Who,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds measured, after the warm-up (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of warm-up, not measured (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, default_value = "enterprise-registration")]
    pub dataset: String,
    /// Record key to read; default: the first dev sample.
    #[arg(long)]
    pub key: Option<String>,
    /// Declared purpose; default: permit-review for read, marketing (no rule grants it)
    /// for denied-read.
    #[arg(long)]
    pub purpose: Option<String>,
    /// read (allowed GetRecord), denied-read (GetRecord refused and notarized), put
    /// (PutRecord, fresh keys), issue (IssueLicense), verify (VerifyLicense), audit-query
    /// (QueryAccesses, newest 100 by housing; needs --as audit-office), or etcd-put (etcd
    /// KV.Put, with --etcd); put and issue need --as market-regulation.
    #[arg(long, default_value = "read")]
    pub workload: String,
    /// etcd client URLs, comma-separated (e.g. http://127.0.0.1:2379): measure etcd puts
    /// instead of a gateway.
    #[arg(long)]
    pub etcd: Option<String>,
    /// etcd-put: bytes per value; use the record_bytes of a notarized run.
    #[arg(long, default_value_t = 0)]
    pub value_size: usize,
    /// verify: distinct licenses issued first and verified in turn (1: the same QR code
    /// every call).
    #[arg(long, default_value_t = 1)]
    pub licenses: usize,
    /// verify: documents per call; above 1, each call is one VerifyLicenses with this many
    /// documents (up to 1000) and every document counts as one request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A process whose CPU time is reported as the nodes' (the gateway or etcd); repeatable.
    #[arg(long = "node-pid")]
    pub node_pids: Vec<u32>,
    /// Name of the setup in the outputs, e.g. qianlian-3.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also write the figures to this file: .csv (row appended), .json (replaced) or .jsonl
    /// (line appended).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Format of --out when its extension does not say: csv, json or jsonl.
    #[arg(long)]
    pub format: Option<String>,
}

/// Who to connect as, for commands without a client subcommand.
#[derive(Args, Debug)]
pub struct Who {
    #[arg(long = "as", default_value = "housing")]
    pub as_name: String,
    #[arg(long, default_value = DEFAULT_DEV_DIR, env = "QIANLIAN_DEV_DIR")]
    pub dev_dir: PathBuf,
    #[arg(long, env = "QIANLIAN_ENDPOINT")]
    pub endpoint: Option<String>,
}

pub async fn exec(mut args: BenchArgs) -> anyhow::Result<()> {
    let workload = Workload::parse(&args.workload).map_err(anyhow::Error::msg)?;
    let out = output(args.out.take(), args.format.as_deref())?;
    let target = target(args.etcd.as_deref(), &args.who)?;
    let plan = plan(args, workload)?;
    let report = bench::run(&target, &plan).await?;
    println!("{} client(s): {report}", plan.clients);
    if let Some((path, format)) = out {
        report.write_to(&path, format)?;
    }
    Ok(())
}

/// Where `--out` goes and in which format: `--format`, else the file's extension.
fn output(
    out: Option<PathBuf>,
    format: Option<&str>,
) -> anyhow::Result<Option<(PathBuf, OutFormat)>> {
    let Some(path) = out else {
        return Ok(None);
    };
    let f = match format {
        Some(f) => OutFormat::parse(f),
        None => OutFormat::from_path(&path),
    }
    .map_err(anyhow::Error::msg)?;
    Ok(Some((path, f)))
}

/// etcd members with `--etcd`, else the gateway nodes of `--endpoint` (the dev node by default).
fn target(etcd: Option<&str>, who: &Who) -> anyhow::Result<Target> {
    Ok(match etcd {
        Some(list) => Target::Etcd(bench::etcd::parse_endpoints(list)?),
        // Several nodes: --endpoint https://a,https://b (clients spread over them).
        None => Target::Gateway(match &who.endpoint {
            Some(list) => list
                .split(',')
                .map(|e| Profile::dev(&who.dev_dir, &who.as_name, Some(e.trim().to_owned())))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![Profile::dev(&who.dev_dir, &who.as_name, None)?],
        }),
    })
}

/// The plan from the remaining arguments, with the defaults the workload implies.
fn plan(args: BenchArgs, workload: Workload) -> anyhow::Result<bench::BenchPlan> {
    let BenchArgs {
        clients,
        seconds,
        warmup,
        dataset,
        key,
        purpose,
        value_size,
        licenses,
        batch,
        node_pids,
        label,
        ..
    } = args;
    let owner = qianlian_gateway::domain::dataset::builtin(&dataset)
        .map(|(owner, _)| owner)
        .ok_or_else(|| anyhow::anyhow!("unknown dataset `{dataset}`"))?;
    let key = key.unwrap_or_else(|| samples()[0].2.clone());
    let purpose = purpose.unwrap_or_else(|| {
        if workload == Workload::DeniedRead {
            "marketing".into()
        } else {
            "permit-review".into()
        }
    });
    Ok(bench::BenchPlan {
        workload,
        clients,
        warmup: duration("warmup", warmup)?,
        duration: duration("seconds", seconds)?,
        dataset,
        owner: owner.to_owned(),
        key,
        purpose,
        value_bytes: value_size,
        licenses,
        batch,
        node_pids,
        label,
    })
}

/// The duration of `--NAME SECONDS`.
fn duration(name: &str, seconds: f64) -> anyhow::Result<std::time::Duration> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(std::time::Duration::from_secs_f64(seconds))
    } else {
        Err(anyhow::anyhow!(
            "--{name} must be a number of seconds ≥ 0, not {seconds}"
        ))
    }
}
