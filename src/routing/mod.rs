//! Routes: Unit's `routes` (an array of steps, or an object of named arrays) compiled
//! once per applied config into an immutable `Router` that the generation holds, and the
//! walk a request takes through it — steps tried in order, the first whose conditions
//! hold acts, no match answers 404, and a chain of passes longer than Unit allows is cut
//! with 500.
//!
//! `pattern` and `address` own the matching rules, `conditions` a step's `match`,
//! `action` its `action`, `share` a `share` action's paths and options, `variables` Unit's `$name` strings, `request` the parts of a
//! request those read, `encoding` the URI encodings.

pub mod action;
pub mod address;
pub mod conditions;
pub mod encoding;
pub mod pattern;
pub mod request;
pub mod share;
pub mod variables;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use self::action::{Action, Kind, Pass};
use self::conditions::Conditions;
use self::request::RequestInfo;
use self::share::ShareOutcome;
use crate::http::{self, Response, ResponseBody};
use crate::proxy::{Destination, Server, Timeouts, Upstream};
use crate::static_files::MimeTypes;

/// Unit runs at most this many actions for one request (`nxt_http_request_action`), so
/// a pass loop ends with 500.
pub const MAX_PASSES: usize = 256;

/// Why a config's routes cannot be compiled; `path` names the offending value.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct CompileError {
    pub path: String,
    pub message: String,
}

impl CompileError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The names a pass may use: applications (by index in config order) and routes.
#[derive(Debug, Default)]
pub struct Names {
    applications: HashMap<Box<str>, usize>,
    routes: HashMap<Box<str>, usize>,
    upstreams: HashMap<Box<str>, usize>,
    /// What every `proxy` action and upstream server waits for (`settings.http`).
    pub(crate) proxy_timeouts: Timeouts,
}

impl Names {
    fn application(&self, name: &str) -> Option<usize> {
        self.applications.get(name).copied()
    }

    fn route(&self, name: &str) -> Option<usize> {
        self.routes.get(name).copied()
    }

    fn upstream(&self, name: &str) -> Option<usize> {
        self.upstreams.get(name).copied()
    }
}

#[derive(Debug)]
struct Step {
    conditions: Conditions,
    action: Action,
}

#[derive(Debug)]
struct Route {
    /// Empty for the array form.
    name: Box<str>,
    steps: Box<[Step]>,
}

/// Where a request ended up.
pub enum Outcome {
    /// Serve it with this application.
    Application(usize),
    /// Answer with this response.
    Respond(Response),
    /// Forward it (a `proxy` action, an `upstreams/<name>` pass).
    Proxy(Destination),
    /// Answer with the metrics exposition (a `metrics` action).
    Metrics,
}

/// Each listener's pass, by address. Looked up on every request: with a fast hasher,
/// since the addresses come from the config, not from clients.
pub type ListenerPasses = HashMap<String, Pass, foldhash::fast::RandomState>;

/// All routes of a config, compiled.
#[derive(Debug, Default)]
pub struct Router {
    routes: Box<[Route]>,
    names: Names,
    log_route: bool,
    /// The MIME types `share` actions answer with.
    mime: MimeTypes,
    /// `upstreams`, in config order.
    upstreams: Box<[Arc<Upstream>]>,
}

