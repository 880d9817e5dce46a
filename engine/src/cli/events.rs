//! `engine events list`: the newest events on the events stream (the audit log), read with
//! NATS alone.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::output;
use crate::bus::{self, Names};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The newest events, oldest of them first.
    List {
        /// Only event types starting with this, e.g. `muster.team.`.
        #[arg(long = "type", value_name = "PREFIX")]
        type_prefix: Option<String>,
        /// At most this many (read from the newest backwards).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One stored event, as listed.
#[derive(Debug, Serialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub time: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub subject: String,
    pub id: String,
    pub source: String,
    /// Who caused it (the `authid` extension), when the event names someone.
    pub authid: Option<String>,
    /// The kind of that subject (`authtype`: `user`, `unauthenticated`, `system`, …).
    pub authtype: Option<String>,
    /// The body as text when it is UTF-8.
    pub data: Option<String>,
}

/// Messages examined at most per listing, so a filter that matches nothing still ends.
const MAX_SCANNED: u64 = 100_000;

pub async fn events(config: Config, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::List { type_prefix, limit, json } = command;
    let (_client, js) = bus::connect(&config).await?;
    let names = Names::new(config.nats.prefix.clone());
    let mut stream = js.get_stream(names.events_stream()).await?;
    let state = stream.info().await?.state.clone();
    let mut found = Vec::new();
    if state.messages > 0 {
        let first = state.first_sequence.max(state.last_sequence.saturating_sub(MAX_SCANNED));
        for seq in (first..=state.last_sequence).rev() {
            if found.len() >= limit {
                break;
            }
            let Ok(message) = stream.get_raw_message(seq).await else { continue };
            let optional = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
            let header = |name: &str| optional(name).unwrap_or_default();
            let ty = header("ce-type");
            if type_prefix.as_deref().is_some_and(|p| !ty.starts_with(p)) {
                continue;
            }
            found.push(StoredEvent {
                seq,
                time: message.time.to_string(),
                ty,
                subject: header("ce-subject"),
                id: header("ce-id"),
                source: header("ce-source"),
                authid: optional("ce-authid"),
                authtype: optional("ce-authtype"),
                data: std::str::from_utf8(&message.payload).ok().map(str::to_owned),
            });
        }
    }
    found.reverse();
    if json {
        output::json(&found)?;
    } else {
        println!("{:<6} {:<30} {:<20} {:<28} {:<16} SOURCE", "SEQ", "TYPE", "SUBJECT", "ID", "BY");
        for event in &found {
            println!(
                "{:<6} {:<30} {:<20} {:<28} {:<16} {}",
                event.seq,
                event.ty,
                event.subject,
                event.id,
                event.authid.as_deref().unwrap_or("-"),
                event.source
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
