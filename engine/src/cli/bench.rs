//! `engine bench`: raw JetStream and Muster measured side by side against one nats-server.
//!
//! (a) raw: N messages (the same binary-mode CloudEvents Muster receives) published and consumed
//! at once, acked one by one by an async-nats pull consumer, on a client of its own on a
//! current-thread runtime, with the settings that got the most out of one server on the
//! development machine ([`RawSettings`]); also publish only and consume+ack only, on their own;
//! (b) Muster: publish N pings and wait until all N runs (three journaled steps each) have
//! finished. Both halves publish messages encoded before their timer starts and are timed from
//! the first publish to the last ack or finished run, so the ratio is the throughput cost of
//! durable execution.
//!
//! `engine bench runs` measures run queries instead ([`runs`]).

mod runs;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use clap::Args;
use cloudevents::{EventBuilder, EventBuilderV10};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::output;
use crate::bus::{self, Names, codec};
use crate::config::Config;
use crate::journal::RunStatus;
use crate::natsd::{self, Natsd, NatsdConfig};
use crate::runtime::{Engine, run_id};

/// Longest either half may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// PubAcks awaited together while publishing.
const PUBLISH_WINDOW: usize = 1024;
/// Windows of PubAcks in flight while publishing: the oldest is awaited when one more is full.
const PUBLISH_WINDOWS: usize = 4;
/// Messages the raw consumer asks for per pull.
const RAW_BATCH: usize = 2048;

/// How the raw baseline publishes and consumes: reported with its figures.
#[derive(Debug, Serialize)]
struct RawSettings {
    publish_window: usize,
    publish_windows_in_flight: usize,
    consumer_batch: usize,
    ack: &'static str,
    runtime: &'static str,
}

