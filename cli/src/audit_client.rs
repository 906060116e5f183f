//! `qianlian audit`: the inspector's and the data subject's side of the audit trail.
//!
//! - `query`: filter the access trail, page through it, print a table, JSON lines, CSV or JSON;
//! - `mine`: a data subject's own accesses, with a bearer token, no client certificate;
//! - `export`: an evidence bundle for a query; `check`: verify one offline (verifier only);
//! - `verify`: stream the whole log and check it against cosigned checkpoints ([`verify`]).

pub mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use qianlian_proto::v1::audit_client::AuditClient;
use qianlian_proto::v1::{
    AccessFilter, ExportEvidenceRequest, MyAccessesRequest, QueryAccessesRequest,
};
use qianlian_raft_store::record::{Decision, Record, Side};
use tonic::metadata::MetadataValue;

use crate::client::describe_status;
use crate::profile::Profile;

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line: log index, record hash, the decoded record.
    JsonLines,
    /// One row per record with a header, for spreadsheets.
    Csv,
    /// One JSON array.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> anyhow::Result<Format> {
        match s {
            "table" => Ok(Format::Table),
            "jsonl" | "json-lines" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => anyhow::bail!("--format {other}: use table, jsonl, csv or json"),
        }
    }
}

/// A time given on the command line: Unix milliseconds, or RFC 3339
/// (`2026-11-25T08:00:00Z`, `2026-11-25T16:00:00+08:00`).
pub fn parse_time(s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow::anyhow!(
                "`{s}` is neither Unix milliseconds nor an RFC 3339 time like 2026-11-25T08:00:00Z: {e}"
            )
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| anyhow::anyhow!("`{s}` is before 1970"))
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// One access record, flattened for tables and CSV.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    pub log_index: u64,
    pub record_hash: String,
    pub time_unix_ms: u64,
    pub time: String,
    pub side: String,
    pub consumer: String,
    pub provider: String,
    pub dataset: String,
    pub action: String,
    pub key: String,
    pub purpose: String,
    pub decision: String,
    pub policy_version: String,
    pub rule: String,
    pub disclosed_fields: String,
    pub result_count: u32,
    pub subjects: String,
    pub request_id: String,
    pub trace_id: String,
}

impl Row {
    /// The row of a decoded access record; other record kinds give the common columns only.
    pub fn of(log_index: u64, record_hash: &[u8], record: &Record) -> Row {
        let mut row = Row {
            log_index,
            record_hash: hex::encode(record_hash),
            time_unix_ms: record.time_unix_ms(),
            time: rfc3339(record.time_unix_ms()),
            ..Row::default()
        };
        let decision = |d: Decision| match d {
            Decision::Allow => "allow".to_owned(),
            Decision::Deny => "deny".to_owned(),
        };
        match record.content() {
            Record::Exchange(x) => {
                row.side = match x.side {
                    Side::Provider => "provider".into(),
                    Side::Consumer => "consumer".into(),
                };
                row.consumer = x.caller.department.clone();
                row.provider = x.owner.clone();
                row.dataset = x.dataset.clone();
                row.action = x.action.as_str().into();
                row.key = x.key.clone();
                row.purpose = x.purpose.clone();
                row.decision = decision(x.decision);
                row.policy_version = x.policy_version.to_string();
                row.rule = x.rule.clone();
                row.disclosed_fields = x.disclosed_fields.join("|");
                row.result_count = x.result_count;
                row.subjects = x
                    .subjects
                    .iter()
                    .map(|s| hex::encode(s.0))
                    .collect::<Vec<_>>()
                    .join("|");
                row.request_id = x.request_id.clone();
                row.trace_id = x.trace_id.clone();
            }
            Record::Access(a) => {
                row.consumer = a.caller.department.clone();
                row.provider = a.owner.clone();
                row.dataset = a.dataset.clone();
                row.action = a.action.as_str().into();
                row.key = a.key.clone();
                row.purpose = a.purpose.clone();
                row.decision = decision(a.decision);
                row.policy_version = a.policy_version.clone();
                row.rule = a.rule.clone();
                row.request_id = a.request_id.clone();
            }
            _ => {}
        }
        row
    }
}

