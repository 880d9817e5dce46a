//! Time as a trigger: cron schedules that publish one event per tick, leaderless, with catch-up.
//!
//! # Guarantees
//! - **One event per tick across replicas.** A tick's event id is the schedule name and the tick's
//!   scheduled time (not the firing clock), so every replica that fires a tick publishes the same
//!   `Nats-Msg-Id` and JetStream stores it once, as long as the replicas fire within the stream's
//!   duplicate window of each other (2 min by default). No leader election is needed.
//! - **Catch-up, once.** The last fired tick of each schedule is remembered in a JetStream
//!   key-value bucket shared by the replicas (`<PREFIX>_SCHEDULES`). An engine that starts after
//!   one or more ticks passed unfired fires once, for the most recent missed tick, with
//!   `catch_up: true`; the older missed ticks are skipped. Like a Kubernetes CronJob's
//!   `startingDeadlineSeconds`, `starting-deadline` bounds how old that tick may be.
//! - A schedule first seen by the bucket is armed, not fired: ticks before that moment are not
//!   "missed".

pub mod status;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Timelike, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bus::{self, BusError, Names};
use crate::config::{ScheduleConfig, ScheduleError, ScheduleSpec};

/// Longest single sleep: the loop re-reads the clock at least this often (clock jumps, drift).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Bounds of the pause before retrying a tick that could not be published.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A validated schedule: its cron expression parsed and its time zone resolved.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub config: ScheduleConfig,
    spec: ScheduleSpec,
}

impl Schedule {
    /// Parses and checks one configured schedule.
    ///
    /// # Errors
    /// An invalid name, cron expression or time zone, named by the schedule.
    pub fn parse(config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        Ok(Self { config: config.clone(), spec: config.parse()? })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.spec.next_after(t)
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Cron's resolution is the second: 10:00:00.300 is "at" the 10:00:00 tick.
        let t = t.with_nanosecond(0).unwrap_or(t);
        let local = t.with_timezone(&self.spec.timezone);
        if self.spec.cron.includes(local) {
            return Some(t);
        }
        self.spec.cron.after(&local).next_back().map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.spec
            .cron
            .after(&t.with_timezone(&self.spec.timezone))
            .take(n)
            .map(|t| t.with_timezone(&Utc))
            .collect()
    }

    /// The tick to fire at start, if any: the most recent tick after the later of the last fired
    /// tick and the moment the schedule was armed, within the starting deadline.
    pub fn catch_up(&self, memory: &TickMemory, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let missed = self.last_at_or_before(now)?;
        let known = memory.last_tick.map_or(memory.armed_at, |last| last.max(memory.armed_at));
        if missed <= known {
            return None;
        }
        if let Some(deadline) = self.config.starting_deadline {
            let age = (now - missed).to_std().unwrap_or_default();
            if age > deadline {
                return None;
            }
        }
        Some(missed)
    }
}

/// Parses every configured schedule.
///
/// # Errors
/// The first invalid schedule, or two schedules with one name.
pub fn parse_all(configs: &[ScheduleConfig]) -> Result<Vec<Schedule>, ScheduleError> {
    let specs = ScheduleConfig::parse_all(configs)?;
    Ok(configs
        .iter()
        .zip(specs)
        .map(|(config, spec)| Schedule { config: config.clone(), spec })
        .collect())
}

/// What the bucket remembers of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickMemory {
    /// The last tick fired (by any replica).
    pub last_tick: Option<DateTime<Utc>>,
    /// When the last tick was fired, by the replica's clock.
    pub fired_at: Option<DateTime<Utc>>,
    /// When the bucket first saw the schedule: earlier ticks are not missed ones.
    pub armed_at: DateTime<Utc>,
}

/// The data of a `muster.schedule.fired` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    pub schedule: String,
    pub tick: DateTime<Utc>,
    pub timezone: String,
    pub catch_up: bool,
}

