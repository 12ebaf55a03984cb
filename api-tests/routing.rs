//! Routes, actions and variables, table-driven (`docs/configuration.md`, Unit's
//! `nxt_http_route.c` semantics).
//!
//! Match cases run many to a server: each case gets a named route `c<i>` whose first
//! step (with the case's `match`) passes to app `a` and whose second step returns 204;
//! the listener passes to `routes/${header_x_case}`, and each request names its case in
//! `X-Case`. So one config and one connection serve a whole table.

use std::io;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Conn, Response, Server, WAT_BODY, Wat, connect_listener, example_app, free_port, free_port_v6,
    path_str, send_signal, wait_until, wasm_app, wat_bytes, write_file,
};

/// A guest that answers `body` (padded to the length of the default guest's body).
fn named_guest(server: &Server, name: &str) -> Value {
    let body = format!("{name:<width$}\n", width = WAT_BODY.len() - 1);
    assert_eq!(body.len(), WAT_BODY.len());
    // The canned body sits in the guest's data segment, escaped byte by byte.
    let (old, new) = (wat_bytes(WAT_BODY.as_bytes()), wat_bytes(body.as_bytes()));
    let unquote = |s: &str| s[1..s.len() - 1].to_string();
    let text = Wat::default()
        .render()
        .replace(&unquote(&old), &unquote(&new));
    let path = write_file(server.dir(), &format!("{name}.wasm"), text.as_bytes());
    wasm_app(&path_str(&path))
}

/// What app `name` answers.
fn body_of(name: &str) -> String {
    format!("{name:<width$}\n", width = WAT_BODY.len() - 1)
}

/// The three guests `a`, `b`, `c`.
fn apps(server: &Server) -> Value {
    json!({
        "a": named_guest(server, "a"),
        "b": named_guest(server, "b"),
        "c": named_guest(server, "c"),
    })
}

/// The bytes of a request with these header lines; `Host: localhost` unless one is given.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// Sends requests to one listener over a kept-alive connection, reconnecting when the
/// server closed it.
struct Client {
    key: String,
    conn: Option<Conn>,
}

