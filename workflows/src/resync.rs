//! `resync` and `sync_environment`: fan out `muster.team.sync` for every team, in journaled
//! batches.
//!
//! - `resync` (trigger `muster.schedule.fired`, key: the schedule name): every tick asks every
//!   team, tombstoned ones included (so teardowns waiting for agents finish), for a sync. This
//!   is what makes a missed event harmless: the next tick repairs it.
//! - `sync_environment` (triggers `muster.environment.*`, key: the environment name): an
//!   environment created, changed or deleted changes every team's namespace records.
//!
//! # Guarantees
//! - **One step per page.** Each step (`batch-0`, `batch-1`, …) reads one page of
//!   [`Records::list_teams`] and publishes that page's syncs; its output is the cursor of the
//!   next page. A crash mid-fan-out resumes at the first unfinished page: finished pages are
//!   replayed from the journal and not published again.
//! - **Deterministic ids.** A resync's event id is `<schedule>-<tick RFC 3339>-<slug>`, a
//!   `sync_environment`'s `<triggering event id>-<slug>`; the interrupted page is published
//!   again with the same ids and JetStream drops the copies. Two replicas firing the same tick
//!   also produce the same ids.
//! - **Coalescing.** A resync's sync carries its tick ([`SyncRequest::tick`]); `sync_team`
//!   finishes such a run at once (`coalesced`) when the team already completed a sync that
//!   started at or after the tick. When GitHub is slow and ticks pile up syncs for one team, the
//!   first one to run covers all older ticks and the others cost one records read each, so the
//!   backlog never grows into GitHub calls.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::publisher::Publisher;
use crate::records::Records;
use crate::sync_team::{SyncRequest, TEAM_SYNC};
use crate::workflow::{RunContext, RunError, Workflow};

/// The event type schedules emit.
pub const SCHEDULE_FIRED: &str = "muster.schedule.fired";
/// The CloudEvent source of the syncs `resync` publishes.
pub const RESYNC_SOURCE: &str = "/muster/resync";
/// The CloudEvent source of the syncs `sync_environment` publishes.
pub const SYNC_ENVIRONMENT_SOURCE: &str = "/muster/sync_environment";
/// Teams per journaled batch.
pub const FAN_OUT_PAGE_SIZE: usize = 100;

/// The data of a `muster.schedule.fired` event that `resync` reads (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFired {
    pub schedule: String,
    pub tick: DateTime<Utc>,
}

/// The id of the sync that `schedule`'s `tick` asks of team `slug`.
pub fn resync_id(schedule: &str, tick: DateTime<Utc>, slug: &str) -> String {
    format!("{schedule}-{}-{slug}", tick.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The id of the sync that environment event `event_id` asks of team `slug`.
pub fn environment_sync_id(event_id: &str, slug: &str) -> String {
    format!("{event_id}-{slug}")
}

/// Output of one `batch-<n>` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    teams: usize,
    duplicates: usize,
    /// The cursor of the next page; `None` after the last.
    next: Option<String>,
}

/// What a fan-out did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    pub teams: usize,
    pub batches: usize,
    /// Syncs the bus had already stored (a resumed batch, or another replica's tick).
    pub duplicates: usize,
}

/// Publishes one sync per team, a journaled step per page of `page_size` teams.
async fn fan_out(
    ctx: &mut RunContext,
    records: &dyn Records,
    publisher: &dyn Publisher,
    page_size: usize,
    make: impl Fn(&str) -> Result<Event, RunError>,
) -> Result<FanOut, RunError> {
    let mut out = FanOut::default();
    let mut after: Option<String> = None;
    loop {
        let name = format!("batch-{}", out.batches);
        let cursor = after.clone();
        let batch: Batch = ctx
            .step(&name, || async {
                let page = records.list_teams(cursor.as_deref(), page_size).await?;
                let mut duplicates = 0;
                for team in &page.items {
                    if publisher.publish(make(team.slug())?).await?.duplicate {
                        duplicates += 1;
                    }
                }
                Ok::<_, RunError>(Batch { teams: page.items.len(), duplicates, next: page.next })
            })
            .await?;
        out.batches += 1;
        out.teams += batch.teams;
        out.duplicates += batch.duplicates;
        match batch.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

fn sync_event(
    id: String,
    source: &str,
    slug: &str,
    request: &SyncRequest,
) -> Result<Event, RunError> {
    let data = serde_json::to_value(request)
        .map_err(|e| RunError::permanent(format!("sync request is not JSON: {e}")))?;
    EventBuilderV10::new()
        .id(id)
        .source(source)
        .ty(TEAM_SYNC)
        .subject(slug)
        .data("application/json", data)
        .build()
        .map_err(|e| RunError::permanent(format!("building {TEAM_SYNC}: {e}")))
}

/// The `resync` workflow; see the [module documentation](self).
pub struct Resync {
    records: Arc<dyn Records>,
    publisher: Arc<dyn Publisher>,
    page_size: usize,
}

impl Resync {
    pub fn new(records: Arc<dyn Records>, publisher: Arc<dyn Publisher>) -> Self {
        Resync { records, publisher, page_size: FAN_OUT_PAGE_SIZE }
    }

    /// Teams per batch instead of [`FAN_OUT_PAGE_SIZE`]. Keep it stable while runs are in flight:
    /// a resumed run must cut the same pages.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }
}

#[async_trait]
impl Workflow for Resync {
    fn name(&self) -> &'static str {
        "resync"
    }

    fn triggers(&self) -> &'static [&'static str] {
        &[SCHEDULE_FIRED]
    }

    /// The schedule name (the event subject).
    fn key(&self, event: &Event) -> String {
        crate::event::default_key(event)
    }

    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let fired: ScheduleFired =
            crate::event::data_json(&event).and_then(serde_json::from_value).map_err(|e| {
                RunError::permanent(format!("{SCHEDULE_FIRED} {} has bad data: {e}", event.id()))
            })?;
        let request = SyncRequest {
            schedule: Some(fired.schedule.clone()),
            tick: Some(fired.tick),
            ..SyncRequest::default()
        };
        let done =
            fan_out(ctx, self.records.as_ref(), self.publisher.as_ref(), self.page_size, |slug| {
                let id = resync_id(&fired.schedule, fired.tick, slug);
                sync_event(id, RESYNC_SOURCE, slug, &request)
            })
            .await?;
        Ok(json!({
            "schedule": fired.schedule,
            "tick": fired.tick,
            "teams": done.teams,
            "batches": done.batches,
            "duplicates": done.duplicates,
        }))
    }
}

