//! A generation: an immutable, fully built snapshot of what the server runs, made from
//! one validated config tree and published whole.
//!
//! Building one is the step where a valid config can still fail to run: modules are
//! compiled, linked and started here, so nothing is published until every app can serve.
//! Apps whose config and module bytes did not change are carried over from the previous
//! generation with their warm instances. Routes are compiled here too (see `routing`),
//! and the access log opened.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::access_log::{self, AccessLog};
use crate::application::Application;
use crate::http::{self, Completion, Request, Response};
use crate::routing::action::Pass;
use crate::routing::request::RequestInfo;
use crate::routing::{ListenerPasses, Outcome, Router};
use crate::runtime::{InstanceCounts, Runtime};

/// A valid config that cannot be run; the running generation stays as it was.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

pub struct Generation {
    /// Applications in config order; passes refer to them by index.
    applications: Vec<(String, Arc<Application>)>,
    /// Where each listener sends its requests.
    listeners: Arc<ListenerPasses>,
    router: Arc<Router>,
    access_log: Option<Arc<AccessLog>>,
}

impl Generation {
    /// The generation of a config without applications or listeners.
    pub fn empty() -> Self {
        Self {
            applications: Vec::new(),
            listeners: Arc::default(),
            router: Arc::default(),
            access_log: None,
        }
    }

    /// Builds everything the tree asks for; fails without touching what runs.
    pub async fn build(
        tree: &Value,
        runtime: &Runtime,
        previous: Option<&Generation>,
    ) -> Result<Self, ApplyError> {
        let mut applications = Vec::new();
        if let Some(apps) = tree.get("applications").and_then(Value::as_object) {
            for (name, config) in apps {
                let old = previous.and_then(|g| g.application(name));
                let app = Application::build(runtime, name, config, old).await?;
                applications.push((name.clone(), app));
            }
        }
        let names: Vec<&str> = applications.iter().map(|(n, _)| n.as_str()).collect();
        let router = Router::compile(tree, &names).map_err(|e| ApplyError(e.to_string()))?;
        let listeners = router
            .listeners(tree)
            .map_err(|e| ApplyError(e.to_string()))?;
        let access_log = match access_log::Spec::from_tree(tree) {
            Ok(Some(spec)) => {
                let path = spec.path.clone();
                let previous = previous.and_then(|g| g.access_log.as_deref());
                let log = spec.open(previous).map_err(|e| {
                    ApplyError(format!(
                        "access_log: failed to open `{}`: {e}",
                        path.display()
                    ))
                })?;
                Some(Arc::new(log))
            }
            Ok(None) => None,
            Err(e) => return Err(ApplyError(e.to_string())),
        };
        Ok(Self {
            applications,
            listeners: Arc::new(listeners),
            router: Arc::new(router),
            access_log,
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
        }
    }

    /// Opens the access log file again (`SIGUSR1`, after rotation).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.file().reopen();
        }
    }

    pub fn application_names(&self) -> impl Iterator<Item = &str> {
        self.applications.iter().map(|(name, _)| name.as_str())
    }

    pub fn has_application(&self, name: &str) -> bool {
        self.application(name).is_some()
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

    /// Serves a request that arrived on the listener `address`; the completion, if any,
    /// logs it once the response is written.
    pub async fn serve(&self, address: &str, request: Request) -> (Response, Option<Completion>) {
        let Some(pass) = self.listeners.get(address) else {
            // The listener was removed while this request was on its way.
            return (http::error_response(503), None);
        };
        // The common case goes straight to the app, with nothing to derive or keep.
        if let (Pass::Application(index), None) = (pass, &self.access_log) {
            return match self.applications.get(*index) {
                Some((_, app)) => (app.serve(request).await, None),
                None => (http::error_response(500), None),
            };
        }
        // Boxed, so that the fast path's future (moved on every request) stays small.
        Box::pin(self.dispatch(pass, request)).await
    }

    /// Routes a request, serves it, and applies what the acting step says to the answer.
    async fn dispatch(&self, pass: &Pass, request: Request) -> (Response, Option<Completion>) {
        let mut info = RequestInfo::new(request);
        let mut acted = None;
        let outcome = self.router.route(pass, &mut info, &mut acted);
        let mut response = match outcome {
            Outcome::Respond(response) => response,
            Outcome::Application(index) => match self.applications.get(index) {
                Some((_, app)) => {
                    // Keep the request's fields only if something reads them afterwards.
                    let keep = self.access_log.is_some()
                        || acted.is_some_and(|a| a.response_headers_need_request());
                    app.serve(info.take_request(keep)).await
                }
                None => http::error_response(500),
            },
        };
        if let Some(action) = acted
            && action.has_response_headers()
        {
            action.apply_response_headers(response.status, &mut response.headers, &info);
        }
        let completion = self
            .access_log
            .as_ref()
            .map(|log| log.completion(info, &response));
        (response, completion)
    }
}

/// The data plane's HTTP settings from `settings.http`; unset members keep Unit's
/// defaults. New connections pick them up; open ones keep theirs.
pub fn http_settings(tree: &Value) -> http::Settings {
    let mut settings = http::Settings::default();
    let Some(http) = tree.pointer("/settings/http") else {
        return settings;
    };
    let seconds = |key: &str| {
        http.get(key)
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
    };
    if let Some(t) = seconds("header_read_timeout") {
        settings.header_read_timeout = t;
    }
    if let Some(t) = seconds("body_read_timeout") {
        settings.body_read_timeout = t;
    }
    if let Some(t) = seconds("send_timeout") {
        settings.send_timeout = t;
    }
    if let Some(t) = seconds("idle_timeout") {
        settings.idle_timeout = t;
    }
    if let Some(size) = http.get("max_body_size").and_then(Value::as_u64) {
        settings.max_body_size = size;
    }
    if let Some(send) = http.get("server_version").and_then(Value::as_bool) {
        settings.server_version = send;
    }
    if let Some(discard) = http.get("discard_unsafe_fields").and_then(Value::as_bool) {
        settings.discard_unsafe_fields = discard;
    }
    settings
}