impl Client {
    fn new(key: &str) -> Client {
        Client {
            key: key.to_string(),
            conn: None,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<Response> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(connect_listener(&self.key)?);
            }
            let conn = self.conn.as_mut().expect("connected");
            let result = conn.send(bytes).and_then(|()| conn.read_response());
            match result {
                Ok(resp) => {
                    if resp
                        .header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                    {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err(_) if attempt == 0 => self.conn = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("two attempts")
    }

    #[track_caller]
    fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.send(&request("GET", target, headers, None))
            .unwrap_or_else(|e| panic!("GET {target}: {e}"))
    }
}

/// One match case.
struct Case {
    matcher: Value,
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, &'static str)>,
    selected: bool,
}

fn case(
    matcher: Value,
    target: &str,
    headers: &[(&'static str, &'static str)],
    selected: bool,
) -> Case {
    Case {
        matcher,
        method: "GET",
        target: target.to_string(),
        headers: headers.to_vec(),
        selected,
    }
}

fn method_case(matcher: Value, method: &'static str, selected: bool) -> Case {
    Case {
        method,
        ..case(matcher, "/", &[], selected)
    }
}

/// Runs a table of match cases on one server; returns how many ran.
fn run_cases(cases: Vec<Case>) -> usize {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let mut routes = serde_json::Map::new();
    for (i, c) in cases.iter().enumerate() {
        routes.insert(
            format!("c{i}"),
            json!([
                {"match": c.matcher, "action": {"pass": "applications/a"}},
                {"action": {"return": 204}}
            ]),
        );
    }
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes/${header_x_case}"}},
        "routes": routes,
        "applications": apps(&server),
    }));
    let mut client = Client::new(&key);
    let mut problems = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let name = format!("c{i}");
        let mut headers = vec![("X-Case", name.as_str())];
        headers.extend(c.headers.iter().copied());
        let resp = match client.send(&request(c.method, &c.target, &headers, None)) {
            Ok(resp) => resp,
            Err(e) => {
                problems.push(format!("case {i} {}: {e}", c.matcher));
                continue;
            }
        };
        let got = match (resp.status, resp.body == body_of("a")) {
            (200, true) => Some(true),
            (204, _) => Some(false),
            _ => None,
        };
        if got != Some(c.selected) {
            problems.push(format!(
                "case {i}: match {} with {} {} {:?}: expected {}, got {} {:?}",
                c.matcher,
                c.method,
                c.target,
                c.headers,
                if c.selected {
                    "selected"
                } else {
                    "not selected"
                },
                resp.status,
                resp.body
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases failed:\n  {}",
        problems.len(),
        cases.len(),
        problems.join("\n  ")
    );
    cases.len()
}

#[test]
fn uri_patterns() {
    let mut cases = Vec::new();
    for (pattern, target, selected) in [
        ("/", "/", true),
        ("/", "/x", false),
        ("/a", "/a", true),
        ("/a", "/A", false),
        ("/a", "/a/", false),
        ("/a", "/a?x=1", true),
        ("/a*", "/a", true),
        ("/a*", "/abc/d", true),
        ("/a*", "/b", false),
        ("*.php", "/x/y.php", true),
        ("*.php", "/x/y.php5", false),
        ("*/b/*", "/a/b/c", true),
        ("*/b/*", "/a/c", false),
        ("/a*z", "/a/z", true),
        ("/a*z", "/az", true),
        ("/a*z", "/a/y", false),
        ("/a*b*c", "/a-b-c", true),
        ("/a*b*c", "/a-c-b", false),
        ("*", "/anything/at/all", true),
        ("", "/", false),
        ("!/a", "/b", true),
        ("!/a", "/a", false),
        ("!/a*", "/ab", false),
        ("!*.css", "/x.js", true),
        ("/a b", "/a%20b", true),
        ("/a%20b", "/a%20b", true),
        ("/a+b", "/a+b", true),
        ("/a%2Bb", "/a+b", true),
        ("/a/b", "/a//b", true),
        ("/a/b", "/a/./b", true),
        ("/b", "/a/../b", true),
        // Unit resolves a dot segment only when a slash follows it.
        ("/a/", "/a/b/..", false),
        ("/a/b/..", "/a/b/..", true),
        ("/a/b/.", "/a/b/.", true),
        ("/a/c", "/a/b/%2e%2e/c", true),
        ("/x", "/%78", true),
        ("/a%2Fb", "/a%2Fb", true),
        ("/a%2A", "/a*", true),
        ("/a%2A", "/ab", false),
        ("~^/api/v[0-9]+/", "/api/v2/users", true),
        ("~^/api/v[0-9]+/", "/api/v/users", false),
        ("~\\.(jpg|png)$", "/i/x.png", true),
        ("~\\.(jpg|png)$", "/i/x.gif", false),
        ("!~^/admin", "/user", true),
        ("!~^/admin", "/admin/x", false),
        ("~^/a b$", "/a%20b", true),
        ("~", "/", true),
        ("~(?i)^/CASE$", "/case", true),
        ("~^/q$", "/q?x", true),
    ] {
        cases.push(case(json!({"uri": pattern}), target, &[], selected));
    }
    for (patterns, target, selected) in [
        (json!(["/a", "/b"]), "/b", true),
        (json!(["/a", "/b"]), "/c", false),
        (json!(["/a*", "!/ab"]), "/ab", false),
        (json!(["/a*", "!/ab"]), "/ac", true),
        (json!(["!/ab", "/a*"]), "/ab", false),
        (json!(["!/ab", "/a*"]), "/b", false),
        (json!(["!/a", "!/b"]), "/c", true),
        (json!(["!/a", "!/b"]), "/a", false),
        (json!(["!/a", "!/b"]), "/b", false),
        (json!([]), "/anything", true),
        (json!(["~^/x", "/y"]), "/y", true),
        (json!(["~^/x", "/y"]), "/xz", true),
        (json!(["!~^/x", "*"]), "/xz", false),
        (json!(["!~^/x", "*"]), "/yz", true),
    ] {
        cases.push(case(json!({"uri": patterns}), target, &[], selected));
    }
    assert!(run_cases(cases) >= 60);
}

#[test]
fn method_host_scheme() {
    let mut cases = Vec::new();
    for (pattern, method, selected) in [
        (json!("GET"), "GET", true),
        (json!("get"), "GET", true),
        (json!("GET"), "POST", false),
        (json!("G*"), "GET", true),
        (json!("*T"), "POST", true),
        (json!("*T"), "PUT", true),
        (json!("*T"), "DELETE", false),
        (json!(["GET", "PATCH"]), "PATCH", true),
        (json!(["GET", "PATCH"]), "PUT", false),
        (json!("!GET"), "POST", true),
        (json!("!GET"), "GET", false),
        (json!(["!GET", "!PATCH"]), "DELETE", true),
        (json!(["!GET", "!PATCH"]), "PATCH", false),
        (json!("~^P(OST|UT)$"), "PUT", true),
        (json!("~^P(OST|UT)$"), "PATCH", false),
        (json!("PURGE"), "PURGE", true),
        (json!(""), "GET", false),
        (json!("*"), "OPTIONS", true),
    ] {
        cases.push(method_case(json!({"method": pattern}), method, selected));
    }
    for (pattern, host, selected) in [
        ("localhost", "localhost", true),
        ("localhost", "LocalHost", true),
        ("LOCALHOST", "localhost", true),
        ("localhost", "localhost:8080", true),
        ("localhost", "localhost.", true),
        ("example.com", "www.example.com", false),
        ("*.example.com", "www.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.Example.COM", "A.EXAMPLE.com", true),
        ("www.*", "www.example.org", true),
        ("!example.com", "example.org", true),
        ("!example.com", "Example.com:81", false),
        ("[::1]", "[::1]:8080", true),
        ("127.0.0.1", "127.0.0.1:80", true),
        ("~^(www\\.)?example\\.com$", "www.example.com", true),
        ("~^(www\\.)?example\\.com$", "mail.example.com", false),
        ("", "", true),
        ("*", "", true),
    ] {
        cases.push(case(
            json!({"host": pattern}),
            "/",
            &[("Host", host)],
            selected,
        ));
    }
    cases.push(case(
        json!({"host": ["a.com", "b.com"]}),
        "/",
        &[("Host", "b.com")],
        true,
    ));
    cases.push(case(
        json!({"host": ["a.com", "b.com"]}),
        "/",
        &[("Host", "c.com")],
        false,
    ));
    for (scheme, selected) in [
        ("http", true),
        ("HTTP", true),
        ("https", false),
        ("Https", false),
    ] {
        cases.push(case(json!({"scheme": scheme}), "/", &[], selected));
    }
    assert!(run_cases(cases) >= 40);
}

#[test]
fn headers_cookies() {
    let mut cases = Vec::new();
    for (matcher, headers, selected) in [
        (json!({"X-A": "1"}), vec![("X-A", "1")], true),
        (json!({"x-a": "1"}), vec![("X-A", "1")], true),
        (json!({"X-A": "abc"}), vec![("X-A", "ABC")], true),
        (json!({"X-A": "1"}), vec![("X-A", "2")], false),
        (json!({"X-A": "1"}), vec![], false),
        (json!({"X-A": "*"}), vec![], false),
        (json!({"X-A": "!1"}), vec![], false),
        (json!({"X-A": "!1"}), vec![("X-A", "2")], true),
        (json!({"X-A": "*"}), vec![("X-A", "")], true),
        (json!({"X-A": ""}), vec![("X-A", "")], true),
        (json!({"X-A": "1"}), vec![("X-A", "1"), ("X-A", "1")], true),
        (json!({"X-A": "1"}), vec![("X-A", "1"), ("x-a", "2")], false),
        (
            json!({"X-A": ["1", "2"]}),
            vec![("X-A", "1"), ("x-a", "2")],
            true,
        ),
        (json!({"X-A": "text/*"}), vec![("X-A", "TEXT/html")], true),
        (
            json!({"X-A": "*json"}),
            vec![("X-A", "application/JSON")],
            true,
        ),
        (json!({"X-A": "~^[0-9]+$"}), vec![("X-A", "123")], true),
        (json!({"X-A": "~^[0-9]+$"}), vec![("X-A", "12a")], false),
        (
            json!({"X-A": "1", "X-B": "2"}),
            vec![("X-A", "1"), ("X-B", "2")],
            true,
        ),
        (json!({"X-A": "1", "X-B": "2"}), vec![("X-A", "1")], false),
        (json!({"X-A": []}), vec![("X-A", "x")], true),
        (json!({"X-A": []}), vec![], false),
        (json!({}), vec![], true),
        (
            json!([{"X-A": "1"}, {"X-B": "2"}]),
            vec![("X-B", "2")],
            true,
        ),
        (
            json!([{"X-A": "1"}, {"X-B": "2"}]),
            vec![("X-C", "3")],
            false,
        ),
        (json!([]), vec![], true),
        (
            json!({"User-Agent": "*curl*"}),
            vec![("User-Agent", "curl/8.0")],
            true,
        ),
        (json!({"Host": "localhost"}), vec![], true),
        (
            json!({"Accept": ["!*xml*", "*html*"]}),
            vec![("Accept", "text/html")],
            true,
        ),
        (
            json!({"Accept": ["!*xml*", "*html*"]}),
            vec![("Accept", "text/html,xml")],
            false,
        ),
    ] {
        cases.push(case(json!({"headers": matcher}), "/", &headers, selected));
    }
    for (matcher, cookie, selected) in [
        (json!({"id": "1"}), Some("id=1"), true),
        (json!({"id": "1"}), Some("id=2"), false),
        (json!({"id": "1"}), Some("ID=1"), false),
        (json!({"id": "A"}), Some("id=a"), false),
        (json!({"id": "1"}), None, false),
        (json!({"id": "1"}), Some("x=0; id=1"), true),
        (json!({"id": "1"}), Some("x=0;id=1 "), true),
        (json!({"id": "1"}), Some("id=1; id=2"), false),
        (json!({"id": ["1", "2"]}), Some("id=1; id=2"), true),
        (json!({"id": "*"}), Some("id="), true),
        (json!({"id": "*"}), Some("id"), false),
        (json!({"id": "!1"}), Some("id=2"), true),
        (json!({"id": "!1"}), None, false),
        (json!({"a": "1", "b": "2"}), Some("a=1; b=2"), true),
        (json!({"a": "1", "b": "2"}), Some("a=1"), false),
        (json!([{"a": "1"}, {"b": "2"}]), Some("b=2"), true),
        (json!({"s": "~^[a-f0-9]{4}$"}), Some("s=beef"), true),
        (json!({"s": "~^[a-f0-9]{4}$"}), Some("s=BEEF"), false),
        (json!({"s": "a%20b"}), Some("s=a%20b"), true),
    ] {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        cases.push(case(json!({"cookies": matcher}), "/", &headers, selected));
    }
    assert!(run_cases(cases) >= 45);
}

#[test]
fn arguments_and_query() {
    let mut cases = Vec::new();
    for (matcher, target, selected) in [
        (json!({"a": "1"}), "/?a=1", true),
        (json!({"a": "1"}), "/?a=2", false),
        (json!({"a": "1"}), "/", false),
        (json!({"a": "1"}), "/?b=1", false),
        (json!({"a": "1"}), "/?A=1", false),
        (json!({"a": "x"}), "/?a=X", false),
        (json!({"a": "1"}), "/?a=1&a=1", true),
        (json!({"a": "1"}), "/?a=1&a=2", false),
        (json!({"a": ["1", "2"]}), "/?a=1&a=2", true),
        (json!({"a": "x y"}), "/?a=x+y", true),
        (json!({"a": "x+y"}), "/?a=x+y", true),
        (json!({"a": "x%20y"}), "/?a=x%20y", true),
        (json!({"a": "x y"}), "/?a=x%20y", true),
        (json!({"a b": "1"}), "/?a+b=1", true),
        (json!({"a%20b": "1"}), "/?a%20b=1", true),
        (json!({"a": ""}), "/?a", true),
        (json!({"a": ""}), "/?a=", true),
        (json!({"a": "*"}), "/?a", true),
        (json!({"a": "!1"}), "/?a=2", true),
        (json!({"a": "!1"}), "/", false),
        (json!({"a": "b=c"}), "/?a=b=c", true),
        (json!({"a": "1*"}), "/?a=123", true),
        (json!({"a": "*3"}), "/?a=123", true),
        (json!({"a": "~^[0-9]+$"}), "/?a=123", true),
        (json!({"a": "~^[0-9]+$"}), "/?a=12x", false),
        (json!({"a": "1", "b": "2"}), "/?b=2&a=1", true),
        (json!({"a": "1", "b": "2"}), "/?a=1", false),
        (json!([{"a": "1"}, {"b": "2"}]), "/?b=2", true),
        (json!([{"a": "1"}, {"b": "2"}]), "/?c=3", false),
        (json!({"a": "%25zz"}), "/?a=%zz", true),
        (json!({"a": "1"}), "/?&&a=1&&", true),
        (json!({}), "/", true),
        (json!([]), "/", true),
    ] {
        cases.push(case(json!({"arguments": matcher}), target, &[], selected));
    }
    for (pattern, target, selected) in [
        (json!("a=1"), "/?a=1", true),
        (json!("a=1"), "/?a=1&b=2", false),
        (json!("a=1*"), "/?a=1&b=2", true),
        (json!("*b=2"), "/?a=1&b=2", true),
        (json!("a=x y"), "/?a=x+y", true),
        (json!("a=x y"), "/?a=x%20y", true),
        (json!("a=x%20y"), "/?a=x+y", true),
        (json!(""), "/", true),
        (json!(""), "/?", true),
        (json!(""), "/?a", false),
        (json!("*"), "/", true),
        (json!("!*debug*"), "/?x=1", true),
        (json!("!*debug*"), "/?debug=1", false),
        (json!(["a=1", "b=2"]), "/?b=2", true),
        (json!("~^page=[0-9]+$"), "/?page=10", true),
        (json!("~^page=[0-9]+$"), "/?page=x", false),
        (json!("Q"), "/?q", false),
    ] {
        cases.push(case(json!({"query": pattern}), target, &[], selected));
    }
    assert!(run_cases(cases) >= 50);
}

#[test]
fn source_destination_and_combinations() {
    let mut cases = Vec::new();
    for (pattern, selected) in [
        (json!("127.0.0.1"), true),
        (json!("127.0.0.2"), false),
        (json!("127.0.0.0/8"), true),
        (json!("10.0.0.0/8"), false),
        (json!("127.0.0.0-127.0.0.5"), true),
        (json!("127.0.0.2-127.0.0.5"), false),
        (json!("0.0.0.0/0"), true),
        (json!("*:1-65535"), true),
        (json!("127.0.0.1:1-1023"), false),
        (json!("!10.0.0.0/8"), true),
        (json!("!127.0.0.0/8"), false),
        (json!(["!127.0.0.1", "127.0.0.0/8"]), false),
        (json!(["!127.0.0.2", "127.0.0.0/8"]), true),
        (json!(["10.0.0.1", "127.0.0.1"]), true),
        (json!(["10.0.0.1", "10.0.0.2"]), false),
        (json!("::1"), false),
        (json!("::/0"), false),
        (json!("unix"), false),
        (json!("!unix"), true),
        (json!([]), false),
    ] {
        cases.push(case(json!({"source": pattern}), "/", &[], selected));
    }
    for (pattern, selected) in [
        (json!("127.0.0.1"), true),
        (json!("127.0.0.0/24"), true),
        (json!("*:1-65535"), true),
        (json!("*:1"), false),
        (json!("!127.0.0.1"), false),
        (json!("10.0.0.0/8"), false),
        (json!("[::1]:1-65535"), false),
    ] {
        cases.push(case(json!({"destination": pattern}), "/", &[], selected));
    }
    for (matcher, target, headers, selected) in [
        (json!({"uri": "/a", "method": "GET"}), "/a", vec![], true),
        (json!({"uri": "/a", "method": "POST"}), "/a", vec![], false),
        (
            json!({"uri": "/a*", "arguments": {"x": "1"}}),
            "/ab?x=1",
            vec![],
            true,
        ),
        (
            json!({"uri": "/a*", "arguments": {"x": "1"}}),
            "/b?x=1",
            vec![],
            false,
        ),
        (
            json!({"host": "h", "headers": {"X-A": "1"}}),
            "/",
            vec![("Host", "h"), ("X-A", "1")],
            true,
        ),
        (
            json!({"host": "h", "headers": {"X-A": "1"}}),
            "/",
            vec![("Host", "g"), ("X-A", "1")],
            false,
        ),
        (
            json!({"uri": "!/x", "source": "127.0.0.1", "query": "*"}),
            "/y",
            vec![],
            true,
        ),
        (
            json!({"cookies": {"a": "1"}, "query": "q=1"}),
            "/?q=1",
            vec![("Cookie", "a=1")],
            true,
        ),
        (
            json!({"cookies": {"a": "1"}, "query": "q=1"}),
            "/?q=2",
            vec![("Cookie", "a=1")],
            false,
        ),
        (json!({}), "/", vec![], true),
    ] {
        cases.push(case(matcher, target, &headers, selected));
    }
    let n = run_cases(cases);
    assert!(n >= 35);
}

#[test]
fn ipv6_source_and_destination() {
    let server = Server::start();
    let key6 = format!("[::1]:{}", free_port_v6());
    server.load(&json!({
        "listeners": {key6.clone(): {"pass": "routes"}},
        "routes": [
            {"match": {"headers": {"X-T": "1"}, "source": "::1"}, "action": {"return": 201}},
            {"match": {"headers": {"X-T": "2"}, "source": "[::1]:1-65535"}, "action": {"return": 202}},
            {"match": {"headers": {"X-T": "3"}, "source": "127.0.0.1"}, "action": {"return": 203}},
            {"match": {"headers": {"X-T": "4"}, "destination": "::/0"}, "action": {"return": 205}},
            {"match": {"headers": {"X-T": "5"}, "source": "!::1"}, "action": {"return": 206}},
            {"match": {"headers": {"X-T": "6"}, "source": "::0-::ffff"}, "action": {"return": 207}},
            {"action": {"return": 299}}
        ],
        "applications": {}
    }));
    let mut client = Client::new(&key6);
    for (t, want) in [
        ("1", 201),
        ("2", 202),
        ("3", 299),
        ("4", 205),
        ("5", 299),
        ("6", 207),
    ] {
        let resp = client.get("/", &[("X-T", t)]);
        assert_eq!(resp.status, want, "X-T {t}: {resp}");
    }
}

#[test]
fn steps_routes_and_passes() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let key2 = format!("127.0.0.1:{}", free_port());
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes/main"}, key2.clone(): {"pass": "applications/${arg_app}"}},
        "routes": {
            "main": [
                {"match": {"uri": "/a*"}, "action": {"pass": "applications/a"}},
                {"match": {"uri": "/ab"}, "action": {"pass": "applications/b"}},
                {"match": {"uri": "/sub/*"}, "action": {"pass": "routes/sub"}},
                {"match": {"uri": "/loop"}, "action": {"pass": "routes/loop"}},
                {"match": {"uri": "/dyn/*"}, "action": {"pass": "routes/${arg_to}"}},
                {"match": {"uri": "/to-app"}, "action": {"pass": "applications/$arg_app"}},
                {"match": {"uri": "/enc"}, "action": {"pass": "routes/sl%2Fash"}},
                {"match": {"uri": "/none"}, "action": {"pass": "routes/empty"}}
            ],
            "sub": [
                {"match": {"uri": "/sub/c"}, "action": {"pass": "applications/c"}},
                {"action": {"return": 299}}
            ],
            "loop": [{"action": {"pass": "routes/loop2"}}],
            "loop2": [{"action": {"pass": "routes/loop"}}],
            "sl/ash": [{"action": {"return": 298}}],
            "empty": []
        },
        "applications": apps(&server)
    }));
    let mut client = Client::new(&key);
    let mut checks = 0;
    for (target, want_status, want_app) in [
        ("/a", 200, Some("a")),
        ("/ab", 200, Some("a")),
        ("/sub/c", 200, Some("c")),
        ("/sub/d", 299, None),
        ("/loop", 500, None),
        ("/dyn/x?to=sub", 299, None),
        ("/dyn/x?to=sl%252Fash", 298, None),
        ("/dyn/x?to=nothing", 404, None),
        ("/dyn/x", 404, None),
        ("/to-app?app=b", 200, Some("b")),
        ("/to-app?app=zz", 404, None),
        ("/enc", 298, None),
        ("/none", 404, None),
        ("/unmatched", 404, None),
    ] {
        let resp = client.get(target, &[]);
        assert_eq!(resp.status, want_status, "{target}: {resp}");
        if let Some(app) = want_app {
            assert_eq!(resp.body, body_of(app), "{target}: {resp}");
        }
        checks += 1;
    }
    let mut direct = Client::new(&key2);
    for (target, status) in [("/?app=c", 200), ("/?app=x", 404), ("/", 404)] {
        let resp = direct.get(target, &[]);
        assert_eq!(resp.status, status, "listener pass {target}: {resp}");
        checks += 1;
    }
    // A 404 from a route is Unit's error page.
    let resp = client.get("/unmatched", &[]);
    assert_eq!(resp.header("content-type"), Some("text/html"));
    assert_eq!(
        resp.body,
        "<!DOCTYPE html><title>Error 404</title><p>Error 404.\r\n"
    );
    assert!(checks >= 17);
}

