//! Reading a control request body: bounded in size and in how long the client may stall.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt as _;

use super::reply::{BAD_BODY, BODY_TIMEOUT, BODY_TOO_LARGE, Reply};

/// Largest body the control API reads; a config of thousands of routes is far below it.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Longest silence allowed between two pieces of a body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn read(request: &HttpRequest, mut payload: Payload) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error_with(
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            format!("The control API accepts bodies of at most {MAX_BODY} bytes."),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, payload.next()).await {
            Err(_) => {
                return Err(Reply::error_with(
                    StatusCode::REQUEST_TIMEOUT,
                    BODY_TIMEOUT,
                    format!(
                        "No body data arrived for {} seconds.",
                        BODY_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(None) => return Ok(body.freeze()),
            Ok(Some(Err(e))) => {
                return Err(Reply::error_with(
                    StatusCode::BAD_REQUEST,
                    BAD_BODY,
                    e.to_string(),
                ));
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
