//! Listing the DLQ against a real nats-server (>= 2.10, found via `NATS_SERVER_BIN`; run the
//! tests with `scripts/test`): the letters deleted between two letters cost no request.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use engine::bus::{self, Names};
use engine::config::Config;
use engine::runtime::dlq::{self, DeadLetter, Dlq};

/// Upper bound for the test's body.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Letters deleted between the listed ones.
const GAP: u64 = 2_000;

fn letter(workflow: &str, stream_sequence: u64) -> DeadLetter<'_> {
    DeadLetter {
        workflow,
        run_id: None,
        key: None,
        subject: "muster.events.test",
        stream_sequence,
        delivered: 1,
        attempts: 1,
        error_kind: "permanent",
        error: "boom",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_skips_deleted_letters_without_asking_for_each() {
    tokio::time::timeout(TEST_TIMEOUT, scenario()).await.expect("the test finishes in time");
}

async fn scenario() {
    let server = common::server().await;
    let mut natsd = server.natsd;
    let config = Config { ..server.config };
    let names = Names::new(config.nats.prefix.clone());
    let (_, js) = bus::connect(&config).await.unwrap();
    bus::ensure_streams(&js, &names, &config.streams).await.unwrap();

    // ping, GAP letters of `gone`, ping, GAP letters of `gone`, ping; then every `gone` is
    // deleted, leaving two gaps of GAP sequences inside the stream.
    let mut kept = Vec::new();
    let mut sequence = 0;
    for round in 0..3 {
        sequence += 1;
        let published =
            dlq::dead_letter(&js, &names, None, Bytes::new(), &letter("ping", sequence)).await;
        kept.push(published.unwrap().sequence);
        if round < 2 {
            for _ in 0..GAP {
                sequence += 1;
                dlq::dead_letter(&js, &names, None, Bytes::new(), &letter("gone", sequence))
                    .await
                    .unwrap();
            }
        }
    }
    let stream = js.get_stream(names.dlq_stream()).await.unwrap();
    stream.purge().filter(names.dlq_subject("gone")).await.unwrap();

    let client = async_nats::connect(natsd.url()).await.unwrap();
    let list = Dlq::new(async_nats::jetstream::new(client.clone()), names.clone());
    let sent_before = client.statistics().out_messages.load(Ordering::Relaxed);
    let entries = list.list(100).await.unwrap();
    let sent = client.statistics().out_messages.load(Ordering::Relaxed) - sent_before;
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), kept);
    assert!(entries.iter().all(|e| e.workflow == "ping"));
    assert!(sent < 10, "{sent} requests for 3 letters across {} deleted ones", 2 * GAP);

    // Bounded: a page of one, then the rest from after it.
    let first = list.list(1).await.unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), kept[..1]);
    let rest = list.list_from(first[0].seq + 1, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), kept[1..]);
    natsd.stop().await.unwrap();
}
