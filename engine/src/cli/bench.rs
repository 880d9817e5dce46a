//! `engine bench`: raw JetStream and Muster measured side by side against one nats-server.
//!
//! (a) raw: publish N messages (the same binary-mode CloudEvents Muster receives) and consume and
//! ack them with one async-nats pull consumer; (b) Muster: publish N pings and wait until all N
//! runs (three journaled steps each) have finished. Both are timed from the first publish to the
//! last ack or finished run, so the ratio is the throughput cost of durable execution.
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
/// PubAcks awaited in one batch while publishing.
const PUBLISH_WINDOW: usize = 1024;

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
    let raw = tokio::time::timeout(PHASE_TIMEOUT, raw_half(&js, &suffix, &events))
        .await
        .context("raw half timed out")??;
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
    let report = Report {
        events: args.events,
        concurrency: args.concurrency,
        nats_server: version,
        raw_seconds: raw.as_secs_f64(),
        raw_events_per_s: n / raw.as_secs_f64(),
        muster_seconds: muster.as_secs_f64(),
        muster_runs_per_s: n / muster.as_secs_f64(),
        ratio: raw.as_secs_f64() / muster.as_secs_f64(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: quantile(&latencies, 1.0),
        rest_samples: at_rest.len(),
        rest_p50_ms: quantile(&at_rest, 0.50),
        rest_p99_ms: quantile(&at_rest, 0.99),
    };
    if let Some(mut server) = server {
        server.stop().await?;
    }
    if args.json {
        output::json(&report)?;
    } else {
        println!("events                 {}", report.events);
        println!("nats-server            {}", report.nats_server);
        println!(
            "raw JetStream          {:>10.0} events/s  ({:.2} s)",
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
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes the events with pipelined PubAcks and waits for every PubAck.
async fn publish_all(
    js: &async_nats::jetstream::Context,
    subjects: impl Iterator<Item = String>,
    events: &[cloudevents::Event],
    mut sent: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(PUBLISH_WINDOW);
    for (i, (subject, event)) in subjects.zip(events).enumerate() {
        let (headers, body) = codec::encode(event);
        sent(i);
        pending.push(
            js.send_publish(subject, PublishMessage::build().headers(headers).payload(body))
                .await?,
        );
        if pending.len() == PUBLISH_WINDOW {
            for ack in pending.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in pending {
        ack.await?;
    }
    Ok(())
}

async fn raw_half(
    js: &async_nats::jetstream::Context,
    suffix: &str,
    events: &[cloudevents::Event],
) -> anyhow::Result<Duration> {
    let name = format!("BENCH_RAW_{suffix}");
    let subject = format!("benchraw{suffix}.events");
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let n = events.len();
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut messages = consumer.stream().max_messages_per_batch(256).messages().await?;
        let mut acked = 0;
        while acked < n {
            let message = messages.next().await.context("raw consumer ended")??;
            message.ack().await.map_err(anyhow::Error::from_boxed)?;
            acked += 1;
        }
        anyhow::Ok(())
    });
    publish_all(js, std::iter::repeat(subject), events, |_| {}).await?;
    consume.await??;
    let elapsed = start.elapsed();
    js.delete_stream(&name).await?;
    Ok(elapsed)
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
    let subjects = events.iter().map(|e| names.event_subject(e)).collect::<Vec<_>>();
    publish_all(js, subjects.into_iter(), events, |i| {
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
            let run = finished.recv().await.context("engine stopped during the latency samples")?;
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
