//! `engine::natsd` against a real nats-server (>= 2.10, found via `NATS_SERVER_BIN`; run the
//! tests with `scripts/test`, which bootstraps one).

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use engine::natsd::{self, NatsServerBin, Natsd, NatsdConfig, NatsdError};

/// Upper bound for each test's body; a healthy run takes well under a few seconds.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn server_bin() -> NatsServerBin {
    natsd::locate().unwrap_or_else(|err| panic!("{err}"))
}

async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body).await.expect("test exceeded its time limit")
}

async fn create_orders_stream(context: &jetstream::Context) -> stream::Stream {
    context
        .create_stream(stream::Config {
            name: "ORDERS".to_owned(),
            subjects: vec!["orders.>".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream")
}

async fn publish(context: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    context
        .publish(subject.to_owned(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}

#[test]
fn locate_finds_a_recent_enough_server() {
    let bin = server_bin();
    assert!((bin.version.major, bin.version.minor) >= natsd::MIN_VERSION, "{bin:?}");
    assert!(bin.path.is_file(), "{bin:?}");
    if let Some(from_env) = std::env::var_os(natsd::BIN_ENV) {
        assert_eq!(bin.path, std::path::PathBuf::from(from_env));
    }
}

#[test]
fn inspect_rejects_what_is_not_a_nats_server() {
    let missing = tempfile::tempdir().unwrap().path().join("nats-server");
    let err = NatsServerBin::inspect(&missing).unwrap_err();
    assert!(matches!(err, NatsdError::Unusable { .. }), "{err:?}");
    assert!(err.to_string().contains("scripts/bootstrap-nats"), "{err}");

    // `true` runs fine but prints no version.
    let err = NatsServerBin::inspect("/bin/true").unwrap_err();
    assert!(matches!(err, NatsdError::Unusable { .. }), "{err:?}");
}

#[test]
fn free_port_is_bindable() {
    let port = natsd::free_port().unwrap();
    assert_ne!(port, 0);
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is free");
}

#[tokio::test]
async fn starts_on_a_free_port_and_serves_jetstream() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let mut natsd = Natsd::start(&server_bin(), NatsdConfig::new(&store_dir)).await.unwrap();
        assert_ne!(natsd.port(), 0);
        assert_eq!(natsd.url(), format!("nats://127.0.0.1:{}", natsd.port()));
        assert_eq!(natsd.store_dir(), store_dir);

        let client = async_nats::connect(natsd.url()).await.unwrap();
        let context = jetstream::new(client);
        let stream = create_orders_stream(&context).await;
        let sequence = publish(&context, "orders.created", "order 1").await;

        let message = stream.get_raw_message(sequence).await.unwrap();
        assert_eq!(message.subject.as_str(), "orders.created");
        assert_eq!(&message.payload[..], b"order 1");
        assert!(store_dir.join("jetstream").is_dir());

        natsd.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn restart_keeps_stream_data_on_the_same_port() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut natsd = Natsd::start(&server_bin(), NatsdConfig::new(dir.path())).await.unwrap();
        let port = natsd.port();
        {
            let context = jetstream::new(async_nats::connect(natsd.url()).await.unwrap());
            create_orders_stream(&context).await;
            for payload in ["a", "b", "c"] {
                publish(&context, "orders.created", payload).await;
            }
        }

        natsd.restart().await.unwrap();
        assert_eq!(natsd.port(), port);

        let context = jetstream::new(async_nats::connect(natsd.url()).await.unwrap());
        let stream = context.get_stream("ORDERS").await.unwrap();
        assert_eq!(stream.get_info().await.unwrap().state.messages, 3);
        let last = stream.get_last_raw_message_by_subject("orders.created").await.unwrap();
        assert_eq!((last.sequence, &last.payload[..]), (3, &b"c"[..]));

        natsd.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn stop_frees_the_port_and_ends_the_process() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut natsd = Natsd::start(&server_bin(), NatsdConfig::new(dir.path())).await.unwrap();
        natsd.stop().await.unwrap();

        TcpListener::bind((Ipv4Addr::LOCALHOST, natsd.port())).expect("port is free after stop");
        natsd.wait().await.expect("exit status after stop");
        // Stopping twice is harmless.
        natsd.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn kill_ends_the_process_and_wait_reports_it() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut natsd = Natsd::start(&server_bin(), NatsdConfig::new(dir.path())).await.unwrap();
        natsd.kill().await;
        let status = natsd.wait().await.unwrap();
        assert!(!status.success(), "{status}");
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(natsd.url())
            .await
            .expect_err("nobody listens after kill");
    })
    .await;
}

#[tokio::test]
async fn exiting_early_reports_the_end_of_the_log() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // Hold the port so that the server cannot listen on it.
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let log_file = dir.path().join("nats-server.log");
        let config = NatsdConfig {
            port: taken.local_addr().unwrap().port(),
            log_file: Some(log_file.clone()),
            ..NatsdConfig::new(dir.path().join("store"))
        };

        let err = Natsd::start(&server_bin(), config).await.unwrap_err();

        assert!(matches!(err, NatsdError::ExitedEarly { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("address already in use"), "{message}");
        assert!(log_file.is_file());
    })
    .await;
}
