//! The request as routing sees it: the parts conditions and variables read, each
//! derived the way Unit derives it (`nxt_http_request.c`) and only when first asked for,
//! so a route that tests the URI alone never parses cookies or arguments.

use std::cell::OnceCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::ops::Range;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;

use super::encoding::encode_path;
use super::variables::{Values, Var};
use crate::http::host::push_ip;
use crate::http::target::{TargetError, decode_path, hex};
use crate::http::{Request, RequestBody, Target};

/// Query arguments, decoded once: the whole decoded query (Unit's `args_decoded`, what
/// `query` matches) and each argument as ranges into it.
#[derive(Debug, Default)]
struct Arguments {
    decoded: Vec<u8>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

/// A cookie: the index of its `Cookie` field and ranges into that field's value.
#[derive(Debug)]
struct Cookie {
    field: usize,
    name: Range<usize>,
    value: Range<usize>,
}

pub struct RequestInfo {
    request: Request,
    pub started: Instant,
    /// The target after a `rewrite`.
    rewritten: Option<Target>,
    arguments: OnceCell<Arguments>,
    cookies: OnceCell<Vec<Cookie>>,
}

/// Routing reads the request's own fields and facts (`method`, `target`, `host`, ...)
/// straight from it.
impl Deref for RequestInfo {
    type Target = Request;

    fn deref(&self) -> &Request {
        &self.request
    }
}

impl RequestInfo {
    pub fn new(request: Request) -> RequestInfo {
        RequestInfo {
            request,
            started: Instant::now(),
            rewritten: None,
            arguments: OnceCell::new(),
            cookies: OnceCell::new(),
        }
    }

    /// The decoded, normalised path (`$uri`, what `uri` matches), after any `rewrite`.
    pub fn path(&self) -> &[u8] {
        self.rewritten
            .as_ref()
            .unwrap_or(&self.request.target)
            .path()
    }

    /// Replaces the path (a `rewrite`) as Unit does: the value's path is decoded and
    /// normalised like a request-target's, any query in it ignored, and the request keeps
    /// its query.
    pub fn rewrite(&mut self, uri: &[u8]) -> Result<(), TargetError> {
        let path = decode_path(uri)?;
        let encoded = encode_path(&path);
        let query = self.query();
        let mut raw = BytesMut::with_capacity(encoded.len() + 1 + query.len());
        raw.extend_from_slice(&encoded);
        if !query.is_empty() {
            raw.extend_from_slice(b"?");
            raw.extend_from_slice(query);
        }
        self.rewritten = Some(Target::parse(raw.freeze())?);
        Ok(())
    }

    /// The raw query (after the first `?`); empty without one.
    pub fn query(&self) -> &[u8] {
        self.request.target.query()
    }

    /// The `Host` without its port or final dot, lower-cased; empty without one.
    pub fn host(&self) -> &[u8] {
        &self.request.host
    }

    /// The request to hand to an application: its target the rewritten one, if any, and
    /// its body moved out of this one. Header fields are copied only if `keep_headers`
    /// (something reads them after the app has the request), else moved.
    pub fn take_request(&mut self, keep_headers: bool) -> Request {
        let request = &mut self.request;
        let headers = if keep_headers {
            request.headers.clone()
        } else {
            std::mem::take(&mut request.headers)
        };
        Request {
            method: request.method.clone(),
            target: self
                .rewritten
                .clone()
                .unwrap_or_else(|| request.target.clone()),
            version: request.version,
            headers,
            host: request.host.clone(),
            remote: request.remote,
            local: request.local,
            tls: request.tls,
            body: std::mem::replace(&mut request.body, RequestBody::empty()),
        }
    }

    fn arguments(&self) -> &Arguments {
        self.arguments.get_or_init(|| parse_arguments(self.query()))
    }

    /// The decoded query (what `query` matches).
    pub fn decoded_query(&self) -> &[u8] {
        &self.arguments().decoded
    }

    /// Values of the argument `name` (decoded), in order.
    pub fn argument_values<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        let arguments = self.arguments();
        arguments
            .pairs
            .iter()
            .filter(move |(n, _)| arguments.decoded[n.clone()] == *name)
            .map(|(_, v)| &arguments.decoded[v.clone()])
    }

    /// Values of the header `name` (any case), in order.
    pub fn header_values<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    fn cookies(&self) -> &[Cookie] {
        self.cookies.get_or_init(|| {
            let mut cookies = Vec::new();
            for (field, (name, value)) in self.headers.iter().enumerate() {
                if name.eq_ignore_ascii_case(b"cookie") {
                    parse_cookies(field, value, &mut cookies);
                }
            }
            cookies
        })
    }

