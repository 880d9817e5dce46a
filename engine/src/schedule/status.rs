//! What operators and readiness checks see of the schedules.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Schedule, TickMemory, recall};
use crate::bus::BusError;

/// Slack after a tick's time before an unfired tick counts as overdue.
pub const OVERDUE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ScheduleStatus {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub event_type: String,
    pub enabled: bool,
    /// The next ticks.
    pub next: Vec<DateTime<Utc>>,
    /// The last tick fired by any replica, and when.
    pub last_tick: Option<DateTime<Utc>>,
    pub fired_at: Option<DateTime<Utc>>,
    /// A tick that was due (more than [`OVERDUE_AFTER`] ago) has not fired.
    pub overdue: bool,
}

impl ScheduleStatus {
    pub fn of(
        schedule: &Schedule,
        memory: Option<&TickMemory>,
        now: DateTime<Utc>,
        next: usize,
    ) -> Self {
        let config = &schedule.config;
        let overdue = config.enabled
            && memory.is_some_and(|memory| {
                let known = memory.last_tick.map_or(memory.armed_at, |t| t.max(memory.armed_at));
                schedule.last_at_or_before(now - OVERDUE_AFTER).is_some_and(|due| due > known)
            });
        Self {
            name: config.name.clone(),
            cron: config.cron.clone(),
            timezone: config.timezone.clone(),
            event_type: config.event_type.clone(),
            enabled: config.enabled,
            next: if config.enabled { schedule.upcoming(now, next) } else { Vec::new() },
            last_tick: memory.and_then(|m| m.last_tick),
            fired_at: memory.and_then(|m| m.fired_at),
            overdue,
        }
    }
}

/// The status of every schedule, from the shared bucket.
///
/// # Errors
/// The bucket is unreachable.
pub async fn statuses(
    store: &async_nats::jetstream::kv::Store,
    schedules: &[Schedule],
    next: usize,
) -> Result<Vec<ScheduleStatus>, BusError> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        let memory = recall(store, schedule.name()).await?;
        out.push(ScheduleStatus::of(schedule, memory.as_ref(), now, next));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleConfig;

    #[test]
    fn an_unfired_due_tick_is_overdue() {
        let schedule = Schedule::parse(&ScheduleConfig {
            cron: "0 */10 * * * *".into(),
            ..ScheduleConfig::default()
        })
        .unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let memory = TickMemory {
            last_tick: Some(t("2026-11-27T10:00:00Z")),
            fired_at: None,
            armed_at: t("2026-11-27T09:00:00Z"),
        };
        let fine = ScheduleStatus::of(&schedule, Some(&memory), t("2026-11-27T10:10:20Z"), 2);
        assert!(!fine.overdue, "within the slack");
        assert_eq!(fine.next, [t("2026-11-27T10:20:00Z"), t("2026-11-27T10:30:00Z")]);
        let late = ScheduleStatus::of(&schedule, Some(&memory), t("2026-11-27T10:11:00Z"), 2);
        assert!(late.overdue);
        assert!(
            !ScheduleStatus::of(&schedule, None, t("2026-11-27T10:11:00Z"), 2).overdue,
            "never armed"
        );
    }
}
