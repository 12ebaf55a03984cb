//! GET, PUT, POST and DELETE on `/config/...`: the method rules of control-api.md
//! ("Methods"), reference checks, and the error shapes they produce.

use serde_json::{Value, json};

use crate::harness::{
    Server, assert_done, assert_error, echo_config, echo_module, guest_app, guest_file,
    listener_key, path_str, wasm_app,
};

const NOT_FOUND: &str = "Value doesn't exist.";
const NOT_ALLOWED: &str = "Method isn't allowed.";
const INVALID_CONF: &str = "Invalid configuration.";

fn route(code: u16) -> Value {
    json!({"action": {"return": code}})
}

/// A server holding `echo_config`, and that tree.
fn echo_server() -> (Server, Value) {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    assert_eq!(server.config(), config);
    (server, config)
}

fn listener_of(config: &Value) -> String {
    config["listeners"]
        .as_object()
        .and_then(|l| l.keys().next())
        .expect("a listener")
        .clone()
}

#[test]
fn get_returns_the_value_at_the_path_with_scalars_bare() {
    let (server, config) = echo_server();
    let key = listener_of(&config);

    let resp = server.get("/config/applications/echo/type");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), json!("wasm"));

    let resp = server.get(&format!("/config/listeners/{key}/pass"));
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), json!("applications/echo"));

    assert_done(&server.put("/config/applications/echo/processes", "3"));
    let resp = server.get("/config/applications/echo/processes");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), json!(3));
    assert_eq!(resp.body.trim(), "3", "a number comes back bare");

    let resp = server.get("/config/routes");
    assert_eq!(resp.json(), json!([]));
    let resp = server.get("/config/applications/echo");
    let mut echo = wasm_app(&echo_module(server.dir()));
    echo["processes"] = json!(3);
    assert_eq!(resp.json(), echo);
}

#[test]
fn get_of_a_missing_value_is_404() {
    let (server, config) = echo_server();
    let key = listener_of(&config);
    for path in [
        "/config/nope".to_string(),
        "/config/applications/nope".to_string(),
        "/config/applications/echo/nope".to_string(),
        "/config/applications/echo/type/deeper".to_string(),
        "/config/Applications".to_string(),
        "/config/applications/ECHO".to_string(),
        format!("/config/listeners/{key}/pass/x"),
        "/config/routes/0".to_string(),
    ] {
        let resp = server.get(&path);
        assert_error(&resp, 404, NOT_FOUND);
    }
}

#[test]
fn put_creates_a_missing_member() {
    let (server, mut config) = echo_server();
    let other = guest_app(server.dir(), "other.wasm");
    assert_done(&server.put_json("/config/applications/other", &other));
    config["applications"]["other"] = other;
    assert_eq!(server.config(), config);

    assert_done(&server.put("/config/applications/other/processes", "2"));
    config["applications"]["other"]["processes"] = json!(2);
    assert_eq!(server.config(), config);
}

#[test]
fn put_replaces_an_existing_value() {
    let (server, mut config) = echo_server();
    let v2 = path_str(&guest_file(server.dir(), "v2.wasm"));
    assert_done(&server.put_json("/config/applications/echo/module", &json!(v2)));
    config["applications"]["echo"]["module"] = json!(v2);
    assert_eq!(server.config(), config);

    let app = guest_app(server.dir(), "v3.wasm");
    assert_done(&server.put_json("/config/applications/echo", &app));
    config["applications"]["echo"] = app;
    assert_eq!(server.config(), config);
}