const RAW_SETTINGS: RawSettings = RawSettings {
    publish_window: PUBLISH_WINDOW,
    publish_windows_in_flight: PUBLISH_WINDOWS,
    consumer_batch: RAW_BATCH,
    ack: "one ack per message, not awaited for a reply",
    runtime: "a client of its own on a current-thread tokio runtime",
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Another benchmark than the throughput halves.
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Events per half.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Runs in flight in the engine during the Muster half.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Pings sent one at a time after the throughput halves, for latency at rest.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchMode {
    /// Run queries on a journal of N generated runs (no NATS): each filtered list through the
    /// indexes against the unindexed scan, in the same run.
    Runs(runs::RunsBenchArgs),
}

#[derive(Debug, Serialize)]
struct Report {
    events: usize,
    concurrency: usize,
    nats_server: String,
    raw_settings: RawSettings,
    /// Publish N with no consumer (PubAcks awaited).
    raw_publish_only_per_s: f64,
    /// Consume and ack the N stored messages, nothing published meanwhile.
    raw_consume_only_per_s: f64,
    /// Publish and consume N at once: the baseline.
    raw_seconds: f64,
    raw_events_per_s: f64,
    muster_seconds: f64,
    muster_runs_per_s: f64,
    ratio: f64,
    /// Publish-to-finished latency of the N runs of the Muster half (queueing included).
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Publish-to-finished latency of single pings sent one at a time.
    rest_samples: usize,
    rest_p50_ms: f64,
    rest_p99_ms: f64,
    /// The engine's sled database after the Muster half, per run journaled.
    journal_bytes_per_run: f64,
}

/// The `q` quantile of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

pub async fn bench(config: Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(BenchMode::Runs(args)) = args.mode {
        return runs::bench(args).await;
    }
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let scratch = tempfile::tempdir()?;
    // A server of our own unless one was named: the bench then disturbs nothing.
    let mut server = None;
    let url = match &config.nats.url {
        Some(url) => url.clone(),
        None => {
            let bin = natsd::locate()?;
            let natsd = Natsd::start(&bin, NatsdConfig::new(scratch.path().join("nats"))).await?;
            let url = natsd.url();
            server = Some(natsd);
            url
        }
    };
    let suffix = format!("{:08x}", rand::random::<u32>());
    let mut config = config;
    config.nats.url = Some(url);
    config.nats.prefix = format!("bench{suffix}");
    config.data_dir = scratch.path().join("data");
    config.runtime.concurrency = args.concurrency;
    config.schedules.clear();
    config.streams.max_event_bytes = config.streams.max_event_bytes.max(64 * 1024);

    let (client, js) = bus::connect(&config).await?;
    let version = client.server_info().version;
    let events: Vec<cloudevents::Event> = (0..args.events)
        .map(|i| {
            EventBuilderV10::new()
                .id(format!("bench-{suffix}-{i}"))
                .source("/engine/bench")
                .ty(workflows::ping::PING_TYPE)
                .data("application/json", serde_json::json!({ "i": i }))
                .build()
                .expect("bench events are valid")
        })
        .collect();

    eprintln!("raw JetStream: publishing and consuming {} events ...", args.events);
    let raw = {
        let (config, suffix, events) = (config.clone(), suffix.clone(), events.clone());
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
                let (_client, js) = bus::connect(&config).await?;
                tokio::time::timeout(PHASE_TIMEOUT, raw_half(&js, &suffix, &events))
                    .await
                    .context("raw half timed out")?
            })
        })
        .await??
    };
    eprintln!("Muster: {} ping runs ...", args.events);
    let (muster, mut latencies, mut at_rest) = tokio::time::timeout(
        PHASE_TIMEOUT,
        muster_half(&config, &js, &events, args.latency_samples.max(1), &suffix),
    )
    .await
    .context("Muster half timed out")??;

    latencies.sort_by(f64::total_cmp);
    at_rest.sort_by(f64::total_cmp);
    let n = args.events as f64;
    let journaled = (args.events + at_rest.len()) as f64;
    let report = Report {
        events: args.events,
        concurrency: args.concurrency,
        nats_server: version,
        raw_settings: RAW_SETTINGS,
        raw_publish_only_per_s: n / raw.publish_only.as_secs_f64(),
        raw_consume_only_per_s: n / raw.consume_only.as_secs_f64(),
        raw_seconds: raw.both.as_secs_f64(),
        raw_events_per_s: n / raw.both.as_secs_f64(),
        muster_seconds: muster.as_secs_f64(),
        muster_runs_per_s: n / muster.as_secs_f64(),
        ratio: raw.both.as_secs_f64() / muster.as_secs_f64(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: quantile(&latencies, 1.0),
        rest_samples: at_rest.len(),
        rest_p50_ms: quantile(&at_rest, 0.50),
        rest_p99_ms: quantile(&at_rest, 0.99),
        journal_bytes_per_run: dir_bytes(&config.journal_dir()) as f64 / journaled,
    };
    if let Some(mut server) = server {
        server.stop().await?;
    }
    if args.json {
        output::json(&report)?;
    } else {
        println!("events                 {}", report.events);
        println!("nats-server            {}", report.nats_server);
        let raw = &report.raw_settings;
        println!(
            "raw settings           PubAck windows of {} ({} in flight), pulls of {}, {}",
            raw.publish_window, raw.publish_windows_in_flight, raw.consumer_batch, raw.runtime
        );
        println!("raw publish only       {:>10.0} events/s", report.raw_publish_only_per_s);
        println!("raw consume+ack only   {:>10.0} events/s", report.raw_consume_only_per_s);
        println!(
            "raw JetStream          {:>10.0} events/s  ({:.2} s, both at once)",
            report.raw_events_per_s, report.raw_seconds
        );
        println!(
            "Muster (ping, 3 steps) {:>10.0} runs/s    ({:.2} s)",
            report.muster_runs_per_s, report.muster_seconds
        );
        println!("ratio Muster/raw       {:>10.3}", report.ratio);
        println!(
            "publish→finished       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} at once)",
            report.p50_ms, report.p99_ms, report.max_ms, report.events
        );
        println!(
            "publish→finished       p50 {:.2} ms, p99 {:.2} ms (one at a time, {} pings)",
            report.rest_p50_ms, report.rest_p99_ms, report.rest_samples
        );
        println!("journal on disk        {:>10.0} bytes per run", report.journal_bytes_per_run);
    }
    Ok(ExitCode::SUCCESS)
}

/// An event encoded as Muster publishes it, before any timer starts.
type Encoded = (async_nats::HeaderMap, bytes::Bytes);

/// Publishes the messages with pipelined PubAcks ([`PUBLISH_WINDOWS`] windows of
/// [`PUBLISH_WINDOW`] in flight) and waits for every PubAck.
async fn publish_all(
    js: &async_nats::jetstream::Context,
    subjects: impl Iterator<Item = String>,
    messages: Vec<Encoded>,
    mut sent: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut in_flight = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW * PUBLISH_WINDOWS);
    for (i, (subject, (headers, body))) in subjects.zip(messages).enumerate() {
        sent(i);
        in_flight.push_back(
            js.send_publish(subject, PublishMessage::build().headers(headers).payload(body))
                .await?,
        );
        if in_flight.len() == PUBLISH_WINDOW * PUBLISH_WINDOWS {
            for ack in in_flight.drain(..PUBLISH_WINDOW) {
                ack.await?;
            }
        }
    }
    for ack in in_flight {
        ack.await?;
    }
    Ok(())
}