    /// Values of the cookie `name`, in order.
    pub fn cookie_values<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        self.cookies().iter().filter_map(move |c| {
            let value = &self.headers[c.field].1;
            (value[c.name.clone()] == *name).then(|| &value[c.value.clone()])
        })
    }

    /// The request line as Unit logs it.
    fn write_request_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(self.target.raw());
        out.push(b' ');
        out.extend_from_slice(self.version.as_str().as_bytes());
    }

    /// The value of a request-side variable; `None` for response-side ones.
    pub fn write_var(&self, var: &Var, out: &mut Vec<u8>) -> Option<bool> {
        let found = match var {
            Var::Dollar => {
                out.push(b'$');
                true
            }
            Var::Method => {
                out.extend_from_slice(&self.method);
                true
            }
            Var::RequestUri => {
                out.extend_from_slice(self.target.raw());
                true
            }
            Var::Uri => {
                out.extend_from_slice(self.path());
                true
            }
            Var::Host => {
                out.extend_from_slice(self.host());
                true
            }
            Var::Scheme => {
                out.extend_from_slice(if self.tls { b"https" } else { b"http" });
                true
            }
            Var::RemoteAddr => {
                push_ip(out, self.remote);
                true
            }
            Var::TimeLocal => {
                write_time_local(out);
                true
            }
            Var::RequestLine => {
                self.write_request_line(out);
                true
            }
            Var::RequestId => {
                write_request_id(out);
                true
            }
            Var::RequestTime => {
                let ms = self.started.elapsed().as_millis();
                push_display(out, format_args!("{}.{:03}", ms / 1000, ms % 1000));
                true
            }
            Var::Header(name) => match self.header_values(name).next() {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            },
            // The last one, as Unit looks from the end.
            Var::Arg(name) => match self.argument_values(name).last() {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            },
            Var::Cookie(name) => match self.cookie_values(name).next() {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            },
            Var::Status
            | Var::BodyBytesSent
            | Var::ResponseConnection
            | Var::ResponseContentLength
            | Var::ResponseTransferEncoding
            | Var::ResponseHeader(_) => return None,
        };
        Some(found)
    }
}

/// While routing, response-side variables have Unit's values before a response: status
/// `000`, nothing sent, no header fields.
impl Values for RequestInfo {
    fn write(&self, var: &Var, out: &mut Vec<u8>) -> bool {
        match self.write_var(var, out) {
            Some(found) => found,
            None => match var {
                Var::Status => {
                    out.extend_from_slice(b"000");
                    true
                }
                Var::BodyBytesSent => {
                    out.push(b'0');
                    true
                }
                _ => false,
            },
        }
    }
}

fn push_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{value}");
}

/// Unit's `nxt_http_arguments_parse`: split on `&` and the first `=` of each piece (as
/// sent, before decoding), decode `+` and `%XX` (a malformed escape stays as it is),
/// skip empty pieces.
fn parse_arguments(query: &[u8]) -> Arguments {
    let mut decoded = Vec::with_capacity(query.len());
    let mut pairs = Vec::new();
    let mut start = 0;
    let mut name_end: Option<usize> = None;
    let finish =
        |pairs: &mut Vec<_>, start: usize, name_end: Option<usize>, end: usize| match name_end {
            Some(ne) if ne != start || end != ne + 1 => pairs.push((start..ne, ne + 1..end)),
            Some(_) => {}
            None if end != start => pairs.push((start..end, end..end)),
            None => {}
        };
    let mut i = 0;
    while i < query.len() {
        match query[i] {
            b'=' => {
                if name_end.is_none() {
                    name_end = Some(decoded.len());
                }
                decoded.push(b'=');
            }
            b'&' => {
                finish(&mut pairs, start, name_end, decoded.len());
                decoded.push(b'&');
                start = decoded.len();
                name_end = None;
            }
            b'+' => decoded.push(b' '),
            b'%' => {
                if let (Some(d0), Some(d1)) = (
                    query.get(i + 1).copied().and_then(hex),
                    query.get(i + 2).copied().and_then(hex),
                ) {
                    decoded.push(d0 << 4 | d1);
                    i += 3;
                    continue;
                }
                // A malformed escape stays as it is.
                decoded.push(b'%');
            }
            b => decoded.push(b),
        }
        i += 1;
    }
    finish(&mut pairs, start, name_end, decoded.len());
    Arguments { decoded, pairs }
}

/// Unit's `nxt_http_cookie_parse`: `;`-separated `name=value` pairs; spaces before a
/// name and after a value are dropped; a piece without `=` is ignored.
fn parse_cookies(field: usize, value: &[u8], out: &mut Vec<Cookie>) {
    let mut start = 0;
    let mut name: Option<Range<usize>> = None;
    let mut push = |name: Range<usize>, from: usize, mut to: usize| {
        while to > from && value[to - 1] == b' ' {
            to -= 1;
        }
        out.push(Cookie {
            field,
            name,
            value: from..to,
        });
    };
    for (i, &b) in value.iter().enumerate() {
        if b == b'=' && name.is_none() {
            while start < i && value[start] == b' ' {
                start += 1;
            }
            name = Some(start..i);
            start = i + 1;
        } else if b == b';' {
            if let Some(n) = name.take() {
                push(n, start, i);
            }
            start = i + 1;
        }
    }
    if let Some(n) = name {
        push(n, start, value.len());
    }
}

