//! The control API's URIs: `/`, `/config`, `/status`, `/control`, and Wharf's `/history`.
//!
//! One entry point normalises the path as Unit does and dispatches on its first segment;
//! each area then owns its methods and its own error titles.

use std::sync::Arc;

use actix_web::http::header::IF_MATCH;
use actix_web::http::{Method, StatusCode};
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::body;
use super::reply::{self, Reply};
use crate::config::path::{self, array_index};
use crate::config::{dialect, edit};
use crate::controller::{ChangeOrigin, Controller, Precondition};
use crate::dispatch::Published;
use crate::error::{ChangeError, RestartError};
use crate::http::ConnectionStats;
use crate::status;

/// What the control handlers share.
pub struct ControlState {
    pub controller: Arc<Controller>,
    pub stats: Arc<ConnectionStats>,
}

pub async fn dispatch(
    request: HttpRequest,
    payload: Payload,
    state: Data<ControlState>,
) -> HttpResponse {
    let raw_path = request.uri().path().to_owned();
    let segments = path::normalize(&raw_path);
    let reply = match segments.split_first() {
        None => root(&request, &state),
        Some((&"config", rest)) => {
            let reply = config(&request, payload, &state, &segments, rest).await;
            // Every /config answer says which generation it was made against.
            reply.or_generation(state.controller.current().number)
        }
        Some((&"status", rest)) => status(&request, &state, rest),
        Some((&"control", rest)) => control(&request, &state, rest).await,
        Some((&"history", rest)) => history(&request, &state, rest).await,
        Some(_) => Reply::not_found(),
    };
    reply.into_response()
}

fn root(request: &HttpRequest, state: &ControlState) -> Reply {
    if request.method() != Method::GET {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let current = state.controller.current();
    let status = status::report(&state.stats, &current.running);
    Reply::ok(json!({"config": current.tree, "status": status})).with_generation(current.number)
}

async fn config(
    request: &HttpRequest,
    payload: Payload,
    state: &ControlState,
    segments: &[&str],
    rest: &[&str],
) -> Reply {
    let node_path = match path::decode(rest) {
        Ok(p) => p,
        Err(e) => return Reply::error_with(StatusCode::NOT_FOUND, reply::NOT_FOUND, e.to_string()),
    };
    let method = request.method().clone();
    if method == Method::GET {
        let current = state.controller.current();
        return match edit::get(&current.tree, &node_path) {
            Some(value) => Reply::ok(value.clone()).with_generation(current.number),
            None => Reply::not_found(),
        };
    }
    if ![Method::PUT, Method::POST, Method::DELETE].contains(&method) {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::METHOD_NOT_ALLOWED);
    }
    let new_value = if method == Method::DELETE {
        None
    } else {
        let body = match body::read(request, payload).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        match dialect::parse(&body) {
            Ok(value) => Some(value),
            Err(e) => return Reply::invalid_json(&e),
        }
    };
    let origin = ChangeOrigin {
        method: method.to_string(),
        path: format!("/{}", segments.join("/")),
    };
    let result = state
        .controller
        .change(origin, &precondition(request), |tree| {
            match new_value {
                Some(value) if method == Method::PUT => edit::put(tree, &node_path, value),
                Some(value) => edit::post(tree, &node_path, value),
                None => edit::delete(tree, &node_path),
            }
            .map_err(ChangeError::Edit)
        })
        .await;
    change_reply(result)
}