#[test]
fn return_and_location() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let mut steps = Vec::new();
    let statuses = [
        200u16, 201, 204, 299, 301, 302, 303, 307, 308, 399, 400, 403, 404, 418, 451, 500, 502,
        503, 599, 600, 999,
    ];
    for status in statuses {
        steps.push(json!({"match": {"uri": format!("/{status}")}, "action": {"return": status}}));
    }
    for (i, location) in [
        "https://example.com/",
        "/relative path",
        "/already%20encoded?x=1#frag",
        "/q?x=1?y#a#b",
        "$uri?from=$arg_from",
        "http://${host}${request_uri}",
        "/$method/$dollar/$remote_addr",
        "/$header_x_to/${cookie_c}",
        "",
    ]
    .iter()
    .enumerate()
    {
        steps.push(json!({"match": {"uri": format!("/loc{i}")}, "action": {"return": 302, "location": location}}));
    }
    steps.push(json!({"match": {"uri": "/404loc"}, "action": {"return": 404, "location": "/x"}}));
    server.load(&json!({"listeners": {key.clone(): {"pass": "routes"}}, "routes": steps, "applications": {}}));
    let mut client = Client::new(&key);
    for status in statuses {
        let resp = client.get(&format!("/{status}"), &[]);
        assert_eq!(resp.status, status, "{resp}");
        if (400..=599).contains(&status) {
            assert_eq!(
                resp.body,
                format!("<!DOCTYPE html><title>Error {status}</title><p>Error {status}.\r\n"),
                "{resp}"
            );
        } else if status != 204 {
            assert_eq!(resp.body, "", "{resp}");
            assert_eq!(resp.header("content-length"), Some("0"), "{resp}");
        }
        assert_eq!(resp.header("location"), None);
    }
    for (i, target, headers, want) in [
        (0, "/loc0", vec![], "https://example.com/"),
        (1, "/loc1", vec![], "/relative%20path"),
        (2, "/loc2", vec![], "/already%20encoded?x=1#frag"),
        (3, "/loc3", vec![], "/q?x=1%3Fy#a%23b"),
        (4, "/loc4?from=a+b", vec![], "/loc4?from=a%20b"),
        (
            5,
            "/loc5?x=%41",
            vec![("Host", "h.example:81")],
            "http://h.example/loc5?x=%41",
        ),
        (6, "/loc6", vec![], "/GET/$/127.0.0.1"),
        (
            7,
            "/loc7",
            vec![("X-To", "there"), ("Cookie", "c=v")],
            "/there/v",
        ),
        (8, "/loc8", vec![], ""),
    ] {
        let resp = client.get(target, &headers);
        assert_eq!(resp.status, 302, "case {i}: {resp}");
        assert_eq!(resp.header("location"), Some(want), "case {i}: {resp}");
    }
    let resp = client.get("/404loc", &[]);
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("location"),
        None,
        "a 4xx return has no Location"
    );
}

