//! Responses of the control API: pretty-printed JSON, Unit's error shape and titles.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, ETAG};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::dialect::JsonError;

pub const NOT_FOUND: &str = "Value doesn't exist.";
pub const METHOD_NOT_ALLOWED: &str = "Method isn't allowed.";
pub const INVALID_METHOD: &str = "Invalid method.";
pub const INVALID_PATH: &str = "Invalid path.";
pub const INVALID_JSON: &str = "Invalid JSON.";
pub const INVALID_CONFIG: &str = "Invalid configuration.";
pub const FAILED_TO_APPLY: &str = "Failed to apply new configuration.";
pub const RESTART_FAILED: &str = "Failed to restart application.";
pub const PRECONDITION_FAILED: &str = "Precondition failed.";
pub const BODY_TOO_LARGE: &str = "Request body is too large.";
pub const BODY_TIMEOUT: &str = "Request body timed out.";
pub const BAD_BODY: &str = "Invalid request body.";
pub const SUCCESS: &str = "Reconfiguration done.";

/// A response under construction; `ETag` is added where the generation is known.
pub struct Reply {
    status: StatusCode,
    body: Value,
    generation: Option<u64>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            generation: None,
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn success(message: &str) -> Self {
        Self::ok(json!({"success": message}))
    }

    pub fn error(status: StatusCode, title: &str) -> Self {
        Self::json(status, json!({"error": title}))
    }

    pub fn error_with(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        Self::json(status, json!({"error": title, "detail": detail.into()}))
    }

    pub fn invalid_json(error: &JsonError) -> Self {
        Self::json(
            StatusCode::BAD_REQUEST,
            json!({
                "error": INVALID_JSON,
                "detail": error.detail,
                "location": {"offset": error.offset, "line": error.line, "column": error.column},
            }),
        )
    }

    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, NOT_FOUND)
    }

    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Sets the generation unless the reply already names one.
    pub fn or_generation(mut self, generation: u64) -> Self {
        self.generation.get_or_insert(generation);
        self
    }

    pub fn into_response(self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        builder.insert_header(ContentType::json());
        if let Some(generation) = self.generation {
            builder.insert_header((ETAG, format!("\"{generation}\"")));
        }
        builder.body(pretty(&self.body))
    }
}

/// Unit's layout: tab-indented, one member per line, a final newline.
pub fn pretty(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a `Value` into a Vec cannot fail: keys are strings, numbers are finite.
    if value.serialize(&mut serializer).is_err() {
        out = b"null".to_vec();
    }
    out.push(b'\n');
    out
}
