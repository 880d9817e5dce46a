//! Poison messages: stored events whose header block the NATS client cannot read. Delivering one
//! makes async-nats drop the engine's connection; the engine must bound that, dead-letter the
//! message with its reason, and lose no valid event published right after it.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use e2e::harness::{WAIT, World, event, wait_for};
use engine::bus::Names;
use engine::config::StreamsConfig;
use engine::journal::RunStatus;
use engine::runtime::dlq::DlqEntry;
use engine::runtime::{poison, run_id};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The engine's log line for a dropped connection (`bus::connect`'s event callback).
const DISCONNECTED: &str = "disconnected from NATS";

/// Header blocks async-nats 0.51 refuses on delivery, with their base64 for the dead letter.
const NOT_UTF8: (&[u8], &str) =
    (b"NATS/1.0\r\nce-id: \xff\xfe\r\n\r\n", "TkFUUy8xLjANCmNlLWlkOiD//g0KDQo=");
const NO_VERSION_LINE: (&[u8], &str) = (b"ce-id: poison-2\r\n\r\n", "Y2UtaWQ6IHBvaXNvbi0yDQoNCg==");

/// Publishes `HPUB subject <header bytes> <total bytes>` over a bare TCP connection (no client
/// library would send such headers) and waits for the server's PONG, so the message is stored.
async fn publish_raw_tcp(port: u16, subject: &str, header: &[u8], payload: &[u8]) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to nats-server");
    let mut stream = BufReader::new(stream);
    let mut info = String::new();
    stream.read_line(&mut info).await.expect("INFO");
    assert!(info.starts_with("INFO "), "{info}");
    let mut frame = Vec::new();
    frame.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n",
    );
    frame.extend_from_slice(
        format!("HPUB {subject} {} {}\r\n", header.len(), header.len() + payload.len()).as_bytes(),
    );
    frame.extend_from_slice(header);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    stream.get_mut().write_all(&frame).await.expect("HPUB");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_line(&mut answer)).await.expect("PONG in time").unwrap();
    assert_eq!(answer, "PONG\r\n", "the server refused the HPUB");
}

#[tokio::test]
async fn unreadable_headers_are_dead_lettered_and_cost_no_valid_event() -> anyhow::Result<()> {
    let mut world = World::start().await?;
    world.set("MUSTER_RUNTIME__MAX_ATTEMPTS", "2");
    let max_deliver = poison::max_deliver(2);
    let names = Names::new("muster");
    let js = world.jetstream().await?;

    // A consumer left by an engine without MaxDeliver: starting the engine must update it.
    engine::bus::ensure_streams(&js, &names, &StreamsConfig::default()).await?;
    let stream = js.get_stream(names.events_stream()).await?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some("ping".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            filter_subjects: names.consumer_filters("ping", &["muster.ping"]),
            ..Default::default()
        })
        .await?;
    assert_eq!(stream.consumer_info("ping").await?.config.max_deliver, -1);

    let mut engine = world.start_engine().await?;
    assert_eq!(stream.consumer_info("ping").await?.config.max_deliver, max_deliver);

    let port = world.nats.port();
    let body = br#"{"specversion":"1.0","id":"poison","source":"/e2e","type":"muster.ping"}"#;
    publish_raw_tcp(port, "muster.events.muster.ping.poison-1", NOT_UTF8.0, body).await;
    publish_raw_tcp(port, "muster.events.muster.ping.poison-2", NO_VERSION_LINE.0, body).await;
    // Valid events right behind them, in the same pulls.
    let valid: Vec<_> = (0..3)
        .map(|i| event("muster.ping", &format!("after-poison-{i}"), "x", json!(null)))
        .collect();
    for ping in &valid {
        world.publish(ping).await?;
    }

    // Each poison message is delivered at most max_deliver times, ack_wait (2 s) apart, then
    // dead-lettered: well within the bound.
    let bound = WAIT + Duration::from_secs(30);
    let letters: Vec<DlqEntry> = wait_for("both poison messages in the DLQ", bound, || async {
        let entries: Vec<DlqEntry> = world.cli_json(&["dlq", "list", "--json"]).await.ok()?;
        (entries.len() >= 2).then_some(entries)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; engine log:\n{}", engine.log()))?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let dlq = js.get_stream(names.dlq_stream()).await?;
    let mut raw = Vec::new();
    for letter in &letters {
        assert_eq!(letter.kind, poison::KIND_UNREADABLE_HEADERS, "{letter:?}");
        assert_eq!(letter.workflow, "ping");
        assert!(letter.reason.contains("cannot read"), "{}", letter.reason);
        assert!(letter.original_subject.starts_with("muster.events.muster.ping.poison-"));
        let stored = dlq.get_raw_message(letter.seq).await?;
        assert_eq!(&stored.payload[..], body);
        raw.push(stored.headers.get(poison::H_RAW_HEADERS).expect("raw headers").to_string());
    }
    raw.sort();
    let mut expected = vec![NOT_UTF8.1.to_owned(), NO_VERSION_LINE.1.to_owned()];
    expected.sort();
    assert_eq!(raw, expected);

    // No valid event was lost, however often the connection dropped under it.
    for ping in &valid {
        world.wait_run(&run_id("ping", ping), RunStatus::Succeeded).await?;
    }

    // The connection dropped at most once per delivery of a poison message…
    let drops = engine.log().matches(DISCONNECTED).count();
    assert!(drops >= 1, "the poison message never reached the engine:\n{}", engine.log());
    assert!(drops as i64 <= 2 * max_deliver, "{drops} disconnects:\n{}", engine.log());
    // …and stops dropping: nothing is pending any more, and three more ack waits pass quietly.
    wait_for("the ping consumer to hold nothing", WAIT, || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("ping").await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(engine.log().matches(DISCONNECTED).count(), drops, "{}", engine.log());
    engine.stop().await
}
