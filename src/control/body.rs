//! Reading a control request body: bounded in size and in how long the client may stall
//! (the HTTP layer enforces both, with the settings `super::settings` gives it; this
//! turns what it reports into the API's answers).

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::reply::{BAD_BODY, BODY_TIMEOUT, Reply, StatusCode};
use crate::http::{BodyError, RequestBody};

/// Largest body the control API reads; a config of thousands of routes is far below it.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Longest silence allowed between two pieces of a body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn read(body: &mut RequestBody) -> Result<Bytes, Reply> {
    let mut whole = BytesMut::new();
    loop {
        match body.chunk().await {
            Ok(None) => return Ok(whole.freeze()),
            Ok(Some(chunk)) if whole.len() + chunk.len() > MAX_BODY => {
                return Err(Reply::body_too_large(MAX_BODY));
            }
            Ok(Some(chunk)) => whole.extend_from_slice(&chunk),
            Err(BodyError::TooLarge) => return Err(Reply::body_too_large(MAX_BODY)),
            Err(BodyError::Timeout) => {
                return Err(Reply::error_with(
                    StatusCode::REQUEST_TIMEOUT,
                    BODY_TIMEOUT,
                    format!(
                        "No body data arrived for {} seconds.",
                        BODY_IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Err(e) => {
                return Err(Reply::error_with(
                    StatusCode::BAD_REQUEST,
                    BAD_BODY,
                    e.to_string(),
                ));
            }
        }
    }
}
