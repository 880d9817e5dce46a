//! GitHub: the port a sync workflow drives, its error kinds, and the pure member planner.
//!
//! - [`GitHub`]: an object-safe async port at the level `sync_team` needs (ensure a team, read
//!   its members with pending invitations, set or remove one membership, delete a team). The
//!   octocrab adapter lives in `connectors::github`.
//! - [`plan_members`]: (desired, observed, guards) → [`MemberPlan`], a pure function with the
//!   safety rules: authoritative sync, pending invitations in progress, a mass-removal guard
//!   that holds for every team size, a minimum number of maintainers, and the acting identity
//!   never removed or demoted.
//! - [`apply_plan`]: sends a plan through the port, removals last.
//! - [`GitHubError`]: what went wrong, with [`GitHubError::is_retryable`] and
//!   [`GitHubError::retry_after`], mapped onto [`RunError`](crate::RunError) so a rate limit
//!   becomes a durable, delayed retry rather than a blocked task.
//!
//! # Decisions
//! - **A team is found by its stored id first**, then its stored slug, then the slug GitHub
//!   derives from the desired name ([`slug_for`]); only when all miss is a team created. A
//!   rename is therefore an update of the same team.
//! - **Logins compare case-insensitively**, as GitHub's do; plans keep the desired spelling.
//! - **Pending invitations are in progress.** A desired login with a pending invitation is left
//!   alone (no re-invite every run, the Terraform provider's #3622); an undesired one is removed,
//!   which cancels the invitation (peribolos' #9483: a stale invite would grant access later).

mod apply;
mod error;
mod plan;
mod port;

pub use apply::{AppliedPlan, FailedLogin, apply_plan};
pub use error::{GitHubError, RateLimitKind};
pub use plan::{
    Assignment, DEFAULT_MAX_REMOVAL_FRACTION, DEFAULT_MAX_REMOVAL_MAJORITY,
    DEFAULT_MAX_REMOVALS_ABSOLUTE, DEFAULT_MIN_MAINTAINERS, Guards, Held, HoldReason, MemberPlan,
    PlanError, RemovalRule, RoleChange, plan_members,
};
pub use port::{
    Adoption, DesiredTeam, GitHub, GitHubTeam, Member, MembershipState, Privacy, Role, TeamField,
    TeamRef, slug_for,
};
