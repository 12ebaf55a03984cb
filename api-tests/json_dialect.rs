//! Unit's JSON dialect on the control API: what it accepts (BOM, comments, trailing
//! commas, `\u0000`, `2.0` as an integer) and what it rejects with `Invalid JSON.`
//! and a `location` (1-based line, column in characters).

use serde_json::{Value, json};

use crate::harness::{
    Response, Server, assert_done, assert_error, echo_config, guest_file, path_str,
};

const INVALID_JSON: &str = "Invalid JSON.";

/// Where the string-level cases put their odd strings: an environment variable of the
/// echo app (a member that is not a file path, so the string can be anything; as a
/// `module` it would have to name a real file).
const ENV: &str = "/config/applications/echo/environment";
const ENV_K: &str = "/config/applications/echo/environment/K";

/// A body setting the app's environment to `{"K": <json_string>}`, the string as raw bytes.
fn env_body(json_string: &[u8]) -> Vec<u8> {
    let mut body = br#"{"K": "#.to_vec();
    body.extend_from_slice(json_string);
    body.push(b'}');
    body
}

fn put_bytes(server: &Server, path: &str, body: &[u8]) -> Response {
    server.request("PUT", path, &[], Some(body))
}

/// Asserts `Invalid JSON.` with a detail and a numeric location.
#[track_caller]
fn assert_invalid_json(resp: &Response, what: &str) -> Value {
    assert_eq!(
        resp.status, 400,
        "{what}: expected 400 Invalid JSON, got\n{resp}"
    );
    let body = resp.json();
    assert_eq!(body["error"], json!(INVALID_JSON), "{what}: {resp}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: no detail in {resp}"
    );
    let loc = body["location"].clone();
    for member in ["offset", "line", "column"] {
        assert!(
            loc[member].is_u64(),
            "{what}: location.{member} must be a number: {resp}"
        );
    }
    assert!(
        loc["line"].as_u64() >= Some(1),
        "{what}: lines are 1-based: {resp}"
    );
    assert!(
        loc["column"].as_u64() >= Some(1),
        "{what}: columns are 1-based: {resp}"
    );
    loc
}

/// A server holding `echo_config`; its snapshot.
fn echo_server() -> (Server, (Value, u64)) {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let snap = server.snapshot();
    (server, snap)
}

/// PUTs each body to `path` and expects `Invalid JSON.` and no change.
#[track_caller]
fn expect_all_invalid(server: &Server, before: &(Value, u64), path: &str, bodies: &[&[u8]]) {
    for body in bodies {
        let what = format!("PUT {path} {:?}", String::from_utf8_lossy(body));
        let resp = put_bytes(server, path, body);
        assert_invalid_json(&resp, &what);
        server.assert_unchanged(before, &what);
    }
}

