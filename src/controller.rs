//! The committed state and the one path by which it changes.
//!
//! Readers take the current `Published` snapshot with one atomic load and never wait.
//! Changes queue on a fair lock, so they run one at a time in arrival order, and each goes
//! edit a copy → validate and compile (`Plan`) → build the generation → commit to the
//! store → publish. A change that fails at any step leaves the published snapshot and the
//! store untouched; a change that leaves the tree as it was commits nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::acme::{Acme, Install};
use crate::application::Application;
use crate::config::dialect;
use crate::config::edit::identical;
use crate::config::model::{AppSpec, Plan};
use crate::config::validate::ConfigValidator;
use crate::dispatch::{ListenerHandler, Published};
use crate::error::{ApplyError, CertificateError, ChangeError, RestartError};
use crate::generation::Generation;
use crate::http::Settings;
use crate::listeners::{Listeners, Prepared};
use crate::metrics::reloads::{Refusal, Reloads};
use crate::metrics::text::Format;
use crate::metrics::{self, ControlPlane, Exposition};
use crate::runtime::{CodeLoads, Runtime};
use crate::store::{HistoryEntry, Store, StoredGeneration};
use crate::tls::{Bundle, Certificates, LiveCertificates, Sessions};

/// The tree a fresh state dir starts on, and the one Wharf falls back to.
pub fn default_tree() -> Value {
    json!({"listeners": {}, "routes": [], "applications": {}})
}

/// What a change that leaves the tree as it was does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfUnchanged {
    /// Commit nothing; the generation number stays.
    Skip,
    /// Commit it as a new generation all the same.
    Commit,
}

/// What a change records in the history.
#[derive(Debug, Clone)]
pub struct ChangeOrigin {
    pub method: String,
    pub path: String,
}

/// Which generation a change was made against (`If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    Any,
    OneOf(Vec<u64>),
}

/// The spec of one running application.
fn application_spec(current: &Published, name: &str) -> Result<AppSpec, RestartError> {
    current
        .running
        .application(name)
        .map(|app| app.spec().clone())
        .ok_or_else(|| RestartError::UnknownApplication(name.to_owned()))
}

pub struct Controller {
    current: Arc<ArcSwap<Published>>,
    changes: Mutex<()>,
    store: Store,
    validator: ConfigValidator,
    runtime: Arc<Runtime>,
    listeners: Listeners,
    settings: Arc<ArcSwap<Settings>>,
    /// The uploaded and the ACME-issued bundles; replaced whole, under the change lock.
    certificates: LiveCertificates,
    /// The renewal tasks of `settings.acme`'s bundles.
    acme: Acme,
    /// TLS session caches and ticket keys, kept across changes.
    sessions: Sessions,
    reloads: Reloads,
    /// This controller, as what the generations' `metrics` actions render.
    exposition: Weak<dyn Exposition>,
}

impl Controller {
    /// Loads the latest stored generation, validating and building it (listeners
    /// included) before anything is served. One that no longer loads is set aside and
    /// the default is committed instead.
    pub async fn start(
        store: Store,
        validator: ConfigValidator,
        runtime: Arc<Runtime>,
        listeners: Listeners,
    ) -> anyhow::Result<Arc<Self>> {
        let controller = Arc::new_cyclic(|me: &Weak<Self>| Self {
            current: Arc::new(ArcSwap::from_pointee(Published {
                number: 0,
                tree: default_tree(),
                running: Generation::empty(),
            })),
            changes: Mutex::new(()),
            store: store.clone(),
            validator,
            runtime,
            listeners,
            settings: Arc::new(ArcSwap::from_pointee(Settings::default())),
            certificates: LiveCertificates::default(),
            acme: Acme::new(store.clone(), me.clone()),
            sessions: Sessions::default(),
            reloads: Reloads::default(),
            exposition: me.clone(),
        });
        controller.restore_certificates()?;
        let Some(stored) = controller.store.latest()? else {
            tracing::info!("fresh state dir: starting on the default configuration");
            return Ok(controller);
        };
        let generation = stored.entry.generation;
        if let Err(reason) = controller.load(&stored).await {
            tracing::error!(
                generation,
                "the stored configuration no longer loads, starting on the default \
                 (the old record is kept in the state database): {reason}"
            );
            controller
                .store
                .quarantine(generation, &stored.tree, &reason)?;
            let tree = default_tree();
            controller
                .store
                .commit(generation + 1, "RECOVERY", "/config", &tree)?;
            controller.current.store(Arc::new(Published {
                number: generation + 1,
                tree,
                running: Generation::empty(),
            }));
        }
        tracing::info!(
            generation = controller.current().number,
            "configuration loaded"
        );
        Ok(controller)
    }