#[test]
fn put_never_creates_intermediate_nodes() {
    let server = Server::start();
    let before = server.snapshot();
    for (path, body) in [
        ("/config/settings/http/idle_timeout", "30"),
        ("/config/settings/http", r#"{"idle_timeout": 30}"#),
        ("/config/applications/nope/processes", "2"),
        ("/config/nope/deeper", "{}"),
    ] {
        let resp = server.put(path, body);
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("PUT {path}"));
    }
    // Creating the parent first makes the same change work.
    assert_done(&server.put("/config/settings", r#"{"http": {}}"#));
    assert_done(&server.put("/config/settings/http/idle_timeout", "30"));
    assert_eq!(
        server.config()["settings"],
        json!({"http": {"idle_timeout": 30}})
    );
}

#[test]
fn put_under_a_scalar_is_404() {
    let (server, config) = echo_server();
    let key = listener_of(&config);
    assert_done(&server.put_json("/config/routes", &json!([route(200)])));
    let before = server.snapshot();
    for path in [
        "/config/applications/echo/type/x".to_string(),
        "/config/applications/echo/type/0".to_string(),
        "/config/routes/0/action/return/x".to_string(),
        format!("/config/listeners/{key}/pass/x"),
    ] {
        let resp = server.put(&path, r#""y""#);
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("PUT {path}"));
        let resp = server.delete(&path);
        assert_error(&resp, 404, NOT_FOUND);
        let resp = server.post(&path, r#""y""#);
        assert_eq!(resp.status, 404, "POST {path}: {resp}");
        server.assert_unchanged(&before, &format!("POST/DELETE {path}"));
    }
}

#[test]
fn put_config_replaces_the_whole_tree() {
    let (server, _) = echo_server();
    let config = json!({
        "listeners": {listener_key(): {"pass": "routes"}},
        "routes": [route(204)],
        "applications": {}
    });
    server.load(&config);
    assert_eq!(
        server.config(),
        config,
        "nothing of the old tree may survive"
    );
}

#[test]
fn put_config_needs_an_object() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    for body in ["[]", r#""listeners""#, "5", "true", "null", "[{}]"] {
        let resp = server.put("/config", body);
        assert_eq!(resp.status, 400, "PUT /config {body}: {resp}");
        assert!(resp.json()["error"].is_string(), "{resp}");
        server.assert_unchanged(&before, &format!("PUT /config {body}"));
    }
}

#[test]
fn put_a_value_of_the_wrong_shape_is_invalid_configuration() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    for (path, body) in [
        (
            "/config/applications/echo/type",
            r#""python-but-not-really""#,
        ),
        ("/config/applications/echo/processes", "0"),
        ("/config/applications/echo/processes", r#""two""#),
        ("/config/listeners", "[]"),
        ("/config/routes", r#"[{"action": {"return": 1000}}]"#),
        ("/config/nonsense", "{}"),
    ] {
        let resp = server.put(path, body);
        assert_error(&resp, 400, INVALID_CONF);
        server.assert_unchanged(&before, &format!("PUT {path} {body}"));
    }
}

#[test]
fn validation_details_name_the_offending_path() {
    let (server, _) = echo_server();
    let mut app = guest_app(server.dir(), "bad.wasm");
    app.as_object_mut()
        .expect("object")
        .remove("request_handler");
    let resp = server.put_json("/config/applications/bad", &app);
    assert_error(&resp, 400, INVALID_CONF);
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("applications/bad") && detail.contains("request_handler"),
        "detail should name applications/bad/request_handler: {resp}"
    );

    let resp = server.put("/config/applications/echo/processes", "0");
    assert_error(&resp, 400, INVALID_CONF);
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("applications/echo/processes"),
        "detail should name applications/echo/processes: {resp}"
    );
}

#[test]
fn array_index_rules_for_get() {
    let server = Server::start();
    assert_done(&server.put_json("/config/routes", &json!([route(201), route(202)])));
    for (path, want) in [
        ("/config/routes/0", Some(route(201))),
        ("/config/routes/1", Some(route(202))),
        ("/config/routes/00", Some(route(201))),
        ("/config/routes/001", Some(route(202))),
        ("/config/routes/%30", Some(route(201))),
        ("/config/routes/0/action/return", Some(json!(201))),
        ("/config/routes/2", None),
        ("/config/routes/3", None),
        ("/config/routes/-1", None),
        ("/config/routes/-0", None),
        ("/config/routes/+0", None),
        ("/config/routes/+1", None),
        ("/config/routes/first", None),
        ("/config/routes/1a", None),
        ("/config/routes/0x1", None),
        ("/config/routes/1.0", None),
        ("/config/routes/%200", None),
        ("/config/routes/99999999999999999999999999999999", None),
    ] {
        let resp = server.get(path);
        match want {
            Some(value) => {
                assert_eq!(resp.status, 200, "GET {path}: {resp}");
                assert_eq!(resp.json(), value, "GET {path}");
            }
            None => assert_error(&resp, 404, NOT_FOUND),
        }
    }
}

#[test]
fn array_index_rules_for_put() {
    let server = Server::start();
    assert_done(&server.put_json("/config/routes", &json!([route(201), route(202)])));
    let before = server.snapshot();
    for path in [
        "/config/routes/3",
        "/config/routes/10",
        "/config/routes/-1",
        "/config/routes/+0",
        "/config/routes/+2",
        "/config/routes/first",
        "/config/routes/99999999999999999999999999999999",
    ] {
        let resp = server.put_json(path, &route(299));
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("PUT {path}"));
    }

    // index < len replaces (leading zeros allowed)
    assert_done(&server.put_json("/config/routes/00", &route(210)));
    assert_eq!(server.config()["routes"], json!([route(210), route(202)]));
    assert_done(&server.put_json("/config/routes/1", &route(211)));
    assert_eq!(server.config()["routes"], json!([route(210), route(211)]));
    // index == len appends
    assert_done(&server.put_json("/config/routes/2", &route(212)));
    assert_eq!(
        server.config()["routes"],
        json!([route(210), route(211), route(212)])
    );
    assert_done(&server.put_json("/config/routes/003", &route(213)));
    assert_eq!(
        server.config()["routes"],
        json!([route(210), route(211), route(212), route(213)])
    );
}

