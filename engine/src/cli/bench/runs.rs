//! `engine bench runs`: run queries on a journal of N generated runs, each filtered list read
//! through the indexes and, in the same run, by the unindexed scan it replaced (every run
//! newest first, decoded and matched until the page is full), reported side by side.
//!
//! The runs are written straight into a temporary sled journal (no NATS), with a fixed mix:
//! 10 workflows (`ping` 50 %, `sync_team` 30 %, six others 2.5 % each, `audit` 0.1 %, taken
//! from the others' share), statuses succeeded ~98.85 %, failed 1 %, running 0.1 %, retrying
//! 0.05 %, and 10,000 keys (`team-0` … `team-9999`, 100 runs each), created 10 ms apart.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::output;
use crate::journal::sled::{self, SledJournal};
use crate::journal::{
    AttemptRecord, Durability, Journal, JournaledRun, RunFilter, RunRecord, RunStatus, StepRecord,
    StepStatus, TriggerRecord,
};

/// Times each indexed query is run; the median is reported.
const INDEXED_REPEATS: usize = 7;
/// Tasks writing the generated runs.
const WRITERS: usize = 4;
/// Distinct run keys (teams).
const KEYS: usize = 10_000;

#[derive(Debug, Args)]
pub struct RunsBenchArgs {
    /// Runs to journal before querying.
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: usize,
    /// MiB of sled's page cache, as `runtime.journal-cache-mib`.
    #[arg(long, default_value_t = sled::DEFAULT_CACHE_MIB)]
    pub cache_mib: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: usize,
    write_seconds: f64,
    cache_mib: u64,
    journal_bytes: u64,
    journal_bytes_per_run: f64,
    /// The process's resident memory once the runs are journaled (and flushed).
    rss_after_write_mib: f64,
    /// Its resident memory once the queries (and the full scans) are made too.
    rss_mib: f64,
    /// Its peak resident memory.
    peak_rss_mib: f64,
    queries: Vec<QueryReport>,
}

#[derive(Debug, Serialize)]
struct QueryReport {
    query: String,
    /// Runs the page answered.
    listed: usize,
    /// Median of the indexed list.
    indexed_ms: f64,
    /// One unindexed scan.
    scan_ms: f64,
    /// `scan_ms / indexed_ms`.
    speedup: f64,
}

fn workflow(i: usize) -> &'static str {
    const OTHERS: [&str; 6] =
        ["purge_team", "rotate_keys", "notify", "archive", "provision", "audit_export"];
    if i % 1000 == 999 {
        return "audit";
    }
    match i % 40 {
        0..20 => "ping",
        20..32 => "sync_team",
        n => OTHERS[(n - 32) % OTHERS.len()],
    }
}

