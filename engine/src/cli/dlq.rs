//! `engine dlq list|show|replay|purge`: the dead-letter queue, straight from JetStream.

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::bus::{self, Names};
use crate::config::Config;
use crate::runtime::dlq::{Dlq, ReplayError};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its headers and body.
    Show {
        seq: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive dead letters to their workflow (after fixing the cause) and remove them.
    Replay {
        /// DLQ sequence to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        /// Also replay dead letters whose message itself is at fault (undecodable, or a type
        /// that does not match its subject): they are normally refused, since they can only be
        /// dead-lettered again.
        #[arg(long)]
        force: bool,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm: dead letters are deleted for good.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn dlq(config: Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (_, js) = bus::connect(&config).await?;
    let dlq = Dlq::new(js, Names::new(config.nats.prefix.clone()));
    match command {
        DlqCommand::List { limit, json } => {
            let entries = dlq.list(limit).await?;
            if json {
                output::json(&entries)?;
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.workflow.clone(),
                            e.run_id.clone().unwrap_or_else(|| "-".into()),
                            e.kind.clone(),
                            e.reason.clone(),
                        ]
                    })
                    .collect();
                output::table(&["SEQ", "WORKFLOW", "RUN", "KIND", "REASON"], &rows);
            }
        }
        DlqCommand::Show { seq, json } => {
            let message = dlq.show(seq).await?;
            if json {
                output::json(&message)?;
            } else {
                for (name, value) in &message.headers {
                    println!("{name}: {value}");
                }
                println!();
                match &message.body {
                    Some(body) => println!("{body}"),
                    None => println!("<{} bytes, not UTF-8>", message.body_bytes),
                }
            }
        }
        DlqCommand::Replay { seq, all, force } => {
            let seqs = match (seq, all) {
                (Some(seq), _) => vec![seq],
                (None, _) => dlq.list(usize::MAX).await?.into_iter().map(|e| e.seq).collect(),
            };
            let mut refused = 0;
            for seq in &seqs {
                match dlq.replay(*seq, force).await {
                    Ok(published) => println!(
                        "replayed dead letter {seq} as {} sequence {}",
                        published.stream, published.sequence
                    ),
                    Err(e @ ReplayError::Refused { .. }) => {
                        eprintln!("error: {e}");
                        refused += 1;
                    }
                    Err(ReplayError::Bus(e)) => return Err(e.into()),
                }
            }
            if seqs.is_empty() {
                println!("the DLQ is empty");
            }
            if refused > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge { yes } => {
            if !yes {
                eprintln!(
                    "error: purging deletes every dead letter for good; add --yes to confirm"
                );
                return Ok(ExitCode::from(2));
            }
            println!("purged {} dead letters", dlq.purge().await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
