//! `settings.acme`: certificate bundles Wharf obtains and renews itself from an ACME
//! (RFC 8555) directory, with `instant-acme`. Each managed bundle has a renewal task
//! (`renewal`) that places orders with the directory's account (`account`), proves each
//! name with HTTP-01 on Wharf's own listeners (`challenges`, answered by the request
//! path of every generation), and installs the issued chain under `/certificates/<name>`
//! like an uploaded bundle (`issue`). Its state is reported under `/status/acme`.

mod account;
mod challenges;
mod issue;
mod renewal;
mod spec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::store::Store;

pub use challenges::Challenges;
pub use renewal::Install;
pub use spec::AcmeSpec;

use spec::ManagedBundle;

/// A running renewal task and what it was started with.
struct Managed {
    bundle: ManagedBundle,
    state: Arc<Mutex<renewal::State>>,
    task: JoinHandle<()>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renewal tasks of the published config's managed bundles.
pub struct Acme {
    store: Store,
    challenges: Arc<Challenges>,
    installer: Weak<dyn Install>,
    managed: Mutex<BTreeMap<String, Managed>>,
}

impl Acme {
    pub fn new(store: Store, installer: Weak<dyn Install>) -> Self {
        Self {
            store,
            challenges: Arc::default(),
            installer,
            managed: Mutex::default(),
        }
    }

    /// The challenges the request path answers.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// Follows a published config: a task for each managed bundle, kept while the
    /// bundle is managed the same way, replaced when it changes, stopped when it goes.
    /// Must run inside the runtime the tasks are to run on.
    pub fn configure(&self, spec: Option<&AcmeSpec>) {
        let wanted: BTreeMap<String, ManagedBundle> = spec
            .into_iter()
            .flat_map(AcmeSpec::bundles)
            .map(|bundle| (bundle.name.clone(), bundle))
            .collect();
        let mut managed = self.lock();
        managed.retain(|name, running| wanted.get(name) == Some(&running.bundle));
        for (name, bundle) in wanted {
            if managed.contains_key(&name) {
                continue;
            }
            let state = renewal::new_state(&bundle.names);
            let task = renewal::Task {
                bundle: bundle.clone(),
                store: self.store.clone(),
                challenges: Arc::clone(&self.challenges),
                installer: self.installer.clone(),
                state: Arc::clone(&state),
            };
            tracing::info!(certificate = %name, names = ?bundle.names, "managing the certificate with ACME");
            let task = tokio::spawn(task.run());
            managed.insert(
                name,
                Managed {
                    bundle,
                    state,
                    task,
                },
            );
        }
    }

    /// Whether the bundle `name` is managed.
    pub fn manages(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// `/status/acme`: each managed bundle's state; `None` when none is managed.
    pub fn report(&self) -> Option<Value> {
        let managed = self.lock();
        if managed.is_empty() {
            return None;
        }
        let report: Map<String, Value> = managed
            .iter()
            .map(|(name, m)| {
                let state = m.state.lock().unwrap_or_else(PoisonError::into_inner);
                (name.clone(), state.report())
            })
            .collect();
        Some(Value::Object(report))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Managed>> {
        self.managed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
