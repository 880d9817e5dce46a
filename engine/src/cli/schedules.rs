//! `engine schedules list`: each schedule's next ticks and the last one fired.

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::bus::{self, Names};
use crate::config::Config;
use crate::schedule::{self, status};

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List the configured schedules with their next ticks and last fired tick.
    List {
        /// How many next ticks to show.
        #[arg(long, default_value_t = 3)]
        next: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn schedules(config: Config, command: SchedulesCommand) -> anyhow::Result<ExitCode> {
    let SchedulesCommand::List { next, json } = command;
    let schedules = schedule::parse_all(&config.schedules)?;
    let (_, js) = bus::connect(&config).await?;
    let names = Names::new(config.nats.prefix.clone());
    let store = schedule::bucket(&js, &names, config.streams.replicas).await?;
    let statuses = status::statuses(&store, &schedules, next).await?;
    if json {
        output::json(&statuses)?;
        return Ok(ExitCode::SUCCESS);
    }
    let time = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let last = s.last_tick.as_ref().map_or_else(|| "never".to_owned(), time);
            vec![
                s.name.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                if s.enabled { "yes".into() } else { "no".into() },
                s.next.iter().map(time).collect::<Vec<_>>().join(", "),
                if s.overdue { format!("{last} (OVERDUE)") } else { last },
            ]
        })
        .collect();
    output::table(&["NAME", "CRON", "TZ", "ENABLED", "NEXT (UTC)", "LAST TICK (UTC)"], &rows);
    Ok(ExitCode::SUCCESS)
}