/// CSV column names, in [`Row`]'s order (written even when no record matched).
const CSV_HEADER: [&str; 19] = [
    "log_index",
    "record_hash",
    "time_unix_ms",
    "time",
    "side",
    "consumer",
    "provider",
    "dataset",
    "action",
    "key",
    "purpose",
    "decision",
    "policy_version",
    "rule",
    "disclosed_fields",
    "result_count",
    "subjects",
    "request_id",
    "trace_id",
];

enum Sink {
    Plain(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

/// Writes records in one [`Format`] as they arrive.
#[allow(missing_debug_implementations)]
pub struct Writer {
    format: Format,
    sink: Sink,
    written: u64,
}

impl Writer {
    pub fn new(format: Format, out: Box<dyn Write>) -> Writer {
        let sink = match format {
            Format::Csv => Sink::Csv(Box::new(
                csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out),
            )),
            _ => Sink::Plain(out),
        };
        Writer {
            format,
            sink,
            written: 0,
        }
    }

    /// Write one record.
    pub fn record(&mut self, log_index: u64, hash: &[u8], record: &Record) -> anyhow::Result<()> {
        let row = Row::of(log_index, hash, record);
        let first = self.written == 0;
        match (&mut self.sink, self.format) {
            (Sink::Csv(w), _) => {
                if first {
                    w.write_record(CSV_HEADER)?;
                }
                w.serialize(&row)?;
            }
            (Sink::Plain(out), Format::JsonLines | Format::Json) => {
                let v = serde_json::json!({
                    "log_index": log_index,
                    "record_hash": hex::encode(hash),
                    "record": record,
                });
                if self.format == Format::Json {
                    write!(out, "{}", if first { "[\n" } else { ",\n" })?;
                    write!(out, "{}", serde_json::to_string(&v)?)?;
                } else {
                    writeln!(out, "{}", serde_json::to_string(&v)?)?;
                }
            }
            (Sink::Plain(out), _) => {
                if first {
                    writeln!(
                        out,
                        "{:>8}  {:<25}  {:<8}  {:<20}  {:<44}  {:<6}  {:<24}  {:<16}  {:<5}  {:>3}",
                        "INDEX",
                        "TIME",
                        "SIDE",
                        "CONSUMER",
                        "PROVIDER/DATASET",
                        "ACTION",
                        "KEY",
                        "PURPOSE",
                        "DEC",
                        "POL"
                    )?;
                }
                let key: String = row.key.chars().take(24).collect();
                writeln!(
                    out,
                    "{:>8}  {:<25}  {:<8}  {:<20}  {:<44}  {:<6}  {:<24}  {:<16}  {:<5}  {:>3}",
                    row.log_index,
                    row.time,
                    row.side,
                    row.consumer,
                    format!("{}/{}", row.provider, row.dataset),
                    row.action,
                    key,
                    row.purpose,
                    row.decision,
                    row.policy_version
                )?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Close the output (the JSON array, the CSV buffer); returns the number of records.
    pub fn finish(self) -> anyhow::Result<u64> {
        match self.sink {
            Sink::Csv(mut w) => {
                if self.written == 0 {
                    w.write_record(CSV_HEADER)?;
                }
                w.flush()?;
            }
            Sink::Plain(mut out) => {
                if self.format == Format::Json {
                    writeln!(out, "{}", if self.written == 0 { "[]" } else { "\n]" })?;
                }
                out.flush()?;
            }
        }
        Ok(self.written)
    }
}

/// Where results go: a file, or standard output.
pub fn output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

/// What `audit query` asks.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    pub filter: AccessFilter,
    pub oldest_first: bool,
    /// Records to print in all (0: every match).
    pub max: u64,
    /// Records per call.
    pub page_size: u32,
    /// Start from this cursor (a `next cursor` printed by an earlier run).
    pub cursor: String,
    pub format: Format,
    pub out: Option<PathBuf>,
}

/// `audit query`: page through the matches, writing each record as it comes.
pub async fn query(profile: &Profile, plan: QueryPlan) -> anyhow::Result<()> {
    let mut c =
        AuditClient::new(profile.connect().await?).max_decoding_message_size(64 * 1024 * 1024);
    let mut w = Writer::new(plan.format, output(plan.out.as_deref())?);
    let mut cursor = plan.cursor.clone();
    let mut printed = 0u64;
    let mut tree_size;
    loop {
        let want = if plan.max == 0 {
            plan.page_size
        } else {
            plan.page_size.min((plan.max - printed) as u32)
        };
        let r = c
            .query_accesses(QueryAccessesRequest {
                filter: Some(plan.filter.clone()),
                oldest_first: plan.oldest_first,
                limit: want,
                cursor: cursor.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
            .into_inner();
        tree_size = r.tree_size;
        for e in &r.entries {
            let receipt = e.receipt.clone().unwrap_or_default();
            let record = Record::decode(&e.record).map_err(|err| {
                anyhow::anyhow!("log index {}: undecodable record: {err}", receipt.log_index)
            })?;
            w.record(receipt.log_index, &receipt.record_hash, &record)?;
            printed += 1;
        }
        cursor = r.next_cursor;
        if cursor.is_empty() || (plan.max != 0 && printed >= plan.max) {
            break;
        }
    }
    w.finish()?;
    let more = if cursor.is_empty() {
        String::new()
    } else {
        format!("; more with --cursor {cursor}")
    };
    eprintln!("{printed} records (log size {tree_size}){more}");
    Ok(())
}

/// `audit mine`: the accesses to data about the token's subject, newest first.
pub async fn mine(profile: &Profile, token: &str, max: u64, format: Format) -> anyhow::Result<()> {
    let mut c = AuditClient::new(profile.connect().await?);
    let auth: MetadataValue<_> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
    let mut cursor = String::new();
    let mut printed = 0u64;
    let mut out = output(None)?;
    if format == Format::Table {
        writeln!(
            out,
            "{:>8}  {:<25}  {:<20}  {:<44}  {:<6}  {:<16}  {:<5}  FIELDS",
            "INDEX", "TIME", "DEPARTMENT", "FROM", "ACTION", "PURPOSE", "DEC"
        )?;
    }
    loop {
        let mut req = tonic::Request::new(MyAccessesRequest {
            limit: 100,
            cursor: cursor.clone(),
        });
        req.metadata_mut().insert("authorization", auth.clone());
        let r = c
            .my_accesses(req)
            .await
            .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
            .into_inner();
        for a in &r.accesses {
            if format == Format::Table {
                writeln!(
                    out,
                    "{:>8}  {:<25}  {:<20}  {:<44}  {:<6}  {:<16}  {:<5}  {}",
                    a.log_index,
                    rfc3339(a.time_unix_ms),
                    a.consumer,
                    format!("{}/{}", a.provider, a.dataset),
                    a.action,
                    a.purpose,
                    a.decision,
                    a.fields.join(",")
                )?;
            } else {
                writeln!(out, "{}", qianlian_gateway::services::audit::access_json(a))?;
            }
            printed += 1;
        }
        cursor = r.next_cursor;
        if cursor.is_empty() || (max != 0 && printed >= max) {
            break;
        }
    }
    out.flush()?;
    eprintln!("{printed} accesses to data about you");
    Ok(())
}

/// `audit export`: fetch an evidence bundle for a query and write it to `out`.
pub async fn export(
    profile: &Profile,
    filter: AccessFilter,
    max_records: u32,
    out: &Path,
) -> anyhow::Result<()> {
    let mut c = AuditClient::new(profile.connect().await?)
        .max_decoding_message_size(qianlian_gateway::services::audit::evidence::MAX_BUNDLE_BYTES);
    let r = c
        .export_evidence(ExportEvidenceRequest {
            filter: Some(filter),
            max_records,
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe_status(&s)))?
        .into_inner();
    std::fs::write(out, r.bundle_json.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!(
        "wrote {}: {} records proven against the cosigned checkpoint of tree size {}; check it with `qianlian audit check {}`",
        out.display(),
        r.records,
        r.tree_size,
        out.display()
    );
    Ok(())
}
