//! `engine runs list|show|fail`: the journal, asked of the running engine over NATS, or read
//! from the data dir when no engine runs.

use std::process::ExitCode;

use clap::Subcommand;

use workflows::sync_team::preview::{RunStep, run_lines};

use super::output;
use crate::bus::{self, Names, codec};
use crate::config::Config;
use crate::journal::sled::SledJournal;
use crate::journal::{
    FAILED_BY_OPERATOR, Journal, MAX_LIST_LIMIT, OperatorFailure, RunFilter, RunPage, RunRecord,
    StatusQuery, retention,
};
use crate::runtime::dlq::{self, DeadLetter};
use crate::runtime::service::{self, AskError, RunDetail};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        workflow: Option<String>,
        /// A status, or `stuck`: running or retrying while the run's message is gone from the
        /// events stream (aged out or purged), so nothing will drive it again; end those with
        /// `engine runs fail`.
        #[arg(long, value_enum)]
        status: Option<StatusQuery>,
        #[arg(long)]
        key: Option<String>,
        /// At most this many runs, 1 to 500 (page on with `--cursor`).
        #[arg(long, default_value_t = 50, value_parser = list_limit)]
        limit: usize,
        /// Continue a list: the cursor printed after its previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its attempts, steps, output and errors; for a sync_team run, also its
    /// changes (its plan in plan-only mode) in the form `engine teams plan` prints.
    Show {
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fail a stuck run (see `runs list --status stuck`): its journaled event goes to the DLQ
    /// with the reason and who did it, then the run is journaled as failed. Re-drive it later
    /// like any failed run: `engine dlq replay SEQ`.
    Fail {
        run_id: String,
        /// Why, recorded in the run's error and its dead letter.
        #[arg(long)]
        reason: String,
        /// Who fails it [default: $USER].
        #[arg(long)]
        by: Option<String>,
        /// Fail the run even though its message is still in the events stream (the engine may
        /// still be driving it).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn runs(config: Config, command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List { workflow, status, key, limit, cursor, json } => {
            let stuck_below = match status {
                Some(StatusQuery::Stuck) => Some(events_first_sequence(&config).await?),
                _ => None,
            };
            let status = status.and_then(StatusQuery::status);
            let filter =
                RunFilter { workflow, status, key, limit: Some(limit), after: cursor, stuck_below };
            let page = list(&config, &filter).await?;
            if json {
                output::json(&page.items)?;
            } else {
                print_runs(&page.items);
            }
            if let Some(cursor) = page.next_cursor {
                eprintln!("more runs: --cursor {cursor}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { run_id, json } => {
            let Some(detail) = show(&config, &run_id).await? else {
                eprintln!("error: no run {run_id:?}");
                return Ok(ExitCode::FAILURE);
            };
            if json {
                output::json(&detail)?;
            } else {
                print_detail(&detail);
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Fail { run_id, reason, by, force, json } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .filter(|by| !by.trim().is_empty())
                .unwrap_or_else(|| "unknown".into());
            let run = fail(&config, &run_id, &reason, &by, force).await?;
            if json {
                output::json(&run)?;
            } else {
                let seq = run.dlq_sequence.map_or("-".into(), |s| s.to_string());
                println!(
                    "run {} failed by {by}; dead letter {seq} (engine dlq replay {seq})",
                    run.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The events stream's first sequence: a run whose trigger is below it lost its message.
async fn events_first_sequence(config: &Config) -> anyhow::Result<u64> {
    let (_, js) = bus::connect(config)
        .await
        .map_err(|e| anyhow::anyhow!("finding stuck runs needs the events stream: {e}"))?;
    let names = Names::new(config.nats.prefix.clone());
    Ok(retention::first_sequence(&js, &names.events_stream()).await?)
}

/// Fails an unfinished run: its journaled event is dead-lettered first (so that it can be
/// re-driven), then the run is failed by the running engine, or in the journal when none runs.
/// Without `force`, only a stuck run.
async fn fail(
    config: &Config,
    id: &str,
    reason: &str,
    by: &str,
    force: bool,
) -> anyhow::Result<RunRecord> {
    let (client, js) = bus::connect(config).await?;
    let names = Names::new(config.nats.prefix.clone());
    let Some(RunDetail { run, .. }) = show(config, id).await? else {
        anyhow::bail!("no run {id:?}");
    };
    if run.status.is_finished() {
        anyhow::bail!("run {id:?} is {}; only running or retrying runs can be failed", run.status);
    }
    let first = retention::first_sequence(&js, &names.events_stream()).await?;
    if !force && !run.is_stuck(first) {
        anyhow::bail!(
            "run {id:?} is not stuck: its message (sequence {}) is still in {} (first sequence \
             {first}), so the engine may still drive it; --force fails it anyway",
            run.trigger.stream_sequence,
            names.events_stream(),
        );
    }
    let event: workflows::Event = serde_json::from_value(run.trigger.event.clone())
        .map_err(|e| anyhow::anyhow!("run {id:?}'s journaled trigger is not an event: {e}"))?;
    let (headers, body) = codec::encode(&event);
    let message = format!("{reason} (failed by {by})");
    let letter = DeadLetter {
        workflow: &run.workflow,
        run_id: Some(&run.id),
        key: Some(&run.key),
        subject: &run.trigger.nats_subject,
        stream_sequence: run.trigger.stream_sequence,
        delivered: 0,
        attempts: run.attempts,
        error_kind: FAILED_BY_OPERATOR,
        error: &message,
    };
    let published = dlq::dead_letter(&js, &names, Some(&headers), body, &letter).await?;
    let failure = OperatorFailure {
        run_id: run.id.clone(),
        reason: reason.to_owned(),
        by: by.to_owned(),
        dlq_sequence: Some(published.sequence),
    };
    match service::ask_fail(&client, &names, &failure).await {
        Err(AskError::NoEngine(_)) => {}
        result => return Ok(result?),
    }
    Ok(crate::journal::fail_run(&offline_journal(config)?, &failure).await?)
}

/// `--limit`: a page size the engine answers, else a clear error before anything is asked.
fn list_limit(value: &str) -> Result<usize, String> {
    let limit: usize = value.parse().map_err(|e| format!("{value:?} is not a number: {e}"))?;
    if (1..=MAX_LIST_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!(
            "{limit} is not between 1 and {MAX_LIST_LIMIT}; list more with --cursor, which each \
             page prints"
        ))
    }
}

/// A page of runs from the running engine, or from the journal when no engine answers. The
/// engine may answer fewer runs than the limit to fit a NATS reply: the rest is asked for with
/// its cursor, so the page holds `limit` runs when that many match.
pub async fn list(config: &Config, filter: &RunFilter) -> anyhow::Result<RunPage> {
    if let Ok((client, _)) = bus::connect(config).await {
        let names = Names::new(config.nats.prefix.clone());
        let limit = filter.checked_limit()?;
        let mut page = RunPage::default();
        let mut next = filter.clone();
        loop {
            next.limit = Some(limit - page.items.len());
            match service::ask_runs(&client, &names, &next).await {
                Err(AskError::NoEngine(_)) if page.items.is_empty() => break,
                Err(e) => return Err(e.into()),
                Ok(part) => {
                    page.items.extend(part.items);
                    page.next_cursor = part.next_cursor;
                }
            }
            match &page.next_cursor {
                Some(cursor) if page.items.len() < limit => next.after = Some(cursor.clone()),
                _ => return Ok(page),
            }
        }
    }
    Ok(offline_journal(config)?.list_runs(filter).await?)
}

/// One run from the running engine, or from the journal when no engine answers.
pub async fn show(config: &Config, id: &str) -> anyhow::Result<Option<RunDetail>> {
    if let Ok((client, _)) = bus::connect(config).await {
        match service::ask_run(&client, &Names::new(config.nats.prefix.clone()), id).await {
            Err(AskError::NoEngine(_)) => {}
            Err(AskError::Engine { code: 404, .. }) => return Ok(None),
            result => return Ok(Some(result?)),
        }
    }
    let journal = offline_journal(config)?;
    let Some(run) = journal.run(id).await? else { return Ok(None) };
    let steps = journal.steps(id).await?;
    Ok(Some(RunDetail { run, steps }))
}

fn offline_journal(config: &Config) -> anyhow::Result<SledJournal> {
    let dir = config.journal_dir();
    if !dir.exists() {
        anyhow::bail!("no engine answers and there is no journal in {}", dir.display());
    }
    SledJournal::open(&dir).map_err(|e| {
        anyhow::anyhow!(
            "no engine answers over NATS and the journal in {} cannot be opened: {e}",
            dir.display()
        )
    })
}

fn print_runs(runs: &[RunRecord]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.workflow.clone(),
                r.key.clone(),
                r.status.to_string(),
                r.attempts.to_string(),
                r.created_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &["RUN", "WORKFLOW", "KEY", "STATUS", "ATTEMPTS", "CREATED (UTC)", "ERROR"],
        &rows,
    );
}

fn print_detail(detail: &RunDetail) {
    let run = &detail.run;
    println!("run        {}", run.id);
    println!("workflow   {}", run.workflow);
    println!("key        {}", run.key);
    println!("status     {}", run.status);
    println!(
        "attempts   {} (throttled {} times, re-driven {} times)",
        run.attempts, run.throttled, run.redrives
    );
    println!(
        "trigger    {} (stream sequence {})",
        run.trigger.nats_subject, run.trigger.stream_sequence
    );
    println!("created    {}", run.created_at.to_rfc3339());
    if let Some(finished) = run.finished_at {
        let took = (finished - run.created_at).num_milliseconds();
        println!("finished   {} ({took} ms after creation)", finished.to_rfc3339());
    }
    if let Some(seq) = run.dlq_sequence {
        println!("dlq        sequence {seq} (engine dlq show {seq})");
    }
    if let Some(error) = &run.error {
        println!("error      {}: {}", error.kind, error.message);
    }
    println!("\nattempts:");
    for attempt in &run.history {
        let outcome =
            attempt.outcome.map_or("interrupted or running".to_owned(), |o| o.to_string());
        let retry =
            attempt.retry_delay_ms.map(|d| format!(", retry in {d} ms")).unwrap_or_default();
        let error = attempt.error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default();
        println!(
            "  #{} {} {outcome}{retry}{error}",
            attempt.attempt,
            attempt.started_at.format("%H:%M:%S%.3f")
        );
    }
    println!("\nsteps:");
    for step in &detail.steps {
        let took = step.duration_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "-".into());
        let status = format!("{:?}", step.status).to_lowercase();
        println!(
            "  {:>2} {:<24} {:<9} attempts={} {took}",
            step.index, step.name, status, step.attempts
        );
        if let Some(error) = &step.error {
            println!("       error: {}", error.message);
        }
    }
    if let Some(output) = &run.output {
        println!("\noutput:\n{}", serde_json::to_string_pretty(output).unwrap_or_default());
    }
    if run.workflow == "sync_team" {
        print_sync_plan(detail);
    }
}

/// A sync_team run's changes, or its plan in plan-only mode, in `engine teams plan`'s form.
fn print_sync_plan(detail: &RunDetail) {
    let steps: Vec<RunStep<'_>> = detail
        .steps
        .iter()
        .map(|s| RunStep {
            name: &s.name,
            output: s.output.as_ref(),
            error: s.error.as_ref().map(|e| e.message.as_str()),
        })
        .collect();
    let lines = run_lines(&steps);
    if !lines.is_empty() {
        println!("\n{}", lines.join("\n"));
    }
}
