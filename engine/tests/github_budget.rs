//! `engine::github_budget` against a real nats-server (>= 2.10, found via `NATS_SERVER_BIN`; run
//! the tests with `scripts/test`, which bootstraps one): replicas share one request budget.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use connectors::github::{BudgetError, Pacing, RequestBudget, Reservation};
use engine::bus::Names;
use engine::github_budget::{self, JetStreamBudget};
use engine::natsd::{self, Natsd, NatsdConfig};

/// Upper bound for each test's body; a healthy run takes well under a few seconds.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Five points at once, then one an hour: nothing comes back while a test runs.
const FIVE_POINTS: Pacing = Pacing { burst: 5, interval: Duration::from_secs(3600) };

async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body).await.expect("test exceeded its time limit")
}

struct Server {
    _dir: tempfile::TempDir,
    natsd: Natsd,
    js: async_nats::jetstream::Context,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bin = natsd::locate().unwrap_or_else(|err| panic!("{err}"));
    let natsd = Natsd::start(&bin, NatsdConfig::new(dir.path().join("store"))).await.unwrap();
    let client = async_nats::connect(natsd.url()).await.unwrap();
    Server { _dir: dir, natsd, js: async_nats::jetstream::new(client) }
}

/// A budget of `org` bound to the bucket, as one engine replica has it.
async fn replica(server: &Server, org: &str, pacing: Pacing) -> Arc<JetStreamBudget> {
    let store = github_budget::bucket(&server.js, &Names::new("muster"), 1).await.unwrap();
    let budget = Arc::new(JetStreamBudget::new(org, pacing));
    budget.bind(store);
    budget
}

async fn granted(budgets: &[Arc<JetStreamBudget>], tries_each: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for budget in budgets {
        for _ in 0..tries_each {
            let budget = budget.clone();
            tasks.spawn(async move { budget.reserve(1, Duration::ZERO).await });
        }
    }
    let mut granted = 0;
    while let Some(answer) = tasks.join_next().await {
        match answer.unwrap().unwrap() {
            Reservation::Granted { .. } => granted += 1,
            Reservation::Exhausted { after } => assert!(after > Duration::ZERO),
        }
    }
    granted
}

#[tokio::test]
async fn two_replicas_share_one_budget_under_concurrent_reservations() {
    bounded(async {
        let mut server = server().await;
        let a = replica(&server, "acme", FIVE_POINTS).await;
        let b = replica(&server, "ACME", FIVE_POINTS).await;
        assert_eq!(a.key(), b.key(), "organization names ignore case");
        assert_eq!(github_budget::bucket_name(&Names::new("muster")), "MUSTER_GITHUB_BUDGET");

        // Twenty reservations race from two replicas (real compare-and-set conflicts): five win.
        assert_eq!(granted(&[a.clone(), b.clone()], 10).await, 5);
        // The budget is spent for both, and the wait is the hour a point takes to come back.
        for budget in [&a, &b] {
            let Reservation::Exhausted { after } = budget.reserve(1, Duration::ZERO).await.unwrap()
            else {
                panic!("the shared budget is spent")
            };
            assert!(after > Duration::from_secs(3500), "{after:?}");
        }
        // Another organization has its own budget.
        let other = replica(&server, "globex", FIVE_POINTS).await;
        assert_eq!(granted(&[other], 6).await, 5);
        server.natsd.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_replica_waits_its_turn_behind_the_others_reservations() {
    bounded(async {
        let mut server = server().await;
        // Nothing sleeps here, so long intervals keep the margins wide on a busy machine.
        let pacing = Pacing { burst: 2, interval: Duration::from_secs(5) };
        let a = replica(&server, "acme", pacing).await;
        let b = replica(&server, "acme", pacing).await;
        let wait = |r: Reservation| match r {
            Reservation::Granted { wait } => wait,
            other => panic!("{other:?}"),
        };
        let max_wait = Duration::from_secs(30);
        assert_eq!(wait(a.reserve(2, max_wait).await.unwrap()), Duration::ZERO);
        // B's read comes after A's two points: about one interval later, less the time passed.
        let b_wait = wait(b.reserve(1, max_wait).await.unwrap());
        assert!(b_wait > Duration::from_secs(4) && b_wait <= pacing.interval, "{b_wait:?}");
        // A's next one queues behind B's.
        let a_wait = wait(a.reserve(1, max_wait).await.unwrap());
        assert!(a_wait > b_wait + Duration::from_secs(4), "{a_wait:?} after {b_wait:?}");
        server.natsd.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn an_unbound_or_unreachable_budget_is_an_error_not_a_grant() {
    bounded(async {
        let unbound = JetStreamBudget::new("acme", FIVE_POINTS);
        let err = unbound.reserve(1, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, BudgetError::Unavailable(_)), "{err}");

        let mut server = server().await;
        let budget = replica(&server, "acme", FIVE_POINTS).await;
        server.natsd.stop().await.unwrap();
        let err = budget.reserve(1, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, BudgetError::Unavailable(_)), "{err}");
    })
    .await
}
