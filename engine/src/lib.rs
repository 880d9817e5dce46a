//! Muster's engine: the durable workflow runtime on NATS JetStream and the `engine` binary.
//!
//! Layout:
//! - [`config`]: the one typed configuration, layered and validated;
//! - [`bus`]: JetStream connection, names, streams and consumers, the CloudEvents codec;
//! - [`journal`]: the run and step journal (sled);
//! - [`runtime`]: the runner (consume → journal → steps → ack/nak/term), retries, DLQ, the NATS
//!   service endpoints;
//! - [`schedule`]: cron schedules publishing one event per tick, leaderless, with catch-up;
//! - [`natsd`]: locating and supervising a local nats-server (`engine dev`, tests, bench);
//! - [`store`]: the records store (sled or PostgreSQL) the daemon serves;
//! - [`relay`]: the outbox relay that publishes record changes to JetStream;
//! - [`api`]: the HTTP API (axum) with its OpenAPI document, health and metrics;
//! - [`metrics`]: Prometheus metrics;
//! - [`daemon`]: runtime, store, relay and API in one process (`engine run`, `engine dev`);
//! - [`github_budget`]: the GitHub request budget shared by the replicas (a key-value bucket);
//! - [`agent`]: `engine agent`, the cluster agent: full reconciles from the API, a JetStream
//!   consumer for fast reaction, reports, its own health and metrics;
//! - [`fault`]: fault points for crash tests (a test hook);
//! - [`cli`]: one module per subcommand.

pub mod agent;
pub mod api;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fault;
pub mod github_budget;
pub mod journal;
pub mod metrics;
pub mod natsd;
pub mod policy;
pub mod publisher;
pub mod relay;
pub mod runtime;
pub mod schedule;
pub mod store;
