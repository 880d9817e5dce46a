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
//! - [`cli`]: one module per subcommand.

pub mod bus;
pub mod cli;
pub mod config;
pub mod journal;
pub mod natsd;
pub mod runtime;
pub mod schedule;