    /// Loads the stored bundles, before the config that names them. One that no longer
    /// parses is left out (and kept in the store), with an error in the log.
    fn restore_certificates(&self) -> anyhow::Result<()> {
        let mut certificates = Certificates::default();
        for (name, pem) in self.store.certificates()? {
            match Bundle::parse(&pem) {
                Ok(bundle) => certificates = certificates.with(&name, Arc::new(bundle)),
                Err(e) => {
                    tracing::error!(certificate = %name, "a stored bundle no longer loads: {e}")
                }
            }
        }
        self.certificates.replace(certificates);
        Ok(())
    }

    /// The uploaded and issued bundles.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.load_full()
    }

    /// `/status/acme`: the managed bundles' state; `None` when none is managed.
    pub fn acme_report(&self) -> Option<Value> {
        self.acme.report()
    }

    /// What the control plane counts of its changes, for `/metrics`.
    pub fn reloads(&self) -> &Reloads {
        &self.reloads
    }

    /// Where loaded modules found their compiled code, for `/metrics`.
    pub fn code_loads(&self) -> &CodeLoads {
        self.runtime.code_loads()
    }

    /// Checks and durably stores a new bundle `name`; Unit never overwrites one.
    pub async fn upload_certificate(
        &self,
        name: &str,
        pem: Vec<u8>,
    ) -> Result<(), CertificateError> {
        let bundle = Bundle::parse(&pem)?;
        let _turn = self.changes.lock().await;
        if self.certificates.load().contains(name) {
            return Err(CertificateError::Exists(name.to_owned()));
        }
        self.store_bundle(name, pem, bundle)
            .await
            .map_err(CertificateError::Store)?;
        tracing::info!(certificate = name, "certificate bundle uploaded");
        Ok(())
    }

    /// Durably stores `pem` as the bundle `name`, then makes `bundle` (parsed from it)
    /// the one handshakes present; the caller holds the change lock.
    async fn store_bundle(&self, name: &str, pem: Vec<u8>, bundle: Bundle) -> anyhow::Result<()> {
        let store = self.store.clone();
        let key = name.to_owned();
        tokio::task::spawn_blocking(move || store.put_certificate(&key, &pem))
            .await
            .map_err(|e| anyhow::anyhow!("the store task failed: {e}"))??;
        self.certificates
            .replace(self.certificates().with(name, Arc::new(bundle)));
        Ok(())
    }

    /// Removes the bundle `name`, unless a listener of the current config names it or
    /// `settings.acme` manages it.
    pub async fn delete_certificate(&self, name: &str) -> Result<(), CertificateError> {
        let _turn = self.changes.lock().await;
        let current = self.certificates();
        if !current.contains(name) {
            return Err(CertificateError::NotFound(name.to_owned()));
        }
        if self.current().running.uses_certificate(name) || self.acme.manages(name) {
            return Err(CertificateError::InUse(name.to_owned()));
        }
        let store = self.store.clone();
        let key = name.to_owned();
        tokio::task::spawn_blocking(move || store.delete_certificate(&key))
            .await
            .map_err(|e| CertificateError::Store(anyhow::anyhow!("the store task failed: {e}")))?
            .map_err(CertificateError::Store)?;
        self.certificates.replace(current.without(name));
        tracing::info!(certificate = name, "certificate bundle deleted");
        Ok(())
    }

    /// Installs a bundle ACME issued for `name`, replacing the one there: new handshakes
    /// present it at once (listeners look their bundles up by name), established
    /// connections go on.
    async fn install_issued(&self, name: &str, pem: Vec<u8>) -> anyhow::Result<()> {
        let bundle =
            Bundle::parse(&pem).context("the issued certificate is not a usable bundle")?;
        let _turn = self.changes.lock().await;
        self.store_bundle(name, pem, bundle).await
    }

    /// Validates and compiles `tree` against the uploaded bundles.
    fn validate(&self, tree: &Value) -> Result<Plan, crate::config::validate::InvalidConfig> {
        self.validator
            .validate(tree, &self.certificates, &self.sessions)
    }

    /// Builds the generation `plan` asks for, carrying over what `previous` runs.
    async fn build(
        &self,
        plan: &Plan,
        previous: Option<&Generation>,
    ) -> Result<Generation, ApplyError> {
        let (exposition, challenges) = (&self.exposition, self.acme.challenges());
        Generation::build(plan, &self.runtime, previous, exposition, challenges).await
    }

    /// Parses, validates, builds and publishes a stored generation; the error is the
    /// reason it failed.
    async fn load(&self, stored: &StoredGeneration) -> Result<(), String> {
        let tree = dialect::parse(&stored.tree).map_err(|e| format!("invalid JSON: {e}"))?;
        let plan = self
            .validate(&tree)
            .map_err(|e| format!("invalid configuration: {e}"))?;
        let running = self
            .build(&plan, None)
            .await
            .map_err(|e| format!("failed to apply: {e}"))?;
        let listeners = self
            .listeners
            .prepare(&plan.listeners)
            .map_err(|e| format!("failed to apply: {e}"))?;
        let published = Published {
            number: stored.entry.generation,
            tree,
            running,
        };
        self.publish(published, plan, listeners).await;
        Ok(())
    }

    /// Makes `published` what requests are served by, with its HTTP settings and
    /// listeners.
    async fn publish(&self, published: Published, plan: Plan, listeners: Prepared) {
        self.settings.store(Arc::new(plan.http));
        self.current.store(Arc::new(published));
        let handler_for = |address: &str| ListenerHandler::new(address, &self.current);
        self.listeners
            .activate(listeners, handler_for, &self.settings)
            .await;
        self.acme.configure(plan.acme.as_ref());
        self.reloads.succeeded();
    }

    /// Stops the data plane (at exit).
    pub async fn shut_down(&self) {
        self.listeners.close_all().await;
    }

    /// Sends the spans still queued for export, for at most `bound`.
    pub async fn flush_telemetry(&self, bound: std::time::Duration) {
        let current = self.current();
        if let Some(telemetry) = current.running.telemetry()
            && tokio::time::timeout(bound, telemetry.flush())
                .await
                .is_err()
        {
            tracing::warn!("telemetry: spans still queued after {bound:?} were not exported");
        }
    }

    /// The committed snapshot; never waits for a change in flight.
    pub fn current(&self) -> Arc<Published> {
        self.current.load_full()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies `edit` to a copy of the committed tree and, if the result validates and
    /// builds, commits and publishes it. An edit that leaves the tree as it was commits
    /// nothing and keeps the generation number; module files are still read again, as
    /// by any change, and one written since is swapped in.
    pub async fn change(
        &self,
        origin: ChangeOrigin,
        precondition: &Precondition,
        edit: impl FnOnce(&mut Value) -> Result<(), ChangeError>,
    ) -> Result<Arc<Published>, ChangeError> {
        self.apply(origin, precondition, edit, IfUnchanged::Skip)
            .await
    }

    /// Makes a kept tree current again as a new generation. Unlike an edit, a restore is
    /// always recorded, even of the tree that is current: the history shows it was done.
    pub async fn restore(
        &self,
        origin: ChangeOrigin,
        precondition: &Precondition,
        tree: Value,
    ) -> Result<Arc<Published>, ChangeError> {
        let edit = |current: &mut Value| {
            *current = tree;
            Ok(())
        };
        self.apply(origin, precondition, edit, IfUnchanged::Commit)
            .await
    }

    /// Counts what `apply_in_turn` refuses, by the step that refused it.
    async fn apply(
        &self,
        origin: ChangeOrigin,
        precondition: &Precondition,
        edit: impl FnOnce(&mut Value) -> Result<(), ChangeError>,
        if_unchanged: IfUnchanged,
    ) -> Result<Arc<Published>, ChangeError> {
        let result = self
            .apply_in_turn(origin, precondition, edit, if_unchanged)
            .await;
        if let Err(e) = &result {
            self.reloads.refused(match e {
                ChangeError::Edit(_) | ChangeError::Invalid(_) => Refusal::Invalid,
                ChangeError::PreconditionFailed { .. } => Refusal::Precondition,
                ChangeError::Apply(_) | ChangeError::Store(_) => Refusal::Apply,
            });
        }
        result
    }

    async fn apply_in_turn(
        &self,
        origin: ChangeOrigin,
        precondition: &Precondition,
        edit: impl FnOnce(&mut Value) -> Result<(), ChangeError>,
        if_unchanged: IfUnchanged,
    ) -> Result<Arc<Published>, ChangeError> {
        let _turn = self.changes.lock().await;
        let current = self.current();
        if let Precondition::OneOf(tags) = precondition
            && !tags.contains(&current.number)
        {
            return Err(ChangeError::PreconditionFailed {
                current: current.number,
            });
        }
        let mut tree = current.tree.clone();
        edit(&mut tree)?;
        let plan = self.validate(&tree)?;
        let previous = Some(&current.running);
        let running = self.build(&plan, previous).await?;
        if if_unchanged == IfUnchanged::Skip && identical(&tree, &current.tree) {
            if !running.same_applications(&current.running) {
                self.publish_running(&current, running);
                tracing::info!(generation = current.number, "module files reloaded");
            }
            return Ok(self.current());
        }
        let listeners = self.listeners.prepare(&plan.listeners)?;
        let number = current.number + 1;
        let (tree, _entry) = self.commit(number, origin, tree).await?;
        let published = Published {
            number,
            tree,
            running,
        };
        self.publish(published, plan, listeners).await;
        tracing::info!(generation = number, "reconfiguration done");
        Ok(self.current())
    }

    /// Runs the blocking, fsyncing commit off the async workers.
    async fn commit(
        &self,
        generation: u64,
        origin: ChangeOrigin,
        tree: Value,
    ) -> Result<(Value, HistoryEntry), ChangeError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let entry = store.commit(generation, &origin.method, &origin.path, &tree)?;
            Ok((tree, entry))
        })
        .await
        .map_err(|e| ChangeError::Store(anyhow::anyhow!("the commit task failed: {e}")))?
        .map_err(ChangeError::Store)
    }

    /// Restarts one application: reads its module file again (compiling it only if it
    /// changed), starts fresh instances and swaps them in, in turn with changes. Requests
    /// in flight finish on the old instances, which retire after them. If the module no
    /// longer loads, the old instances keep serving.
    pub async fn restart(&self, name: &str) -> Result<(), RestartError> {
        let result = self.restart_in_turn(name).await;
        self.count_restart(result)
    }

    async fn restart_in_turn(&self, name: &str) -> Result<(), RestartError> {
        let _turn = self.changes.lock().await;
        let current = self.current();
        let spec = application_spec(&current, name)?;
        let code = Application::load(&self.runtime, name, &spec).await?;
        let app = Application::start(&self.runtime, name, &spec, code).await?;
        self.publish_application(&current, name, app);
        tracing::info!(application = name, "restarted");
        Ok(())
    }

    /// Swaps in an application's module if its file now holds different bytes (`watch`);
    /// says whether it did. An unchanged file (only touched, say) changes nothing.
    pub async fn reload_if_changed(&self, name: &str) -> Result<bool, RestartError> {
        let result = self.reload_in_turn(name).await;
        self.count_restart(result)
    }

    /// Counts a module that no longer loads; an unknown name is the caller's mistake.
    fn count_restart<T>(&self, result: Result<T, RestartError>) -> Result<T, RestartError> {
        if let Err(RestartError::Failed(_)) = &result {
            self.reloads.refused(Refusal::Apply);
        }
        result
    }

    async fn reload_in_turn(&self, name: &str) -> Result<bool, RestartError> {
        let _turn = self.changes.lock().await;
        let current = self.current();
        let spec = application_spec(&current, name)?;
        let code = Application::load(&self.runtime, name, &spec).await?;
        if current
            .running
            .application(name)
            .is_some_and(|running| running.keeps(&code))
        {
            return Ok(false);
        }
        let app = Application::start(&self.runtime, name, &spec, code).await?;
        self.publish_application(&current, name, app);
        Ok(true)
    }

    /// Publishes `current` with one application replaced; the config and its generation
    /// number stay as they are.
    fn publish_application(&self, current: &Published, name: &str, app: Arc<Application>) {
        self.publish_running(current, current.running.with_application(name, app));
    }

    /// Publishes `running` under `current`'s config and generation number.
    fn publish_running(&self, current: &Published, running: Generation) {
        self.current.store(Arc::new(Published {
            number: current.number,
            tree: current.tree.clone(),
            running,
        }));
        self.reloads.succeeded();
    }

    /// The tree of a kept generation, parsed.
    pub fn stored_tree(&self, generation: u64) -> anyhow::Result<Option<(HistoryEntry, Value)>> {
        let Some(stored) = self.store.generation(generation)? else {
            return Ok(None);
        };
        let tree = dialect::parse(&stored.tree)
            .map_err(|e| anyhow::anyhow!("generation {generation} is unreadable: {e}"))?;
        Ok(Some((stored.entry, tree)))
    }

    /// Validates a tree from outside the control API (`--config`) and commits it as a
    /// startup change; an identical tree is not committed again.
    pub async fn apply_startup_config(&self, source: &str, body: &[u8]) -> anyhow::Result<()> {
        let tree = dialect::parse(body).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
        if identical(&tree, &self.current().tree) {
            tracing::info!("`{source}` matches the committed configuration");
            return Ok(());
        }
        let origin = ChangeOrigin {
            method: "STARTUP".to_owned(),
            path: source.to_owned(),
        };
        self.change(origin, &Precondition::Any, |current| {
            *current = tree;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            ChangeError::Invalid(e) => anyhow::anyhow!("invalid configuration: {e}"),
            ChangeError::Apply(e) => anyhow::anyhow!("failed to apply the configuration: {e}"),
            other => anyhow::anyhow!("{other}"),
        })?;
        Ok(())
    }
}

