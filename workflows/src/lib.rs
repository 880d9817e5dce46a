//! Muster's domain, free of I/O.
//!
//! Layout:
//! - [`workflow`]: the [`Workflow`] trait, the [`RunContext`] a run uses to journal its steps, and
//!   the [`RunError`] kinds the runtime maps onto JetStream acknowledgements;
//! - [`event`]: CloudEvent helpers shared by workflows and the runtime;
//! - [`ping`]: the built-in `ping` workflow, an operator's smoke test;
//! - [`github`]: the [`github::GitHub`] port, its error kinds, and the pure member planner with
//!   its guards (mass removal, minimum maintainers, the acting identity);
//! - [`records`]: teams, environments and namespace records, their validation, and the
//!   [`records::Records`] port with its transactional outbox.
//! - [`publisher`]: the [`publisher::Publisher`] port through which workflows put events on the
//!   bus (deduplicated by CloudEvent source + id);
//! - [`sync_team`]: the `sync_team` workflow: one team's GitHub team, members and namespace
//!   records made to match the records store, and its teardown;
//! - [`resync`]: the `resync` and `sync_environment` workflows, which fan out `muster.team.sync`
//!   for every team in journaled batches;
//! - [`cluster`]: what a namespace record becomes in a cluster: the objects Muster owns, the
//!   pure planner the agent runs, the [`cluster::Cluster`] port, agents' reports and the
//!   `record_cluster_report` workflow;
//! - [`memory`]: in-memory ports and step journal for tests of workflow logic.
//!
//! The runtime that drives workflows (consumers, journal, retries, DLQ) lives in the `engine`
//! crate; adapters behind the ports live in `connectors`.

pub mod cluster;
pub mod event;
pub mod github;
pub mod memory;
pub mod ping;
pub mod publisher;
pub mod records;
pub mod resync;
pub mod sync_team;
pub mod workflow;

pub use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
pub use workflow::{ErrorKind, RunContext, RunError, StepJournal, StoredStep, Workflow};
