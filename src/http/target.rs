//! The request-target, parsed once per request the way Unit parses it
//! (`nxt_http_parse_request_line` and `nxt_http_parse_complex_target` in
//! `nxt_http_parse.c`): the decoded, normalised path that routing matches, `$uri`
//! names and guests are told, and the raw query.
//!
//! A target is *plain* when nothing in it needs decoding: no `%` escape, `//` or `/.`
//! before the query and no `#` anywhere. Its path is then a slice of the target as sent,
//! and parsing it costs one scan. Any other target goes through Unit's state machine,
//! byte for byte:
//! - `%XX` is decoded, and the decoded byte counts as what it is (`%2F` is a slash,
//!   `%2e%2e` a `..` segment), except that a decoded `%`, `#` or `?` is a plain byte;
//!   a malformed escape or an encoded NUL is refused;
//! - `//` is merged, a `/./` segment dropped, and `/../` removes the segment before it,
//!   refused if there is none (a path may not climb above the root);
//! - a final `/.` or `/..` stays as it is (Unit resolves dot segments only when a slash
//!   follows them);
//! - the path ends at the first `?` (the query follows, up to any `#`) or `#` (the
//!   fragment is dropped, and with it anything that looks like a query after it).

use std::ops::Range;

use bytes::Bytes;
use thiserror::Error;

/// Why a target cannot be served; the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TargetError {
    #[error("the request-target has a malformed percent-escape")]
    MalformedEscape,
    #[error("the request-target encodes a NUL byte")]
    EncodedNul,
    #[error("the request-target's path climbs above the root")]
    AboveRoot,
}

/// A parsed request-target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    raw: Bytes,
    /// The decoded path of a target that is not plain.
    decoded: Option<Box<[u8]>>,
    /// Where the path of a plain target ends in `raw`.
    path_end: usize,
    /// Where the query lies in `raw` (empty without one).
    query: Range<usize>,
}

impl Target {
    /// Parses a request-target as sent.
    pub fn parse(raw: Bytes) -> Result<Self, TargetError> {
        let question = raw.iter().position(|&b| b == b'?');
        let path_end = question.unwrap_or(raw.len());
        if is_plain(&raw, path_end) {
            let query = question.map_or(raw.len()..raw.len(), |at| at + 1..raw.len());
            return Ok(Self {
                raw,
                decoded: None,
                path_end,
                query,
            });
        }
        let parsed = parse_complex(&raw)?;
        Ok(Self {
            decoded: Some(parsed.path.into_boxed_slice()),
            path_end: 0,
            query: parsed.query.unwrap_or(raw.len()..raw.len()),
            raw,
        })
    }

    /// The target as sent, nothing decoded or resolved, its path everything before the
    /// first `?`: for a handler that resolves paths its own way (`Settings::verbatim_targets`).
    pub fn verbatim(raw: Bytes) -> Self {
        let question = raw.iter().position(|&b| b == b'?');
        let path_end = question.unwrap_or(raw.len());
        let query = question.map_or(raw.len()..raw.len(), |at| at + 1..raw.len());
        Self {
            raw,
            decoded: None,
            path_end,
            query,
        }
    }

    /// The target as sent.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The decoded, normalised path (`$uri`).
    pub fn path(&self) -> &[u8] {
        match &self.decoded {
            Some(path) => path,
            None => &self.raw[..self.path_end],
        }
    }

    /// The query as sent (after the first `?`, before any `#`); empty without one.
    pub fn query(&self) -> &[u8] {
        &self.raw[self.query.clone()]
    }

    /// Whether the path is the target's own bytes, with nothing decoded or resolved.
    pub fn is_plain(&self) -> bool {
        self.decoded.is_none()
    }
}

/// Unit's first scan of a target: nothing to decode or resolve before the query, and no
/// fragment anywhere.
fn is_plain(raw: &[u8], path_end: usize) -> bool {
    let path = &raw[..path_end];
    let mut after_slash = false;
    for &b in path {
        match b {
            b'%' | b'#' => return false,
            b'/' | b'.' if after_slash => return false,
            _ => {}
        }
        after_slash = b == b'/';
    }
    !raw[path_end..].contains(&b'#')
}

/// The path of `text` (up to a `?` or `#`), decoded and normalised as a target's path
/// is: what a `rewrite` sets.
pub fn decode_path(text: &[u8]) -> Result<Vec<u8>, TargetError> {
    parse_complex(text).map(|parsed| parsed.path)
}

/// What the state machine leaves of a target that is not plain.
struct Complex {
    path: Vec<u8>,
    /// Where the query lies in the input, if there is one.
    query: Option<Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Slash,
    Dot,
    DotDot,
}