#[test]
fn array_index_rules_for_delete() {
    let server = Server::start();
    assert_done(&server.put_json(
        "/config/routes",
        &json!([route(201), route(202), route(203)]),
    ));
    let before = server.snapshot();
    for path in [
        "/config/routes/3",
        "/config/routes/-1",
        "/config/routes/+0",
        "/config/routes/x",
    ] {
        let resp = server.delete(path);
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("DELETE {path}"));
    }
    // Later elements shift down.
    assert_done(&server.delete("/config/routes/01"));
    assert_eq!(server.config()["routes"], json!([route(201), route(203)]));
    assert_done(&server.delete("/config/routes/0"));
    assert_eq!(server.config()["routes"], json!([route(203)]));
    let resp = server.get("/config/routes/0/action/return");
    assert_eq!(resp.json(), json!(203));
    assert_done(&server.delete("/config/routes/0"));
    assert_eq!(server.config()["routes"], json!([]));
}

#[test]
fn post_appends_one_element_to_an_array() {
    let (server, mut config) = echo_server();
    assert_done(&server.post_json("/config/routes", &route(201)));
    assert_done(&server.post_json("/config/routes/", &route(202)));
    config["routes"] = json!([route(201), route(202)]);
    assert_eq!(server.config(), config);

    // The body is one element, even when it is itself an array.
    assert_done(&server.put_json(
        "/config/routes/0",
        &json!({"match": {"method": ["GET"]}, "action": {"return": 201}}),
    ));
    assert_done(&server.post("/config/routes/0/match/method", r#""POST""#));
    assert_eq!(
        server.get("/config/routes/0/match/method").json(),
        json!(["GET", "POST"])
    );
    // An array body is appended as one element (here: not a method string, so the
    // tree is invalid), never spliced in (which would have made a valid tree).
    let before = server.snapshot();
    let resp = server.post("/config/routes/0/match/method", r#"["PUT"]"#);
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "POST of an array to an array of strings");
}

#[test]
fn post_appends_to_an_array_inside_named_routes() {
    let server = Server::start();
    let config = json!({
        "listeners": {listener_key(): {"pass": "routes/main"}},
        "routes": {"main": [route(201)]},
        "applications": {}
    });
    server.load(&config);
    assert_done(&server.post_json("/config/routes/main", &route(202)));
    assert_eq!(
        server.config()["routes"],
        json!({"main": [route(201), route(202)]})
    );
}

#[test]
fn post_to_something_that_is_not_an_array_is_405() {
    let (server, config) = echo_server();
    let key = listener_of(&config);
    let before = server.snapshot();
    for path in [
        "/config".to_string(),
        "/config/".to_string(),
        "/config/applications".to_string(),
        "/config/listeners".to_string(),
        format!("/config/listeners/{key}"),
        format!("/config/listeners/{key}/pass"),
        "/config/applications/echo/type".to_string(),
    ] {
        let resp = server.post_json(&path, &route(201));
        assert_error(&resp, 405, NOT_ALLOWED);
        server.assert_unchanged(&before, &format!("POST {path}"));
    }
}

#[test]
fn post_to_a_missing_path_is_404() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    for path in [
        "/config/nope",
        "/config/routes/0",
        "/config/routes/5",
        "/config/settings/http",
    ] {
        let resp = server.post_json(path, &route(201));
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("POST {path}"));
    }
}

#[test]
fn post_of_an_invalid_element_changes_nothing() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    let resp = server.post(
        "/config/routes",
        r#"{"action": {"return": 200, "pass": "applications/echo"}}"#,
    );
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "POST of an invalid route");
    let resp = server.post("/config/routes", r#"{"action": "#);
    assert_error(&resp, 400, "Invalid JSON.");
    server.assert_unchanged(&before, "POST of bad JSON");
}