/// The `sync_environment` workflow; see the [module documentation](self).
pub struct SyncEnvironment {
    records: Arc<dyn Records>,
    publisher: Arc<dyn Publisher>,
    page_size: usize,
}

impl SyncEnvironment {
    pub fn new(records: Arc<dyn Records>, publisher: Arc<dyn Publisher>) -> Self {
        SyncEnvironment { records, publisher, page_size: FAN_OUT_PAGE_SIZE }
    }

    /// Teams per batch instead of [`FAN_OUT_PAGE_SIZE`].
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }
}

#[async_trait]
impl Workflow for SyncEnvironment {
    fn name(&self) -> &'static str {
        "sync_environment"
    }

    fn triggers(&self) -> &'static [&'static str] {
        &["muster.environment.*"]
    }

    /// The environment name (the event subject).
    fn key(&self, event: &Event) -> String {
        crate::event::default_key(event)
    }

    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let cause = event.id().to_owned();
        let request = SyncRequest::default();
        let done =
            fan_out(ctx, self.records.as_ref(), self.publisher.as_ref(), self.page_size, |slug| {
                sync_event(
                    environment_sync_id(&cause, slug),
                    SYNC_ENVIRONMENT_SOURCE,
                    slug,
                    &request,
                )
            })
            .await?;
        Ok(json!({
            "environment": event.subject(),
            "cause": cause,
            "teams": done.teams,
            "batches": done.batches,
            "duplicates": done.duplicates,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryJournal, MemoryPublisher, MemoryRecords};
    use crate::records::{Actor, TeamSpec};
    use std::collections::BTreeSet;

    fn team(slug: &str) -> TeamSpec {
        TeamSpec {
            slug: slug.to_owned(),
            name: format!("Team {slug}"),
            description: String::new(),
            members: Vec::new(),
            maintainers: vec!["alice".into()],
            parent: None,
            privacy: Default::default(),
            quota_profile: None,
            labels: Default::default(),
        }
    }

    async fn store_with(teams: usize) -> MemoryRecords {
        let records = MemoryRecords::new();
        for i in 0..teams {
            records.create_team(team(&format!("team-{i:03}")), &Actor::system()).await.unwrap();
        }
        records
    }

    fn tick() -> DateTime<Utc> {
        "2026-11-27T14:00:00Z".parse().unwrap()
    }

    fn fired() -> Event {
        EventBuilderV10::new()
            .id("resync@2026-11-27T14:00:00Z")
            .source("/muster/schedules/resync")
            .ty(SCHEDULE_FIRED)
            .subject("resync")
            .data(
                "application/json",
                json!({"schedule": "resync", "tick": tick(), "timezone": "UTC", "catch_up": false}),
            )
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn resync_publishes_one_sync_per_team_in_batches() {
        let records = store_with(250).await;
        let publisher = MemoryPublisher::new();
        let resync = Resync::new(Arc::new(records), Arc::new(publisher.clone()));
        let journal = MemoryJournal::new();
        let mut ctx = RunContext::new("resync-1", 1, Box::new(journal.clone()));
        let output = resync.run(&mut ctx, fired()).await.unwrap();
        assert_eq!(output["teams"], 250);
        assert_eq!(output["batches"], 3);
        assert_eq!(journal.starts(), ["batch-0", "batch-1", "batch-2"]);

        let events = publisher.events();
        let ids: BTreeSet<&str> = events.iter().map(|e| e.id()).collect();
        assert_eq!(ids.len(), 250, "250 distinct ids");
        assert!(ids.contains("resync-2026-11-27T14:00:00Z-team-000"));
        let first = &events[0];
        assert_eq!(first.ty(), TEAM_SYNC);
        assert_eq!(first.source().to_string(), RESYNC_SOURCE);
        assert_eq!(first.subject(), Some("team-000"));
        let request = SyncRequest::from_event(first).unwrap();
        assert_eq!(request.tick, Some(tick()));
        assert_eq!(request.schedule.as_deref(), Some("resync"));
    }

    #[tokio::test]
    async fn a_crash_mid_fan_out_resumes_at_the_unfinished_batch() {
        let records = store_with(250).await;
        let publisher = MemoryPublisher::new();
        let resync = Resync::new(Arc::new(records), Arc::new(publisher.clone()));
        let journal = MemoryJournal::new();

        // The bus goes away in the middle of the second batch.
        publisher.fail_after(150);
        let mut ctx = RunContext::new("resync-1", 1, Box::new(journal.clone()));
        let err = resync.run(&mut ctx, fired()).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(publisher.calls(), 151);
        assert_eq!(publisher.events().len(), 150);

        publisher.recover();
        let mut ctx = RunContext::new("resync-1", 2, Box::new(journal.clone()));
        let output = resync.run(&mut ctx, fired()).await.unwrap();
        // Batch 0 is replayed from the journal (no calls); batch 1 runs again in full (its first
        // 50 are duplicates), batch 2 runs once.
        assert_eq!(publisher.calls(), 151 + 100 + 50);
        assert_eq!(journal.starts(), ["batch-0", "batch-1", "batch-1", "batch-2"]);
        assert_eq!(publisher.events().len(), 250, "every team exactly one sync");
        assert_eq!(output["teams"], 250);
        assert_eq!(output["duplicates"], 50);
    }

    #[tokio::test]
    async fn tombstoned_teams_are_resynced_and_an_empty_store_is_one_batch() {
        let records = store_with(2).await;
        records.delete_team("team-001", None, &Actor::system()).await.unwrap();
        let publisher = MemoryPublisher::new();
        let resync = Resync::new(Arc::new(records), Arc::new(publisher.clone()));
        let mut ctx = RunContext::new("r", 1, Box::new(MemoryJournal::new()));
        resync.run(&mut ctx, fired()).await.unwrap();
        assert_eq!(publisher.events().len(), 2);

        let empty = Resync::new(Arc::new(MemoryRecords::new()), Arc::new(MemoryPublisher::new()));
        let mut ctx = RunContext::new("r", 1, Box::new(MemoryJournal::new()));
        let output = empty.run(&mut ctx, fired()).await.unwrap();
        assert_eq!((output["teams"].as_u64(), output["batches"].as_u64()), (Some(0), Some(1)));
    }

    #[tokio::test]
    async fn bad_schedule_data_is_permanent() {
        let resync = Resync::new(Arc::new(MemoryRecords::new()), Arc::new(MemoryPublisher::new()));
        let event = EventBuilderV10::new()
            .id("x")
            .source("/t")
            .ty(SCHEDULE_FIRED)
            .data("application/json", json!({"schedule": "resync"}))
            .build()
            .unwrap();
        let mut ctx = RunContext::new("r", 1, Box::new(MemoryJournal::new()));
        let err = resync.run(&mut ctx, event).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message.contains("bad data"), "{}", err.message);
    }

    #[tokio::test]
    async fn sync_environment_fans_out_with_ids_from_its_event() {
        let records = store_with(5).await;
        let publisher = MemoryPublisher::new();
        let workflow =
            SyncEnvironment::new(Arc::new(records), Arc::new(publisher.clone())).with_page_size(2);
        assert_eq!(workflow.triggers(), ["muster.environment.*"]);
        let event = EventBuilderV10::new()
            .id("01JENV")
            .source("/muster/records")
            .ty("muster.environment.created")
            .subject("dev")
            .build()
            .unwrap();
        assert_eq!(workflow.key(&event), "dev");
        let journal = MemoryJournal::new();
        let mut ctx = RunContext::new("sync_environment-1", 1, Box::new(journal.clone()));
        let output = workflow.run(&mut ctx, event.clone()).await.unwrap();
        assert_eq!((output["teams"].as_u64(), output["batches"].as_u64()), (Some(5), Some(3)));
        let ids: Vec<String> = publisher.events().iter().map(|e| e.id().to_owned()).collect();
        assert_eq!(ids[0], "01JENV-team-000");
        assert_eq!(ids.len(), 5);
        assert!(
            publisher.events().iter().all(|e| SyncRequest::from_event(e).unwrap().tick.is_none())
        );

        // A redelivered event after the run finished its steps publishes nothing new.
        let mut ctx = RunContext::new("sync_environment-1", 2, Box::new(journal));
        workflow.run(&mut ctx, event).await.unwrap();
        assert_eq!(publisher.calls(), 5);
    }
}
