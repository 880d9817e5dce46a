//! Run lists through the running engine's NATS service, against a real nats-server (>= 2.10,
//! found via `NATS_SERVER_BIN`; run the tests with `scripts/test`): a limit above the bound is a
//! clear error (from the CLI and from the service), and a page of large runs is cut to fit the
//! server's `max_payload` and continued by its cursor, every run listed once, newest first.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use engine::bus::Names;
use engine::config::Config;
use engine::journal::sled::SledJournal;
use engine::journal::{
    Durability, Journal, MAX_LIST_LIMIT, RunFilter, RunPage, RunRecord, RunStatus, TriggerRecord,
};
use engine::runtime::Engine;
use engine::runtime::service::{self, AskError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Upper bound for the test's body.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs journaled: more than one page, and together far above `max_payload`.
const RUNS: usize = 600;

/// A finished run with an output of about 4 KiB: 500 of them exceed a 1 MiB reply.
fn large_run(i: usize) -> RunRecord {
    let created =
        Utc::now() - chrono::Duration::minutes(10) + chrono::Duration::milliseconds(i as i64);
    let trigger = TriggerRecord {
        event: json!({}),
        nats_subject: "muster.events.test.big".into(),
        stream_sequence: i as u64,
    };
    RunRecord {
        status: RunStatus::Succeeded,
        attempts: 1,
        finished_at: Some(created),
        output: Some(json!({ "blob": "x".repeat(4096) })),
        ..RunRecord::new(format!("big-{i:04}"), "big", "team-a", trigger, created)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_are_bounded_and_paged_within_the_payload_limit() {
    tokio::time::timeout(TEST_TIMEOUT, scenario()).await.expect("the test finishes in time");
}

async fn scenario() {
    let server = common::server().await;
    let mut natsd = server.natsd;
    let config = Config { schedules: Vec::new(), ..server.config };
    let names = Names::new(config.nats.prefix.clone());
    let mut newest_first: Vec<String> = (0..RUNS).map(|i| large_run(i).id).collect();
    newest_first.reverse();
    {
        let journal = SledJournal::open(&config.journal_dir()).unwrap();
        for i in 0..RUNS {
            journal.put_run(&large_run(i), Durability::Lazy).await.unwrap();
        }
        journal.db().flush().unwrap();
    }
    let engine = Engine::start(config.clone(), vec![]).await.unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.run(shutdown.clone()));
    let client = async_nats::connect(natsd.url()).await.unwrap();
    let max_payload = client.max_payload();

    // Above the bound: a clear error from the service, and from the CLI before it asks.
    let too_many = RunFilter { limit: Some(MAX_LIST_LIMIT * 3), ..RunFilter::default() };
    // The engine registers its service endpoints once running: until then nobody answers.
    let mut answer = service::ask_runs(&client, &names, &too_many).await;
    for _ in 0..500 {
        if !matches!(answer, Err(AskError::NoEngine(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = service::ask_runs(&client, &names, &too_many).await;
    }
    match answer {
        Err(AskError::Engine { code: 400, status }) => {
            assert!(status.contains("not between 1 and 500"), "{status}");
        }
        other => panic!("a limit of 1500 is refused with 400, got {other:?}"),
    }
    let out = common::cli(&config, &["runs", "list", "--limit", "1500"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1500 is not between 1 and 500"), "{stderr}");

    // The largest page: cut to fit the reply, continued by its cursor, each run once.
    let subject = format!("{}.runs.list", names.api_group());
    let mut filter = RunFilter { limit: Some(MAX_LIST_LIMIT), ..RunFilter::default() };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let body = Bytes::from(serde_json::to_vec(&filter).unwrap());
        let reply = client.request(subject.clone(), body).await.unwrap();
        assert!(reply.headers.is_none(), "not an error: {:?}", reply.headers);
        assert!(reply.payload.len() <= max_payload, "{} bytes", reply.payload.len());
        let page: RunPage = serde_json::from_slice(&reply.payload).unwrap();
        assert!(!page.items.is_empty());
        pages += 1;
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(cursor) => filter.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "every run once, newest first");
    assert!(pages > 2, "500 runs of 4 KiB do not fit one reply: {pages} pages");

    // The CLI gathers the cut pages into the page size asked for.
    let out = common::cli(&config, &["runs", "list", "--limit", "500", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<RunRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), newest_first[..500]);

    shutdown.cancel();
    running.await.unwrap().unwrap();
    natsd.stop().await.unwrap();
}
