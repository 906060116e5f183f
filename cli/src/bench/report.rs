//! What one load-generator run measured, and how it is written: a line for people, CSV and JSON
//! for scripts. Also the CPU accounting of the generator and of the nodes under test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// Measured figures of one run (one workload, one client count, one setup).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    /// Free text naming the setup, e.g. `qianlian-3` or `etcd-1`; empty if not given.
    pub label: String,
    pub workload: String,
    pub clients: usize,
    /// Measured seconds (warm-up excluded).
    pub seconds: f64,
    /// Calls answered as the workload expects: `ok + denied`.
    pub requests: usize,
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls refused by policy with a notarized refusal (the denied-read workload).
    pub denied: usize,
    /// Calls that failed, or were answered otherwise than the workload expects.
    pub errors: usize,
    /// Failed calls by gRPC code (or `Unexpected` for an answer the workload did not expect).
    pub error_kinds: BTreeMap<String, usize>,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// `requests / seconds`.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU seconds (user + system) the load generator used while measuring; `None` without
    /// `/proc`.
    pub generator_cpu_s: Option<f64>,
    /// CPU seconds (user + system) the `--node-pid` processes used while measuring, summed;
    /// `None` if no node was named.
    pub nodes_cpu_s: Option<f64>,
    /// Size in bytes of one notarized record of this run (read back from the log); `None` for
    /// workloads without one, or if it could not be read.
    pub record_bytes: Option<usize>,
    /// Size in bytes of each value written (etcd-put).
    pub value_bytes: Option<usize>,
}

/// Latency percentiles of `latencies` (sorted in place) into `report`.
pub(super) fn fill_percentiles(report: &mut BenchReport, latencies: &mut [Duration]) {
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or_default()
    };
    report.p50_ms = ms(pick(0.50));
    report.p90_ms = ms(pick(0.90));
    report.p99_ms = ms(pick(0.99));
    report.max_ms = ms(latencies.last().copied().unwrap_or_default());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s = {:.0} req/s",
            self.requests, self.seconds, self.throughput
        )?;
        if self.denied > 0 {
            write!(f, " ({} notarized refusals)", self.denied)?;
        }
        write!(
            f,
            ", {} errors; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.errors, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )?;
        if let Some(g) = self.generator_cpu_s {
            write!(f, "; cpu: generator {g:.2} s")?;
            if let Some(n) = self.nodes_cpu_s {
                write!(f, ", nodes {n:.2} s")?;
            }
        }
        if let Some(e) = &self.first_error {
            write!(f, " (first error: {e})")?;
        }
        Ok(())
    }
}

/// How `--out` writes a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// One row per run, appended; the header is written when the file is new or empty.
    Csv,
    /// One JSON object; the file is replaced.
    Json,
    /// One JSON object per line, appended.
    JsonLines,
}

impl OutFormat {
    /// `csv`, `json` or `jsonl`.
    pub fn parse(name: &str) -> Result<OutFormat, String> {
        match name {
            "csv" => Ok(OutFormat::Csv),
            "json" => Ok(OutFormat::Json),
            "jsonl" => Ok(OutFormat::JsonLines),
            other => Err(format!(
                "unknown output format `{other}`: use csv, json or jsonl"
            )),
        }
    }

