//! The control API's URIs: `/`, `/config`, `/certificates`, `/status`, `/control`, and
//! Wharf's `/history` and `/metrics`.
//!
//! One entry point normalises the path as Unit does and dispatches on its first segment;
//! each area then owns its methods and its own error titles.

use std::sync::Arc;

use serde_json::json;

use super::body;
use super::reply::{self, Reply, StatusCode};
use crate::config::path::{self, array_index};
use crate::config::{dialect, edit};
use crate::controller::{ChangeOrigin, Controller, Precondition};
use crate::dispatch::Published;
use crate::error::{CertificateError, ChangeError, RestartError};
use crate::http::{ConnectionStats, Request};
use crate::metrics::Exposition as _;
use crate::metrics::text::Format;
use crate::status;

/// What the control handlers share.
pub struct ControlState {
    pub controller: Arc<Controller>,
    pub stats: Arc<ConnectionStats>,
}

/// The request methods the control API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
    Other,
}

impl Method {
    fn of(request: &Request) -> Method {
        match &request.method[..] {
            b"GET" => Method::Get,
            b"PUT" => Method::Put,
            b"POST" => Method::Post,
            b"DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

pub async fn dispatch(mut request: Request, state: &ControlState) -> Reply {
    // The path as sent (segments are decoded one by one, so `%2F` stays inside a key).
    let Ok(raw_path) = std::str::from_utf8(request.target.raw()) else {
        return Reply::error(StatusCode::NOT_FOUND, reply::NOT_FOUND);
    };
    let raw_path = raw_path.to_owned();
    let segments = path::normalize(&raw_path);
    match segments.split_first() {
        None => root(&request, state),
        Some((&"config", rest)) => {
            let reply = config(&mut request, state, &segments, rest).await;
            // Every /config answer says which generation it was made against.
            reply.or_generation(state.controller.current().number)
        }
        Some((&"certificates", rest)) => certificates(&mut request, state, rest).await,
        Some((&"status", rest)) => status(&request, state, rest),
        Some((&"control", rest)) => control(&request, state, rest).await,
        Some((&"history", rest)) => history(&request, state, rest).await,
        Some((&"metrics", [])) => metrics(&request, state),
        Some(_) => Reply::not_found(),
    }
}

fn root(request: &Request, state: &ControlState) -> Reply {
    if Method::of(request) != Method::Get {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let current = state.controller.current();
    let status = status::report(
        &state.stats,
        &current.running,
        state.controller.acme_report(),
    );
    let certificates = state.controller.certificates().describe();
    Reply::ok(json!({"certificates": certificates, "config": current.tree, "status": status}))
        .with_generation(current.number)
}

async fn config(
    request: &mut Request,
    state: &ControlState,
    segments: &[&str],
    rest: &[&str],
) -> Reply {
    let node_path = match path::decode(rest) {
        Ok(p) => p,
        Err(e) => return Reply::error_with(StatusCode::NOT_FOUND, reply::NOT_FOUND, e.to_string()),
    };
    let method = Method::of(request);
    if method == Method::Get {
        let current = state.controller.current();
        return match edit::get(&current.tree, &node_path) {
            Some(value) => Reply::ok(value.clone()).with_generation(current.number),
            None => Reply::not_found(),
        };
    }
    if ![Method::Put, Method::Post, Method::Delete].contains(&method) {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::METHOD_NOT_ALLOWED);
    }
    let new_value = if method == Method::Delete {
        None
    } else {
        let body = match body::read(&mut request.body).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        match dialect::parse(&body) {
            Ok(value) => Some(value),
            Err(e) => return Reply::invalid_json(&e),
        }
    };
    let origin = ChangeOrigin {
        method: method.name().to_owned(),
        path: format!("/{}", segments.join("/")),
    };
    let result = state
        .controller
        .change(origin, &precondition(request), |tree| {
            match new_value {
                Some(value) if method == Method::Put => edit::put(tree, &node_path, value),
                Some(value) => edit::post(tree, &node_path, value),
                None => edit::delete(tree, &node_path),
            }
            .map_err(ChangeError::Edit)
        })
        .await;
    change_reply(result)
}

/// `/certificates`: `GET` describes (any sub-path, as in `/config`), `PUT` uploads a PEM
/// bundle as the raw body, `DELETE` removes one no listener names.
async fn certificates(request: &mut Request, state: &ControlState, rest: &[&str]) -> Reply {
    let node_path = match path::decode(rest) {
        Ok(p) => p,
        Err(e) => return Reply::error_with(StatusCode::NOT_FOUND, reply::NOT_FOUND, e.to_string()),
    };
    let controller = &state.controller;
    match (Method::of(request), node_path.as_slice()) {
        (Method::Get, []) => Reply::ok(controller.certificates().describe()),
        (Method::Get, [name, rest @ ..]) => {
            let certificates = controller.certificates();
            let Some(bundle) = certificates.get(name) else {
                return Reply::error(StatusCode::NOT_FOUND, reply::CERT_NOT_FOUND);
            };
            match edit::get(bundle.description(), rest) {
                Some(value) => Reply::ok(value.clone()),
                None => Reply::not_found(),
            }
        }
        (Method::Put, [name]) => {
            let pem = match body::read(&mut request.body).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            match controller.upload_certificate(name, pem.to_vec()).await {
                Ok(()) => Reply::success(reply::CERT_UPLOADED),
                Err(e) => certificate_error(&e),
            }
        }
        (Method::Delete, [name]) => match controller.delete_certificate(name).await {
            Ok(()) => Reply::success(reply::CERT_DELETED),
            Err(e) => certificate_error(&e),
        },
        (Method::Put | Method::Delete, _) => {
            Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::METHOD_NOT_ALLOWED)
        }
        _ => Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD),
    }
}

fn certificate_error(error: &CertificateError) -> Reply {
    let (status, title) = match error {
        CertificateError::Invalid(_) => (StatusCode::BAD_REQUEST, reply::CERT_INVALID),
        CertificateError::Exists(_) => (StatusCode::BAD_REQUEST, reply::CERT_EXISTS),
        CertificateError::NotFound(_) => (StatusCode::NOT_FOUND, reply::CERT_NOT_FOUND),
        CertificateError::InUse(_) => (StatusCode::BAD_REQUEST, reply::CERT_IN_USE),
        CertificateError::Store(e) => {
            tracing::error!("storing a certificate failed: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, reply::CERT_STORE_FAILED)
        }
    };
    Reply::error_with(status, title, error.to_string())
}

fn status(request: &Request, state: &ControlState, rest: &[&str]) -> Reply {
    if Method::of(request) != Method::Get {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let invalid_path = || Reply::error(StatusCode::NOT_FOUND, reply::INVALID_PATH);
    let Ok(node_path) = path::decode(rest) else {
        return invalid_path();
    };
    let controller = &state.controller;
    let report = status::report(
        &state.stats,
        &controller.current().running,
        controller.acme_report(),
    );
    match edit::get(&report, &node_path) {
        Some(value) => Reply::ok(value.clone()),
        None => invalid_path(),
    }
}

/// `/metrics`: the Prometheus exposition, in OpenMetrics if `Accept` asks for it.
fn metrics(request: &Request, state: &ControlState) -> Reply {
    if Method::of(request) != Method::Get {
        return Reply::error(StatusCode::METHOD_NOT_ALLOWED, reply::INVALID_METHOD);
    }
    let format = Format::negotiate(&request.headers);
    Reply::text(format.content_type(), state.controller.render(format))
}

async fn control(request: &Request, state: &ControlState, rest: &[&str]) -> Reply {
    let [applications, name, restart] = rest else {
        return Reply::not_found();
    };
    if *applications != "applications" || *restart != "restart" {
        return Reply::not_found();
    }
    if Method::of(request) != Method::Get {
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

async fn history(request: &Request, state: &ControlState, rest: &[&str]) -> Reply {
    let controller = &state.controller;
    let generation = match rest.first() {
        None => None,
        Some(raw) => match array_index(raw).and_then(|g| u64::try_from(g).ok()) {
            Some(generation) => Some(generation),
            None => return Reply::not_found(),
        },
    };
    let method = Method::of(request);
    match (generation, &rest[rest.len().min(1)..]) {
        (None, []) if method == Method::Get => match controller.store().history() {
            Ok(entries) => Reply::ok(json!(entries)),
            Err(e) => internal(&e),
        },
        (Some(generation), []) if method == Method::Get => match controller.stored_tree(generation)
        {
            Ok(Some((entry, tree))) => {
                let mut body = json!(entry);
                body["config"] = tree;
                Reply::ok(body)
            }
            Ok(None) => not_kept(generation),
            Err(e) => internal(&e),
        },
        (Some(generation), ["restore"]) if method == Method::Post => {
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
async fn restore(request: &Request, controller: &Controller, generation: u64) -> Reply {
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
        reply::INTERNAL_ERROR,
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
fn precondition(request: &Request) -> Precondition {
    let values: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"if-match"))
        .map(|(_, value)| std::str::from_utf8(value).unwrap_or(""))
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
