//! Fault points for crash tests. **A test hook, not a feature**: production never sets
//! `MUSTER_FAULT`.
//!
//! `MUSTER_FAULT=after-record-write` makes the API abort the process (`std::process::abort`,
//! no cleanup, like `kill -9`) right after a records write has returned and before the outbox
//! relay is woken, so a test can show that the change's event is still published, exactly
//! once, after a restart.

use std::sync::OnceLock;

/// The environment variable naming the active fault point.
pub const ENV: &str = "MUSTER_FAULT";
/// Abort after a records write, before the relay publishes its event.
pub const AFTER_RECORD_WRITE: &str = "after-record-write";

fn active() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty())).as_deref()
}

/// The `after-record-write` fault point.
pub fn after_record_write() {
    if active() == Some(AFTER_RECORD_WRITE) {
        eprintln!("{ENV}={AFTER_RECORD_WRITE}: aborting after the records write");
        std::process::abort();
    }
}