/// The id of a tick's event: the schedule name and the tick, identical on every replica.
pub fn tick_id(schedule: &str, tick: DateTime<Utc>) -> String {
    format!("{schedule}@{}", tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The key-value bucket of tick memories.
pub async fn bucket(
    js: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let name = names.schedules_bucket();
    js.create_or_update_key_value(kv::Config {
        bucket: name.clone(),
        description: "Muster schedules: the last fired tick of each".into(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::jetstream(format!("creating or updating key-value bucket {name}"), e))
}

/// Reads a schedule's memory.
///
/// # Errors
/// The bucket is unreachable or holds something that is not a tick memory.
pub async fn recall(store: &kv::Store, name: &str) -> Result<Option<TickMemory>, BusError> {
    let entry = store
        .get(name)
        .await
        .map_err(|e| BusError::jetstream(format!("reading the last tick of {name}"), e))?;
    entry
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                BusError::jetstream(format!("last tick of {name} is not a tick memory"), e)
            })
        })
        .transpose()
}

async fn remember(store: &kv::Store, name: &str, memory: &TickMemory) -> Result<(), BusError> {
    let bytes = serde_json::to_vec(memory).expect("tick memories serialize");
    store
        .put(name, bytes.into())
        .await
        .map_err(|e| BusError::jetstream(format!("recording the last tick of {name}"), e))?;
    Ok(())
}

