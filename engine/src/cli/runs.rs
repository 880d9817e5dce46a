//! `engine runs list|show`: the journal, asked of the running engine over NATS, or read from the
//! data dir when no engine runs.

use std::process::ExitCode;

use clap::Subcommand;

use workflows::sync_team::preview::{RunStep, run_lines};

use super::output;
use crate::bus::{self, Names};
use crate::config::Config;
use crate::journal::sled::SledJournal;
use crate::journal::{Journal, RunFilter, RunRecord, RunStatus};
use crate::runtime::service::{self, AskError, RunDetail};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, value_enum)]
        status: Option<RunStatus>,
        #[arg(long)]
        key: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
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
}

pub async fn runs(config: Config, command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List { workflow, status, key, limit, json } => {
            let filter = RunFilter { workflow, status, key, limit: Some(limit) };
            let runs = list(&config, &filter).await?;
            if json {
                output::json(&runs)?;
            } else {
                print_runs(&runs);
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
    }
}

/// Runs from the running engine, or from the journal when no engine answers.
pub async fn list(config: &Config, filter: &RunFilter) -> anyhow::Result<Vec<RunRecord>> {
    if let Ok((client, _)) = bus::connect(config).await {
        match service::ask_runs(&client, &Names::new(config.nats.prefix.clone()), filter).await {
            Err(AskError::NoEngine(_)) => {}
            result => return Ok(result?),
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