impl Install for Controller {
    fn bundle(&self, name: &str) -> Option<Arc<Bundle>> {
        self.certificates.load().get(name).cloned()
    }

    fn install<'a>(
        &'a self,
        name: &'a str,
        pem: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(self.install_issued(name, pem))
    }
}

impl Exposition for Controller {
    fn render(&self, format: Format) -> String {
        let current = self.current();
        let apps: Vec<_> = current.running.application_counts().collect();
        let certificates = self.certificates();
        let control = ControlPlane {
            generation: current.number,
            apps: &apps,
            reloads: &self.reloads,
            certificates: &certificates,
            code_loads: self.runtime.code_loads(),
        };
        metrics::render(format, self.listeners.stats(), &control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn controller(dir: &std::path::Path) -> Arc<Controller> {
        let store = Store::open(dir).expect("open store");
        let runtime = Arc::new(Runtime::new().expect("runtime"));
        let listeners = Listeners::new(tokio::runtime::Handle::current(), Arc::default());
        let validator = ConfigValidator::new().expect("schema");
        Controller::start(store, validator, runtime, listeners)
            .await
            .expect("start")
    }

    #[tokio::test]
    async fn a_stored_tree_that_no_longer_validates_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit_raw(7, br#"{"listeners": {}, "bogus": true}"#)
                .expect("write");
        }
        let controller = controller(dir.path()).await;
        let current = controller.current();
        assert_eq!(current.number, 8);
        assert_eq!(current.tree, default_tree());
        let quarantined = controller.store().quarantined().expect("read");
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0]["generation"], 7);
        assert!(
            quarantined[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("bogus: unknown parameter"))
        );
        let history = controller.store().history().expect("history");
        assert_eq!(history.last().map(|e| e.method.as_str()), Some("RECOVERY"));
    }

    #[tokio::test]
    async fn a_stored_tree_that_does_not_parse_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.commit_raw(3, b"{\"listeners\": ").expect("write");
        }
        let controller = controller(dir.path()).await;
        assert_eq!(controller.current().number, 4);
        assert_eq!(controller.current().tree, default_tree());
    }

    #[tokio::test]
    async fn a_failed_change_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = controller(dir.path()).await;
        let origin = ChangeOrigin {
            method: "PUT".into(),
            path: "/config".into(),
        };
        let result = controller
            .change(origin.clone(), &Precondition::Any, |tree| {
                tree["bogus"] = json!(1);
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(ChangeError::Invalid(_))));
        assert_eq!(controller.current().number, 0);
        assert!(controller.store().latest().expect("read").is_none());

        let stale = Precondition::OneOf(vec![5]);
        let result = controller.change(origin, &stale, |_| Ok(())).await;
        assert!(matches!(
            result,
            Err(ChangeError::PreconditionFailed { current: 0 })
        ));
    }
}
