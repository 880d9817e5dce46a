//! Fault points for crash tests. **A test hook, not a feature**: production never sets
//! `MUSTER_FAULT`.
//!
//! `MUSTER_FAULT=after-record-write` makes the API abort the process (`std::process::abort`,
//! no cleanup, like `kill -9`) right after a records write has returned and before the outbox
//! relay is woken, so a test can show that the change's event is still published, exactly
//! once, after a restart.
//!
//! `MUSTER_FAULT=before-record-flush` stalls a sled records mutation between its write and its
//! flush, then aborts, so a test can show the relay never publishes an event whose change the
//! crash loses. It lives in `connectors::records::sled::fault` (connectors cannot reach this
//! crate); `connectors/tests/outbox_crash.rs` uses it.
//!
//! `MUSTER_FAULT=after-step:<workflow>:<step>` aborts right after that step's result is durable
//! in the journal, so a test can show that a run resumes at the next step after a crash.

use std::sync::OnceLock;

/// The environment variable naming the active fault point.
pub const ENV: &str = "MUSTER_FAULT";
/// Abort after a records write, before the relay publishes its event.
pub const AFTER_RECORD_WRITE: &str = "after-record-write";

fn active() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty())).as_deref()
}

/// Abort once a step has been journaled: `after-step:<workflow>:<step>`.
pub const AFTER_STEP: &str = "after-step";

/// The `after-step:<workflow>:<step>` fault point: aborts right after that step's result is
/// durable in the journal, before the next step starts (a crash between two steps).
pub fn after_step(workflow: &str, step: &str) {
    let Some(spec) = active().and_then(|a| a.strip_prefix(AFTER_STEP)) else { return };
    if spec.strip_prefix(':') == Some(format!("{workflow}:{step}").as_str()) {
        eprintln!("{ENV}={AFTER_STEP}:{workflow}:{step}: aborting after the step was journaled");
        std::process::abort();
    }
}

/// The `after-record-write` fault point.
pub fn after_record_write() {
    if active() == Some(AFTER_RECORD_WRITE) {
        eprintln!("{ENV}={AFTER_RECORD_WRITE}: aborting after the records write");
        std::process::abort();
    }
}
