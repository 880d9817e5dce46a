//! The GitHub request budget shared by the engine replicas: one key per organization in the
//! JetStream key-value bucket `<PREFIX>_GITHUB_BUDGET`, updated by compare-and-set.
//!
//! GitHub's secondary limit (900 points a minute for REST) holds per organization and identity;
//! a budget per process would let N replicas spend N times as much. Each replica therefore
//! reserves its requests' points against the same key: it reads the budget's state (the
//! theoretical arrival time of [`Pacing::reserve`], µs since the Unix epoch) and writes the new
//! one only if nobody wrote in between (`kv.update` with the revision it read), retrying a
//! bounded number of times.
//!
//! # Assumptions
//! - The replicas' clocks agree to within a second or so (NTP): the state is wall-clock time.
//!   A state far ahead of a replica's clock is reset rather than obeyed (see [`Pacing::reserve`]).
//! - A reservation that cannot be written (NATS unreachable) is an error: the request is not
//!   sent and the run retries, rather than spending points no other replica knows of.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use connectors::github::{BudgetError, Pacing, RequestBudget, Reservation};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::bus::{BusError, Names};

/// Compare-and-set rounds before a reservation gives up as contended. Reservations of one
/// process take turns, so only the other replicas' writes can conflict.
pub const MAX_CAS_ROUNDS: u32 = 16;
/// Upper bound of the random pause after a conflicting write, so replicas do not collide again.
const CAS_PAUSE_MAX: Duration = Duration::from_millis(20);

/// The bucket holding every organization's budget.
pub fn bucket_name(names: &Names) -> String {
    // The same base as the streams' names (`<PREFIX>_EVENTS`).
    let base = names.prefix().to_ascii_uppercase().replace('-', "_");
    format!("{base}_GITHUB_BUDGET")
}

/// Creates (or updates) the budget bucket.
///
/// # Errors
/// JetStream refused the bucket.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let name = bucket_name(names);
    js.create_or_update_key_value(kv::Config {
        bucket: name.clone(),
        description: "Muster: the GitHub request budget of each organization".into(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::jetstream(format!("creating or updating key-value bucket {name}"), e))
}

/// The stored state of one organization's budget.
#[derive(Debug, Serialize, Deserialize)]
struct BudgetState {
    /// Theoretical arrival time, µs since the Unix epoch.
    tat_us: u64,
}

/// A [`RequestBudget`] kept in a JetStream key-value bucket, shared by every engine using it.
///
/// Built before the engine connects (the workflows are built first) and bound to the bucket
/// once connected; the runtime starts runs only after that.
pub struct JetStreamBudget {
    key: String,
    pacing: Pacing,
    store: OnceLock<kv::Store>,
    /// This process's reservations take turns, so they do not conflict with each other.
    turn: tokio::sync::Mutex<()>,
}

impl JetStreamBudget {
    /// The budget of `org` (GitHub's organization names ignore case).
    pub fn new(org: &str, pacing: Pacing) -> Self {
        JetStreamBudget {
            key: format!("org.{}", org.to_ascii_lowercase()),
            pacing,
            store: OnceLock::new(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Binds the budget to its bucket; later calls are ignored.
    pub fn bind(&self, store: kv::Store) {
        let _ = self.store.set(store);
    }

    /// The key of this budget in the bucket.
    pub fn key(&self) -> &str {
        &self.key
    }
}

#[async_trait]
impl RequestBudget for JetStreamBudget {
    async fn reserve(&self, points: u32, max_wait: Duration) -> Result<Reservation, BudgetError> {
        let store = self
            .store
            .get()
            .ok_or_else(|| BudgetError::Unavailable("not connected to NATS yet".into()))?;
        let unavailable = |what: &str, e: &dyn std::error::Error| {
            BudgetError::Unavailable(format!("{what} {}: {e}", self.key))
        };
        let _turn = self.turn.lock().await;
        for _ in 0..MAX_CAS_ROUNDS {
            let entry =
                store.entry(self.key.as_str()).await.map_err(|e| unavailable("reading", &e))?;
            let (tat, revision) = match entry {
                Some(entry) => {
                    let state = (entry.operation == kv::Operation::Put)
                        .then(|| serde_json::from_slice::<BudgetState>(&entry.value).ok())
                        .flatten();
                    (state.map(|s| s.tat_us), entry.revision)
                }
                // Revision 0: the key must not exist yet (a create).
                None => (None, 0),
            };
            let (reservation, next) = self.pacing.reserve(tat, now_us(), points, max_wait);
            let Some(tat_us) = next else { return Ok(reservation) };
            let value = serde_json::to_vec(&BudgetState { tat_us }).expect("a budget serializes");
            match store.update(self.key.as_str(), value.into(), revision).await {
                Ok(_) => return Ok(reservation),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Another replica reserved in between: read its state and try again.
                    let pause = rand::rng().random_range(0..=CAS_PAUSE_MAX.as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(unavailable("writing", &e)),
            }
        }
        Err(BudgetError::Contended(MAX_CAS_ROUNDS))
    }
}

fn now_us() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}