fn encode_all(events: &[cloudevents::Event]) -> Vec<Encoded> {
    events.iter().map(codec::encode).collect()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The raw baseline's three timings.
struct Raw {
    publish_only: Duration,
    consume_only: Duration,
    both: Duration,
}

/// Consumes and acks `n` messages with a durable pull consumer on `stream`.
async fn consume_all(
    stream: &async_nats::jetstream::stream::Stream,
    n: usize,
) -> anyhow::Result<()> {
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.stream().max_messages_per_batch(RAW_BATCH).messages().await?;
    for _ in 0..n {
        let message = messages.next().await.context("raw consumer ended")??;
        message.ack().await.map_err(anyhow::Error::from_boxed)?;
    }
    Ok(())
}

async fn raw_half(
    js: &async_nats::jetstream::Context,
    suffix: &str,
    events: &[cloudevents::Event],
) -> anyhow::Result<Raw> {
    let n = events.len();
    let stream = |phase: &str| {
        let name = format!("BENCH_RAW_{phase}_{suffix}");
        let subject = format!("benchraw{suffix}.{phase}");
        async move {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                num_replicas: 1,
                ..Default::default()
            };
            anyhow::Ok((js.create_stream(config).await?, name, subject))
        }
    };

    // Publish only, then consume+ack only, on one stream.
    let (stored, name, subject) = stream("split").await?;
    let messages = encode_all(events);
    let start = Instant::now();
    publish_all(js, std::iter::repeat(subject), messages, |_| {}).await?;
    let publish_only = start.elapsed();
    let start = Instant::now();
    consume_all(&stored, n).await?;
    let consume_only = start.elapsed();
    js.delete_stream(&name).await?;

    // Both at once: the baseline.
    let (stream, name, subject) = stream("both").await?;
    let messages = encode_all(events);
    let start = Instant::now();
    let (published, consumed) = tokio::join!(
        publish_all(js, std::iter::repeat(subject), messages, |_| {}),
        consume_all(&stream, n),
    );
    published?;
    consumed?;
    let both = start.elapsed();
    js.delete_stream(&name).await?;
    Ok(Raw { publish_only, consume_only, both })
}

async fn muster_half(
    config: &Config,
    js: &async_nats::jetstream::Context,
    events: &[cloudevents::Event],
    rest_samples: usize,
    suffix: &str,
) -> anyhow::Result<(Duration, Vec<f64>, Vec<f64>)> {
    let engine = Engine::start(config.clone(), crate::runtime::builtin_workflows()).await?;
    let names = Names::new(config.nats.prefix.clone());
    let mut finished = engine.subscribe_finished();
    let finished_rest = engine.subscribe_finished();
    let shutdown = CancellationToken::new();
    let engine_task = tokio::spawn(engine.run(shutdown.clone()));

    let run_ids: Vec<String> = events.iter().map(|e| run_id("ping", e)).collect();
    let sent_at: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let messages = encode_all(events);
    let subjects = events.iter().map(|e| names.event_subject(e)).collect::<Vec<_>>();
    let start = Instant::now();
    let waiter = {
        let sent_at = sent_at.clone();
        let n = events.len();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            while latencies.len() < n {
                let run =
                    finished.recv().await.context("engine stopped before all runs finished")?;
                anyhow::ensure!(
                    run.status == RunStatus::Succeeded,
                    "bench run {} failed",
                    run.run_id
                );
                let now = Instant::now();
                if let Some(sent) = sent_at.lock().expect("lock").remove(&run.run_id) {
                    latencies.push((now - sent).as_secs_f64() * 1e3);
                }
            }
            anyhow::Ok((start.elapsed(), latencies))
        })
    };
    publish_all(js, subjects.into_iter(), messages, |i| {
        sent_at.lock().expect("lock").insert(run_ids[i].clone(), Instant::now());
    })
    .await?;
    let (elapsed, latencies) = waiter.await??;

    // Latency at rest: one ping at a time.
    let mut finished = finished_rest;
    let mut at_rest = Vec::with_capacity(rest_samples);
    for i in 0..rest_samples {
        let event = EventBuilderV10::new()
            .id(format!("bench-{suffix}-rest-{i}"))
            .source("/engine/bench")
            .ty(workflows::ping::PING_TYPE)
            .build()?;
        let id = run_id("ping", &event);
        let sent = Instant::now();
        bus::publish_event(js, &names, &event).await?;
        loop {
            let run = match finished.recv().await {
                Ok(run) => run,
                // Runs of the throughput half this receiver had no room for: not waited for.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => anyhow::bail!("engine stopped during the latency samples: {e}"),
            };
            if run.run_id == id {
                at_rest.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
        }
    }
    shutdown.cancel();
    engine_task.await??;
    for stream in [names.events_stream(), names.dlq_stream(), names.advisories_stream()] {
        js.delete_stream(&stream).await?;
    }
    Ok((elapsed, latencies, at_rest))
}