impl Router {
    /// Compiles `routes` of `tree`; `applications` are the application names in the order
    /// the generation keeps them.
    pub fn compile(tree: &Value, applications: &[&str]) -> Result<Router, CompileError> {
        let mut names = Names {
            applications: applications
                .iter()
                .enumerate()
                .map(|(i, name)| (Box::from(*name), i))
                .collect(),
            routes: HashMap::new(),
            upstreams: HashMap::new(),
            proxy_timeouts: Timeouts::from_settings(tree.pointer("/settings/http")),
        };
        let upstreams = compile_upstreams(tree, names.proxy_timeouts)?;
        for (i, (name, _)) in upstreams.iter().enumerate() {
            names.upstreams.insert(name.as_str().into(), i);
        }
        let upstreams = upstreams.into_iter().map(|(_, u)| u).collect();
        let sources: Vec<(String, String, &[Value])> = match tree.get("routes") {
            Some(Value::Array(steps)) => vec![(String::new(), "routes".into(), steps)],
            Some(Value::Object(named)) => named
                .iter()
                .map(|(name, steps)| {
                    let steps = steps.as_array().map_or(&[][..], Vec::as_slice);
                    (name.clone(), format!("routes/{name}"), steps)
                })
                .collect(),
            _ => Vec::new(),
        };
        for (i, (name, _, _)) in sources.iter().enumerate() {
            names.routes.insert(name.as_str().into(), i);
        }
        let mut routes = Vec::with_capacity(sources.len());
        for (name, at, steps) in &sources {
            let steps = steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let at = format!("{at}/{i}");
                    Ok(Step {
                        conditions: Conditions::compile(step.get("match"), &format!("{at}/match"))?,
                        action: Action::compile(
                            step.get("action").unwrap_or(&Value::Null),
                            &names,
                            &format!("{at}/action"),
                        )?,
                    })
                })
                .collect::<Result<Vec<_>, CompileError>>()?;
            routes.push(Route {
                name: name.as_str().into(),
                steps: steps.into_boxed_slice(),
            });
        }
        let log_route = tree
            .pointer("/settings/http/log_route")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mime = MimeTypes::new(tree.pointer("/settings/http/static/mime_types")).map_err(
            |e| match e.split_once(": ") {
                Some((path, message)) => CompileError::new(path, message),
                None => CompileError::new("settings/http/static/mime_types", e),
            },
        )?;
        Ok(Router {
            routes: routes.into_boxed_slice(),
            names,
            log_route,
            mime,
            upstreams,
        })
    }

    /// Whether each step tried is logged (`settings.http.log_route`).
    pub fn logs_routes(&self) -> bool {
        self.log_route
    }

    /// What proxied exchanges wait for (`settings.http.proxy_*_timeout`).
    pub fn proxy_timeouts(&self) -> Timeouts {
        self.names.proxy_timeouts
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Each listener's `pass`, compiled against these routes.
    pub fn listeners(&self, tree: &Value) -> Result<ListenerPasses, CompileError> {
        let Some(listeners) = tree.get("listeners").and_then(Value::as_object) else {
            return Ok(ListenerPasses::default());
        };
        listeners
            .iter()
            .filter_map(|(address, listener)| {
                let pass = listener.get("pass")?.as_str()?;
                let at = format!("listeners/{address}/pass");
                Some(Pass::compile(pass, &self.names, &at).map(|p| (address.clone(), p)))
            })
            .collect()
    }

    /// The first step of `route` whose conditions hold.
    fn find(&self, route: usize, request: &RequestInfo) -> Option<&Action> {
        let route = self.routes.get(route)?;
        for (i, step) in route.steps.iter().enumerate() {
            let selected = step.conditions.hold(request);
            if self.log_route {
                let step_name = if route.name.is_empty() {
                    format!("routes/{i}")
                } else {
                    format!("routes/{}/{i}", route.name)
                };
                if selected {
                    tracing::info!("\"{step_name}\" selected");
                } else {
                    tracing::info!("\"{step_name}\" discarded");
                }
            }
            if selected {
                return Some(&step.action);
            }
        }
        None
    }

    /// Walks the request from `start` to an application or a response. `acted` is left
    /// holding the last action that acted, whose `response_headers` apply to the answer.
    pub fn route<'s>(
        &'s self,
        start: &Pass,
        request: &mut RequestInfo,
        acted: &mut Option<&'s Action>,
    ) -> Outcome {
        let mut dynamic;
        let mut pass = start;
        for _ in 0..MAX_PASSES {
            if let Pass::Dynamic(template) = pass {
                let text = template.render(&*request);
                match self.names.resolve(&text) {
                    Some(resolved) => {
                        dynamic = resolved;
                        pass = &dynamic;
                    }
                    None => {
                        tracing::debug!(
                            pass = %String::from_utf8_lossy(&text),
                            "the pass names nothing that exists"
                        );
                        return Outcome::Respond(http::error_response(404));
                    }
                }
            }
            let route = match pass {
                Pass::Application(index) => return Outcome::Application(*index),
                Pass::Upstream(index) => {
                    return match self.upstreams.get(*index) {
                        Some(upstream) => {
                            Outcome::Proxy(Destination::Upstream(Arc::clone(upstream)))
                        }
                        None => Outcome::Respond(http::error_response(500)),
                    };
                }
                Pass::Route(index) => *index,
                Pass::Dynamic(_) => return Outcome::Respond(http::error_response(500)),
            };
            let Some(mut action) = self.find(route, request) else {
                return Outcome::Respond(http::error_response(404));
            };
            // The step's action, then each `fallback` a share falls back to.
            pass = loop {
                *acted = Some(action);
                if let Some(rewrite) = &action.rewrite {
                    let uri = rewrite.render(&*request);
                    if let Err(e) = request.rewrite(&uri) {
                        // Unit ends such a request with 500.
                        tracing::info!(
                            "rewrite to \"{}\" failed: {e}; answering 500",
                            String::from_utf8_lossy(&uri)
                        );
                        return Outcome::Respond(http::error_response(500));
                    }
                    if self.log_route {
                        tracing::info!(
                            "URI rewritten to \"{}\"",
                            String::from_utf8_lossy(request.path())
                        );
                    }
                }
                match &action.kind {
                    Kind::Return { status, .. } => {
                        return Outcome::Respond(answer(*status, action, request));
                    }
                    Kind::Pass(next) => break next,
                    Kind::Proxy(destination) => return Outcome::Proxy(destination.clone()),
                    Kind::Metrics => return Outcome::Metrics,
                    Kind::Share { share, fallback } => match share.serve(request, &self.mime) {
                        ShareOutcome::Respond(response) => return Outcome::Respond(response),
                        ShareOutcome::Miss(status) => match fallback {
                            Some(fallback) => {
                                if self.log_route {
                                    tracing::info!("\"fallback\" taken");
                                }
                                action = fallback;
                            }
                            None => return Outcome::Respond(http::error_response(status)),
                        },
                    },
                }
            };
        }
        tracing::error!("a request passed through more than {MAX_PASSES} actions; answering 500");
        Outcome::Respond(http::error_response(500))
    }
}