fn status(request: &HttpRequest, state: &ControlState, rest: &[&str]) -> Reply {
    if request.method() != Method::GET {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let invalid_path = || Reply::error(StatusCode::NOT_FOUND, reply::INVALID_PATH);
    let Ok(node_path) = path::decode(rest) else {
        return invalid_path();
    };
    let report = status::report(&state.stats, &state.controller.current().running);
    match edit::get(&report, &node_path) {
        Some(value) => Reply::ok(value.clone()),
        None => invalid_path(),
    }
}

async fn control(request: &HttpRequest, state: &ControlState, rest: &[&str]) -> Reply {
    let [applications, name, restart] = rest else {
        return Reply::not_found();
    };
    if *applications != "applications" || *restart != "restart" {
        return Reply::not_found();
    }
    if request.method() != Method::GET {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let Ok(name) = path::decode_segment(name) else {
        return Reply::not_found();
    };
    match state.controller.restart(&name).await {
        Ok(()) => Reply::ok(json!({"success": "Ok"})),
        Err(e @ RestartError::UnknownApplication(_)) => {
            Reply::error_with(StatusCode::NOT_FOUND, reply::NOT_FOUND, e.to_string())
        }
        Err(RestartError::Failed(e)) => {
            tracing::error!(application = %name, "restart failed: {e}");
            Reply::error_with(
                StatusCode::INTERNAL_SERVER_ERROR,
                reply::RESTART_FAILED,
                e.to_string(),
            )
        }
    }
}

async fn history(request: &HttpRequest, state: &ControlState, rest: &[&str]) -> Reply {
    let controller = &state.controller;
    let generation = match rest.first() {
        None => None,
        Some(raw) => match array_index(raw).and_then(|g| u64::try_from(g).ok()) {
            Some(generation) => Some(generation),
            None => return Reply::not_found(),
        },
    };
    let method = request.method();
    match (generation, &rest[rest.len().min(1)..]) {
        (None, []) if method == Method::GET => match controller.store().history() {
            Ok(entries) => Reply::ok(json!(entries)),
            Err(e) => internal(&e),
        },
        (Some(generation), []) if method == Method::GET => match controller.stored_tree(generation)
        {
            Ok(Some((entry, tree))) => {
                let mut body = json!(entry);
                body["config"] = tree;
                Reply::ok(body)
            }
            Ok(None) => not_kept(generation),
            Err(e) => internal(&e),
        },
        (Some(generation), ["restore"]) if method == Method::POST => {
            restore(request, controller, generation).await
        }
        (Some(_), ["restore"]) => {
            Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD)
        }
        (_, []) => Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD),
        _ => Reply::not_found(),
    }
}

/// Rolls the config back: commits generation `generation`'s tree as a new generation.
async fn restore(request: &HttpRequest, controller: &Controller, generation: u64) -> Reply {
    let tree = match controller.stored_tree(generation) {
        Ok(Some((_, tree))) => tree,
        Ok(None) => return not_kept(generation),
        Err(e) => return internal(&e),
    };
    let origin = ChangeOrigin {
        method: "POST".to_owned(),
        path: format!("/history/{generation}/restore"),
    };
    let result = controller
        .restore(origin, &precondition(request), tree)
        .await;
    change_reply(result)
}

fn not_kept(generation: u64) -> Reply {
    Reply::error_with(
        StatusCode::NOT_FOUND,
        reply::NOT_FOUND,
        format!("generation {generation} is not in the kept history"),
    )
}

fn internal(error: &anyhow::Error) -> Reply {
    tracing::error!("control request failed: {error:#}");
    Reply::error_with(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error.",
        format!("{error:#}"),
    )
}

fn change_reply(result: Result<Arc<Published>, ChangeError>) -> Reply {
    match result {
        Ok(published) => Reply::success(reply::SUCCESS).with_generation(published.number),
        Err(ChangeError::Edit(edit::EditError::NotFound)) => Reply::not_found(),
        Err(ChangeError::Edit(edit::EditError::NotAllowed)) => {
            Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::METHOD_NOT_ALLOWED)
        }
        Err(ChangeError::Invalid(e)) => {
            Reply::error_with(StatusCode::BAD_REQUEST, reply::INVALID_CONFIG, e.detail)
        }
        Err(e @ ChangeError::PreconditionFailed { current }) => Reply::error_with(
            StatusCode::PRECONDITION_FAILED,
            reply::PRECONDITION_FAILED,
            e.to_string(),
        )
        .with_generation(current),
        Err(ChangeError::Apply(e)) => {
            tracing::warn!("reconfiguration failed: {e}");
            Reply::error_with(
                StatusCode::INTERNAL_SERVER_ERROR,
                reply::FAILED_TO_APPLY,
                e.to_string(),
            )
        }
        Err(e @ ChangeError::Store(_)) => {
            tracing::error!("reconfiguration failed: {e}");
            Reply::error_with(
                StatusCode::INTERNAL_SERVER_ERROR,
                reply::FAILED_TO_APPLY,
                e.to_string(),
            )
        }
    }
}

/// `If-Match`: absent or `*` matches any generation; otherwise one of the listed strong
/// tags must name the current one. Weak or malformed tags never match.
fn precondition(request: &HttpRequest) -> Precondition {
    let values: Vec<&str> = request
        .headers()
        .get_all(IF_MATCH)
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    if values.is_empty() {
        return Precondition::Any;
    }
    let tags: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if tags.contains(&"*") {
        return Precondition::Any;
    }
    Precondition::OneOf(
        tags.iter()
            .filter_map(|t| t.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
            .collect(),
    )
}