fn status(i: usize) -> RunStatus {
    match (i % 100, i % 1000, i % 2000) {
        (7, _, _) => RunStatus::Failed,
        (_, 3, _) => RunStatus::Running,
        (_, _, 5) => RunStatus::Retrying,
        _ => RunStatus::Succeeded,
    }
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`) in MiB; 0 where there is none.
pub(super) fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Run `i` of the generated journal: a ping-sized record (trigger event, one attempt, output,
/// the three steps of a ping for a finished run).
fn generated(i: usize, start: chrono::DateTime<Utc>) -> JournaledRun {
    let run = generated_run(i, start);
    let steps = match run.finished_at {
        Some(finished) => ["receive", "echo", "reply"]
            .iter()
            .zip(0..)
            .map(|(name, index)| StepRecord {
                run_id: run.id.clone(),
                index,
                name: (*name).into(),
                status: StepStatus::Succeeded,
                attempts: 1,
                output: Some(serde_json::json!({ "n": i })),
                error: None,
                started_at: run.created_at,
                finished_at: Some(finished),
                duration_ms: Some(0),
            })
            .collect(),
        None => Vec::new(),
    };
    JournaledRun { run, steps }
}

fn generated_run(i: usize, start: chrono::DateTime<Utc>) -> RunRecord {
    let created = start + chrono::Duration::milliseconds(10 * i as i64);
    let workflow = workflow(i);
    let key = format!("team-{}", i % KEYS);
    let status = status(i);
    let finished = status.is_finished().then_some(created + chrono::Duration::milliseconds(3));
    let trigger = TriggerRecord {
        event: serde_json::json!({
            "specversion": "1.0", "id": format!("ev-{i}"), "source": "/bench",
            "type": format!("muster.{workflow}"), "subject": key,
            "time": created.to_rfc3339(), "data": { "n": i },
        }),
        nats_subject: format!("muster.events.muster.{workflow}.{key}"),
        stream_sequence: i as u64 + 1,
    };
    RunRecord {
        status,
        attempts: 1,
        updated_at: finished.unwrap_or(created),
        finished_at: finished,
        output: finished.map(|_| serde_json::json!({ "pong": i })),
        error: (status == RunStatus::Failed).then(|| crate::journal::ErrorRecord {
            kind: "permanent".into(),
            message: "bench failure".into(),
        }),
        history: vec![AttemptRecord {
            attempt: 1,
            started_at: created,
            finished_at: finished,
            outcome: status.is_finished().then_some(status),
            error: None,
            retry_delay_ms: None,
        }],
        ..RunRecord::new(format!("{workflow}-{i:016x}"), workflow, key, trigger, created)
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn bench(args: RunsBenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let scratch = tempfile::tempdir()?;
    let db = sled::sled_config(&scratch.path().join("journal"), args.cache_mib).open()?;
    let journal = SledJournal::with_db(db)?;
    let start = Utc::now() - chrono::Duration::milliseconds(10 * args.runs as i64);
    if !args.json {
        eprintln!("journaling {} runs in {}", args.runs, scratch.path().display());
    }
    let began = Instant::now();
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let journal = journal.clone();
        let runs = args.runs;
        writers.spawn(async move {
            for i in (writer..runs).step_by(WRITERS) {
                journal.put(&generated(i, start), Durability::Lazy).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    journal.db().flush_async().await?;
    let write_seconds = began.elapsed().as_secs_f64();
    let rss_after_write_mib = memory_mib("VmRSS");

    let team = format!("team-{}", KEYS / 2 + 42);
    let filter =
        |workflow: Option<&str>, status: Option<RunStatus>, key: Option<&str>, limit| RunFilter {
            workflow: workflow.map(Into::into),
            status,
            key: key.map(Into::into),
            limit: Some(limit),
            ..RunFilter::default()
        };
    let queries = [
        ("newest (no filter)", filter(None, None, None, 100)),
        ("workflow=sync_team (30%)", filter(Some("sync_team"), None, None, 100)),
        ("workflow=audit (0.1%)", filter(Some("audit"), None, None, 100)),
        ("status=failed (1%)", filter(None, Some(RunStatus::Failed), None, 100)),
        ("status=running (0.1%)", filter(None, Some(RunStatus::Running), None, 100)),
        (&*format!("key={team} (CLI, limit 50)"), filter(None, None, Some(&team), 50)),
        (&*format!("team {team}'s runs (API, limit 100)"), filter(None, None, Some(&team), 100)),
        ("workflow=ping,status=failed", filter(Some("ping"), Some(RunStatus::Failed), None, 100)),
        (&*format!("workflow=ping,key={team}"), filter(Some("ping"), None, Some(&team), 100)),
        ("key=no-such-team (empty)", filter(None, None, Some("no-such-team"), 100)),
    ]
    .map(|(name, filter)| (name.to_owned(), filter));

    let mut reports = Vec::new();
    for (query, filter) in queries {
        let mut times = Vec::with_capacity(INDEXED_REPEATS);
        let mut listed = 0;
        for _ in 0..INDEXED_REPEATS {
            let began = Instant::now();
            listed = journal.list_runs(&filter).await?.items.len();
            times.push(began.elapsed());
        }
        times.sort_unstable();
        let indexed = millis(times[times.len() / 2]);
        let scanner = journal.clone();
        let scan_filter = filter.clone();
        let (scanned, took) = tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let scanned = scanner.list_runs_by_scan(&scan_filter).map(|runs| runs.len());
            (scanned, began.elapsed())
        })
        .await?;
        anyhow::ensure!(scanned? == listed, "{query}: the scan and the index disagree");
        let scan = millis(took);
        if !args.json {
            eprintln!("{query}: indexed {indexed:.2} ms, scan {scan:.1} ms");
        }
        reports.push(QueryReport {
            query,
            listed,
            indexed_ms: indexed,
            scan_ms: scan,
            speedup: scan / indexed.max(f64::EPSILON),
        });
    }
    let journal_bytes = journal.db().size_on_disk()?;
    let report = Report {
        runs: args.runs,
        write_seconds,
        cache_mib: args.cache_mib,
        journal_bytes,
        journal_bytes_per_run: journal_bytes as f64 / args.runs as f64,
        rss_after_write_mib,
        rss_mib: memory_mib("VmRSS"),
        peak_rss_mib: memory_mib("VmHWM"),
        queries: reports,
    };
    if args.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn print_report(report: &Report) {
    println!(
        "{} runs journaled in {:.1} s ({:.0} MiB on disk, {:.0} bytes per run)",
        report.runs,
        report.write_seconds,
        report.journal_bytes as f64 / (1024.0 * 1024.0),
        report.journal_bytes_per_run,
    );
    println!(
        "memory: {:.0} MiB resident after writing, {:.0} MiB after the queries, {:.0} MiB at the \
         peak (page cache {} MiB)\n",
        report.rss_after_write_mib, report.rss_mib, report.peak_rss_mib, report.cache_mib
    );
    let rows: Vec<Vec<String>> = report
        .queries
        .iter()
        .map(|q| {
            vec![
                q.query.clone(),
                q.listed.to_string(),
                format!("{:.2}", q.indexed_ms),
                format!("{:.1}", q.scan_ms),
                format!("{:.0}x", q.speedup),
            ]
        })
        .collect();
    output::table(&["QUERY", "LISTED", "INDEXED MS", "SCAN MS", "SCAN/INDEXED"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's record of a finished ping (trigger event, one attempt, output, three steps)
    /// against the JSON records it replaced (one for the run, one per step).
    #[test]
    fn a_ping_record_is_a_fraction_of_its_json() {
        let journaled = generated(0, Utc::now());
        assert_eq!(journaled.steps.len(), 3);
        let binary = crate::journal::record::encode(&journaled).len();
        let json = serde_json::to_vec(&journaled.run).unwrap().len()
            + journaled.steps.iter().map(|s| serde_json::to_vec(s).unwrap().len()).sum::<usize>();
        eprintln!("binary {binary} bytes, JSON {json} bytes");
        assert!(binary < 700, "{binary} bytes");
        assert!(binary * 3 < json, "binary {binary}, JSON {json}");
    }
}
