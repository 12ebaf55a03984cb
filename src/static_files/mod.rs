//! Static files, as Unit's `share` action serves them (`nxt_http_static.c`): opening
//! the file confined as configured (`open`), its MIME type (`mime`), its validators and
//! the request's conditions and range (`validators`), and here the response: the file
//! (200 or 206, its body sent by the server with `sendfile`), 304 or 416; a directory is
//! reported for the caller to redirect to the request's path with a slash.
//!
//! Which share paths are tried, `index`, `types` and `fallback` belong to the compiled
//! action (`routing::share`); this module knows nothing of routes.

pub mod mime;
pub mod open;
pub mod validators;

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use bytes::Bytes;

use crate::http::{self, FileBody, Response, ResponseBody};

pub use mime::MimeTypes;
pub use open::{Resolve, confinement_available, open};
use validators::{Span, Validators};

/// What of the request a file's response depends on.
pub struct FileRequest<'a> {
    /// The request's header fields.
    pub fields: &'a [(Bytes, Bytes)],
    /// The request's path, for the log.
    pub path: &'a [u8],
}

/// What an opened path gives.
pub enum Served {
    Respond(Response),
    /// A directory, asked for without a trailing slash: Unit redirects (301).
    Directory,
    /// Nothing to serve here (a directory asked for with a trailing slash, a device, a
    /// FIFO): try the next share or the fallback, else answer this status.
    Miss(u16),
}

/// The answer for `file`, opened from a share path; `index` when the path was the
/// share's with `index` appended (a directory then is no redirect but a miss).
pub fn respond(file: File, index: bool, content_type: &str, request: &FileRequest<'_>) -> Served {
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => {
            tracing::error!("fstat of a shared file failed: {e}");
            return Served::Respond(http::error_response(500));
        }
    };
    if meta.is_dir() && !index {
        return Served::Directory;
    }
    if !meta.is_file() {
        tracing::info!(
            "\"{}\" is not a regular file",
            String::from_utf8_lossy(request.path)
        );
        return Served::Miss(404);
    }
    let size = meta.len();
    let validators = Validators::new(meta.mtime(), size);
    let fields = || request.fields.iter().map(|(n, v)| (&n[..], &v[..]));
    let mut headers = vec![
        (
            Bytes::from_static(b"Last-Modified"),
            Bytes::from(validators.last_modified.clone()),
        ),
        (
            Bytes::from_static(b"ETag"),
            Bytes::from(validators.etag.clone()),
        ),
    ];
    if validators.not_modified(fields()) {
        return Served::Respond(Response {
            status: 304,
            headers,
            body: ResponseBody::Empty,
        });
    }
    if !content_type.is_empty() {
        headers.push((
            Bytes::from_static(b"Content-Type"),
            Bytes::copy_from_slice(content_type.as_bytes()),
        ));
    }
    headers.push((
        Bytes::from_static(b"Accept-Ranges"),
        Bytes::from_static(b"bytes"),
    ));
    let (status, offset, len) = match validators::span(fields(), size, &validators) {
        Span::Whole => (200, 0, size),
        Span::Part { start, end } => {
            headers.push((
                Bytes::from_static(b"Content-Range"),
                Bytes::from(format!("bytes {start}-{end}/{size}")),
            ));
            (206, start, end - start + 1)
        }
        Span::Unsatisfiable => {
            let mut response = http::error_response(416);
            response.headers.push((
                Bytes::from_static(b"Content-Range"),
                Bytes::from(format!("bytes */{size}")),
            ));
            return Served::Respond(response);
        }
    };
    Served::Respond(Response {
        status,
        headers,
        body: ResponseBody::File(FileBody { file, offset, len }),
    })
}