#[test]
fn a_leading_bom_is_skipped() {
    let server = Server::start();
    let config =
        json!({"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}});
    let mut body = "\u{FEFF}".as_bytes().to_vec();
    body.extend(config.to_string().into_bytes());
    assert_done(&put_bytes(&server, "/config", &body));
    assert_eq!(server.config(), config);

    let mut body = "\u{FEFF}".as_bytes().to_vec();
    body.extend_from_slice(br#"{"action": {"return": 205}}"#);
    assert_done(&server.request("POST", "/config/routes", &[], Some(&body)));
    assert_eq!(
        server.config()["routes"][1],
        json!({"action": {"return": 205}})
    );
}

#[test]
fn comments_are_accepted() {
    let server = Server::start();
    let body = r#"// a config, with comments everywhere
{
    /* block comment before a key */ "listeners": {}, // line comment after a member
    "routes": [ /* inside an array */
        {"action": {"return": 204}} // after an element
        /* a block
           spanning "lines" with * and / and // inside */
    ],
    "applications": /* before a value */ {}
}
// trailing line comment, no newline at the end"#;
    assert_done(&server.put("/config", body));
    assert_eq!(
        server.config(),
        json!({"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}})
    );
    assert_done(&server.put("/config/routes/0/action/return", "/* c */ 205 // c"));
    assert_eq!(
        server.get("/config/routes/0/action/return").json(),
        json!(205)
    );
}

#[test]
fn comment_markers_inside_strings_are_not_comments() {
    let server = Server::start();
    // A real module file whose path has `//`, `/*` and `*/` in it.
    guest_file(server.dir(), "a/b/*c*/.wasm");
    let module = format!("{}/a//b/*c*/.wasm", path_str(server.dir()));
    let mut config = echo_config(server.dir());
    config["applications"]["echo"]["module"] = json!(module);
    config["applications"]["echo"]["environment"] = json!({"K": "x//y/*z*/"});
    let body = config.to_string();
    assert!(body.contains("a//b/*c*/.wasm"), "{body}");
    assert_done(&server.put("/config", &body));
    assert_eq!(
        server.get("/config/applications/echo/module").json(),
        json!(module)
    );
    assert_eq!(server.get(ENV_K).json(), json!("x//y/*z*/"));
}

#[test]
fn trailing_commas_are_accepted() {
    let server = Server::start();
    let body = r#"{"listeners": {}, "routes": [{"action": {"return": 204,},}, {"action": {"return": 205}},], "applications": {},}"#;
    assert_done(&server.put("/config", body));
    assert_eq!(
        server.config(),
        json!({
            "listeners": {},
            "routes": [{"action": {"return": 204}}, {"action": {"return": 205}}],
            "applications": {}
        })
    );
}

#[test]
fn escaped_nul_is_accepted_by_the_parser() {
    let (server, _) = echo_server();
    for (path, body) in [
        (
            "/config/applications/echo/environment",
            r#"{"X": "a\u0000b"}"#,
        ),
        (
            "/config/routes",
            r#"[{"match": {"uri": "/a\u0000b"}, "action": {"return": 204}}]"#,
        ),
    ] {
        let resp = server.put(path, body);
        if resp.status == 200 {
            let got = server.get(path).json();
            assert!(
                got.to_string().contains("\\u0000"),
                "PUT {path}: NUL lost, stored {got}"
            );
        } else {
            assert_ne!(
                resp.error_title(),
                INVALID_JSON,
                "PUT {path} {body}: \\u0000 is valid JSON: {resp}"
            );
        }
    }
}

#[test]
fn duplicate_keys_are_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config",
        &[
            br#"{"listeners": {}, "routes": [], "applications": {}, "routes": []}"#,
            br#"{"listeners": {}, "routes": [{"action": {"return": 200, "return": 201}}], "applications": {}}"#,
            br#"{"listeners": {}, "\u0072outes": [], "applications": {}, "routes": []}"#,
        ],
    );
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/environment",
        &[br#"{"A": "1", "A": "1"}"#],
    );
}

#[test]
fn an_empty_body_is_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config",
        &[
            b"",
            b"   \n\t ",
            b"/* nothing */",
            b"// nothing\n",
            "\u{FEFF}".as_bytes(),
        ],
    );
    expect_all_invalid(&server, &before, "/config/routes/0", &[b""]);
    let resp = server.request("POST", "/config/routes", &[], Some(b""));
    assert_invalid_json(&resp, "POST with an empty body");
    // No Content-Length at all is an empty body too.
    let resp = server.request("PUT", "/config", &[], None);
    assert_invalid_json(&resp, "PUT without a body");
    server.assert_unchanged(&before, "empty bodies");
}

#[test]
fn trailing_data_is_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config",
        &[
            br#"{"listeners": {}, "routes": [], "applications": {}} x"#,
            br#"{"listeners": {}, "routes": [], "applications": {}}{}"#,
            br#"{"listeners": {}, "routes": [], "applications": {}}]"#,
            br#"{"listeners": {}, "routes": [], "applications": {}},"#,
        ],
    );
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/processes",
        &[b"1 2", b"1,", b"1 /* c */ 2"],
    );
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/module",
        &[br#""/a.wasm" "/b.wasm""#],
    );
}

