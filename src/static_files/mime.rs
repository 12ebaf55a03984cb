//! MIME types of served files: Unit's built-in table (`nxt_http_static_mtypes_init`)
//! with `settings.http.static.mime_types` on top, looked up by a file's extension
//! (ASCII case-insensitively). An "extension" is what Unit takes it to be: the last
//! segment of the path from its last `.`, or the whole segment when it has none, so
//! `"text/plain": ["readme"]` names files called `readme`.

use std::collections::HashMap;

use serde_json::Value;

/// Unit's built-in types.
const BUILT_IN: &[(&str, &str)] = &[
    ("text/html", ".html"),
    ("text/html", ".htm"),
    ("text/css", ".css"),
    ("image/svg+xml", ".svg"),
    ("image/webp", ".webp"),
    ("image/png", ".png"),
    ("image/apng", ".apng"),
    ("image/jpeg", ".jpeg"),
    ("image/jpeg", ".jpg"),
    ("image/gif", ".gif"),
    ("image/x-icon", ".ico"),
    ("image/avif", ".avif"),
    ("image/avif-sequence", ".avifs"),
    ("font/woff", ".woff"),
    ("font/woff2", ".woff2"),
    ("font/otf", ".otf"),
    ("font/ttf", ".ttf"),
    ("text/plain", ".txt"),
    ("text/markdown", ".md"),
    ("text/x-rst", ".rst"),
    ("application/javascript", ".js"),
    ("application/json", ".json"),
    ("application/xml", ".xml"),
    ("application/rss+xml", ".rss"),
    ("application/atom+xml", ".atom"),
    ("application/pdf", ".pdf"),
    ("application/zip", ".zip"),
    ("audio/mpeg", ".mp3"),
    ("audio/ogg", ".ogg"),
    ("audio/midi", ".midi"),
    ("audio/midi", ".mid"),
    ("audio/flac", ".flac"),
    ("audio/aac", ".aac"),
    ("audio/wav", ".wav"),
    ("video/mpeg", ".mpeg"),
    ("video/mpeg", ".mpg"),
    ("video/mp4", ".mp4"),
    ("video/webm", ".webm"),
    ("video/x-msvideo", ".avi"),
    ("application/octet-stream", ".exe"),
    ("application/octet-stream", ".bin"),
    ("application/octet-stream", ".dll"),
    ("application/octet-stream", ".iso"),
    ("application/octet-stream", ".img"),
    ("application/octet-stream", ".msi"),
    ("application/octet-stream", ".deb"),
    ("application/octet-stream", ".rpm"),
    ("application/x-httpd-php", ".php"),
];

/// Extension (lower-cased) to type.
#[derive(Debug, Clone)]
pub struct MimeTypes {
    by_extension: HashMap<Box<[u8]>, Box<str>>,
}

impl MimeTypes {
    /// The built-in table with `mime_types` (`settings.http.static.mime_types`, already
    /// checked by the schema) on top. The error is a validation detail with its path:
    /// one extension given to two configured types is ambiguous, as in Unit.
    pub fn new(mime_types: Option<&Value>) -> Result<MimeTypes, String> {
        let mut by_extension: HashMap<Box<[u8]>, Box<str>> = BUILT_IN
            .iter()
            .map(|(kind, ext)| (lower(ext), Box::from(*kind)))
            .collect();
        let mut configured: HashMap<Box<[u8]>, &str> = HashMap::new();
        for (kind, extensions) in mime_types.and_then(Value::as_object).into_iter().flatten() {
            let list = match extensions {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::String(one) => vec![one.as_str()],
                _ => Vec::new(),
            };
            for ext in list {
                let key = lower(ext);
                if let Some(other) = configured.insert(key.clone(), kind)
                    && other != kind
                {
                    return Err(format!(
                        "settings/http/static/mime_types/{kind}: the \"{ext}\" extension is \
                         already declared for \"{other}\""
                    ));
                }
                by_extension.insert(key, Box::from(kind.as_str()));
            }
        }
        Ok(MimeTypes { by_extension })
    }

    /// The type of `path`'s extension; empty when it has none.
    pub fn of_path(&self, path: &[u8]) -> &str {
        let ext = extension(path);
        if ext.is_empty() {
            return "";
        }
        self.by_extension
            .get(&*ext.to_ascii_lowercase())
            .map_or("", |kind| kind)
    }
}

impl Default for MimeTypes {
    fn default() -> Self {
        Self::new(None).unwrap_or_else(|_| MimeTypes {
            by_extension: HashMap::new(),
        })
    }
}

fn lower(text: &str) -> Box<[u8]> {
    text.as_bytes().to_ascii_lowercase().into_boxed_slice()
}

/// Unit's `nxt_http_static_extract_extension`: from the last `.` of the last segment,
/// or the whole last segment.
pub fn extension(path: &[u8]) -> &[u8] {
    let segment = match path.iter().rposition(|&b| b == b'/') {
        Some(at) => &path[at + 1..],
        None => path,
    };
    match segment.iter().rposition(|&b| b == b'.') {
        Some(at) => &segment[at..],
        None => segment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extensions_as_unit_takes_them() {
        assert_eq!(extension(b"/a/b.tar.gz"), b".gz");
        assert_eq!(extension(b"/a/README"), b"README");
        assert_eq!(extension(b"/a.d/x"), b"x");
        assert_eq!(extension(b"/a/"), b"");
    }

    #[test]
    fn built_in_and_configured_types() {
        let types = MimeTypes::new(Some(&json!({
            "text/plain": ["readme", ".C"],
            "text/x-custom": ".html"
        })))
        .expect("valid");
        assert_eq!(types.of_path(b"/x/INDEX.HTM"), "text/html");
        assert_eq!(types.of_path(b"/x/a.html"), "text/x-custom");
        assert_eq!(types.of_path(b"/x/Readme"), "text/plain");
        assert_eq!(types.of_path(b"/x/m.c"), "text/plain");
        assert_eq!(types.of_path(b"/x/none"), "");
        let clash = MimeTypes::new(Some(&json!({"a/b": ".x", "c/d": [".X"]})));
        assert!(clash.is_err_and(|e| e.contains("\".X\" extension is already declared")));
    }
}