#[test]
fn response_headers_and_rewrite() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let mut applications = apps(&server);
    applications["echo"] = example_app("echo");
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [
            {"match": {"uri": "/h/return"}, "action": {"return": 200, "response_headers": {"X-A": "1", "X-U": "$uri", "Cache-Control": "no-store"}}},
            {"match": {"uri": "/h/app"}, "action": {"pass": "applications/a", "response_headers": {"Content-Type": "text/x-a", "X-Arg": "${arg_v}"}}},
            {"match": {"uri": "/h/remove"}, "action": {"pass": "applications/a", "response_headers": {"content-type": null, "X-Gone": null}}},
            {"match": {"uri": "/h/error"}, "action": {"return": 404, "response_headers": {"X-A": "1"}}},
            {"match": {"uri": "/h/redirect"}, "action": {"return": 301, "location": "/x", "response_headers": {"Location": "/y"}}},
            {"match": {"uri": "/rw/old*"}, "action": {"rewrite": "/rw/new", "pass": "routes"}},
            {"match": {"uri": "/rw/new"}, "action": {"return": 301, "location": "$uri,$request_uri"}},
            {"match": {"uri": "/rw/var"}, "action": {"rewrite": "${uri}/$arg_to", "pass": "routes"}},
            {"match": {"uri": "/rw/var/*"}, "action": {"return": 302, "location": "$uri"}},
            {"match": {"uri": "/rw/same"}, "action": {"rewrite": "/rw/%2E%2E/elsewhere", "return": 303, "location": "$uri"}},
            {"match": {"uri": "/rw/app"}, "action": {"rewrite": "/rewritten/path", "pass": "applications/echo"}},
            {"match": {"uri": "/rw/loop"}, "action": {"rewrite": "/rw/loop", "pass": "routes"}}
        ],
        "applications": applications
    }));
    let mut client = Client::new(&key);
    let resp = client.get("/h/return", &[]);
    assert_eq!(
        (resp.status, resp.header("x-a"), resp.header("x-u")),
        (200, Some("1"), Some("/h/return")),
        "{resp}"
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let resp = client.get("/h/app?v=%41", &[]);
    assert_eq!(resp.body, body_of("a"), "{resp}");
    assert_eq!(
        resp.header("content-type"),
        Some("text/x-a"),
        "replaces the app's: {resp}"
    );
    assert_eq!(
        resp.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .count(),
        1
    );
    assert_eq!(resp.header("x-arg"), Some("A"), "{resp}");
    let resp = client.get("/h/app?v=a%0Ab", &[]);
    assert_eq!(
        resp.header("x-arg"),
        None,
        "a value with a newline is dropped: {resp}"
    );
    let resp = client.get("/h/remove", &[]);
    assert_eq!(resp.header("content-type"), None, "{resp}");
    assert_eq!(resp.body, body_of("a"));
    let resp = client.get("/h/error", &[]);
    assert_eq!(
        (resp.status, resp.header("x-a")),
        (404, None),
        "not on errors: {resp}"
    );
    let resp = client.get("/h/redirect", &[]);
    assert_eq!(resp.header("location"), Some("/y"), "{resp}");

    let resp = client.get("/rw/old?q=1", &[]);
    assert_eq!(resp.status, 301, "{resp}");
    assert_eq!(
        resp.header("location"),
        Some("/rw/new,/rw/old?q=1"),
        "{resp}"
    );
    let resp = client.get("/rw/var?to=x%20y", &[]);
    assert_eq!(
        (resp.status, resp.header("location")),
        (302, Some("/rw/var/x%20y")),
        "{resp}"
    );
    let resp = client.get("/rw/same", &[]);
    assert_eq!(
        (resp.status, resp.header("location")),
        (303, Some("/elsewhere")),
        "{resp}"
    );
    let resp = client.get("/rw/app?k=v", &[]);
    assert_eq!(resp.status, 200, "{resp}");
    assert!(
        resp.body.contains("REQUEST_PATH = /rewritten/path?k=v"),
        "the app sees the new path and the old query: {resp}"
    );
    let resp = client.get("/rw/loop", &[]);
    assert_eq!(resp.status, 500, "{resp}");
}