#[test]
fn unescaped_control_characters_are_invalid_json() {
    let (server, before) = echo_server();
    for c in [0x00u8, 0x01, 0x08, 0x09, 0x0a, 0x0d, 0x1f] {
        let mut string = br#""/tmp/a"#.to_vec();
        string.push(c);
        string.extend_from_slice(br#"b.wasm""#);
        let what = format!("a raw 0x{c:02x} in a string");
        let resp = put_bytes(&server, ENV, &env_body(&string));
        assert_invalid_json(&resp, &what);
        server.assert_unchanged(&before, &what);
        let resp = put_bytes(&server, "/config/applications/echo/module", &string);
        assert_invalid_json(&resp, &what);
        server.assert_unchanged(&before, &what);
    }
    // Escaped, the same characters are fine.
    assert_done(&put_bytes(
        &server,
        ENV,
        &env_body(br#""/tmp/a\tb\u0001.wasm""#),
    ));
    assert_eq!(server.get(ENV_K).json(), json!("/tmp/a\tb\u{1}.wasm"));
    // And in a real module's file name.
    guest_file(server.dir(), "a\tb.wasm");
    let dir = path_str(server.dir());
    let body = format!(r#""{dir}/a\tb.wasm""#);
    assert_done(&server.put("/config/applications/echo/module", &body));
    assert_eq!(
        server.get("/config/applications/echo/module").json(),
        json!(format!("{dir}/a\tb.wasm"))
    );
}

#[test]
fn lone_surrogates_are_invalid_json() {
    let (server, before) = echo_server();
    let strings: [&[u8]; 6] = [
        br#""/tmp/\ud800.wasm""#,
        br#""/tmp/\udfff.wasm""#,
        br#""/tmp/\udc00\ud800.wasm""#,
        br#""/tmp/\ud800\u0041.wasm""#,
        br#""/tmp/\ud800x.wasm""#,
        br#""/tmp/\ud800""#,
    ];
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/module",
        &strings,
    );
    let bodies: Vec<Vec<u8>> = strings.iter().map(|s| env_body(s)).collect();
    let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    expect_all_invalid(&server, &before, ENV, &bodies);
    // A proper pair is one character.
    assert_done(&put_bytes(
        &server,
        ENV,
        &env_body(br#""/tmp/\ud83d\ude00.wasm""#),
    ));
    assert_eq!(server.get(ENV_K).json(), json!("/tmp/\u{1F600}.wasm"));
    // And in a real module's file name.
    guest_file(server.dir(), "\u{1F600}.wasm");
    let dir = path_str(server.dir());
    let body = format!(r#""{dir}/\ud83d\ude00.wasm""#);
    assert_done(&server.put("/config/applications/echo/module", &body));
    assert_eq!(
        server.get("/config/applications/echo/module").json(),
        json!(format!("{dir}/\u{1F600}.wasm"))
    );
}

#[test]
fn invalid_utf8_is_invalid_json() {
    let (server, before) = echo_server();
    let strings: [&[u8]; 7] = [
        b"\"/tmp/\xff.wasm\"",
        b"\"/tmp/\x80.wasm\"",
        b"\"/tmp/\xc0\xaf.wasm\"",
        b"\"/tmp/\xed\xa0\x80.wasm\"",
        b"\"/tmp/\xe2\x82.wasm\"",
        b"\"/tmp/\xf5\x80\x80\x80.wasm\"",
        b"\"/tmp/\xf0\x9f\x98.wasm\"",
    ];
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/module",
        &strings,
    );
    let bodies: Vec<Vec<u8>> = strings.iter().map(|s| env_body(s)).collect();
    let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    expect_all_invalid(&server, &before, ENV, &bodies);
    expect_all_invalid(
        &server,
        &before,
        "/config",
        &[b"\xff{}", b"{\"listeners\"\xa0: {}}"],
    );
    // Valid multi-byte UTF-8 is fine.
    assert_done(&put_bytes(
        &server,
        ENV,
        &env_body("\"/tmp/\u{e9}\u{20ac}\u{1F600}.wasm\"".as_bytes()),
    ));
    assert_eq!(
        server.get(ENV_K).json(),
        json!("/tmp/\u{e9}\u{20ac}\u{1F600}.wasm")
    );
    // And in a real module's file name.
    guest_file(server.dir(), "\u{e9}\u{20ac}\u{1F600}.wasm");
    let module = format!("{}/\u{e9}\u{20ac}\u{1F600}.wasm", path_str(server.dir()));
    assert_done(&put_bytes(
        &server,
        "/config/applications/echo/module",
        format!("\"{module}\"").as_bytes(),
    ));
    assert_eq!(
        server.get("/config/applications/echo/module").json(),
        json!(module)
    );
}

#[test]
fn numbers_longer_than_14_characters_are_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/processes",
        &[
            b"123456789012345",
            b"-12345678901234",
            b"1.0000000000000",
            b"1.00000000000000000000",
            b"9223372036854775807",
        ],
    );
    // Exactly 14 characters is not a JSON error (whatever validation makes of it).
    for body in ["12345678901234", "1.000000000000"] {
        let resp = server.put("/config/applications/echo/processes", body);
        if resp.status != 200 {
            assert_ne!(
                resp.error_title(),
                INVALID_JSON,
                "{body} has 14 characters: {resp}"
            );
        }
    }
}

#[test]
fn numbers_outside_the_i64_range_are_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/processes",
        &[b"1e19", b"-1e19", b"9.3e18", b"1e400", b"-1e400"],
    );
}

