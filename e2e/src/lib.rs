//! End-to-end tests for Muster: the harness (real nats-server, the engine as a child process),
//! the test workflows, and the `muster-testbed` binary that carries them.

pub mod harness;
pub mod workflows;
