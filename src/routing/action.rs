//! A step's `action`, compiled: where the request goes (`pass`, `proxy`), the answer it
//! gets (`return`, with `location`; `metrics`, Wharf's own) or the files it is served
//! from (`share`, with its `fallback` action), plus the `rewrite` applied before it and the
//! `response_headers` applied to the response it produces.

use bytes::Bytes;
use serde_json::Value;

use super::encoding::{decode_name, encode_complex_uri};
use super::share::Share;
use super::variables::{Template, Values};
use super::{CompileError, Names};
use crate::proxy::{Address, Destination, Server};

/// Where a `pass` leads.
#[derive(Debug, Clone)]
pub enum Pass {
    /// An index into the generation's applications.
    Application(usize),
    /// An index into the compiled routes.
    Route(usize),
    /// An index into the compiled upstreams.
    Upstream(usize),
    /// A pass with variables, resolved per request (404 if it names nothing).
    Dynamic(Template),
}

impl Pass {
    pub fn compile(text: &str, names: &Names, at: &str) -> Result<Pass, CompileError> {
        let template = Template::parse(text).map_err(|e| CompileError::new(at, e.to_string()))?;
        if template.constant().is_none() {
            return Ok(Pass::Dynamic(template));
        }
        names
            .resolve(text.as_bytes())
            .ok_or_else(|| CompileError::new(at, format!("\"{text}\" names nothing that exists")))
    }
}

/// A `Location` value.
#[derive(Debug)]
pub enum Location {
    /// Already encoded.
    Fixed(Bytes),
    Dynamic(Template),
}

#[derive(Debug)]
pub enum Kind {
    Pass(Pass),
    Return {
        status: u16,
        location: Option<Location>,
    },
    Share {
        share: Box<Share>,
        /// Taken when no share path serves the request.
        fallback: Option<Box<Action>>,
    },
    /// Forwarded to the server a `proxy` names.
    Proxy(Destination),
    /// Answered with the metrics exposition (`"metrics": true`), so that Prometheus can
    /// scrape a listener without reaching the control API.
    Metrics,
}

/// A compiled `action`.
#[derive(Debug)]
pub struct Action {
    pub kind: Kind,
    pub rewrite: Option<Template>,
    /// Name and value (`None` removes the field), in config order.
    response_headers: Box<[(Bytes, Option<Template>)]>,
}

