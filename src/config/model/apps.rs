//! `applications`: each app's type and file, handlers, limits, instance counts,
//! environment and preopened directories, read once from the validated tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::runtime::component::spec::ComponentSpec;
use crate::runtime::limits::Limits;
use crate::runtime::unit::pool::PoolSize;
use crate::runtime::unit::spec::UnitAppSpec;
use crate::runtime::wasi::Preopen;

/// How long idle instances beyond `spare` are kept, when `processes.idle_timeout` is unset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// One application, as it is to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub kind: AppKind,
    pub limits: Limits,
    /// `processes`; meaningful for `wasm` apps (a component gets an instance per request).
    pub processes: PoolSize,
    /// `watch`: swap the code in when its file changes.
    pub watch: bool,
}

/// What the app runs, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum AppKind {
    Wasm(UnitAppSpec),
    Component(ComponentSpec),
}

impl AppSpec {
    /// Reads a validated application object.
    pub fn from_config(app: &Value) -> AppSpec {
        let limits = limits(app.get("limits"));
        let environment = environment(app.get("environment"));
        let preopens = preopens(app.pointer("/access/filesystem"));
        let kind = if app.get("type").and_then(Value::as_str) == Some("wasm-wasi-component") {
            AppKind::Component(ComponentSpec {
                component: PathBuf::from(string(app, "component").unwrap_or_default()),
                environment,
                preopens,
                memory_limit: limits.memory,
            })
        } else {
            let required = |key: &str| string(app, key).unwrap_or_default();
            AppKind::Wasm(UnitAppSpec {
                module: PathBuf::from(required("module")),
                request_handler: required("request_handler"),
                malloc_handler: required("malloc_handler"),
                free_handler: required("free_handler"),
                module_init_handler: string(app, "module_init_handler"),
                module_end_handler: string(app, "module_end_handler"),
                request_init_handler: string(app, "request_init_handler"),
                request_end_handler: string(app, "request_end_handler"),
                response_end_handler: string(app, "response_end_handler"),
                environment,
                preopens,
                memory_limit: limits.memory,
            })
        };
        AppSpec {
            kind,
            limits,
            processes: processes(app.get("processes")),
            watch: app.get("watch").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    /// The module or component file.
    pub fn file(&self) -> &Path {
        match &self.kind {
            AppKind::Wasm(spec) => &spec.module,
            AppKind::Component(spec) => &spec.component,
        }
    }
}

fn string(app: &Value, key: &str) -> Option<String> {
    app.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `limits`; unset members keep `Limits::default()`.
fn limits(members: Option<&Value>) -> Limits {
    let defaults = Limits::default();
    let member = |key: &str| members.and_then(|l| l.get(key));
    let size = |key: &str| {
        member(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    Limits {
        timeout: member("timeout")
            .and_then(Value::as_f64)
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        requests: member("requests").and_then(Value::as_u64),
        memory: size("memory").unwrap_or(defaults.memory),
        queue: size("queue").unwrap_or(defaults.queue),
    }
}

/// Unit's `processes`: an integer is that many instances, all started; an object is up
/// to `max` (default 1) with `spare` kept warm and idle ones dropped after
/// `idle_timeout`. Unset is one instance, as in Unit (`PoolSize::default()`): a guest
/// that keeps state in its memory, or writes one fixed file, sees every request.
fn processes(value: Option<&Value>) -> PoolSize {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).map(|n| n as usize);
    match value {
        Some(Value::Number(n)) => PoolSize::fixed(n.as_u64().map_or(1, |n| n as usize)),
        Some(Value::Object(p)) => PoolSize {
            max: count(p.get("max")).unwrap_or(1),
            spare: count(p.get("spare")).unwrap_or(0),
            idle_timeout: Some(
                p.get("idle_timeout")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_secs),
            ),
        },
        _ => PoolSize::default(),
    }
}

/// The configured `environment`; the guest sees these variables and nothing else.
fn environment(vars: Option<&Value>) -> Vec<(String, String)> {
    vars.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// `access.filesystem`: a path preopened at the same path, or `{host, guest, readonly}`.
fn preopens(entries: Option<&Value>) -> Vec<Preopen> {
    let entries = entries
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::String(path) => Some(Preopen {
                host: PathBuf::from(path),
                guest: path.clone(),
                readonly: false,
            }),
            Value::Object(map) => Some(Preopen {
                host: PathBuf::from(map.get("host")?.as_str()?),
                guest: map.get("guest")?.as_str()?.to_owned(),
                readonly: map
                    .get("readonly")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn processes_reads_like_unit() {
        let size = |p: Value| processes(Some(&p));
        assert_eq!(size(json!(3)), PoolSize::fixed(3));
        assert_eq!(
            size(json!({"max": 4, "spare": 1, "idle_timeout": 2})),
            PoolSize {
                max: 4,
                spare: 1,
                idle_timeout: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(size(json!({})).max, 1);
        assert_eq!(size(json!({})).idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(processes(None), PoolSize::fixed(1));
    }

    #[test]
    fn limits_are_read_from_the_app_and_default_otherwise() {
        assert_eq!(limits(None), Limits::default());
        let limits = limits(Some(
            &json!({"timeout": 0.5, "requests": 3, "memory": 1048576, "queue": 0}),
        ));
        assert_eq!(limits.timeout, Some(Duration::from_millis(500)));
        assert_eq!(limits.requests, Some(3));
        assert_eq!(limits.memory, 1 << 20);
        assert_eq!(limits.queue, 0);
    }

    #[test]
    fn reads_a_component_with_its_environment_and_preopens() {
        let spec = AppSpec::from_config(&json!({
            "type": "wasm-wasi-component",
            "component": "/srv/app.wasm",
            "environment": {"A": "1"},
            "access": {"filesystem": ["/tmp", {"host": "/srv", "guest": "/data", "readonly": true}]},
            "limits": {"memory": 1048576},
            "watch": true
        }));
        assert!(spec.watch);
        assert_eq!(spec.file(), Path::new("/srv/app.wasm"));
        let AppKind::Component(component) = spec.kind else {
            panic!("a component");
        };
        assert_eq!(
            component.environment,
            vec![("A".to_owned(), "1".to_owned())]
        );
        assert_eq!(component.preopens.len(), 2);
        assert!(component.preopens[1].readonly);
        assert_eq!(component.preopens[1].guest, "/data");
        assert_eq!(component.memory_limit, 1 << 20);
    }

    #[test]
    fn reads_a_wasm_app_with_its_handlers() {
        let spec = AppSpec::from_config(&json!({
            "type": "wasm", "module": "/m.wasm", "request_handler": "r",
            "malloc_handler": "m", "free_handler": "f", "module_init_handler": "i"
        }));
        assert!(!spec.watch);
        let AppKind::Wasm(unit) = spec.kind else {
            panic!("a wasm app");
        };
        assert_eq!(unit.module, PathBuf::from("/m.wasm"));
        assert_eq!(unit.module_init_handler.as_deref(), Some("i"));
        assert_eq!(unit.request_end_handler, None);
        assert_eq!(unit.memory_limit, Limits::default().memory);
    }
}
