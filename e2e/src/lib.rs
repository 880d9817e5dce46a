//! End-to-end tests for Muster: the harness (real nats-server, the engine as a child process),
//! the test workflows, the `muster-testbed` binary that carries them, and the fake GitHub REST
//! server ([`fake_github`], also the `fake-github` dev binary), the fake Kubernetes API
//! ([`fake_kube`], also the `fake-kube` dev binary), and agents run in the test process
//! ([`agents`]).

pub mod agents;
pub mod fake_github;
pub mod fake_kube;
pub mod github_kit;
pub mod harness;
pub mod workflows;
