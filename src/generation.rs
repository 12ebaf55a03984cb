//! A generation: an immutable, fully built snapshot of what the server runs, made from
//! one validated config tree and published whole.
//!
//! Building one is the step where a valid config can still fail to run: modules are
//! compiled, linked and started here, so nothing is published until every app can serve.
//! Apps whose config and module bytes did not change are carried over from the previous
//! generation with their warm instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::config::path::decode_segment;
use crate::http::{self, Request, Response};
use crate::runtime::Runtime;
use crate::runtime::app::WasmApp;
use crate::runtime::pool::PoolCounts;

/// A valid config that cannot be run; the running generation stays as it was.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// Where a listener sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Application(String),
    Routes(String),
}

pub struct Generation {
    /// Applications in config order.
    applications: Vec<(String, Arc<WasmApp>)>,
    listeners: HashMap<String, Target>,
}

impl Generation {
    /// The generation of a config without applications or listeners.
    pub fn empty() -> Self {
        Self {
            applications: Vec::new(),
            listeners: HashMap::new(),
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
                let app = build_app(runtime, name, config, previous).await?;
                applications.push((name.clone(), app));
            }
        }
        let listeners = tree
            .get("listeners")
            .and_then(Value::as_object)
            .map(|listeners| {
                listeners
                    .iter()
                    .filter_map(|(address, listener)| {
                        let pass = listener.get("pass")?.as_str()?;
                        Some((address.clone(), target(pass)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            applications,
            listeners,
        })
    }

    pub fn application_names(&self) -> impl Iterator<Item = &str> {
        self.applications.iter().map(|(name, _)| name.as_str())
    }

    pub fn has_application(&self, name: &str) -> bool {
        self.application(name).is_some()
    }

    fn application(&self, name: &str) -> Option<&Arc<WasmApp>> {
        self.applications
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, app)| app)
    }

    /// Instance counts of every application, in config order.
    pub fn application_counts(&self) -> impl Iterator<Item = (&str, PoolCounts)> {
        self.applications
            .iter()
            .map(|(name, app)| (name.as_str(), app.counts()))
    }

    /// The module hashes this generation runs.
    pub fn module_hashes(&self) -> impl Iterator<Item = crate::runtime::ModuleHash> + '_ {
        self.applications.iter().map(|(_, app)| app.module_hash())
    }

    /// Serves a request that arrived on the listener `address`.
    pub async fn serve(&self, address: &str, request: Request) -> Response {
        match self.listeners.get(address) {
            Some(Target::Application(name)) => match self.application(name) {
                Some(app) => app.serve(request).await,
                None => http::error_response(404),
            },
            Some(Target::Routes(_)) => {
                tracing::error!(listener = address, "routing is not implemented yet");
                http::error_response(501)
            }
            // The listener was removed while this request was on its way.
            None => http::error_response(503),
        }
    }
}

fn target(pass: &str) -> Target {
    match pass.strip_prefix("applications/") {
        Some(name) => Target::Application(decode_segment(name).unwrap_or_else(|_| name.to_owned())),
        None => Target::Routes(pass.to_owned()),
    }
}

async fn build_app(
    runtime: &Runtime,
    name: &str,
    config: &Value,
    previous: Option<&Generation>,
) -> Result<Arc<WasmApp>, ApplyError> {
    let failed = |e: anyhow::Error| ApplyError(format!("application \"{name}\": {e:#}"));
    if config.get("type").and_then(Value::as_str) != Some("wasm") {
        return Err(ApplyError(format!(
            "application \"{name}\": the \"wasm-wasi-component\" type is not supported yet"
        )));
    }
    if let Some(old) = previous.and_then(|g| g.application(name))
        && old.config() == config
    {
        let module = config
            .get("module")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (hash, _) = runtime.load(module.as_ref()).await.map_err(failed)?;
        if hash == old.module_hash() {
            return Ok(Arc::clone(old));
        }
    }
    WasmApp::build(runtime, name, config)
        .await
        .map(Arc::new)
        .map_err(failed)
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
    settings
}