#[test]
fn delete_removes_a_member() {
    let (server, mut config) = echo_server();
    let key = listener_of(&config);
    assert_done(&server.put("/config/applications/echo/processes", "2"));
    assert_done(&server.delete("/config/applications/echo/processes"));
    assert_eq!(server.config(), config);

    assert_done(&server.delete(&format!("/config/listeners/{key}")));
    assert_done(&server.delete("/config/applications/echo"));
    config["listeners"] = json!({});
    config["applications"] = json!({});
    assert_eq!(server.config(), config);
}

#[test]
fn delete_of_a_missing_value_is_404() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    for path in [
        "/config/nope",
        "/config/applications/nope",
        "/config/applications/echo/processes",
        "/config/routes/0",
        "/config/settings",
    ] {
        let resp = server.delete(path);
        assert_error(&resp, 404, NOT_FOUND);
        server.assert_unchanged(&before, &format!("DELETE {path}"));
    }
}

#[test]
fn delete_config_leaves_an_empty_object() {
    let (server, _) = echo_server();
    assert_done(&server.delete("/config"));
    assert_eq!(server.config(), json!({}));
    // And the tree can be rebuilt from there, one member at a time.
    assert_done(&server.put("/config/applications", "{}"));
    assert_done(&server.put("/config/routes", "[]"));
    assert_eq!(server.config(), json!({"applications": {}, "routes": []}));
    assert_done(&server.delete("/config/"));
    assert_eq!(server.config(), json!({}));
}

#[test]
fn a_pass_to_a_missing_application_is_rejected() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    let resp = server.put_json(
        &format!("/config/listeners/{}", listener_key()),
        &json!({"pass": "applications/nope"}),
    );
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "a listener passing to a missing app");

    let resp = server.post_json(
        "/config/routes",
        &json!({"action": {"pass": "applications/nope"}}),
    );
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "a route passing to a missing app");

    // `routes/<name>` needs routes to be an object.
    let resp = server.put_json(
        &format!("/config/listeners/{}", listener_key()),
        &json!({"pass": "routes/main"}),
    );
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "a listener passing to missing named routes");

    // `routes` with routes an array is fine.
    assert_done(&server.put_json(
        &format!("/config/listeners/{}", listener_key()),
        &json!({"pass": "routes"}),
    ));
}

#[test]
fn deleting_an_application_still_in_use_is_rejected() {
    let (server, _) = echo_server();
    let before = server.snapshot();
    let resp = server.delete("/config/applications/echo");
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "deleting a referenced app");
    let resp = server.delete("/config/applications");
    assert_error(&resp, 400, INVALID_CONF);
    server.assert_unchanged(&before, "deleting all apps");
}

#[test]
fn error_responses_have_the_documented_shape() {
    let (server, _) = echo_server();
    let resp = server.get("/config/nope");
    let body = resp.json();
    assert_eq!(body["error"], json!(NOT_FOUND), "{resp}");
    for (n, _) in body.as_object().expect("object") {
        assert!(
            ["error", "detail"].contains(&n.as_str()),
            "unexpected member {n:?} in {resp}"
        );
    }

    let resp = server.put("/config/applications/echo/processes", "0");
    let body = resp.json();
    assert_eq!(body["error"], json!(INVALID_CONF), "{resp}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "Invalid configuration must carry a detail: {resp}"
    );
    assert!(
        body.get("location").is_none(),
        "only bad JSON has a location: {resp}"
    );

    let resp = server.put("/config/applications/echo/processes", "{");
    let body = resp.json();
    assert_eq!(body["error"], json!("Invalid JSON."), "{resp}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{resp}"
    );
    let loc = &body["location"];
    for member in ["offset", "line", "column"] {
        assert!(
            loc[member].is_u64(),
            "location.{member} must be a number: {resp}"
        );
    }
}

#[test]
fn every_response_is_pretty_printed_json() {
    let (server, _) = echo_server();
    let mut responses = vec![
        server.get("/config"),
        server.get("/"),
        server.get("/status"),
        server.get("/config/nope"),
        server.get("/nope"),
        server.put("/config/applications/echo/processes", "0"),
        server.put("/config/applications/echo/processes", "{"),
        server.request("PATCH", "/config", &[], Some(b"{}")),
        server.request("DELETE", "/status", &[], None),
    ];
    responses.push(server.put("/config/applications/echo/processes", "2"));
    for resp in responses {
        let value = resp.json();
        assert!(value.is_object(), "{resp}");
        assert!(
            resp.body.trim().contains('\n'),
            "an object response should be pretty-printed over several lines:\n{resp}"
        );
    }
}
