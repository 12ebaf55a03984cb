//! A generation: an immutable, fully built snapshot of what the server runs, made from
//! one validated config tree and published whole.
//!
//! Building one is the step where a valid config can still fail to run: modules are
//! compiled, linked and started here, so nothing is published until every app can serve.
//! Apps whose config and module bytes did not change are carried over from the previous
//! generation with their warm instances. Routes and the access-log spec come compiled in
//! the `Plan`; the access log file is opened here. `serve` is the request path through it.

mod serve;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::access_log::AccessLog;
use crate::acme::Challenges;
use crate::application::Application;
use crate::config::model::Plan;
use crate::error::ApplyError;
use crate::metrics::Exposition;
use crate::metrics::requests::ListenerSeries;
use crate::routing::Router;
use crate::routing::action::Pass;
use crate::runtime::{InstanceCounts, Runtime};
use crate::telemetry::Telemetry;
use crate::tls::TlsListener;

/// A listener's pass and the metrics of its requests.
struct Served {
    pass: Pass,
    series: ListenerSeries,
}

pub struct Generation {
    /// Applications in config order; passes refer to them by index.
    applications: Vec<(String, Arc<Application>)>,
    /// Where each listener sends its requests, and the series its requests are counted
    /// in. Looked up on every request: with a fast hasher, since the addresses come from
    /// the config, not from clients.
    listeners: Arc<HashMap<String, Served, foldhash::fast::RandomState>>,
    router: Arc<Router>,
    access_log: Option<Arc<AccessLog>>,
    /// The TLS of each TLS listener, by address: what its next handshake uses.
    tls: Arc<HashMap<String, TlsListener>>,
    /// What a route's `metrics` action renders: the control plane, weakly, since it
    /// holds the generations.
    exposition: Option<Weak<dyn Exposition>>,
    /// `settings.telemetry`'s span pipeline, kept across changes that keep it.
    telemetry: Option<Arc<Telemetry>>,
    /// The ACME challenges to answer, while `settings.acme` is set.
    challenges: Option<Arc<Challenges>>,
}

impl Generation {
    /// The generation of a config without applications or listeners.
    pub fn empty() -> Self {
        Self {
            applications: Vec::new(),
            listeners: Arc::default(),
            router: Arc::default(),
            access_log: None,
            tls: Arc::default(),
            exposition: None,
            telemetry: None,
            challenges: None,
        }
    }

    /// Starts what `plan` asks for; fails without touching what runs. `challenges` are
    /// answered if the plan manages bundles with ACME.
    pub async fn build(
        plan: &Plan,
        runtime: &Runtime,
        previous: Option<&Generation>,
        exposition: &Weak<dyn Exposition>,
        challenges: &Arc<Challenges>,
    ) -> Result<Self, ApplyError> {
        let mut applications = Vec::with_capacity(plan.applications.len());
        for app in &plan.applications {
            let old = previous.and_then(|g| g.application(&app.name));
            let running = Application::build(runtime, &app.name, &app.spec, old).await?;
            applications.push((app.name.clone(), running));
        }
        let access_log = match &plan.access_log {
            Some(spec) => {
                let previous = previous.and_then(|g| g.access_log.as_deref());
                let log = spec.open(previous).map_err(|e| {
                    ApplyError(format!(
                        "access_log: failed to open `{}`: {e}",
                        spec.path.display()
                    ))
                })?;
                Some(Arc::new(log))
            }
            None => None,
        };
        let telemetry = match &plan.telemetry {
            Some(spec) => match previous.and_then(|g| g.telemetry.as_ref()) {
                Some(running) if running.spec() == spec => Some(Arc::clone(running)),
                _ => Some(Telemetry::start(spec).map_err(|e| ApplyError(e.to_string()))?),
            },
            None => None,
        };
        let listeners = plan
            .passes
            .iter()
            .map(|(address, pass)| {
                let apps = applications.iter().map(|(name, _)| name.as_str());
                let series = ListenerSeries::new(address, apps);
                let served = Served {
                    pass: pass.clone(),
                    series,
                };
                (address.clone(), served)
            })
            .collect();
        Ok(Self {
            applications,
            listeners: Arc::new(listeners),
            router: Arc::clone(&plan.router),
            access_log,
            tls: Arc::new(
                plan.listeners
                    .iter()
                    .filter_map(|l| Some((l.address.clone(), l.tls.clone()?)))
                    .collect(),
            ),
            exposition: Some(exposition.clone()),
            telemetry,
            challenges: plan.acme.as_ref().map(|_| Arc::clone(challenges)),
        })
    }

    /// This generation with the application `name` replaced by `app` (a restart or a
    /// module swap); routes, listeners and the other apps are shared, not rebuilt.
    pub fn with_application(&self, name: &str, app: Arc<Application>) -> Self {
        let applications = self
            .applications
            .iter()
            .map(|(n, old)| {
                let kept = if n == name { &app } else { old };
                (n.clone(), Arc::clone(kept))
            })
            .collect();
        Self {
            applications,
            listeners: Arc::clone(&self.listeners),
            router: Arc::clone(&self.router),
            access_log: self.access_log.clone(),
            tls: Arc::clone(&self.tls),
            exposition: self.exposition.clone(),
            telemetry: self.telemetry.clone(),
            challenges: self.challenges.clone(),
        }
    }

    /// Whether both generations run the very same applications (none was started anew).
    pub fn same_applications(&self, other: &Generation) -> bool {
        self.applications.len() == other.applications.len()
            && self
                .applications
                .iter()
                .zip(&other.applications)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }

    /// The span pipeline of `settings.telemetry`, if it is set.
    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
    }

    /// The rustls config of the listener `address`, if it is a TLS listener.
    pub fn tls(&self, address: &str) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.get(address).map(|l| &l.config)
    }

    /// Whether some listener names the bundle `name`.
    pub fn uses_certificate(&self, name: &str) -> bool {
        self.tls
            .values()
            .any(|l| l.certificates.iter().any(|c| c == name))
    }

    /// Opens the access log file again (`SIGUSR1`, after rotation).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.file().reopen();
        }
    }

    /// The applications, in config order.
    pub fn applications(&self) -> impl Iterator<Item = (&String, &Arc<Application>)> {
        self.applications.iter().map(|(name, app)| (name, app))
    }

    pub fn application(&self, name: &str) -> Option<&Arc<Application>> {
        self.applications
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, app)| app)
    }

    /// Instance counts of every application, in config order.
    pub fn application_counts(&self) -> impl Iterator<Item = (&str, InstanceCounts)> {
        self.applications
            .iter()
            .map(|(name, app)| (name.as_str(), app.counts()))
    }
}
