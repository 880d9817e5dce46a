//! The GitHub adapter behind [`workflows::github::GitHub`]: octocrab over GitHub's REST API
//! (GitHub.com, GitHub Enterprise Server via `api-url`, or the fake server in `e2e`).
//!
//! - [`GitHubConfig`]: the `[github]` section, secrets masked, validated.
//! - [`OctocrabGitHub`]: the adapter; plan-only when no credentials are configured.
//! - `limits`: GitHub's rate-limit rules as state (the rate gate).
//! - [`RequestBudget`]: the organization's request budget (GitHub's points per minute), kept in
//!   the process ([`LocalBudget`]) or shared by the engine replicas (the engine's JetStream one).
//!
//! # Decisions
//! - **Raw requests, octocrab's models.** Every call goes through octocrab's `_get`/`_post`/…
//!   so the adapter sees status and headers (ETag, `x-ratelimit-*`, `retry-after`, Link) of
//!   every answer, and parses bodies into octocrab's models (`FullTeam`, `Author`,
//!   `TeamInvitation`), which keeps the fake server honest about GitHub's shapes.
//! - **No retry inside the adapter.** octocrab's retry feature is off; a rate limit or a 5xx
//!   becomes a retryable error and the engine Naks the run with the delay, so waits are durable
//!   and no task sleeps through a limit. The only sleeps are the pause between two writes
//!   (`write-interval`, 1 s by default) and a request's turn in the request budget when it
//!   comes within `MAX_BUDGET_SLEEP` (5 s); a longer budget wait is a rate limit too.
//! - **Plan-only without credentials.** Nothing is read either (there is nothing to read
//!   with): the observed state is empty, so the plan shows the whole desired state, and the
//!   mutating methods report what they would do without sending anything. With credentials
//!   and `mode = "plan"` every read goes to GitHub and nothing is sent: the plan is exactly
//!   what a live sync would send.
//! - **Teams by id.** Every call on an existing team uses `/organizations/{org_id}/team/{id}`,
//!   so a team renamed on GitHub, whose old slug another team took, is never mistaken for it.
//!   Slugs are used only to find a team not yet linked, which is then adopted only when
//!   allowed ([`workflows::github::Adoption`]).
//! - **App tokens renewed early.** Installation tokens live an hour; each request renews one
//!   with less than five minutes left (octocrab alone would wait until 30 s).

mod adapter;
mod budget;
mod config;
mod limits;

pub use adapter::{MAX_PAGES, OctocrabGitHub, PER_PAGE, TOKEN_REFRESH_MARGIN};
pub use budget::{
    BudgetError, LocalBudget, MAX_BUDGET_SLEEP, Pacing, READ_POINTS, RequestBudget, Reservation,
    WRITE_POINTS,
};
pub use config::{
    Credentials, DEFAULT_API_URL, DEFAULT_CACHE_ENTRIES, DEFAULT_POINTS_PER_MINUTE,
    DEFAULT_WRITE_INTERVAL, GitHubConfig, GitHubConfigError, GitHubMode, Secret, TOKEN_ENV,
    WEBHOOK_SECRET_ENV,
};
pub use limits::{SECONDARY_MAX_WAIT, SECONDARY_MIN_WAIT};
