//! The URI table of control-api.md: `/`, `/config`, `/status`, `/control/...`, and
//! everything else; plus the path normalisation rules (trailing `/`, `//`, `.`/`..`,
//! query string) and percent-decoding of tree paths.

use serde_json::{Value, json};

use crate::harness::{
    Server, assert_done, assert_error, default_config, echo_config, echo_module, enc, guest_app,
    wasm_app,
};

const NOT_FOUND: &str = "Value doesn't exist.";

#[test]
fn a_fresh_state_dir_serves_the_default_tree() {
    let server = Server::start();
    let resp = server.get("/config");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), default_config());
}

#[test]
fn get_root_has_config_and_status() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    let resp = server.get("/");
    assert_eq!(resp.status, 200, "{resp}");
    let root = resp.json();
    assert_eq!(root["config"], config, "{resp}");
    let status = &root["status"];
    assert!(
        status["connections"].is_object(),
        "status.connections missing: {resp}"
    );
    assert!(
        status["requests"].is_object(),
        "status.requests missing: {resp}"
    );
    assert!(
        status["applications"]["echo"].is_object(),
        "status.applications.echo missing: {resp}"
    );
    assert_eq!(
        *status,
        server.get("/status").json(),
        "GET / status differs from GET /status"
    );
}

#[test]
fn root_allows_only_get() {
    let server = Server::start();
    let before = server.snapshot();
    for method in ["PUT", "POST", "DELETE"] {
        let resp = server.request(method, "/", &[], Some(b"{}"));
        assert_eq!(resp.status, 405, "{method} /: {resp}");
        assert!(resp.json()["error"].is_string(), "{resp}");
        server.assert_unchanged(&before, &format!("{method} /"));
    }
}

#[test]
fn config_rejects_other_methods() {
    let (server, before) = {
        let server = Server::start();
        server.load(&echo_config(server.dir()));
        let snap = server.snapshot();
        (server, snap)
    };
    for path in [
        "/config",
        "/config/applications",
        "/config/applications/echo/type",
        "/config/nope",
    ] {
        for method in ["PATCH", "OPTIONS", "TRACE", "FROB"] {
            let resp = server.request(method, path, &[], Some(b"{}"));
            assert_error(&resp, 405, "Method isn't allowed.");
            server.assert_unchanged(&before, &format!("{method} {path}"));
        }
    }
}

#[test]
fn status_rejects_changes_with_invalid_method() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let before = server.snapshot();
    for path in [
        "/status",
        "/status/connections",
        "/status/applications/echo",
        "/status/nope",
    ] {
        for method in ["PUT", "POST", "DELETE", "PATCH"] {
            let resp = server.request(method, path, &[], Some(b"{}"));
            assert_error(&resp, 405, "Invalid method.");
            server.assert_unchanged(&before, &format!("{method} {path}"));
        }
    }
}

#[test]
fn unknown_uris_are_404_value_does_not_exist() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let before = server.snapshot();
    for path in [
        "/nope",
        "/configs",
        "/config2",
        "/configuration/listeners",
        "/statuses",
        "/Config",
        "/STATUS",
        "/control",
        "/control/applications",
        "/control/applications/echo",
        "/control/applications/echo/stop",
        "/control/listeners/x/restart",
        "/index.html",
        "/certificates-not",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let body = (method == "PUT").then_some(&b"{}"[..]);
            let resp = server.request(method, path, &[], body);
            assert_eq!(resp.status, 404, "{method} {path}: {resp}");
            assert_eq!(
                resp.json(),
                json!({"error": NOT_FOUND}),
                "{method} {path}: {resp}"
            );
        }
    }
    server.assert_unchanged(&before, "requests to unknown URIs");
}

#[test]
fn one_trailing_slash_is_ignored() {
    let server = Server::start();
    let config = echo_config(server.dir());
    assert_done(&server.put_json("/config/", &config));
    assert_eq!(server.config(), config);
    assert_eq!(server.get("/config/").json(), config);
    assert_eq!(
        server.get("/config/applications/").json(),
        config["applications"]
    );
    assert_eq!(
        server.get("/config/applications/echo/type/").json(),
        json!("wasm")
    );
    assert_eq!(server.get("/status/").json(), server.get("/status").json());
    assert_eq!(
        server.get("/status/connections/").json(),
        server.get("/status/connections").json()
    );
    assert_done(&server.put("/config/applications/echo/processes/", "2"));
    assert_eq!(
        server.get("/config/applications/echo/processes").json(),
        json!(2)
    );
    assert_done(&server.delete("/config/applications/echo/processes/"));
    assert_eq!(server.config(), config);
}

