//! One managed bundle's life: obtained when it is missing or does not cover its names,
//! renewed once two thirds of its validity have passed, retried with back-off after a
//! failure (the bundle already installed keeps serving meanwhile), and its state kept
//! for `/status`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::Store;
use crate::tls::Bundle;

use super::account::account;
use super::challenges::Challenges;
use super::issue::{account_is_unknown, issue};
use super::spec::ManagedBundle;

/// The first wait after a failure; it doubles with each failure in a row, up to
/// `LAST_RETRY`, which keeps well inside the rate limits of public directories.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);
/// The longest single sleep: the clock is read again after it, so a changed wall clock
/// or a suspended machine delays a renewal by at most this much.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// How the controller's bundles are read and replaced by a renewal.
pub trait Install: Send + Sync + 'static {
    /// The bundle called `name` now, if there is one.
    fn bundle(&self, name: &str) -> Option<Arc<Bundle>>;
    /// Checks `pem` and durably makes it the bundle `name`, replacing one there.
    fn install<'a>(
        &'a self,
        name: &'a str,
        pem: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

/// What a renewal task is doing, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for its first look at the installed bundle.
    Starting,
    /// An order is in progress.
    Ordering,
    /// The bundle covers the names and is not due.
    Valid,
    /// The last attempt failed; another follows at `next`.
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ordering => "ordering",
            Phase::Valid => "valid",
            Phase::Failed => "failed",
        }
    }
}

/// The state of one managed bundle.
#[derive(Debug)]
pub struct State {
    phase: Phase,
    names: Vec<String>,
    /// When the installed bundle expires (Unix seconds), if one is installed.
    expires: Option<i64>,
    /// When the next attempt is planned (a renewal, or a retry after a failure).
    next: Option<i64>,
    /// Failed attempts since the last success.
    failures: u32,
    error: Option<String>,
    /// When Wharf last installed an issued bundle.
    issued: Option<i64>,
}

impl State {
    fn new(names: &[String]) -> Self {
        Self {
            phase: Phase::Starting,
            names: names.to_vec(),
            expires: None,
            next: None,
            failures: 0,
            error: None,
            issued: None,
        }
    }

    /// `/status/acme/<name>`.
    pub fn report(&self) -> Value {
        let mut report = json!({
            "state": self.phase.as_str(),
            "names": self.names,
            "failures": self.failures,
        });
        let times = [
            ("expires", self.expires),
            ("next_attempt", self.next),
            ("issued", self.issued),
        ];
        for (member, time) in times {
            if let Some(time) = time {
                report[member] = Value::String(rfc3339(time));
            }
        }
        if let Some(error) = &self.error {
            report["error"] = Value::String(error.clone());
        }
        report
    }
}

fn rfc3339(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0).map_or_else(
        || timestamp.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// When a bundle is due: once two thirds of its validity have passed (Let's Encrypt's
/// advice, which leaves a third of the lifetime for retries).
fn renewal_time(bundle: &Bundle) -> i64 {
    let lifetime = (bundle.expires() - bundle.issued()).max(0);
    bundle.expires() - lifetime / 3
}

/// Whether `bundle`'s leaf names each of `names`.
fn covers(bundle: &Bundle, names: &[String]) -> bool {
    names
        .iter()
        .all(|name| bundle.names().iter().any(|n| n == name))
}

/// The wait before the attempt that follows `failures` failures in a row.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(LAST_RETRY)
}

/// What a renewal task works with.
pub struct Task {
    pub bundle: ManagedBundle,
    pub store: Store,
    pub challenges: Arc<Challenges>,
    pub installer: Weak<dyn Install>,
    pub state: Arc<Mutex<State>>,
}

pub fn new_state(names: &[String]) -> Arc<Mutex<State>> {
    Arc::new(Mutex::new(State::new(names)))
}

impl Task {
    /// Runs until aborted (the bundle is no longer managed, or managed differently).
    pub async fn run(self) {
        loop {
            let Some(installer) = self.installer.upgrade() else {
                return;
            };
            let installed = installer.bundle(&self.bundle.name);
            let due = match &installed {
                Some(bundle) if covers(bundle, &self.bundle.names) => renewal_time(bundle),
                _ => i64::MIN,
            };
            let expires = installed.as_ref().map(|b| b.expires());
            if now() < due {
                self.update(|state| {
                    state.phase = Phase::Valid;
                    state.expires = expires;
                    state.next = Some(due);
                });
                drop(installer);
                sleep_until(due).await;
                continue;
            }
            self.update(|state| {
                state.phase = Phase::Ordering;
                state.expires = expires;
                state.next = None;
            });
            match self.obtain(installer.as_ref()).await {
                Ok(()) => {
                    tracing::info!(certificate = %self.bundle.name, "ACME certificate installed");
                    self.update(|state| {
                        state.failures = 0;
                        state.error = None;
                        state.issued = Some(now());
                    });
                }
                Err(e) => {
                    let failures = self.lock().failures + 1;
                    let delay = retry_delay(failures);
                    tracing::warn!(
                        certificate = %self.bundle.name,
                        retry_in_seconds = delay.as_secs(),
                        "ACME certificate not obtained: {e:#}"
                    );
                    let next = now() + i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
                    self.update(|state| {
                        state.phase = Phase::Failed;
                        state.failures = failures;
                        state.error = Some(format!("{e:#}"));
                        state.next = Some(next);
                    });
                    drop(installer);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt: the account, the order, the installation.
    async fn obtain(&self, installer: &dyn Install) -> anyhow::Result<()> {
        let mut account = account(&self.store, &self.bundle, false).await?;
        let mut issued = issue(&account, &self.bundle.names, &self.challenges).await;
        if let Err(e) = &issued
            && account_is_unknown(e)
        {
            tracing::warn!(directory = %self.bundle.directory, "the directory no longer knows the stored ACME account; creating another");
            account = super::account::account(&self.store, &self.bundle, true).await?;
            issued = issue(&account, &self.bundle.names, &self.challenges).await;
        }
        let pem = issued?;
        installer.install(&self.bundle.name, pem.into_bytes()).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
    }
}

async fn sleep_until(timestamp: i64) {
    let left = u64::try_from(timestamp.saturating_sub(now())).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(left).min(LONGEST_SLEEP)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_minute_to_six_hours() {
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(
            delays,
            [
                60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600
            ]
        );
        assert_eq!(retry_delay(u32::MAX), LAST_RETRY);
    }
}