/// `upstreams`: each one's servers with their weights, by name in config order.
fn compile_upstreams(
    tree: &Value,
    timeouts: Timeouts,
) -> Result<Vec<(String, Arc<Upstream>)>, CompileError> {
    let Some(upstreams) = tree.get("upstreams") else {
        return Ok(Vec::new());
    };
    let upstreams = upstreams
        .as_object()
        .ok_or_else(|| CompileError::new("upstreams", "must be an object"))?;
    let mut compiled = Vec::with_capacity(upstreams.len());
    for (name, upstream) in upstreams {
        let at = format!("upstreams/{name}/servers");
        let servers = upstream
            .get("servers")
            .and_then(Value::as_object)
            .ok_or_else(|| CompileError::new(&at, "must be an object of servers"))?;
        let mut list = Vec::with_capacity(servers.len());
        for (address, server) in servers {
            let at = format!("{at}/{address}");
            let parsed = crate::proxy::Address::parse_server(address)
                .map_err(|e| CompileError::new(&at, e))?;
            let weight = match server.get("weight") {
                None => 1.0,
                Some(w) => w
                    .as_f64()
                    .filter(|w| (0.0..=1_000_000.0).contains(w))
                    .ok_or_else(|| {
                        CompileError::new(
                            format!("{at}/weight"),
                            "must be a number from 0 to 1000000",
                        )
                    })?,
            };
            list.push((Server::new(parsed, timeouts), Upstream::scale(weight)));
        }
        compiled.push((name.clone(), Arc::new(Upstream::new(list))));
    }
    Ok(compiled)
}

