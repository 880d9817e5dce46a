//! The transactional outbox: events announcing record changes, stored with the change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::environment::Environment;
use super::team::Team;

pub const TEAM_CREATED: &str = "muster.team.created";
pub const TEAM_UPDATED: &str = "muster.team.updated";
pub const TEAM_DELETED: &str = "muster.team.deleted";
pub const ENVIRONMENT_CREATED: &str = "muster.environment.created";
pub const ENVIRONMENT_UPDATED: &str = "muster.environment.updated";
pub const ENVIRONMENT_DELETED: &str = "muster.environment.deleted";

/// Which change an outbox event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// Who caused a change: the CloudEvents auth context (`authtype`, `authid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `authtype`: `user`, `unauthenticated`, or `system` for Muster itself.
    pub kind: String,
    /// `authid`: the subject id (`anonymous` when unauthenticated).
    pub id: String,
}

impl Actor {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Actor { kind: kind.into(), id: id.into() }
    }

    /// Muster itself, for changes no caller asked for.
    pub fn system() -> Self {
        Actor::new("system", "muster")
    }
}

/// An event waiting in the outbox for the relay to publish it as a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Unique for all time (a ULID), so that it can serve as the CloudEvent id and the
    /// JetStream message id: a relay that publishes it twice is deduplicated.
    pub id: String,
    /// CloudEvent type, e.g. `muster.team.updated`.
    pub event_type: String,
    /// CloudEvent subject: the team slug or environment name.
    pub subject: String,
    /// The record as stored by the change (for a deletion: the tombstone, or the environment's
    /// last state).
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Who caused the change; `None` in events stored before actors were recorded.
    #[serde(default)]
    pub actor: Option<Actor>,
}

impl OutboxEvent {
    /// The event announcing `change` of `team` by `actor`.
    pub fn team(
        id: String,
        change: Change,
        team: &Team,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Self {
        let event_type = match change {
            Change::Created => TEAM_CREATED,
            Change::Updated => TEAM_UPDATED,
            Change::Deleted => TEAM_DELETED,
        };
        OutboxEvent {
            id,
            event_type: event_type.to_owned(),
            subject: team.spec.slug.clone(),
            data: to_value(team),
            created_at: now,
            actor: Some(actor.clone()),
        }
    }

    /// The event announcing `change` of `environment` by `actor`.
    pub fn environment(
        id: String,
        change: Change,
        environment: &Environment,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Self {
        let event_type = match change {
            Change::Created => ENVIRONMENT_CREATED,
            Change::Updated => ENVIRONMENT_UPDATED,
            Change::Deleted => ENVIRONMENT_DELETED,
        };
        OutboxEvent {
            id,
            event_type: event_type.to_owned(),
            subject: environment.spec.name.clone(),
            data: to_value(environment),
            created_at: now,
            actor: Some(actor.clone()),
        }
    }
}

/// Records are plain data (strings, maps, integers, timestamps); serialising them cannot fail.
fn to_value<T: Serialize>(record: &T) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Environment, EnvironmentSpec};

    #[test]
    fn environment_event_carries_the_record() {
        let now = Utc::now();
        let env = Environment::new(EnvironmentSpec::named("dev"), now);
        let bob = Actor::new("user", "bob");
        let ev = OutboxEvent::environment("01J".into(), Change::Deleted, &env, &bob, now);
        assert_eq!(ev.event_type, "muster.environment.deleted");
        assert_eq!(ev.subject, "dev");
        assert_eq!(ev.data["name"], "dev");
        assert_eq!(ev.data["resource_version"], 1);
        assert_eq!(ev.actor, Some(bob));
    }

    #[test]
    fn events_stored_without_an_actor_still_read() {
        let stored = serde_json::json!({
            "id": "01J", "event_type": "muster.team.created", "subject": "payments",
            "data": {"slug": "payments"}, "created_at": "2026-01-01T00:00:00Z"
        });
        let ev: OutboxEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(ev.actor, None);
    }
}