#[test]
fn unsafe_fields_and_log_route() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let config = |discard: Option<bool>| {
        let mut http = json!({"log_route": true});
        if let Some(discard) = discard {
            http["discard_unsafe_fields"] = json!(discard);
        }
        json!({
            "listeners": {key.clone(): {"pass": "routes"}},
            "routes": [
                {"match": {"uri": "/", "headers": {"X_Under": "*"}}, "action": {"return": 211}},
                {"match": {"uri": "/echo"}, "action": {"pass": "applications/echo"}},
                {"action": {"return": 212}}
            ],
            "applications": {"echo": example_app("echo")},
            "settings": {"http": http}
        })
    };
    for (discard, want) in [(None, 212), (Some(true), 212), (Some(false), 211)] {
        server.load(&config(discard));
        // Settings apply to new connections.
        let mut client = Client::new(&key);
        let resp = client.get("/", &[("X_Under", "1"), ("X.Dot", "2")]);
        assert_eq!(resp.status, want, "discard {discard:?}: {resp}");
        let resp = client.get("/echo", &[("X_Under", "1"), ("X-Safe", "3")]);
        let seen = resp.body.contains("X_Under = 1");
        assert_eq!(seen, discard == Some(false), "discard {discard:?}: {resp}");
        assert!(resp.body.contains("X-Safe = 3"), "{resp}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || server
            .current_log()
            .contains("\"routes/2\" selected")
            && server.current_log().contains("\"routes/0\" discarded")),
        "log_route lines are missing:\n{}",
        server.current_log()
    );
}

