//! A `share` action, compiled: its paths (templates, tried in order), `index`, `types`,
//! `chroot`, `follow_symlinks` and `traverse_mounts`; and one request's walk through
//! them as `nxt_http_static.c` takes it. The file itself is opened and answered by
//! `static_files`; the `fallback` is the enclosing action's.

use bytes::Bytes;
use serde_json::Value;

use super::CompileError;
use super::conditions::rule;
use super::encoding::encode_path;
use super::pattern::{Decode, Flavor, Fold, Rule};
use super::request::RequestInfo;
use super::variables::Template;
use crate::http::{self, Response, ResponseBody};
use crate::static_files::{self, FileRequest, MimeTypes, Resolve, Served};

/// Unit compares `types` patterns with the MIME type case-insensitively.
const TYPES: Flavor = Flavor {
    case_sensitive: false,
    fold: Fold::Lower,
    decode: Decode::None,
};

/// Unit's default `index`.
const DEFAULT_INDEX: &str = "index.html";

#[derive(Debug)]
pub struct Share {
    paths: Box<[Template]>,
    index: Box<[u8]>,
    chroot: Option<Template>,
    resolve: Resolve,
    types: Option<Rule>,
}

/// Where a share leaves a request.
pub enum ShareOutcome {
    Respond(Response),
    /// No share path served: take the fallback, or answer this status (404, 403, 405).
    Miss(u16),
}

impl Share {
    /// Compiles the share members of `action` (at `at`), which has `share`.
    pub fn compile(action: &Value, at: &str) -> Result<Share, CompileError> {
        let template = |text: &str, at: String| {
            Template::parse(text).map_err(|e| CompileError::new(at, e.to_string()))
        };
        let paths = match action.get("share") {
            Some(Value::String(one)) => vec![template(one, format!("{at}/share"))?],
            Some(Value::Array(many)) => many
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let path_at = format!("{at}/share/{i}");
                    let text = path
                        .as_str()
                        .ok_or_else(|| CompileError::new(&path_at, "must be a string"))?;
                    template(text, path_at)
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(CompileError::new(
                    format!("{at}/share"),
                    "must be a path or an array of paths",
                ));
            }
        };
        let string = |member: &str| action.get(member).and_then(Value::as_str);
        let flag = |member: &str| action.get(member).and_then(Value::as_bool).unwrap_or(true);
        let chroot = string("chroot")
            .filter(|text| !text.is_empty())
            .map(|text| template(text, format!("{at}/chroot")))
            .transpose()?;
        let resolve = Resolve {
            follow_symlinks: flag("follow_symlinks"),
            traverse_mounts: flag("traverse_mounts"),
        };
        if (chroot.is_some() || resolve != Resolve::default())
            && !static_files::confinement_available()
        {
            return Err(CompileError::new(
                at,
                "\"chroot\", \"follow_symlinks\" and \"traverse_mounts\" need openat2(2), \
                 which this kernel lacks (Linux 5.6 or later has it)",
            ));
        }
        let types = action
            .get("types")
            .map(|types| rule(types, TYPES, &format!("{at}/types")))
            .transpose()?;
        Ok(Share {
            paths: paths.into_boxed_slice(),
            index: string("index")
                .unwrap_or(DEFAULT_INDEX)
                .as_bytes()
                .to_vec()
                .into_boxed_slice(),
            chroot,
            resolve,
            types,
        })
    }

    /// Serves `request` from the first share path that has the file.
    pub fn serve(&self, request: &RequestInfo, mime: &MimeTypes) -> ShareOutcome {
        let method = &request.method[..];
        if method != b"GET" && method != b"HEAD" {
            return ShareOutcome::Miss(405);
        }
        let chroot = self.chroot.as_ref().map(|t| t.render(request));
        let mut status = 404;
        for path in &*self.paths {
            let mut path = path.render(request);
            let index = path.last() == Some(&b'/');
            let content_type = if index {
                path.extend_from_slice(&self.index);
                mime.of_path(&path)
            } else {
                let content_type = mime.of_path(&path);
                // Unit checks `types` before opening, and only for paths without index.
                if let Some(types) = &self.types
                    && !types.test(content_type.as_bytes())
                {
                    status = 403;
                    continue;
                }
                content_type
            };
            if path.is_empty() {
                continue;
            }
            let file = match static_files::open(&path, chroot.as_deref(), self.resolve) {
                Ok(file) => file,
                Err(e) => {
                    if e.status == 500 {
                        tracing::error!(
                            "opening \"{}\" failed: {}",
                            String::from_utf8_lossy(&path),
                            e.error
                        );
                        return ShareOutcome::Respond(http::error_response(500));
                    }
                    if e.status == 403 {
                        tracing::info!(
                            "opening \"{}\" failed: {}",
                            String::from_utf8_lossy(&path),
                            e.error
                        );
                    }
                    status = e.status;
                    continue;
                }
            };
            let file_request = FileRequest {
                fields: &request.headers,
                path: &path,
            };
            match static_files::respond(file, index, content_type, &file_request) {
                Served::Respond(response) => return ShareOutcome::Respond(response),
                Served::Directory => return ShareOutcome::Respond(redirect(request)),
                Served::Miss(miss) => status = miss,
            }
        }
        ShareOutcome::Miss(status)
    }
}

/// A directory named without its trailing slash: 301 to the request's path with one,
/// its query kept, as Unit's `Location`.
fn redirect(request: &RequestInfo) -> Response {
    let encoded = encode_path(request.path());
    let query = request.query();
    let mut location = Vec::with_capacity(encoded.len() + 2 + query.len());
    location.extend_from_slice(&encoded);
    location.push(b'/');
    if !query.is_empty() {
        location.push(b'?');
        location.extend_from_slice(query);
    }
    Response {
        status: 301,
        headers: vec![(Bytes::from_static(b"Location"), Bytes::from(location))],
        body: ResponseBody::Empty,
    }
}