#[test]
fn double_slashes_merge() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    assert_eq!(server.get("//config").json(), config);
    assert_eq!(
        server.get("/config//applications").json(),
        config["applications"]
    );
    assert_eq!(
        server.get("/config///applications//echo//type").json(),
        json!("wasm")
    );
    assert_eq!(
        server.get("//status//connections").json(),
        server.get("/status/connections").json()
    );
    assert_done(&server.put("/config//applications//echo//processes", "2"));
    assert_eq!(
        server.get("/config/applications/echo/processes").json(),
        json!(2)
    );
}

#[test]
fn dot_segments_resolve() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    for (path, want) in [
        ("/config/./applications", config["applications"].clone()),
        (
            "/config/listeners/../applications",
            config["applications"].clone(),
        ),
        (
            "/config/applications/echo/..",
            config["applications"].clone(),
        ),
        ("/config/applications/echo/../echo/./type", json!("wasm")),
        ("/config/applications/nope/../echo/type", json!("wasm")),
        ("/status/../config", config.clone()),
        ("/./config", config.clone()),
        ("/../config", config.clone()),
        ("/config/../../config", config.clone()),
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
        assert_eq!(resp.json(), want, "GET {path}");
    }
    assert_eq!(
        server.get("/config/../status/connections").json(),
        server.get("/status/connections").json()
    );
    assert_done(&server.put("/config/applications/./echo/../echo/processes", "2"));
    assert_eq!(
        server.get("/config/applications/echo/processes").json(),
        json!(2)
    );
}

#[test]
fn the_query_string_is_ignored() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    assert_eq!(server.get("/config?x=1").json(), config);
    assert_eq!(server.get("/config/?x=1&y").json(), config);
    assert_eq!(
        server.get("/config/applications?x=/../..").json(),
        config["applications"]
    );
    assert_eq!(
        server.get("/config/applications/echo/type?").json(),
        json!("wasm")
    );
    assert_eq!(
        server.get("/status?pretty=false").json(),
        server.get("/status").json()
    );
    assert_eq!(server.get("/?a=b").json()["config"], config);
    assert_done(&server.put("/config/applications/echo/processes?x=y", "2"));
    let app = server.get("/config/applications/echo").json();
    assert_eq!(
        app["processes"],
        json!(2),
        "the query must not become part of the key: {app}"
    );
    assert_done(&server.delete("/config/applications/echo/processes?x=y"));
    assert_eq!(server.config(), config);
}

#[test]
fn segments_are_percent_decoded() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    let key = config["listeners"]
        .as_object()
        .expect("object")
        .keys()
        .next()
        .expect("a key")
        .clone();
    assert_eq!(
        server.get("/config/applications/%65%63%68%6F").json(),
        wasm_app(&echo_module(server.dir()))
    );
    assert_eq!(
        server.get("/config/applications/%65cho/type").json(),
        json!("wasm")
    );
    assert_eq!(
        server
            .get(&format!(
                "/config/listeners/{}",
                enc(&key).replace(':', "%3A")
            ))
            .json(),
        config["listeners"][&key]
    );
    // A wildcard listener, addressed raw and encoded.
    let star = format!("*:{}", crate::harness::free_port());
    let listener = json!({"pass": "applications/echo"});
    assert_done(&server.put_json(&format!("/config/listeners/{star}"), &listener));
    assert_eq!(
        server.get(&format!("/config/listeners/{star}")).json(),
        listener
    );
    assert_eq!(
        server
            .get(&format!(
                "/config/listeners/{}",
                star.replace('*', "%2A").replace(':', "%3a")
            ))
            .json(),
        listener
    );
    assert_done(&server.delete(&format!("/config/listeners/%2A{}", &star[1..])));
    assert_eq!(server.config(), config);
}