#[test]
fn max_body_size_answers_413_before_the_guest() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [{"action": {"pass": "applications/echo"}}],
        "applications": {"echo": example_app("echo")},
        "settings": {"http": {"max_body_size": 16}}
    }));
    let mut client = Client::new(&key);
    let resp = client
        .send(&request("POST", "/", &[], Some(b"0123456789abcdef")))
        .expect("small body");
    assert_eq!(resp.status, 200, "{resp}");
    let resp = client
        .send(&request("POST", "/", &[], Some(b"0123456789abcdefX")))
        .expect("big body");
    assert_eq!(resp.status, 413, "{resp}");
    assert!(
        !resp.body.contains("REQUEST_PATH"),
        "the guest never ran: {resp}"
    );
}

#[test]
fn slow_headers_are_cut_after_header_read_timeout() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [{"action": {"return": 200}}],
        "applications": {},
        "settings": {"http": {"header_read_timeout": 1}}
    }));
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("send a partial head");
    // The client stalls; the server must answer 408 and close on its own.
    let seen = conn.read_to_close(Duration::from_secs(60));
    assert!(seen.closed, "the connection was not closed");
    assert_eq!(
        seen.status(),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&seen.bytes)
    );
}

#[test]
fn access_log_default_custom_conditional_and_reopen() {
    let server = Server::start();
    let key = format!("127.0.0.1:{}", free_port());
    let log = server.dir().join("access.log");
    let routes = json!([
        {"match": {"uri": "/a"}, "action": {"pass": "applications/a"}},
        {"action": {"return": 404}}
    ]);
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": routes,
        "applications": apps(&server),
        "access_log": path_str(&log)
    }));
    let mut client = Client::new(&key);
    client.get(
        "/a?x=1",
        &[("Referer", "http://r/"), ("User-Agent", "tester/1")],
    );
    client.get("/missing", &[]);
    let lines = wait_for_lines(&log, 2);
    let body_len = body_of("a").len();
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{lines:?}");
    assert!(
        lines[0].ends_with(&format!(
            "] \"GET /a?x=1 HTTP/1.1\" 200 {body_len} \"http://r/\" \"tester/1\""
        )),
        "{lines:?}"
    );
    let page = "<!DOCTYPE html><title>Error 404</title><p>Error 404.\r\n".len();
    assert!(
        lines[1].ends_with(&format!("\"GET /missing HTTP/1.1\" 404 {page} \"-\" \"-\"")),
        "{lines:?}"
    );

    // A custom format, only for requests that are not health checks.
    let custom = server.dir().join("custom.log");
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": routes,
        "applications": apps(&server),
        "access_log": {
            "path": path_str(&custom),
            "format": "$method $uri $status $body_bytes_sent [$header_x_id] $arg_q ${cookie_c} $response_header_content_type",
            "if": "!$arg_health"
        }
    }));
    let mut client = Client::new(&key);
    client.get("/a?q=1", &[("X-Id", "7"), ("Cookie", "c=v")]);
    client.get("/a?health=1", &[]);
    client.get("/nope?health=0", &[]);
    let lines = wait_for_lines(&custom, 2);
    assert_eq!(
        lines,
        [
            format!("GET /a 200 {body_len} [7] 1 v text/plain"),
            format!("GET /nope 404 {page} [-] - - text/html"),
        ]
    );

    // Rotation: move the file away, SIGUSR1, and new lines go to a new file.
    let rotated = server.dir().join("custom.log.1");
    std::fs::rename(&custom, &rotated).expect("rename");
    client.get("/a?q=before", &[]);
    assert_eq!(
        wait_for_lines(&rotated, 3).len(),
        3,
        "lines go on to the moved file until reopened"
    );
    send_signal(server.pid(), "USR1");
    assert!(
        wait_until(Duration::from_secs(30), || {
            client.get("/a?q=after", &[]);
            std::fs::read_to_string(&custom).is_ok_and(|t| t.contains(" after "))
        }),
        "no new file after SIGUSR1:\n{}",
        server.current_log()
    );
    let fresh = std::fs::read_to_string(&custom).expect("new file");
    assert!(fresh.lines().all(|l| l.contains(" after ")), "{fresh}");
}

