//! End-to-end tests for Muster: the harness (real nats-server, the engine as a child process),
//! the test workflows, the `muster-testbed` binary that carries them, and the fake GitHub REST
//! server ([`fake_github`], also the `fake-github` dev binary).

pub mod fake_github;
pub mod harness;
pub mod workflows;
