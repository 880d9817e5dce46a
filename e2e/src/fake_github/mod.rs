//! A stateful fake of GitHub's REST API for an organization's teams and members, driven by the
//! real octocrab client over HTTP.
//!
//! Layout: `server` is the HTTP handler (faults, quota, authentication, ETags) and the
//! test-facing [`FakeGitHub`]; `routes` the endpoints; `state` the organization and the rules
//! between its parts; `names` GitHub's slug and login rules; `model` GitHub's JSON shapes
//! (octocrab's models parse every body).
//!
//! # What it models
//!
//! - **Teams** (`/orgs/{org}/teams[/{slug}]`): create, get, update, delete (a parent's child
//!   teams with it). The slug comes from the fake's own rendering of GitHub's rules
//!   (`names::team_slug`: diacritics dropped, runs of other characters become one `-`,
//!   underscores kept, lower case), and a rename changes it. A name that gives no slug is a 422.
//! - **Teams by id**: every team endpoint also answers at
//!   `/organizations/{org_id}/team/{team_id}` plus the same suffix, as GitHub documents;
//!   `GET /orgs/{org}` tells the organization's id.
//! - **Child teams**: `GET …/teams` of a team lists its children. "Team members will include
//!   the members of child teams": a team's members list and GET membership include the active
//!   members of its child teams, recursively, once each; DELETE membership removes only the
//!   team's own members (someone only inherited is a 404). [`TeamView`] shows own members only.
//! - **Memberships** with roles and the pending state: a login outside the organization is
//!   invited (one invitation per person, whatever the number of teams), listed by
//!   `…/invitations`. Members lists are ordered by login.
//! - **Organization members and owners**: `GET /orgs/{org}/members?role=all|admin|member` and
//!   `GET /orgs/{org}/members/{username}` (204 or 404). An owner is reported as a maintainer of
//!   every team they are on, whatever role a PUT asks for.
//! - **Accounts**: any well-formed login names an account (Enterprise Managed Users' `alice_acme`
//!   too), until [`FakeGitHub::delete_user`] or [`FakeGitHub::rename_user`]; then a PUT
//!   membership for the old login is a 404 `Not Found`, and `GET /users/{username}` too. A
//!   renamed account keeps its id and memberships under the new login.
//! - **Offboarding and expiry**: [`FakeGitHub::remove_org_member`] removes the person from
//!   every team and drops their invitations; [`FakeGitHub::expire_invitation`] moves a pending
//!   invitation to `GET /orgs/{org}/failed_invitations` (`failed_reason: "Invitation expired"`)
//!   until a new PUT membership invites the person again.
//! - **SAML SSO**: [`FakeGitHub::require_saml_sso`] makes every request for the organization's
//!   resources made with a personal token a 403 with GitHub's message and an
//!   `X-GitHub-SSO: required; url=…` header; App installation tokens pass.
//! - `GET /user`, `GET /users/{username}`, the GitHub App endpoints (`GET /app`,
//!   `POST /app/installations/{id}/access_tokens`) and `GET /rate_limit`.
//!
//! # Conditional requests, quota and faults
//!
//! Every GET answers with an ETag and honours `If-None-Match` with a 304 that costs no quota.
//! The ETag is a hash of the body only, as GitHub's is observed to be: a page whose items did not
//! change answers 304 even when its Link header changed (a page was added after it). The 304
//! carries the current Link header, so a client that re-uses the Link header it cached with the
//! body misses the new pages.
//!
//! Every answer carries `x-ratelimit-*` headers from a configurable [`Budget`]; an exhausted
//! budget answers 403 like GitHub's primary limit. [`Fault`]s queue injected answers (status,
//! Retry-After, latency, a secondary limit without headers) and [`FakeGitHub::rate_limit_fraction`]
//! limits a share of requests. [`FakeGitHub::requests`] is the log of every request.
//!
//! Where GitHub's documentation is silent, the fake picks the behaviour least kind to a client
//! that trusts too much, and says so where it does.
//!
//! `GET /_fake/log` returns the log as JSON (a dev aid; not a GitHub endpoint).

mod model;
mod names;
mod routes;
mod server;
mod state;

pub use server::{Budget, FakeGitHub, Fault, LoggedRequest, TeamView};