#[test]
fn an_encoded_slash_addresses_a_key_containing_a_slash() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let sock = server.dir().join("data-plane.sock");
    let key = format!("unix:{}", sock.display());
    let path = format!("/config/listeners/{}", enc(&key));
    assert!(path.contains("%2F"), "{path}");
    let listener = json!({"pass": "applications/echo"});

    assert_done(&server.put_json(&path, &listener));
    let listeners = server.get("/config/listeners").json();
    assert_eq!(
        listeners[&key], listener,
        "the key must be the decoded path: {listeners}"
    );
    assert_eq!(server.get(&path).json(), listener);
    assert_eq!(
        server.get(&format!("{path}/pass")).json(),
        json!("applications/echo")
    );
    // Unencoded, the slashes are separators: no such node.
    let raw = format!("/config/listeners/{key}");
    assert_error(&server.get(&raw), 404, NOT_FOUND);
    assert_done(&server.delete(&path));
    assert!(server.get("/config/listeners").json().get(&key).is_none());
}

#[test]
fn mime_types_with_a_slash_are_addressable() {
    let server = Server::start();
    let config = json!({
        "listeners": {},
        "routes": [],
        "applications": {},
        "settings": {"http": {"static": {"mime_types": {"text/plain": [".log", "README"]}}}}
    });
    server.load(&config);
    let base = "/config/settings/http/static/mime_types";
    assert_eq!(
        server.get(&format!("{base}/text%2Fplain")).json(),
        json!([".log", "README"])
    );
    assert_eq!(
        server.get(&format!("{base}/text%2fplain/1")).json(),
        json!("README")
    );
    assert_error(&server.get(&format!("{base}/text/plain")), 404, NOT_FOUND);

    assert_done(&server.put(&format!("{base}/text%2Fx-rust"), r#"".rs""#));
    assert_eq!(server.get(base).json()["text/x-rust"], json!(".rs"));
    assert_done(&server.post(&format!("{base}/text%2Fplain"), r#"".txt""#));
    assert_eq!(
        server.get(base).json()["text/plain"],
        json!([".log", "README", ".txt"])
    );
    assert_done(&server.delete(&format!("{base}/text%2Fx-rust")));
    assert!(server.get(base).json().get("text/x-rust").is_none());
}

#[test]
fn object_members_match_exactly() {
    let server = Server::start();
    let mut app = guest_app(server.dir(), "echo.wasm");
    app["environment"] = json!({"A": "upper", "a": "lower", "a b": "space", "0": "zero", "-1": "minus", "caf\u{e9}": "utf-8"});
    server.load(&json!({"listeners": {}, "routes": [], "applications": {"echo": app}}));
    let env = "/config/applications/echo/environment";
    for (key, want) in [
        ("A", "upper"),
        ("a", "lower"),
        ("a%20b", "space"),
        ("0", "zero"),
        ("-1", "minus"),
        ("caf%C3%A9", "utf-8"),
    ] {
        let resp = server.get(&format!("{env}/{key}"));
        assert_eq!(resp.status, 200, "GET {env}/{key}: {resp}");
        assert_eq!(resp.json(), json!(want), "GET {env}/{key}");
    }
    // In an object, "00" is not "0", and case matters.
    for key in ["00", "b", "a%20B", "%20a"] {
        assert_error(&server.get(&format!("{env}/{key}")), 404, NOT_FOUND);
    }
}

fn status_of(server: &Server, path: &str) -> Value {
    let resp = server.get(path);
    assert_eq!(resp.status, 200, "GET {path}: {resp}");
    resp.json()
}

#[test]
fn normalisation_applies_to_status_too() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let full = status_of(&server, "/status/applications/echo/processes");
    assert_eq!(
        status_of(&server, "/status//applications/./echo/processes/"),
        full
    );
    assert_eq!(
        status_of(&server, "/status/applications/%65cho/processes?x=1"),
        full
    );
    assert_eq!(
        status_of(&server, "/status/applications/nope/../echo/processes"),
        full
    );
}

#[test]
fn normalisation_applies_to_history_and_control_too() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let history = server.get("/history").json();
    let g = server.generation();
    for path in [
        "/history/",
        "/history?x=1",
        "//history",
        "/config/../history",
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
        assert_eq!(resp.json(), history, "GET {path}");
    }
    let entry = server.get(&format!("/history/{g}")).json();
    for path in [
        format!("/history/{g}/"),
        format!("/history//{g}?a=b"),
        format!("/history/./{g}"),
    ] {
        let resp = server.get(&path);
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
        assert_eq!(resp.json(), entry, "GET {path}");
    }
    for path in [
        "/control/applications/echo/restart?x=1",
        "/control//applications/echo/restart",
        "/control/applications/nope/../echo/restart",
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
        assert_eq!(resp.json(), json!({"success": "Ok"}), "GET {path}");
    }
}