/// `nxt_http_parse_complex_target`.
fn parse_complex(raw: &[u8]) -> Result<Complex, TargetError> {
    let mut path = Vec::with_capacity(raw.len());
    let mut state = State::Normal;
    let mut i = 0;
    while i < raw.len() {
        let mut b = raw[i];
        i += 1;
        match b {
            b'?' => {
                let end = raw[i..]
                    .iter()
                    .position(|&b| b == b'#')
                    .map_or(raw.len(), |at| i + at);
                return Ok(Complex {
                    path,
                    query: Some(i..end),
                });
            }
            b'#' => return Ok(Complex { path, query: None }),
            b'%' => {
                let (Some(high), Some(low)) = (
                    raw.get(i).copied().and_then(hex),
                    raw.get(i + 1).copied().and_then(hex),
                ) else {
                    return Err(TargetError::MalformedEscape);
                };
                i += 2;
                b = high << 4 | low;
                match b {
                    0 => return Err(TargetError::EncodedNul),
                    b'%' | b'#' | b'?' => {
                        path.push(b);
                        state = State::Normal;
                        continue;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        state = step(&mut path, state, b)?;
    }
    Ok(Complex { path, query: None })
}

/// One path byte (sent or decoded) through the dot-segment states.
fn step(path: &mut Vec<u8>, state: State, b: u8) -> Result<State, TargetError> {
    Ok(match (state, b) {
        (State::Slash, b'/') => State::Slash,
        (State::Slash, b'.') => {
            path.push(b);
            State::Dot
        }
        (State::Dot, b'/') => {
            path.pop();
            State::Slash
        }
        (State::Dot, b'.') => {
            path.push(b);
            State::DotDot
        }
        (State::DotDot, b'/') => {
            // `path` ends in `<segment>/..`: keep it up to the slash before the segment.
            let mut at = path.len().checked_sub(5).ok_or(TargetError::AboveRoot)?;
            while path[at] != b'/' {
                at = at.checked_sub(1).ok_or(TargetError::AboveRoot)?;
            }
            path.truncate(at + 1);
            State::Slash
        }
        (_, b'/') => {
            path.push(b);
            State::Slash
        }
        _ => {
            path.push(b);
            State::Normal
        }
    })
}

/// The value of a hex digit.
pub fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Target, TargetError> {
        Target::parse(Bytes::copy_from_slice(raw.as_bytes()))
    }

    /// (target, path, query, plain)
    #[test]
    fn targets_parse_as_in_unit() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("/", "/", "", true),
            ("/echo?x=1", "/echo", "x=1", true),
            ("/a/b.c?", "/a/b.c", "", true),
            ("/p?x=%20&y=a?b", "/p", "x=%20&y=a?b", true),
            ("/a+b", "/a+b", "", true),
            ("/a.b/c", "/a.b/c", "", true),
            ("/x?a//b/./c", "/x", "a//b/./c", true),
            // Escapes and the segments they make.
            ("/x%20y/z?a=1", "/x y/z", "a=1", false),
            ("/%41%42/?k=v", "/AB/", "k=v", false),
            ("/a%2Fb", "/a/b", "", false),
            ("/a%2f..%2fb", "/b", "", false),
            ("/a/%2e%2e/b", "/b", "", false),
            ("/a/%2E/b", "/a/b", "", false),
            ("/a%25/b", "/a%/b", "", false),
            ("/a%3Fb?c", "/a?b", "c", false),
            ("/a%23b", "/a#b", "", false),
            ("/a%25%32%65", "/a%2e", "", false),
            // Slashes and dot segments.
            ("//a//b/", "/a/b/", "", false),
            ("/./", "/", "", false),
            ("/a/./b/../c", "/a/c", "", false),
            ("/a//b/./c/../d?q", "/a/b/d", "q", false),
            ("/a/b/../../c", "/c", "", false),
            ("/ab/../c", "/c", "", false),
            ("/a/b/.", "/a/b/.", "", false),
            ("/a/b/..", "/a/b/..", "", false),
            ("/a/..", "/a/..", "", false),
            ("/a/../", "/", "", false),
            ("/a/.../b", "/a/.../b", "", false),
            ("/.hidden", "/.hidden", "", false),
            ("/a/..b/", "/a/..b/", "", false),
            // Fragments end the path, or the query.
            ("/blah#foo", "/blah", "", false),
            ("/a?b#c", "/a", "b", false),
            ("/a#b?c", "/a", "", false),
        ];
        for &(raw, path, query, plain) in cases {
            let target = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (
                    String::from_utf8_lossy(target.path()).into_owned(),
                    String::from_utf8_lossy(target.query()).into_owned(),
                    target.is_plain()
                ),
                (path.to_owned(), query.to_owned(), plain),
                "{raw}"
            );
            assert_eq!(&target.raw()[..], raw.as_bytes());
        }
    }

    #[test]
    fn unit_refuses_what_cannot_be_decoded_or_resolved() {
        let cases: &[(&str, TargetError)] = &[
            ("/%", TargetError::MalformedEscape),
            ("/a%2", TargetError::MalformedEscape),
            ("/%zz", TargetError::MalformedEscape),
            ("/%g0?x", TargetError::MalformedEscape),
            ("/a%00b", TargetError::EncodedNul),
            ("/../x", TargetError::AboveRoot),
            ("/%2e%2e/x", TargetError::AboveRoot),
            ("/a/../../x", TargetError::AboveRoot),
            ("/./../x", TargetError::AboveRoot),
        ];
        for &(raw, error) in cases {
            assert_eq!(parse(raw), Err(error), "{raw}");
        }
        // A malformed escape in the query is the query's business.
        assert_eq!(parse("/a?%zz").map(|t| t.is_plain()), Ok(true));
    }

    #[test]
    fn rewritten_paths_are_decoded_like_targets() {
        assert_eq!(
            decode_path(b"/new%2Fx y?ignored#f"),
            Ok(b"/new/x y".to_vec())
        );
        assert_eq!(
            decode_path(b"/rw/%2E%2E/elsewhere"),
            Ok(b"/elsewhere".to_vec())
        );
        assert_eq!(decode_path(b"/../x"), Err(TargetError::AboveRoot));
    }
}
