//! The `/status` report, in Unit's shape: the application types served (`modules`),
//! connections and requests for the whole data plane, and per-application instance and
//! request counts.
//!
//! The counters are atomics that the data plane bumps as it works; the report is built
//! on demand from them and from the running generation, so every configured application
//! is listed even before it has served anything.

use serde_json::{Map, Value, json};

use crate::counter::Counter;
use crate::generation::Generation;
use crate::http::ConnectionStats;
use crate::runtime::APPLICATION_TYPES;

/// `modules`: each application type with its version and the file its code is in. Unit
/// names a language module's shared object; Wharf's types are built into its binary.
fn modules() -> Value {
    let lib = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let modules: Map<String, Value> = APPLICATION_TYPES
        .iter()
        .map(|name| {
            let module = json!({"version": env!("CARGO_PKG_VERSION"), "lib": lib});
            ((*name).to_owned(), module)
        })
        .collect();
    Value::Object(modules)
}

/// The `/status` tree; `acme` (the managed bundles' state) is added when there is one.
pub fn report(stats: &ConnectionStats, generation: &Generation, acme: Option<Value>) -> Value {
    let read = Counter::get;
    let applications: Map<String, Value> = generation
        .application_counts()
        .map(|(name, counts)| {
            let app = json!({
                "processes": {
                    "running": counts.running,
                    "starting": counts.starting,
                    "idle": counts.idle,
                },
                "requests": {"active": counts.active}
            });
            (name.to_owned(), app)
        })
        .collect();
    let mut report = json!({
        "modules": modules(),
        "connections": {
            "accepted": read(&stats.accepted),
            "active": read(&stats.active),
            "idle": read(&stats.idle),
            "closed": read(&stats.closed),
        },
        "requests": {"total": read(&stats.requests)},
        "applications": applications,
    });
    if let Some(acme) = acme {
        report["acme"] = acme;
    }
    report
}
