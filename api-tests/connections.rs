//! HTTP connection handling on the control socket: keep-alive, `Connection: close`,
//! pipelining, HTTP/1.0.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, assert_done, default_config, request_bytes};

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start();
    let mut conn = server.conn();
    for i in 0..5u16 {
        let resp = conn
            .request("GET", "/config", &[], None)
            .expect("GET on a kept-alive connection");
        assert_eq!(resp.status, 200, "request #{i}: {resp}");
        let body = json!([{"action": {"return": 200 + i}}]).to_string();
        let resp = conn
            .request("PUT", "/config/routes", &[], Some(body.as_bytes()))
            .expect("PUT on a kept-alive connection");
        assert_done(&resp);
        let resp = conn
            .request("GET", "/status", &[], None)
            .expect("GET /status");
        assert_eq!(resp.status, 200, "{resp}");
    }
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 204}}])
    );
}

#[test]
fn connection_close_is_answered_then_closed() {
    let server = Server::start();
    let mut conn = server.conn();
    let resp = conn
        .request("GET", "/config", &[("Connection", "close")], None)
        .expect("GET with Connection: close");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), default_config());
    let rest = conn.read_to_close(Duration::from_secs(60));
    assert!(
        rest.closed,
        "the server must close after a Connection: close request"
    );
    assert!(
        rest.bytes.is_empty(),
        "nothing may follow the response: {:?}",
        String::from_utf8_lossy(&rest.bytes)
    );

    // A change with Connection: close (how Unit's own test suite talks).
    let mut conn = server.conn();
    let body = br#"{"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}}"#;
    let resp = conn
        .request(
            "PUT",
            "/config",
            &[
                ("Connection", "close"),
                ("Content-Type", "application/json"),
            ],
            Some(body),
        )
        .expect("PUT with Connection: close");
    assert_done(&resp);
    assert!(conn.read_to_close(Duration::from_secs(60)).closed);
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 204}}])
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut bytes = request_bytes(
        "PUT",
        "/config/routes",
        &[],
        Some(br#"[{"action": {"return": 201}}]"#),
    );
    bytes.extend(request_bytes(
        "GET",
        "/config/routes/0/action/return",
        &[],
        None,
    ));
    bytes.extend(request_bytes("GET", "/config/nope", &[], None));
    bytes.extend(request_bytes(
        "GET",
        "/status/requests",
        &[("Connection", "close")],
        None,
    ));
    conn.send(&bytes).expect("send pipelined requests");
    assert_done(&conn.read_response().expect("response 1"));
    let resp = conn.read_response().expect("response 2");
    assert_eq!(resp.json(), json!(201), "{resp}");
    let resp = conn.read_response().expect("response 3");
    assert_eq!(resp.status, 404, "{resp}");
    let resp = conn.read_response().expect("response 4");
    assert_eq!(resp.status, 200, "{resp}");
    assert!(resp.json().is_object(), "{resp}");
}

#[test]
fn http_1_0_requests_are_answered() {
    let server = Server::start();
    let mut conn = server.conn();
    conn.send(b"GET /config HTTP/1.0\r\n\r\n").expect("send");
    let resp = conn.read_response().expect("response to HTTP/1.0");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), default_config());
}

#[test]
fn a_request_with_any_or_no_content_type_is_fine() {
    // curl --data-binary sends `application/x-www-form-urlencoded`; scripts send none.
    let server = Server::start();
    let mut conn = server.conn();
    let body = br#"[{"action": {"return": 202}}]"#;
    let mut req = format!(
        "PUT /config/routes HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    conn.send(&req).expect("send");
    assert_done(&conn.read_response().expect("response"));
    let resp = server.request(
        "PUT",
        "/config/routes/0",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(br#"{"action": {"return": 203}}"#),
    );
    assert_done(&resp);
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 203}}])
    );
}

#[test]
fn expect_100_continue_is_handled() {
    // curl sends `Expect: 100-continue` for bodies over 1 MiB.
    let server = Server::start();
    let mut conn = server.conn();
    let body = br#"[{"action": {"return": 205}}]"#;
    let head = format!(
        "PUT /config/routes HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).expect("send head");
    // Whether or not the interim 100 comes, sending the body must work.
    conn.send(body).expect("send body");
    assert_done(&conn.read_response().expect("final response"));
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 205}}])
    );
}
