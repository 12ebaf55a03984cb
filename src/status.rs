//! The `/status` report: connections and requests for the whole data plane, and
//! per-application instance and request counts.
//!
//! The counters are atomics that the data plane bumps as it works; the report is built
//! on demand from them and from the running generation, so every configured application
//! is listed even before it has served anything.

use serde_json::{Map, Value, json};

use crate::counter::Counter;
use crate::generation::Generation;
use crate::http::ConnectionStats;

/// The `/status` tree.
pub fn report(stats: &ConnectionStats, generation: &Generation) -> Value {
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
                "requests": {"active": counts.running}
            });
            (name.to_owned(), app)
        })
        .collect();
    json!({
        "connections": {
            "accepted": read(&stats.accepted),
            "active": read(&stats.active),
            "idle": read(&stats.idle),
            "closed": read(&stats.closed),
        },
        "requests": {"total": read(&stats.requests)},
        "applications": applications,
    })
}