#[test]
fn malformed_numbers_are_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config/applications/echo/processes",
        &[
            b"01",
            b"+1",
            b".5",
            b"1.",
            b"-",
            b"1e",
            b"1e+",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"0x10",
            b"1_000",
        ],
    );
}

#[test]
fn a_zero_fraction_counts_as_an_integer() {
    let (server, _) = echo_server();
    for body in ["2.0", "2.00"] {
        assert_done(&server.put("/config/applications/echo/processes", body));
        let resp = server.get("/config/applications/echo/processes");
        assert_eq!(
            resp.json().as_i64(),
            Some(2),
            "{body} is stored as the integer 2: {resp}"
        );
    }
    assert_done(&server.put_json(
        "/config/applications/echo/processes",
        &json!({"max": 4.0, "spare": 1}),
    ));
    assert_eq!(
        server
            .get("/config/applications/echo/processes/max")
            .json()
            .as_i64(),
        Some(4)
    );

    // A real fraction is a number, but not an integer: the schema says no.
    let before = server.snapshot();
    let resp = server.put("/config/applications/echo/processes", "2.5");
    assert_error(&resp, 400, "Invalid configuration.");
    server.assert_unchanged(&before, "processes 2.5");
}

#[test]
fn other_malformed_bodies_are_invalid_json() {
    let (server, before) = echo_server();
    expect_all_invalid(
        &server,
        &before,
        "/config",
        &[
            br#"{"listeners" {}}"#,
            br#"{listeners: {}}"#,
            br#"{'listeners': {}}"#,
            br#"{"listeners": {}, "routes": [1 2]}"#,
            br#"{"listeners": tru}"#,
            br#"{"listeners": nul}"#,
            br#"{"listeners": {}"#,
            br#"{"listeners": "abc}"#,
            br#"{"listeners": {} /* unclosed comment"#,
            br#"{"listeners": "\x"}"#,
            br#"{"listeners": "\u12"}"#,
            br#"{"listeners": "\u12g4"}"#,
            br#"{,}"#,
            br#"{"listeners": {},,}"#,
            br#"[,]"#,
            br#"{"listeners": [}"#,
            br#"{"listeners": {}]"#,
            b"/",
            b"/* */ /",
        ],
    );
}

/// The 1-based line and column (in characters) of byte offset `at` in `body`.
fn line_col(body: &str, at: usize) -> (u64, u64) {
    let before = &body[..at];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

#[test]
fn bad_json_location_gives_line_and_column() {
    let (server, before) = echo_server();
    // (body, the text at which the error is, its expected line and column)
    let cases: [(&str, &str, u64, u64); 4] = [
        ("{\n  \"listeners\": {},\n  \"routes\": x\n}", "x", 3, 13),
        (
            "{\n  \"applications\": {\n    \"\u{e9}\u{20ac}\u{1F600}\": 5 6\n  }\n}",
            "6",
            3,
            14,
        ),
        ("{\n}\n\n  trailing", "trailing", 4, 3),
        (
            "{\r\n  \"routes\": [],\r\n  \"listeners\": ?\r\n}",
            "?",
            3,
            16,
        ),
    ];
    for (body, marker, line, column) in cases {
        let at = body.find(marker).expect("marker");
        assert_eq!(
            line_col(body, at),
            (line, column),
            "test table is wrong for {body:?}"
        );
        let resp = server.put("/config", body);
        let loc = assert_invalid_json(&resp, &format!("{body:?}"));
        assert_eq!(
            loc["line"],
            json!(line),
            "line of the error in {body:?}: {resp}"
        );
        assert_eq!(
            loc["column"],
            json!(column),
            "column (in characters) of the error in {body:?}: {resp}"
        );
        if body.is_ascii() {
            assert_eq!(
                loc["offset"],
                json!(at),
                "offset of the error in {body:?}: {resp}"
            );
        }
        server.assert_unchanged(&before, &format!("{body:?}"));
    }
}
