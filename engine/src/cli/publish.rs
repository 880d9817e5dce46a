//! `engine publish`: one CloudEvent onto the events stream.

use std::process::ExitCode;

use clap::Args;
use cloudevents::{EventBuilder, EventBuilderV10};

use super::output;
use crate::bus::{self, Names};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// CloudEvent type, e.g. muster.ping.
    #[arg(long = "type", value_name = "TYPE")]
    pub ty: String,
    /// CloudEvent source, a URI reference, e.g. /teams-api.
    #[arg(long)]
    pub source: String,
    /// CloudEvent id; with the source it identifies the event (duplicates are dropped)
    /// [default: a fresh unique id].
    #[arg(long)]
    pub id: Option<String>,
    /// CloudEvent subject: what the event is about (e.g. a team slug); it names the event's
    /// NATS subject and is most workflows' key.
    #[arg(long)]
    pub subject: Option<String>,
    /// Event data: JSON, or @FILE to read JSON from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A fresh event id: time and randomness, unique enough for hand-published events.
pub fn fresh_id() -> String {
    format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"), rand::random::<u32>())
}

/// Parses `--data`: inline JSON or `@file`.
pub fn parse_data(data: &str) -> anyhow::Result<serde_json::Value> {
    let (text, origin) = match data.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?,
            path.to_owned(),
        ),
        None => (data.to_owned(), "--data".to_owned()),
    };
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{origin} is not valid JSON: {e}"))
}

pub async fn publish(config: Config, args: PublishArgs) -> anyhow::Result<ExitCode> {
    let mut builder = EventBuilderV10::new()
        .id(args.id.unwrap_or_else(fresh_id))
        .source(args.source)
        .ty(args.ty)
        .time(chrono::Utc::now());
    if let Some(subject) = args.subject {
        builder = builder.subject(subject);
    }
    if let Some(data) = &args.data {
        builder = builder.data("application/json", parse_data(data)?);
    }
    let event = builder.build()?;
    let (_, js) = bus::connect(&config).await?;
    let published =
        bus::publish_event(&js, &Names::new(config.nats.prefix.clone()), &event).await?;
    if args.json {
        output::json(&published)?;
    } else if published.duplicate {
        println!(
            "duplicate: already stored in {} as sequence {} (subject {})",
            published.stream, published.sequence, published.subject
        );
    } else {
        println!(
            "stored in {} as sequence {} (subject {})",
            published.stream, published.sequence, published.subject
        );
    }
    Ok(ExitCode::SUCCESS)
}