/// `31/Dec/1986:19:40:00 +0300`, in local time, formatted at most once a second per
/// thread.
fn write_time_local(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Local::now();
    let second = now.timestamp();
    CACHE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = now.format("%d/%b/%Y:%H:%M:%S %z").to_string();
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// 32 random hex digits.
fn write_request_id(out: &mut Vec<u8>) {
    static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    for half in 0..2u64 {
        let mut hasher = KEYS.build_hasher();
        hasher.write_u64(n);
        hasher.write_u64(half);
        push_display(out, format_args!("{:016x}", hasher.finish()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(target: &str, headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo::new(Request::for_test(target, headers))
    }

    fn strings<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
        values
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn paths_and_queries() {
        let r = info("/a/../b%20c?x=1", &[]);
        assert_eq!(r.path(), b"/b c");
        assert_eq!(r.query(), b"x=1");
        let mut r = info("/plain", &[]);
        assert_eq!(r.path(), b"/plain");
        assert_eq!(r.query(), b"");
        r.rewrite(b"/new%2Fx?ignored").expect("rewrites");
        assert_eq!(r.path(), b"/new/x");
        assert_eq!(r.query(), b"");
    }

    #[test]
    fn rewrites_keep_the_query_and_reencode_the_path() {
        let mut r = info("/old?q=1", &[]);
        r.rewrite(b"/new%2Fx y?ignored").expect("rewrites");
        assert_eq!((r.path(), r.query()), (&b"/new/x y"[..], &b"q=1"[..]));
        let app = r.take_request(false);
        assert_eq!(&app.target.raw()[..], b"/new/x%20y?q=1");
        assert_eq!(
            &r.target.raw()[..],
            b"/old?q=1",
            "variables keep the target as sent"
        );
        assert_eq!(r.rewrite(b"/../x"), Err(TargetError::AboveRoot));
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            info("/", &[("Host", "Example.COM:8080")]).host(),
            b"example.com"
        );
        assert_eq!(
            info("/", &[("host", "example.com.")]).host(),
            b"example.com"
        );
        assert_eq!(info("/", &[("Host", "[::1]:80")]).host(), b"[::1]");
        assert_eq!(info("/", &[("Host", "plain")]).host(), b"plain");
        assert_eq!(info("/", &[]).host(), b"");
    }

    #[test]
    fn arguments_like_unit() {
        let r = info("/?a=1&b=x+y&a=%41&&c&=v&d=e=f&%zz=1&=", &[]);
        assert_eq!(strings(r.argument_values(b"a")), ["1", "A"]);
        assert_eq!(strings(r.argument_values(b"b")), ["x y"]);
        assert_eq!(strings(r.argument_values(b"c")), [""]);
        assert_eq!(strings(r.argument_values(b"")), ["v"]);
        assert_eq!(strings(r.argument_values(b"d")), ["e=f"]);
        assert_eq!(strings(r.argument_values(b"%zz")), ["1"]);
        assert_eq!(r.decoded_query(), b"a=1&b=x y&a=A&&c&=v&d=e=f&%zz=1&=");
        // A name is split from its value before decoding.
        let r = info("/?a%3Db=c", &[]);
        assert_eq!(strings(r.argument_values(b"a=b")), ["c"]);
    }

    #[test]
    fn cookies_like_unit() {
        let r = info("/", &[("Cookie", "a=1;  b = 2 ; c"), ("cookie", "a=3; d=")]);
        assert_eq!(strings(r.cookie_values(b"a")), ["1", "3"]);
        assert_eq!(strings(r.cookie_values(b"b ")), [" 2"]);
        assert!(strings(r.cookie_values(b"c")).is_empty());
        assert_eq!(strings(r.cookie_values(b"d")), [""]);
    }

    #[test]
    fn variables() {
        let r = info(
            "/p?q=1&q=2",
            &[("Host", "h"), ("User-Agent", "ua"), ("Cookie", "k=v")],
        );
        let render = |var: Var| {
            let mut out = Vec::new();
            r.write(&var, &mut out);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(render(Var::Arg(b"q".to_vec().into())), "2");
        assert_eq!(render(Var::Header(b"user-agent".to_vec().into())), "ua");
        assert_eq!(render(Var::Cookie(b"k".to_vec().into())), "v");
        assert_eq!(render(Var::RemoteAddr), "10.0.0.1");
        assert_eq!(render(Var::RequestLine), "GET /p?q=1&q=2 HTTP/1.1");
        assert_eq!(render(Var::Status), "000");
        assert_eq!(render(Var::RequestId).len(), 32);
        assert_eq!(render(Var::TimeLocal).len(), 26);
        assert_eq!(render(Var::Scheme), "http");
        let mut tls = Request::for_test("/", &[]);
        tls.tls = true;
        let mut out = Vec::new();
        RequestInfo::new(tls).write(&Var::Scheme, &mut out);
        assert_eq!(out, b"https");
    }
}
