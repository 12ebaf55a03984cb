//! Counters reported under `/status`: connections and requests for the whole server, and
//! per-application instance and request counts.
//!
//! The counters are plain atomics that the data plane bumps; the report is built on
//! demand from them and from the running generation, so every configured application is
//! listed even before it has served anything.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::generation::Generation;

#[derive(Debug, Default)]
pub struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_idle: AtomicU64,
    pub connections_closed: AtomicU64,
    pub requests_total: AtomicU64,
}

impl Counters {
    /// The `/status` tree.
    pub fn report(&self, generation: &Generation) -> Value {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let applications: Map<String, Value> = generation
            .applications()
            .iter()
            .map(|name| {
                let app = json!({
                    "processes": {"running": 0, "starting": 0, "idle": 0},
                    "requests": {"active": 0}
                });
                (name.clone(), app)
            })
            .collect();
        json!({
            "connections": {
                "accepted": read(&self.connections_accepted),
                "active": read(&self.connections_active),
                "idle": read(&self.connections_idle),
                "closed": read(&self.connections_closed),
            },
            "requests": {"total": read(&self.requests_total)},
            "applications": applications,
        })
    }
}
