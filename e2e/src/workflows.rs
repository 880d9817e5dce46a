//! Workflows for end-to-end tests, carried by the `muster-testbed` binary. Their side effects
//! are lines appended to files, so tests can count exactly what ran.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use workflows::{Event, RunContext, RunError, Workflow};

/// Every test workflow.
pub fn all() -> Vec<Arc<dyn Workflow>> {
    vec![Arc::new(Slow), Arc::new(Flaky), Arc::new(FlakyTwin), Arc::new(Sleepy)]
}

/// Appends one line to `dir/effects`: one side effect.
pub fn effect(dir: &Path, line: &str) -> Result<(), RunError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("effects"))
        .map_err(|e| RunError::retryable(format!("effects file: {e}")))?;
    writeln!(file, "{line}").map_err(|e| RunError::retryable(format!("effects file: {e}")))?;
    file.sync_all().map_err(|e| RunError::retryable(format!("effects file: {e}")))
}

/// Lines of `dir/effects`.
pub fn effects(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("effects"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
struct DirData {
    dir: PathBuf,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    fail_times: u32,
}

fn data(event: &Event) -> Result<DirData, RunError> {
    let value =
        workflows::event::data_json(event).map_err(|e| RunError::permanent(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| RunError::permanent(format!("bad test data: {e}")))
}

/// `slow` (`test.slow`): step `one`, then step `two` which records its start and waits until
/// `dir/release` exists, then step `three`. Kill the engine while `two` waits.
pub struct Slow;

#[async_trait]
impl Workflow for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.slow"]
    }
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let dir = data(&event)?.dir;
        ctx.step("one", || async { effect(&dir, "one") }).await?;
        ctx.step("two", || async {
            effect(&dir, "two-start")?;
            let release = dir.join("release");
            for _ in 0..3000 {
                if release.exists() {
                    return effect(&dir, "two-done");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(RunError::retryable("release file did not appear within 60 s"))
        })
        .await?;
        ctx.step("three", || async { effect(&dir, "three") }).await?;
        Ok(json!({ "done": true }))
    }
}

/// `flaky` (`test.flaky`): step `call` fails with a retryable error while the attempt is at most
/// `fail_times`, or while `dir/broken` exists; then succeeds.
pub struct Flaky;

#[async_trait]
impl Workflow for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.flaky"]
    }
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let DirData { dir, fail_times, .. } = data(&event)?;
        let attempt = ctx.attempt();
        ctx.step("call", || async {
            effect(&dir, &format!("call-{attempt}"))?;
            if dir.join("broken").exists() {
                return Err(RunError::retryable("downstream is broken (the file `broken` exists)"));
            }
            if attempt <= fail_times {
                return Err(RunError::retryable(format!("flaky failure on attempt {attempt}")));
            }
            Ok(attempt)
        })
        .await?;
        Ok(json!({ "succeeded_on_attempt": attempt }))
    }
}

/// `sleepy` (`test.sleep`): step `nap` records its start, sleeps `sleep_ms`, records its end.
pub struct Sleepy;

#[async_trait]
impl Workflow for Sleepy {
    fn name(&self) -> &'static str {
        "sleepy"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.sleep"]
    }
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let DirData { dir, sleep_ms, .. } = data(&event)?;
        let id = workflows::AttributesReader::id(&event).to_owned();
        ctx.step("nap", || async {
            effect(&dir, &format!("nap-start {id}"))?;
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            effect(&dir, &format!("nap-end {id}"))
        })
        .await?;
        Ok(json!({ "slept_ms": sleep_ms }))
    }
}

/// The file whose presence makes [`FlakyTwin`] fail.
pub const TWIN_BROKEN: &str = "twin-broken";
/// The file [`FlakyTwin`] records its calls in.
const TWIN_EFFECTS: &str = "twin-effects";

/// `flaky-twin` (`test.flaky` too): a second workflow on `flaky`'s type, so a test can show
/// that re-driving one workflow's run leaves the other's alone. Step `call` appends
/// `<event id> call-<attempt>` to `dir/twin-effects` (not `dir/effects`, which `flaky`'s tests
/// count) and fails with a retryable error while `dir/twin-broken` exists.
pub struct FlakyTwin;

#[async_trait]
impl Workflow for FlakyTwin {
    fn name(&self) -> &'static str {
        "flaky-twin"
    }
    fn triggers(&self) -> &'static [&'static str] {
        &["test.flaky"]
    }
    async fn run(&self, ctx: &mut RunContext, event: Event) -> Result<serde_json::Value, RunError> {
        let dir = data(&event)?.dir;
        let id = workflows::AttributesReader::id(&event).to_owned();
        let attempt = ctx.attempt();
        ctx.step("call", || async {
            let line = format!("{id} call-{attempt}");
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(TWIN_EFFECTS))
                .map_err(|e| RunError::retryable(format!("twin effects file: {e}")))?;
            writeln!(file, "{line}")
                .and_then(|()| file.sync_all())
                .map_err(|e| RunError::retryable(format!("twin effects file: {e}")))?;
            if dir.join(TWIN_BROKEN).exists() {
                return Err(RunError::retryable(
                    "the twin is broken (the file `twin-broken` exists)",
                ));
            }
            Ok(attempt)
        })
        .await?;
        Ok(json!({ "succeeded_on_attempt": attempt }))
    }
}

/// Lines of `dir/twin-effects`: what [`FlakyTwin`] ran.
pub fn twin_effects(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(TWIN_EFFECTS))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
