//! `engine ping`: publish a ping, wait for its run to finish, print the end-to-end latency.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use cloudevents::{EventBuilder, EventBuilderV10};

use crate::bus::{self, Names};
use crate::config::Config;
use crate::journal::RunStatus;
use crate::runtime::{run_id, service};

/// How often the run's status is polled while waiting.
const POLL: Duration = Duration::from_millis(2);

#[derive(Debug, Args)]
pub struct PingArgs {
    /// How long to wait for the run to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn ping(config: Config, args: PingArgs) -> anyhow::Result<ExitCode> {
    let (client, js) = bus::connect(&config).await?;
    let names = Names::new(config.nats.prefix.clone());
    let event = EventBuilderV10::new()
        .id(super::publish::fresh_id())
        .source("/engine/ping")
        .ty(workflows::ping::PING_TYPE)
        .time(chrono::Utc::now())
        .data("application/json", serde_json::json!({ "from": "engine ping" }))
        .build()?;
    let run_id = run_id("ping", &event);
    let started = Instant::now();
    let published = bus::publish_event(&js, &names, &event).await?;
    let deadline = started + args.timeout;
    loop {
        match service::ask_run(&client, &names, &run_id).await {
            Ok(detail) if detail.run.status == RunStatus::Succeeded => {
                let latency = started.elapsed();
                println!(
                    "pong: run {run_id} succeeded ({} steps, stream sequence {}) in {:.1} ms end to end",
                    detail.steps.len(),
                    published.sequence,
                    latency.as_secs_f64() * 1e3
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(detail) if detail.run.status == RunStatus::Failed => {
                eprintln!("error: run {run_id} failed: {:?}", detail.run.error);
                return Ok(ExitCode::FAILURE);
            }
            Ok(_) | Err(service::AskError::Engine { code: 404, .. }) => {}
            Err(service::AskError::NoEngine(_)) => {
                anyhow::bail!(
                    "the ping is stored (sequence {}) but no engine answers on {}: start one with `engine dev` or `engine run`",
                    published.sequence,
                    config.nats_url()
                )
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            eprintln!("error: run {run_id} did not finish within {:?}", args.timeout);
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL).await;
    }
}
