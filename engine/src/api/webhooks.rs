//! `POST /v1/webhooks/github`: GitHub's drift signals, verified and enqueued.
//!
//! A delivery is verified (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with
//! `github.webhook-secret`, compared in constant time), then published as the CloudEvent
//! `com.github.<event>.<action>` with id = `X-GitHub-Delivery` (so a redelivery is stored once),
//! and for `team`, `membership` and `organization` events each managed team concerned gets a
//! `muster.team.sync` carrying the time of receipt as its `tick`: a burst for one team collapses,
//! because `sync_team` skips a request whose tick is older than the start of a sync it already
//! finished. The answer comes as soon as the events are stored; nothing is reconciled in the
//! request. Other events are acknowledged and dropped.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cloudevents::{EventBuilder, EventBuilderV10};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;
use workflows::records::Team;

use super::problem::{PROBLEM_JSON, Problem, ProblemKind};
use super::responses::NatsOrStoreUnavailable;
use super::teams::TEAM_SYNC;
use super::{ApiState, json_with};
use crate::bus;

/// GitHub events that can mean drift of a managed team.
const DRIFT_EVENTS: [&str; 3] = ["team", "membership", "organization"];
/// CloudEvent source of verified GitHub deliveries.
const GITHUB_SOURCE: &str = "/github/webhooks";
/// Teams read per page while matching a delivery to managed teams.
const TEAM_PAGE: usize = 500;

/// What a delivery led to.
#[derive(Serialize, ToSchema)]
pub struct WebhookAccepted {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// The CloudEvent type published, or none for an ignored event.
    pub event_type: Option<String>,
    /// True when this delivery had been stored before.
    pub duplicate: bool,
    /// Muster teams asked to sync.
    pub syncs: Vec<String>,
}

/// Receive a GitHub webhook delivery.
#[utoipa::path(post, path = "/v1/webhooks/github", tag = "webhooks", security(()),
    request_body(content = Object, content_type = "application/json", description = "GitHub's payload"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC-SHA256 of the body>"),
        ("X-GitHub-Event" = String, Header, description = "Event name"),
        ("X-GitHub-Delivery" = String, Header, description = "Delivery id"),
    ),
    responses(
        (status = 202, description = "Verified and enqueued (or ignored)", body = WebhookAccepted),
        (status = 400, description = "Missing headers or a body that is not JSON", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or wrong signature, or webhooks not configured", body = Problem, content_type = PROBLEM_JSON),
        NatsOrStoreUnavailable,
    ))]
pub async fn github(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let secret = state.github_webhook_secret.as_deref().ok_or_else(|| {
        Problem::new(
            ProblemKind::Unauthorized,
            "webhooks are not configured (github.webhook-secret)",
        )
    })?;
    verify(secret, header(&headers, "x-hub-signature-256"), &body)?;
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 128)
        .ok_or_else(|| Problem::bad_request("X-GitHub-Delivery is missing"))?
        .to_owned();
    let event = header(&headers, "x-github-event")
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| Problem::bad_request("X-GitHub-Event is missing or invalid"))?
        .to_owned();
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(ProblemKind::MalformedJson, format!("the payload is not JSON: {e}"))
    })?;
    if !DRIFT_EVENTS.contains(&event.as_str()) {
        return Ok(accepted(WebhookAccepted {
            delivery,
            event_type: None,
            duplicate: false,
            syncs: vec![],
        }));
    }
    let action = payload["action"]
        .as_str()
        .filter(|a| a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let event_type = match action {
        Some(action) => format!("com.github.{event}.{action}"),
        None => format!("com.github.{event}"),
    };
    let mut builder = EventBuilderV10::new()
        .id(delivery.clone())
        .source(GITHUB_SOURCE)
        .ty(event_type.clone())
        .time(chrono::Utc::now())
        .data("application/json", payload.clone());
    if let Some(slug) = payload["team"]["slug"].as_str() {
        builder = builder.subject(slug);
    }
    let cloud_event = builder.build().map_err(|e| Problem::internal(&e))?;
    let published = bus::publish_event(&state.js, &state.names, &cloud_event)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot publish the delivery: {e}")))?;

    // Always (also for a duplicate delivery): the sync ids derive from the delivery, so a
    // redelivery after a crash between the two publishes still asks for the syncs, once.
    let teams = managed_teams(&state, &payload).await?;
    let tick = chrono::Utc::now();
    for slug in &teams {
        let sync = EventBuilderV10::new()
            .id(format!("github-{delivery}-{slug}"))
            .source(GITHUB_SOURCE)
            .ty(TEAM_SYNC)
            .subject(slug.clone())
            .time(tick)
            .data(
                "application/json",
                serde_json::json!({ "tick": tick, "reason": event_type, "delivery": delivery }),
            )
            .build()
            .map_err(|e| Problem::internal(&e))?;
        bus::publish_event(&state.js, &state.names, &sync)
            .await
            .map_err(|e| Problem::unavailable(format!("cannot publish the sync request: {e}")))?;
    }
    Ok(accepted(WebhookAccepted {
        delivery,
        event_type: Some(event_type),
        duplicate: published.duplicate,
        syncs: teams,
    }))
}

fn accepted(body: WebhookAccepted) -> Response {
    json_with(StatusCode::ACCEPTED, &[], &body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks `sha256=<hex>` against the HMAC of the raw body, in constant time.
fn verify(secret: &str, signature: Option<&str>, body: &[u8]) -> Result<(), Problem> {
    let unauthorized = |detail: &str| Problem::new(ProblemKind::Unauthorized, detail);
    let signature = signature.ok_or_else(|| unauthorized("X-Hub-Signature-256 is missing"))?;
    let hex_digest = signature
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("X-Hub-Signature-256 is not sha256=<hex>"))?;
    let expected =
        hex::decode(hex_digest).map_err(|_| unauthorized("X-Hub-Signature-256 is not hex"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| Problem::internal(&e))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| unauthorized("the signature does not match the payload"))
}

/// The Muster teams a drift event concerns: the team linked to `team.id`, or for membership and
/// organization events without a team, every team that names the user.
async fn managed_teams(state: &ApiState, payload: &Value) -> Result<Vec<String>, Problem> {
    let team_id = payload["team"]["id"].as_u64();
    let login = payload["membership"]["user"]["login"]
        .as_str()
        .or_else(|| payload["member"]["login"].as_str())
        .map(str::to_ascii_lowercase);
    if team_id.is_none() && login.is_none() {
        return Ok(Vec::new());
    }
    let concerns = |team: &Team| match team_id {
        Some(id) => team.status.github.as_ref().is_some_and(|link| link.id == id),
        None => login.as_deref().is_some_and(|login| {
            team.spec
                .members
                .iter()
                .chain(&team.spec.maintainers)
                .any(|m| m.eq_ignore_ascii_case(login))
        }),
    };
    let mut slugs = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.records.list_teams(after.as_deref(), TEAM_PAGE).await?;
        slugs.extend(page.items.iter().filter(|t| concerns(t)).map(|t| t.spec.slug.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(slugs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_verify_only_with_the_secret_and_the_exact_body() {
        let body = br#"{"action":"removed"}"#;
        assert!(verify("s3cret", Some(&sign("s3cret", body)), body).is_ok());
        assert!(verify("other", Some(&sign("s3cret", body)), body).is_err());
        assert!(verify("s3cret", Some(&sign("s3cret", body)), b"{}").is_err());
        assert!(verify("s3cret", None, body).is_err());
        assert!(verify("s3cret", Some("sha1=abc"), body).is_err());
        assert!(verify("s3cret", Some("sha256=zz"), body).is_err());
    }
}