/// Fires the enabled schedules until `shutdown`: a catch-up tick at start where one was missed,
/// then every tick on time.
pub async fn run(
    js: jetstream::Context,
    names: Names,
    store: kv::Store,
    schedules: Vec<Schedule>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for schedule in schedules.into_iter().filter(|s| s.config.enabled) {
        let ticker =
            Ticker { js: js.clone(), names: names.clone(), store: store.clone(), schedule };
        tasks.spawn(ticker.run(shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

struct Ticker {
    js: jetstream::Context,
    names: Names,
    store: kv::Store,
    schedule: Schedule,
}

impl Ticker {
    async fn run(self, shutdown: CancellationToken) {
        let name = self.schedule.name().to_owned();
        let mut memory = loop {
            match self.arm().await {
                Ok(memory) => break memory,
                Err(e) => {
                    warn!(schedule = %name, error = %e, "cannot read the schedule's last tick; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_MAX) => {}
                    }
                }
            }
        };
        if let Some(tick) = self.schedule.catch_up(&memory, Utc::now()) {
            info!(schedule = %name, %tick, "firing the most recent missed tick");
            if !self.fire(tick, true, &mut memory, &shutdown).await {
                return;
            }
        }
        loop {
            let after = memory.last_tick.unwrap_or(memory.armed_at).max(Utc::now());
            let Some(tick) = self.schedule.next_after(after) else {
                warn!(schedule = %name, "the cron expression has no further ticks");
                return;
            };
            // Sleep until the tick, re-reading the clock at least every MAX_SLEEP.
            loop {
                let wait = (tick - Utc::now()).to_std().unwrap_or_default();
                if wait.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                }
            }
            if !self.fire(tick, false, &mut memory, &shutdown).await {
                return;
            }
        }
    }

    /// The schedule's memory, armed now if the bucket has never seen it.
    async fn arm(&self) -> Result<TickMemory, BusError> {
        let name = self.schedule.name();
        if let Some(memory) = recall(&self.store, name).await? {
            return Ok(memory);
        }
        let memory = TickMemory { last_tick: None, fired_at: None, armed_at: Utc::now() };
        let bytes = serde_json::to_vec(&memory).expect("tick memories serialize");
        // Create, not put: a replica that armed it first keeps its arming time.
        match self.store.create(name, bytes.into()).await {
            Ok(_) => Ok(memory),
            Err(_) => Ok(recall(&self.store, name).await?.unwrap_or(memory)),
        }
    }

    /// Publishes the tick's event, retrying until stored or shut down; then remembers the tick.
    /// Returns false when shut down first.
    async fn fire(
        &self,
        tick: DateTime<Utc>,
        catch_up: bool,
        memory: &mut TickMemory,
        shutdown: &CancellationToken,
    ) -> bool {
        let config = &self.schedule.config;
        let data = Fired {
            schedule: config.name.clone(),
            tick,
            timezone: config.timezone.clone(),
            catch_up,
        };
        let event = EventBuilderV10::new()
            .id(tick_id(&config.name, tick))
            .source(format!("/muster/schedules/{}", config.name))
            .ty(config.event_type.clone())
            .subject(config.name.clone())
            .time(Utc::now())
            .data("application/json", serde_json::to_value(&data).expect("serializes"))
            .build()
            .expect("schedule events are valid");
        let mut pause = RETRY_MIN;
        loop {
            match bus::publish_event(&self.js, &self.names, &event).await {
                Ok(published) => {
                    info!(
                        schedule = %config.name,
                        %tick,
                        catch_up,
                        sequence = published.sequence,
                        duplicate = published.duplicate,
                        "schedule fired"
                    );
                    break;
                }
                Err(e) => {
                    warn!(schedule = %config.name, %tick, error = %e, "cannot publish the tick; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
        memory.last_tick = Some(tick);
        memory.fired_at = Some(Utc::now());
        if let Err(e) = remember(&self.store, &config.name, memory).await {
            // The event is stored; a replica or restart that misses this memory would catch the
            // same tick up again, which JetStream deduplicates within its window.
            warn!(schedule = %config.name, error = %e, "cannot record the last tick");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&ScheduleConfig {
            name: "resync".into(),
            cron: cron.into(),
            timezone: timezone.into(),
            ..ScheduleConfig::default()
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ticks_follow_the_cron_expression_in_its_time_zone() {
        let every_ten = schedule("0 */10 * * * *", "UTC").unwrap();
        let now = at("2026-11-27T10:03:12Z");
        assert_eq!(every_ten.next_after(now), Some(at("2026-11-27T10:10:00Z")));
        assert_eq!(every_ten.last_at_or_before(now), Some(at("2026-11-27T10:00:00Z")));
        assert_eq!(
            every_ten.last_at_or_before(at("2026-11-27T10:10:00Z")),
            Some(at("2026-11-27T10:10:00Z"))
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let every_second = schedule("* * * * * *", "UTC").unwrap();
        let within = at("2026-11-27T10:10:00.300Z");
        assert_eq!(every_second.last_at_or_before(within), Some(at("2026-11-27T10:10:00Z")));
        let paris = schedule("0 0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(paris.next_after(now), Some(at("2026-11-28T08:00:00Z")));
    }

    #[test]
    fn catch_up_fires_once_for_the_most_recent_missed_tick() {
        let every_ten = schedule("0 */10 * * * *", "UTC").unwrap();
        let armed = at("2026-11-27T09:00:00Z");
        let now = at("2026-11-27T10:33:00Z");
        let memory = |last: Option<&str>| TickMemory {
            last_tick: last.map(at),
            fired_at: None,
            armed_at: armed,
        };
        assert_eq!(
            every_ten.catch_up(&memory(Some("2026-11-27T10:00:00Z")), now),
            Some(at("2026-11-27T10:30:00Z"))
        );
        assert_eq!(every_ten.catch_up(&memory(Some("2026-11-27T10:30:00Z")), now), None);
        assert_eq!(every_ten.catch_up(&memory(None), now), Some(at("2026-11-27T10:30:00Z")));
        let fresh = TickMemory { last_tick: None, fired_at: None, armed_at: now };
        assert_eq!(every_ten.catch_up(&fresh, now), None, "a new schedule has missed nothing");

        let mut deadline = every_ten.clone();
        deadline.config.starting_deadline = Some(Duration::from_secs(60));
        assert_eq!(
            deadline.catch_up(&memory(Some("2026-11-27T10:00:00Z")), now),
            None,
            "3 min late > 1 min deadline"
        );
    }

    #[test]
    fn invalid_schedules_are_named() {
        let err = schedule("every tuesday", "UTC").unwrap_err().to_string();
        assert!(err.starts_with("schedule \"resync\": invalid cron expression"), "{err}");
        let twice = vec![ScheduleConfig::default(), ScheduleConfig::default()];
        assert!(parse_all(&twice).unwrap_err().to_string().contains("two schedules"));
    }

    #[test]
    fn tick_ids_name_the_schedule_and_the_scheduled_time() {
        assert_eq!(tick_id("resync", at("2026-11-27T10:10:00Z")), "resync@2026-11-27T10:10:00Z");
    }
}