/// Waits (bounded) until the file has at least `n` lines; returns them.
fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(30), || read().len() >= n);
    read()
}

#[test]
fn invalid_routes_change_nothing() {
    let server = Server::start();
    server.load(&json!({"listeners": {}, "routes": [], "applications": {}}));
    let before = server.snapshot();
    for (routes, detail) in [
        (
            json!([{"match": {"uri": "~(unclosed"}, "action": {"return": 200}}]),
            "routes/0/match/uri: invalid regular expression",
        ),
        (
            json!([{"match": {"uri": ["/a", "~a{2,1}"]}, "action": {"return": 200}}]),
            "routes/0/match/uri/1: invalid regular expression",
        ),
        (
            json!([{"match": {"source": "10.0.0.9-10.0.0.1"}, "action": {"return": 200}}]),
            "routes/0/match/source: has an address range whose start exceeds its end",
        ),
        (
            json!([{"action": {"return": 301, "location": "/$nope"}}]),
            "routes/0/action/location: unknown variable \"nope\"",
        ),
        (
            json!([{"action": {"return": 200, "response_headers": {"X": "${uri"}}}]),
            "routes/0/action/response_headers/X: invalid variable at position 0",
        ),
        (
            json!([{"action": {"pass": "routes", "rewrite": "/$blah"}}]),
            "routes/0/action/rewrite: unknown variable \"blah\"",
        ),
        (
            json!([{"action": {"pass": "applications/$nope"}}]),
            "routes/0/action/pass: unknown variable \"nope\"",
        ),
    ] {
        let mut tree = before.0.clone();
        tree["routes"] = routes;
        let resp = server.put_json("/config", &tree);
        assert_eq!(resp.status, 400, "{resp}");
        let got = resp.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(got.starts_with(detail), "expected {detail:?}, got {got:?}");
        server.assert_unchanged(&before, detail);
    }
}
