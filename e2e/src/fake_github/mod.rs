//! A stateful fake of GitHub's REST API for teams, driven by the real octocrab client over HTTP.
//!
//! It serves what the GitHub connector uses, in GitHub's documented shapes (octocrab's models
//! parse every body): teams (`/orgs/{org}/teams[/{slug}]`, slugs derived from names, renames
//! changing the slug), members lists with `role=` and Link pagination, memberships with roles
//! and the pending state (a login outside the organization's member list is invited),
//! invitations, `GET /user`, the GitHub App endpoints (`GET /app`,
//! `POST /app/installations/{id}/access_tokens`) and `GET /rate_limit`.
//!
//! Every GET answers with an ETag and honours `If-None-Match` with a 304 that costs no quota.
//! Every answer carries `x-ratelimit-*` headers from a configurable [`Budget`]; an exhausted
//! budget answers 403 like GitHub's primary limit. [`Fault`]s queue injected answers (status,
//! Retry-After, latency, a secondary limit without headers) and [`FakeGitHub::rate_limit_fraction`]
//! limits a share of requests. [`FakeGitHub::requests`] is the log of every request.
//!
//! `GET /_fake/log` returns the log as JSON (a dev aid; not a GitHub endpoint).

mod model;
mod server;

pub use server::{Budget, FakeGitHub, Fault, LoggedRequest, TeamView};