/// A `return` action's response: Unit's error page for 400-599, otherwise an empty body
/// with the `Location` if one is configured.
fn answer(status: u16, action: &Action, request: &RequestInfo) -> Response {
    if (400..=599).contains(&status) {
        return http::error_response(status);
    }
    let mut headers = Vec::new();
    if let Some(location) = action.location(request) {
        headers.push((Bytes::from_static(b"Location"), location));
    }
    Response {
        status,
        headers,
        body: ResponseBody::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(target: &str) -> RequestInfo {
        RequestInfo::new(http::Request::for_test(target, &[("Host", "example.com")]))
    }

    /// The status and `Location` a request gets, or the application index as status.
    fn walk(tree: &Value, target: &str) -> (u16, Option<String>) {
        let router = Router::compile(tree, &["a", "b"]).expect("compiles");
        let start = router.names().resolve(b"routes").expect("routes");
        let mut info = request(target);
        let mut acted = None;
        match router.route(&start, &mut info, &mut acted) {
            Outcome::Application(i) => (i as u16, None),
            Outcome::Proxy(_) | Outcome::Metrics => (0, None),
            Outcome::Respond(r) => (
                r.status,
                r.headers
                    .iter()
                    .find(|(n, _)| &n[..] == b"Location")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            ),
        }
    }

    #[test]
    fn first_matching_step_wins() {
        let tree = json!({"routes": [
            {"match": {"uri": "/a*"}, "action": {"pass": "applications/a"}},
            {"match": {"uri": "/a/b"}, "action": {"pass": "applications/b"}},
            {"action": {"return": 204}}
        ]});
        assert_eq!(walk(&tree, "/a/b"), (0, None));
        assert_eq!(walk(&tree, "/x"), (204, None));
    }

    #[test]
    fn no_match_is_404_and_loops_are_500() {
        let tree = json!({"routes": [{"match": {"uri": "/a"}, "action": {"return": 200}}]});
        assert_eq!(walk(&tree, "/b").0, 404);
        let looping = json!({"routes": [{"action": {"pass": "routes"}}]});
        assert_eq!(walk(&looping, "/").0, 500);
    }

    #[test]
    fn rewrite_then_location_with_variables() {
        let tree = json!({"routes": [
            {"match": {"uri": "/old"}, "action": {"rewrite": "/new", "pass": "routes"}},
            {"match": {"uri": "/new"}, "action": {"return": 301, "location": "https://$host$uri x"}}
        ]});
        assert_eq!(
            walk(&tree, "/old?q"),
            (301, Some("https://example.com/new%20x".into()))
        );
    }

    #[test]
    fn dynamic_passes() {
        let tree = json!({"routes": [
            {"match": {"uri": "/to/*"}, "action": {"pass": "applications/${arg_app}"}},
            {"action": {"return": 200}}
        ]});
        assert_eq!(walk(&tree, "/to/x?app=b").0, 1);
        assert_eq!(walk(&tree, "/to/x?app=zzz").0, 404);
        assert_eq!(walk(&tree, "/to/x").0, 404);
    }

    #[test]
    fn compile_errors() {
        let bad = json!({"routes": [{"action": {"pass": "applications/nope"}}]});
        let error = Router::compile(&bad, &["a"]).expect_err("dangling");
        assert_eq!(error.path, "routes/0/action/pass");
        let share = json!({"routes": [{"action": {"share": "/srv$nope"}}]});
        assert_eq!(
            Router::compile(&share, &[]).expect_err("share").path,
            "routes/0/action/share"
        );
        let fallback = json!({"routes": [{"action": {"share": "/srv", "fallback": {"pass": "applications/x"}}}]});
        assert_eq!(
            Router::compile(&fallback, &[]).expect_err("fallback").path,
            "routes/0/action/fallback/pass"
        );
        let var = json!({"routes": [{"action": {"return": 301, "location": "$nope"}}]});
        assert_eq!(
            Router::compile(&var, &[]).expect_err("unknown").to_string(),
            "routes/0/action/location: unknown variable \"nope\""
        );
    }
}
