//! `settings.http` and the listener options, with their defaults.

use std::time::Duration;

use serde_json::Value;

use crate::http::Settings;
use crate::telemetry::{DEFAULT_BATCH_SIZE, Protocol, TelemetrySpec};

/// Unit's default listen backlog.
pub const DEFAULT_BACKLOG: i32 = 511;

/// A listener's `backlog`.
pub fn backlog(listener: &Value) -> i32 {
    listener
        .get("backlog")
        .and_then(Value::as_i64)
        .and_then(|b| i32::try_from(b).ok())
        .unwrap_or(DEFAULT_BACKLOG)
}

/// The data plane's HTTP settings; unset members keep Unit's defaults.
pub fn http(members: Option<&Value>) -> Settings {
    let mut settings = Settings::default();
    let Some(http) = members else {
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
    if let Some(t) = seconds("body_total_timeout") {
        settings.body_total_timeout = t;
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

/// `settings.telemetry`, which the schema has checked; `None` without one.
pub fn telemetry(members: Option<&Value>) -> Option<TelemetrySpec> {
    let telemetry = members?;
    let protocol = match telemetry.get("protocol").and_then(Value::as_str) {
        Some(p) if p.eq_ignore_ascii_case("grpc") => Protocol::Grpc,
        _ => Protocol::Http,
    };
    Some(TelemetrySpec {
        endpoint: telemetry
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        protocol,
        batch_size: telemetry
            .get("batch_size")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_BATCH_SIZE),
        sampling_ratio: telemetry
            .get("sampling_ratio")
            .and_then(Value::as_f64)
            .unwrap_or(1.0),
    })
}
