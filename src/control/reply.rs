//! Responses of the control API: pretty-printed JSON, Unit's error shape and titles.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::dialect::JsonError;
use crate::http::{Response, ResponseBody};

/// The statuses the control API answers with.
pub struct StatusCode;

impl StatusCode {
    pub const OK: u16 = 200;
    pub const BAD_REQUEST: u16 = 400;
    pub const NOT_FOUND: u16 = 404;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const REQUEST_TIMEOUT: u16 = 408;
    pub const PRECONDITION_FAILED: u16 = 412;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
}

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
pub const BAD_REQUEST: &str = "Invalid request.";
pub const HEAD_TIMEOUT: &str = "Request timed out.";
pub const HEAD_TOO_LARGE: &str = "Request header is too large.";
pub const INTERNAL_ERROR: &str = "Internal error.";
pub const SUCCESS: &str = "Reconfiguration done.";
pub const CERT_UPLOADED: &str = "Certificate chain uploaded.";
pub const CERT_DELETED: &str = "Certificate deleted.";
pub const CERT_INVALID: &str = "Invalid certificate.";
pub const CERT_EXISTS: &str = "Certificate already exists.";
pub const CERT_NOT_FOUND: &str = "Certificate doesn't exist.";
pub const CERT_IN_USE: &str = "Certificate is used in the configuration.";
pub const CERT_STORE_FAILED: &str = "Failed to store certificate.";

/// A response under construction; `ETag` is added where the generation is known.
pub struct Reply {
    status: u16,
    body: Body,
    generation: Option<u64>,
}

enum Body {
    Json(Value),
    /// Anything else, with its media type (`/metrics`).
    Text(&'static str, String),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Body::Json(body),
            generation: None,
        }
    }

    /// A 200 with `body` of the media type `content_type`.
    pub fn text(content_type: &'static str, body: String) -> Self {
        Self {
            status: StatusCode::OK,
            body: Body::Text(content_type, body),
            generation: None,
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn success(message: &str) -> Self {
        Self::ok(json!({"success": message}))
    }

    pub fn error(status: u16, title: &str) -> Self {
        Self::json(status, json!({"error": title}))
    }

    pub fn error_with(status: u16, title: &str, detail: impl Into<String>) -> Self {
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

    /// What the HTTP layer refused a request with, before the API saw it.
    pub fn refusal(status: u16) -> Self {
        let (title, detail) = match status {
            408 => (HEAD_TIMEOUT, "The request did not arrive in time."),
            413 => (BODY_TOO_LARGE, "The request body is larger than the limit."),
            431 => (HEAD_TOO_LARGE, "The request head is larger than the limit."),
            500..=599 => (INTERNAL_ERROR, "The request could not be served."),
            _ => (BAD_REQUEST, "The request is not valid HTTP/1.1."),
        };
        Self::error_with(status, title, detail)
    }

    /// A body over `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Self::error_with(
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            format!("The control API accepts bodies of at most {limit} bytes."),
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

    pub fn into_response(self) -> Response {
        let (content_type, body) = match self.body {
            Body::Json(value) => ("application/json", pretty(&value)),
            Body::Text(content_type, text) => (content_type, text.into_bytes()),
        };
        let mut headers = vec![(
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(content_type.as_bytes()),
        )];
        if let Some(generation) = self.generation {
            headers.push((
                Bytes::from_static(b"ETag"),
                Bytes::from(format!("\"{generation}\"")),
            ));
        }
        Response {
            status: self.status,
            headers,
            body: ResponseBody::Full(Bytes::from(body)),
        }
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
