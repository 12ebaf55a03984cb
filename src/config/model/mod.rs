//! The typed model of a validated config: what a generation runs, compiled once per
//! change from the tree. Building a generation from a `Plan` only does I/O (compiling
//! modules, starting instances, opening files); everything that can be wrong with the
//! tree itself has been found by the time a `Plan` exists.
//!
//! Each default lives in one place: the `Default` of the type it belongs to
//! (`http::Settings`, `Limits`, `PoolSize`) or a constant here. `schema/config.schema.json`
//! states the same defaults as `default` annotations, and the tests below hold the two
//! together.

mod apps;
mod settings;

use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use serde_json::Value;

use crate::access_log;
use crate::acme::AcmeSpec;
use crate::http;
use crate::routing::{CompileError, ListenerPasses, Router};
use crate::telemetry::TelemetrySpec;
use crate::tls::{LiveCertificates, Sessions, TlsListener};

pub use apps::{AppKind, AppSpec};

/// A validated config, compiled.
pub struct Plan {
    /// Applications in config order; compiled passes refer to them by index.
    pub applications: Vec<AppPlan>,
    pub listeners: Vec<ListenerPlan>,
    pub router: Arc<Router>,
    /// Where each listener sends its requests.
    pub passes: Arc<ListenerPasses>,
    /// `access_log`, not opened yet.
    pub access_log: Option<Arc<access_log::Spec>>,
    /// `settings.http`, with Unit's defaults for what is unset.
    pub http: http::Settings,
    pub telemetry: Option<TelemetrySpec>,
    /// `settings.acme`: the bundles Wharf obtains itself.
    pub acme: Option<AcmeSpec>,
}

/// One entry of `applications`.
pub struct AppPlan {
    pub name: String,
    pub spec: AppSpec,
}

/// One entry of `listeners`.
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    pub address: String,
    pub backlog: i32,
    /// `tls`, compiled against the uploaded and managed bundles.
    pub tls: Option<TlsListener>,
}

impl Plan {
    /// Compiles a tree that passed the schema, constraint and reference checks; TLS
    /// listeners against the uploaded `certificates` and the managed ones, keeping their
    /// `sessions`.
    pub fn compile(
        tree: &Value,
        certificates: &LiveCertificates,
        sessions: &Sessions,
    ) -> Result<Plan, CompileError> {
        let acme = settings::acme(tree.pointer("/settings/acme"))?;
        let managed: Vec<&str> = acme.iter().flat_map(AcmeSpec::bundle_names).collect();
        let applications: Vec<AppPlan> = members(tree.get("applications"))
            .map(|(name, app)| AppPlan {
                name: name.clone(),
                spec: AppSpec::from_config(app),
            })
            .collect();
        let names: Vec<&str> = applications.iter().map(|app| app.name.as_str()).collect();
        let router = Router::compile(tree, &names)?;
        let passes = router.listeners(tree)?;
        let access_log = access_log_spec(tree.get("access_log"))?.map(Arc::new);
        let listeners = members(tree.get("listeners"))
            .map(|(address, listener)| {
                let tls = match listener.get("tls") {
                    Some(tls) => Some(
                        TlsListener::compile(address, tls, certificates, &managed, sessions)
                            .map_err(|e| {
                                CompileError::new(
                                    format!("listeners/{address}/{}", e.path),
                                    e.message,
                                )
                            })?,
                    ),
                    None => None,
                };
                Ok(ListenerPlan {
                    address: address.clone(),
                    backlog: settings::backlog(listener),
                    tls,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        Ok(Plan {
            applications,
            listeners,
            router: Arc::new(router),
            passes: Arc::new(passes),
            access_log,
            http: settings::http(tree.pointer("/settings/http")),
            telemetry: settings::telemetry(tree.pointer("/settings/telemetry")),
            acme,
        })
    }
}

/// `access_log`: a path, or `{path, format, if}`.
fn access_log_spec(value: Option<&Value>) -> Result<Option<access_log::Spec>, CompileError> {
    match value {
        None => Ok(None),
        Some(Value::String(path)) => access_log::Spec::new(path, None, None).map(Some),
        Some(spec @ Value::Object(_)) => access_log::Spec::new(
            spec.get("path").and_then(Value::as_str).unwrap_or_default(),
            spec.get("format").and_then(Value::as_str),
            spec.get("if").and_then(Value::as_str),
        )
        .map(Some),
        Some(_) => Err(CompileError::new(
            "access_log",
            "must be a path or an object",
        )),
    }
}

fn members(value: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    value.and_then(Value::as_object).into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::SCHEMA;
    use serde_json::json;

    /// The `default` the schema states for a member of one of its `$defs`.
    fn schema_default(def: &str, member: &str) -> Value {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        schema["$defs"][def]["properties"][member]["default"].clone()
    }

    #[test]
    fn the_schema_states_the_defaults_the_model_applies() {
        let tree = json!({"listeners": {"*:80": {"pass": "routes"}}, "routes": []});
        let plan = Plan::compile(&tree, &LiveCertificates::default(), &Sessions::default())
            .expect("compiles");
        let http = &plan.http;
        let seconds = |d: Duration| json!(d.as_secs());
        for (member, model) in [
            ("header_read_timeout", seconds(http.header_read_timeout)),
            ("body_read_timeout", seconds(http.body_read_timeout)),
            ("body_total_timeout", seconds(http.body_total_timeout)),
            ("send_timeout", seconds(http.send_timeout)),
            ("idle_timeout", seconds(http.idle_timeout)),
            ("max_body_size", json!(http.max_body_size)),
            ("server_version", json!(http.server_version)),
            ("discard_unsafe_fields", json!(http.discard_unsafe_fields)),
            ("log_route", json!(plan.router.logs_routes())),
            (
                "proxy_connect_timeout",
                seconds(plan.router.proxy_timeouts().connect),
            ),
            (
                "proxy_read_timeout",
                seconds(plan.router.proxy_timeouts().read),
            ),
            (
                "proxy_send_timeout",
                seconds(plan.router.proxy_timeouts().send),
            ),
        ] {
            assert_eq!(schema_default("httpSettings", member), model, "{member}");
        }
        assert_eq!(
            schema_default("listener", "backlog"),
            json!(plan.listeners[0].backlog)
        );
    }

    #[test]
    fn the_schema_states_the_application_defaults_the_model_applies() {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        let unset = AppSpec::from_config(&json!({"type": "wasm"}));
        let object = AppSpec::from_config(&json!({"type": "wasm", "processes": {}}));
        assert_eq!(
            schema["$defs"]["processes"]["default"],
            json!(unset.processes.max),
            "processes"
        );
        assert_eq!(
            AppSpec::from_config(&json!({"type": "wasm", "processes": 1})).processes,
            unset.processes,
            "unset processes is the schema's default count"
        );
        let seconds = object.processes.idle_timeout.map(|t| t.as_secs());
        for (member, model) in [
            ("max", json!(object.processes.max)),
            ("spare", json!(object.processes.spare)),
            ("idle_timeout", json!(seconds)),
        ] {
            assert_eq!(schema_default("processes", member), model, "{member}");
        }
        for (member, model) in [
            ("memory", json!(unset.limits.memory)),
            ("queue", json!(unset.limits.queue)),
        ] {
            assert_eq!(schema_default("limits", member), model, "{member}");
        }
    }
}