    /// The format named by `path`'s extension.
    pub fn from_path(path: &Path) -> Result<OutFormat, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        OutFormat::parse(ext).map_err(|_| {
            format!(
                "cannot tell the format of {} from its extension: name it .csv, .json or .jsonl, or pass --format",
                path.display()
            )
        })
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "label,workload,clients,seconds,requests,ok,denied,errors,throughput,p50_ms,p90_ms,p99_ms,max_ms,generator_cpu_s,nodes_cpu_s,record_bytes,value_bytes,error_kinds,first_error";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl BenchReport {
    /// One CSV row matching [`CSV_HEADER`] (no line end).
    pub fn csv_row(&self) -> String {
        let kinds: Vec<String> = self
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        [
            csv_field(&self.label),
            csv_field(&self.workload),
            self.clients.to_string(),
            format!("{:.3}", self.seconds),
            self.requests.to_string(),
            self.ok.to_string(),
            self.denied.to_string(),
            self.errors.to_string(),
            format!("{:.1}", self.throughput),
            format!("{:.3}", self.p50_ms),
            format!("{:.3}", self.p90_ms),
            format!("{:.3}", self.p99_ms),
            format!("{:.3}", self.max_ms),
            opt(self.generator_cpu_s.map(|v| format!("{v:.3}"))),
            opt(self.nodes_cpu_s.map(|v| format!("{v:.3}"))),
            opt(self.record_bytes),
            opt(self.value_bytes),
            csv_field(&kinds.join(";")),
            csv_field(self.first_error.as_deref().unwrap_or("")),
        ]
        .join(",")
    }

    /// Write this report to `path` in `format` (see [`OutFormat`] for append or replace).
    pub fn write_to(&self, path: &Path, format: OutFormat) -> anyhow::Result<()> {
        let fail = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
        match format {
            OutFormat::Json => {
                let mut text = serde_json::to_string_pretty(self)?;
                text.push('\n');
                std::fs::write(path, text).map_err(fail)
            }
            OutFormat::JsonLines | OutFormat::Csv => {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(fail)?;
                let mut text = String::new();
                if format == OutFormat::Csv {
                    if file.metadata().map_err(fail)?.len() == 0 {
                        text.push_str(CSV_HEADER);
                        text.push('\n');
                    }
                    text.push_str(&self.csv_row());
                } else {
                    text.push_str(&serde_json::to_string(self)?);
                }
                text.push('\n');
                file.write_all(text.as_bytes()).map_err(fail)
            }
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in USER_HZ, which is
/// 100 on every architecture it exports to user space.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, every thread) used so far by process `pid`, or by this process.
pub fn cpu_seconds(pid: Option<u32>) -> std::io::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_stat_cpu(&std::fs::read_to_string(&path)?).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path}: no utime and stime fields"),
        )
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (state) is the first after the name: utime is 11 further, stime 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU counters of the generator and the nodes, read at the start and the end of the measured
/// window.
#[derive(Debug, Clone)]
pub(super) struct CpuSample {
    generator: Option<f64>,
    nodes: Option<f64>,
}

impl CpuSample {
    /// Read every counter now. A node that has exited fails the sample: its figure would be
    /// meaningless.
    pub(super) fn take(node_pids: &[u32]) -> anyhow::Result<CpuSample> {
        let generator = cpu_seconds(None).ok();
        let nodes = if node_pids.is_empty() {
            None
        } else {
            let mut sum = 0.0;
            for pid in node_pids {
                sum += cpu_seconds(Some(*pid)).map_err(|e| {
                    anyhow::anyhow!("cannot read the CPU time of node process {pid}: {e}")
                })?;
            }
            Some(sum)
        };
        Ok(CpuSample { generator, nodes })
    }

    /// CPU seconds used from `self` to `later`, per side.
    pub(super) fn until(&self, later: &CpuSample) -> (Option<f64>, Option<f64>) {
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        (
            d(self.generator, later.generator),
            d(self.nodes, later.nodes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (qian lian) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(line), Some(3.25));
        assert_eq!(parse_stat_cpu("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time_that_grows() -> std::io::Result<()> {
        let before = cpu_seconds(None)?;
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(None)? > before);
        Ok(())
    }

    #[test]
    fn csv_rows_match_the_header_and_quote_text() {
        let mut r = BenchReport {
            label: "qianlian-1".into(),
            workload: "denied-read".into(),
            clients: 4,
            seconds: 2.0,
            first_error: Some("Unavailable: no leader, \"retry\"".into()),
            ..BenchReport::default()
        };
        r.error_kinds.insert("Unavailable".into(), 2);
        let row = r.csv_row();
        assert!(row.starts_with("qianlian-1,denied-read,4,2.000,"));
        assert!(row.ends_with(",Unavailable=2,\"Unavailable: no leader, \"\"retry\"\"\""));
        let unquoted_commas = row.split('"').step_by(2).map(|s| s.matches(',').count());
        assert_eq!(
            unquoted_commas.sum::<usize>(),
            CSV_HEADER.matches(',').count()
        );
    }

    #[test]
    fn formats_follow_the_extension_or_refuse_with_a_hint() {
        assert_eq!(OutFormat::from_path(Path::new("a.csv")), Ok(OutFormat::Csv));
        assert_eq!(
            OutFormat::from_path(Path::new("a.json")),
            Ok(OutFormat::Json)
        );
        let e = OutFormat::from_path(Path::new("a.txt"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("--format"), "{e}");
    }

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let mut r = BenchReport::default();
        let mut l: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        fill_percentiles(&mut r, &mut l);
        assert_eq!((r.p50_ms, r.p99_ms, r.max_ms), (51.0, 100.0, 100.0));
        fill_percentiles(&mut r, &mut []);
        assert_eq!(r.max_ms, 0.0);
    }
}
