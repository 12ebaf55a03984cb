//! `settings.http`, `settings.telemetry`, `settings.acme` and the listener options, with
//! their defaults.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

use crate::acme::AcmeSpec;
use crate::http::Settings;
use crate::routing::CompileError;
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

/// `settings.acme`, which the schema has checked; `None` without one. Its
/// `ca_certificate` is read here, so that a file that is not a PEM certificate is an
/// invalid config rather than a renewal that fails later.
pub fn acme(members: Option<&Value>) -> Result<Option<AcmeSpec>, CompileError> {
    let Some(acme) = members else {
        return Ok(None);
    };
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let contact = match acme.get("contact") {
        Some(Value::Array(list)) => list.iter().map(text).collect(),
        Some(one) => vec![text(one)],
        None => Vec::new(),
    };
    let ca_certificate = acme
        .get("ca_certificate")
        .and_then(Value::as_str)
        .map(PathBuf::from);
    if let Some(path) = &ca_certificate {
        let invalid = |why: String| {
            CompileError::new(
                "settings/acme/ca_certificate",
                format!("`{}` {why}", path.display()),
            )
        };
        match CertificateDer::from_pem_file(path) {
            Ok(_) => {}
            Err(rustls::pki_types::pem::Error::Io(e)) => {
                return Err(invalid(format!("cannot be read: {e}")));
            }
            Err(e) => return Err(invalid(format!("holds no PEM certificate: {e}"))),
        }
    }
    let certificates = acme
        .get("certificates")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(bundle, managed)| {
            let names = managed
                .get("names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|name| text(name).to_ascii_lowercase())
                .collect();
            (bundle.clone(), names)
        })
        .collect();
    Ok(Some(AcmeSpec {
        directory: text(&acme["directory"]),
        contact,
        ca_certificate,
        certificates,
    }))
}
