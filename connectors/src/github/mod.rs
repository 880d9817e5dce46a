//! The GitHub adapter behind [`workflows::github::GitHub`]: octocrab over GitHub's REST API
//! (GitHub.com, GitHub Enterprise Server via `api-url`, or the fake server in `e2e`).
//!
//! - [`GitHubConfig`]: the `[github]` section, secrets masked, validated.
//! - [`OctocrabGitHub`]: the adapter; plan-only when no credentials are configured.
//! - `limits`: GitHub's rate-limit rules as state (the rate gate).
//!
//! # Decisions
//! - **Raw requests, octocrab's models.** Every call goes through octocrab's `_get`/`_post`/…
//!   so the adapter sees status and headers (ETag, `x-ratelimit-*`, `retry-after`, Link) of
//!   every answer, and parses bodies into octocrab's models (`FullTeam`, `Author`,
//!   `TeamInvitation`), which keeps the fake server honest about GitHub's shapes.
//! - **No retry inside the adapter.** octocrab's retry feature is off; a rate limit or a 5xx
//!   becomes a retryable error and the engine Naks the run with the delay, so waits are durable
//!   and no task sleeps through a limit. The only sleep is the pause between two writes
//!   (`write-interval`, 1 s by default).
//! - **Plan-only without credentials.** Nothing is read either (there is nothing to read
//!   with): the observed state is empty, so the plan shows the whole desired state, and the
//!   mutating methods report what they would do without sending anything.
//! - **App tokens renewed early.** Installation tokens live an hour; each request renews one
//!   with less than five minutes left (octocrab alone would wait until 30 s).

mod adapter;
mod config;
mod limits;

pub use adapter::{
    MAX_CACHED_RESPONSES, MAX_PAGES, OctocrabGitHub, PER_PAGE, TOKEN_REFRESH_MARGIN,
};
pub use config::{
    Credentials, DEFAULT_API_URL, DEFAULT_WRITE_INTERVAL, GitHubConfig, GitHubConfigError, Secret,
    TOKEN_ENV, WEBHOOK_SECRET_ENV,
};
pub use limits::{SECONDARY_MAX_WAIT, SECONDARY_MIN_WAIT};