impl Action {
    pub fn compile(value: &Value, names: &Names, at: &str) -> Result<Action, CompileError> {
        let template = |member: &str| -> Result<Option<Template>, CompileError> {
            match value.get(member) {
                None => Ok(None),
                Some(Value::String(text)) => Template::parse(text)
                    .map(Some)
                    .map_err(|e| CompileError::new(format!("{at}/{member}"), e.to_string())),
                Some(_) => Err(CompileError::new(
                    format!("{at}/{member}"),
                    "must be a string",
                )),
            }
        };
        let rewrite = template("rewrite")?;
        let mut response_headers = Vec::new();
        if let Some(headers) = value.get("response_headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header_at = format!("{at}/response_headers/{name}");
                let header = match header {
                    Value::Null => None,
                    Value::String(text) => Some(
                        Template::parse(text)
                            .map_err(|e| CompileError::new(&header_at, e.to_string()))?,
                    ),
                    _ => return Err(CompileError::new(header_at, "must be a string or null")),
                };
                response_headers.push((Bytes::copy_from_slice(name.as_bytes()), header));
            }
        }
        let kind = if let Some(status) = value.get("return") {
            let status = status
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|&s| s <= 999)
                .ok_or_else(|| {
                    CompileError::new(
                        format!("{at}/return"),
                        "must be an HTTP status code from 0 to 999",
                    )
                })?;
            let location = template("location")?.map(|t| match t.constant() {
                Some(text) => Location::Fixed(Bytes::from(encode_complex_uri(text).into_owned())),
                None => Location::Dynamic(t),
            });
            Kind::Return { status, location }
        } else if let Some(pass) = value.get("pass") {
            let text = pass
                .as_str()
                .ok_or_else(|| CompileError::new(format!("{at}/pass"), "must be a string"))?;
            Kind::Pass(Pass::compile(text, names, &format!("{at}/pass"))?)
        } else if value.get("share").is_some() {
            let fallback = match value.get("fallback") {
                Some(fallback) => Some(Box::new(Action::compile(
                    fallback,
                    names,
                    &format!("{at}/fallback"),
                )?)),
                None => None,
            };
            Kind::Share {
                share: Box::new(Share::compile(value, at)?),
                fallback,
            }
        } else if let Some(proxy) = value.get("proxy") {
            let at = format!("{at}/proxy");
            let text = proxy
                .as_str()
                .ok_or_else(|| CompileError::new(&at, "must be a string"))?;
            let address = Address::parse_url(text).map_err(|e| CompileError::new(&at, e))?;
            Kind::Proxy(Destination::Server(Server::new(
                address,
                names.proxy_timeouts,
            )))
        } else if let Some(metrics) = value.get("metrics") {
            if metrics != &Value::Bool(true) {
                return Err(CompileError::new(format!("{at}/metrics"), "must be true"));
            }
            Kind::Metrics
        } else {
            return Err(CompileError::new(
                at,
                "must have \"pass\", \"return\", \"share\", \"proxy\" or \"metrics\"",
            ));
        };
        Ok(Action {
            kind,
            rewrite,
            response_headers: response_headers.into_boxed_slice(),
        })
    }

    /// The `Location` field of a `return`, if it has one.
    pub fn location(&self, values: &dyn Values) -> Option<Bytes> {
        match &self.kind {
            Kind::Return {
                location: Some(Location::Fixed(text)),
                ..
            } => Some(text.clone()),
            Kind::Return {
                location: Some(Location::Dynamic(template)),
                ..
            } => {
                let text = template.render(values);
                Some(Bytes::from(encode_complex_uri(&text).into_owned()))
            }
            _ => None,
        }
    }

    pub fn has_response_headers(&self) -> bool {
        !self.response_headers.is_empty()
    }

    /// Whether applying `response_headers` reads the request after it was handed on.
    pub fn response_headers_need_request(&self) -> bool {
        self.response_headers
            .iter()
            .any(|(_, value)| value.as_ref().is_some_and(|t| t.constant().is_none()))
    }

    /// Sets, replaces and removes fields as `response_headers` says, for a response
    /// with status 200-399 (Unit leaves others alone). A value that would carry a control
    /// character into the head is dropped, leaving any existing field in place.
    pub fn apply_response_headers(
        &self,
        status: u16,
        headers: &mut Vec<(Bytes, Bytes)>,
        values: &dyn Values,
    ) {
        if !(200..400).contains(&status) {
            return;
        }
        for (name, value) in &*self.response_headers {
            let value = match value {
                None => None,
                Some(template) => {
                    let text = match template.constant() {
                        Some(text) => Bytes::copy_from_slice(text),
                        None => Bytes::from(template.render(values)),
                    };
                    if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        tracing::info!(
                            header = %String::from_utf8_lossy(name),
                            "response_headers: dropping a value with control characters"
                        );
                        continue;
                    }
                    Some(text)
                }
            };
            let first = headers
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name));
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                let at = first.unwrap_or(headers.len()).min(headers.len());
                headers.insert(at, (name.clone(), value));
            }
        }
    }
}

impl Names {
    /// What a pass string names, after Unit's `nxt_http_pass_find`: up to three
    /// `/`-separated, percent-decoded, non-empty segments.
    pub fn resolve(&self, pass: &[u8]) -> Option<Pass> {
        let text = std::str::from_utf8(pass).ok()?;
        let mut segments = text.splitn(3, '/');
        let kind = segments.next()?;
        let name = segments.next();
        let rest = segments.next();
        let decode = |s: &str| (!s.is_empty()).then(|| decode_name(s)).flatten();
        match (kind, name, rest) {
            ("applications", Some(name), None) => {
                self.application(&decode(name)?).map(Pass::Application)
            }
            ("routes", None, None) => self.route("").map(Pass::Route),
            ("routes", Some(name), None) => self.route(&decode(name)?).map(Pass::Route),
            ("upstreams", Some(name), None) => self.upstream(&decode(name)?).map(Pass::Upstream),
            _ => None,
        }
    }
}
