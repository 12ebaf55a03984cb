//! Wharf's additions to Unit's API: the generation number (`ETag`), conditional
//! changes (`If-Match`), `/history` and rollback (`POST /history/<n>/restore`).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::{Response, Server, assert_done, assert_error, echo_config, guest_app};

const PRECONDITION: &str = "Precondition failed.";

/// Seconds since the epoch of an RFC 3339 UTC timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`), or `None` if it is not one.
fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

#[test]
fn the_rfc3339_parser_used_here_is_right() {
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339_utc("2000-03-01T00:00:00.123Z"),
        Some(951_868_800)
    );
    assert_eq!(
        parse_rfc3339_utc("2024-02-29T12:34:56+00:00"),
        Some(1_709_210_096)
    );
    assert_eq!(parse_rfc3339_utc("2024-02-29 12:34:56Z"), None);
    assert_eq!(parse_rfc3339_utc("2024-02-29T12:34:56+01:00"), None);
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn history(server: &Server) -> Vec<Value> {
    let resp = server.get("/history");
    assert_eq!(resp.status, 200, "GET /history: {resp}");
    match resp.json() {
        Value::Array(entries) => entries,
        other => panic!("GET /history must be an array, got {other}"),
    }
}

/// Checks one history entry's members and types.
#[track_caller]
fn check_entry(entry: &Value) {
    assert!(
        entry["generation"].is_u64(),
        "generation must be a number: {entry}"
    );
    assert!(
        ["PUT", "POST", "DELETE"].contains(&entry["method"].as_str().unwrap_or("")),
        "method must be PUT, POST or DELETE: {entry}"
    );
    assert!(
        entry["path"].as_str().is_some_and(|p| p.starts_with('/')),
        "path: {entry}"
    );
    let time = entry["time"].as_str().unwrap_or("");
    let t = parse_rfc3339_utc(time)
        .unwrap_or_else(|| panic!("time {time:?} is not RFC 3339 UTC: {entry}"));
    assert!(
        (t - now()).abs() < 3600,
        "time {time:?} is not about now: {entry}"
    );
}

fn with_if_match(
    server: &Server,
    method: &str,
    path: &str,
    if_match: &str,
    body: Option<&str>,
) -> Response {
    server.request(
        method,
        path,
        &[("If-Match", if_match)],
        body.map(str::as_bytes),
    )
}

#[test]
fn config_responses_carry_the_generation_as_etag() {
    let server = Server::start();
    let g = server.get("/config").etag();
    assert_eq!(server.get("/config/listeners").etag(), g);
    assert_eq!(server.get("/config/routes/").etag(), g);

    let resp = server.put_json("/config", &echo_config(server.dir()));
    assert_done(&resp);
    assert_eq!(
        resp.etag(),
        g + 1,
        "a change answers with the new generation"
    );
    assert_eq!(server.get("/config").etag(), g + 1);

    let resp = server.post("/config/routes", r#"{"action": {"return": 204}}"#);
    assert_done(&resp);
    assert_eq!(resp.etag(), g + 2);
    let resp = server.delete("/config/routes/0");
    assert_done(&resp);
    assert_eq!(resp.etag(), g + 3);
    assert_eq!(server.generation(), g + 3);
}

#[test]
fn config_error_responses_carry_the_current_etag_too() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let g = server.generation();
    let stale = format!("\"{}\"", g + 7);
    let mut missing = Vec::new();
    for (method, path, headers, body, status) in [
        ("GET", "/config/nope", None, None, 404),
        (
            "PUT",
            "/config/applications/echo/processes",
            None,
            Some("0"),
            400,
        ),
        ("PUT", "/config", None, Some("{"), 400),
        ("PUT", "/config/nope/x", None, Some("1"), 404),
        ("POST", "/config/applications", None, Some("{}"), 405),
        ("DELETE", "/config/nope", None, None, 404),
        ("PATCH", "/config", None, Some("{}"), 405),
        (
            "PUT",
            "/config/routes",
            Some(("If-Match", stale.as_str())),
            Some("[]"),
            412,
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.into_iter().collect();
        let resp = server.request(method, path, &headers, body.map(str::as_bytes));
        assert_eq!(resp.status, status, "{method} {path}: {resp}");
        if resp.header("etag") != Some(format!("\"{g}\"").as_str()) {
            missing.push(format!(
                "{method} {path} -> {} with ETag {:?}",
                resp.status,
                resp.header("etag")
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "all /config responses carry the current generation as ETag \"{g}\"; these did not:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn refused_changes_do_not_commit() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let before = server.snapshot();
    let history_before = history(&server);
    for (method, path, body) in [
        ("PUT", "/config/applications/echo/processes", Some("0")),
        ("PUT", "/config", Some("{")),
        ("PUT", "/config/nope/x", Some("1")),
        ("POST", "/config/applications", Some("{}")),
        ("DELETE", "/config/nope", None),
        ("DELETE", "/config/applications/echo", None),
    ] {
        let resp = server.request(method, path, &[], body.map(str::as_bytes));
        assert!(resp.status >= 400, "{method} {path}: {resp}");
        server.assert_unchanged(&before, &format!("{method} {path}"));
    }
    assert_eq!(
        history(&server),
        history_before,
        "refused changes must not appear in the history"
    );
}

#[test]
fn if_match_with_the_current_generation_applies() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let g = server.generation();
    let resp = with_if_match(
        &server,
        "PUT",
        "/config/applications/echo/processes",
        &format!("\"{g}\""),
        Some("2"),
    );
    assert_done(&resp);
    assert_eq!(resp.etag(), g + 1);
    let resp = with_if_match(
        &server,
        "POST",
        "/config/routes",
        &format!("\"{}\"", g + 1),
        Some(r#"{"action": {"return": 204}}"#),
    );
    assert_done(&resp);
    let resp = with_if_match(
        &server,
        "DELETE",
        "/config/routes/0",
        &format!("\"{}\"", g + 2),
        None,
    );
    assert_done(&resp);
    let (tree, g_now) = server.snapshot();
    assert_eq!(g_now, g + 3);
    assert_eq!(tree["applications"]["echo"]["processes"], json!(2));
    assert_eq!(tree["routes"], json!([]));
}

#[test]
fn if_match_with_another_generation_is_412_and_changes_nothing() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    assert_done(&server.post("/config/routes", r#"{"action": {"return": 204}}"#));
    let before = server.snapshot();
    let g = before.1;
    let history_before = history(&server);
    for tag in [
        format!("\"{}\"", g - 1),
        format!("\"{}\"", g + 1),
        "\"999999\"".to_string(),
        "\"0\"".to_string(),
    ] {
        for (method, path, body) in [
            ("PUT", "/config/applications/echo/processes", Some("2")),
            (
                "PUT",
                "/config",
                Some(r#"{"listeners": {}, "routes": [], "applications": {}}"#),
            ),
            (
                "POST",
                "/config/routes",
                Some(r#"{"action": {"return": 205}}"#),
            ),
            ("DELETE", "/config/routes/0", None),
            ("DELETE", "/config", None),
        ] {
            let resp = with_if_match(&server, method, path, &tag, body);
            assert_error(&resp, 412, PRECONDITION);
            assert!(
                resp.json()["detail"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "a 412 carries a detail: {resp}"
            );
            server.assert_unchanged(&before, &format!("{method} {path} with If-Match {tag}"));
        }
    }
    assert_eq!(history(&server), history_before);
}

#[test]
fn if_match_star_always_matches() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let g = server.generation();
    assert_done(&with_if_match(
        &server,
        "PUT",
        "/config/applications/echo/processes",
        "*",
        Some("2"),
    ));
    assert_done(&with_if_match(
        &server,
        "POST",
        "/config/routes",
        "*",
        Some(r#"{"action": {"return": 204}}"#),
    ));
    assert_done(&with_if_match(
        &server,
        "DELETE",
        "/config/routes/0",
        "*",
        None,
    ));
    assert_eq!(server.generation(), g + 3);
}

#[test]
fn history_records_each_commit() {
    let server = Server::start();
    let start_len = history(&server).len();
    let mut trees: HashMap<u64, Value> = HashMap::new();
    let changes: [(&str, &str, Option<String>); 5] = [
        (
            "PUT",
            "/config",
            Some(echo_config(server.dir()).to_string()),
        ),
        (
            "POST",
            "/config/routes",
            Some(r#"{"action": {"return": 204}}"#.to_string()),
        ),
        (
            "PUT",
            "/config/applications/echo/processes",
            Some("2".to_string()),
        ),
        ("DELETE", "/config/applications/echo/processes", None),
        (
            "PUT",
            "/config/applications/other",
            Some(guest_app(server.dir(), "o.wasm").to_string()),
        ),
    ];
    let mut gens = Vec::new();
    for (method, path, body) in &changes {
        let resp = server.request(method, path, &[], body.as_deref().map(str::as_bytes));
        assert_done(&resp);
        let (tree, g) = server.snapshot();
        assert_eq!(resp.etag(), g);
        trees.insert(g, tree);
        gens.push(g);
    }
    let entries = history(&server);
    assert_eq!(entries.len(), start_len + changes.len(), "{entries:?}");
    let ours = &entries[entries.len() - changes.len()..];
    let mut last_time = i64::MIN;
    for ((entry, (method, path, _)), g) in ours.iter().zip(&changes).zip(&gens) {
        check_entry(entry);
        assert!(
            entry.get("config").is_none(),
            "the list does not carry trees: {entry}"
        );
        assert_eq!(entry["generation"], json!(g), "{entry}");
        assert_eq!(entry["method"], json!(method), "{entry}");
        assert_eq!(entry["path"], json!(path), "{entry}");
        let t = parse_rfc3339_utc(entry["time"].as_str().unwrap_or("")).unwrap_or(0);
        assert!(t >= last_time, "history times go backwards: {entries:?}");
        last_time = t;

        let resp = server.get(&format!("/history/{g}"));
        assert_eq!(resp.status, 200, "GET /history/{g}: {resp}");
        let full = resp.json();
        let mut expected = entry.clone();
        expected["config"] = trees[g].clone();
        assert_eq!(
            full, expected,
            "GET /history/{g} is the entry plus its tree"
        );
    }
    // Generations are consecutive, oldest first.
    for pair in entries.windows(2) {
        let (a, b) = (
            pair[0]["generation"].as_u64(),
            pair[1]["generation"].as_u64(),
        );
        assert_eq!(
            a.map(|a| a + 1),
            b,
            "history is not consecutive oldest-first: {entries:?}"
        );
    }
}

#[test]
fn unknown_history_entries_are_404() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let g = server.generation();
    for path in [
        format!("/history/{}", g + 1),
        "/history/999999".to_string(),
        "/history/abc".to_string(),
        "/history/-1".to_string(),
        "/history/99999999999999999999999999".to_string(),
    ] {
        assert_error(&server.get(&path), 404, "Value doesn't exist.");
    }
    let before = server.snapshot();
    let resp = server.post(&format!("/history/{}/restore", g + 1), "");
    assert_error(&resp, 404, "Value doesn't exist.");
    let resp = server.post("/history/999999/restore", "");
    assert_error(&resp, 404, "Value doesn't exist.");
    server.assert_unchanged(&before, "restores of unknown generations");
}

#[test]
fn history_keeps_the_last_100_commits() {
    let server = Server::start();
    let mut trees: HashMap<u64, Value> = HashMap::new();
    for i in 0..105u16 {
        let routes = json!([{"action": {"return": 200 + i}}]);
        let resp = server.put_json("/config/routes", &routes);
        assert_done(&resp);
        let mut tree = crate::harness::default_config();
        tree["routes"] = routes;
        trees.insert(resp.etag(), tree);
    }
    let g = server.generation();
    let entries = history(&server);
    assert_eq!(entries.len(), 100, "history holds the last 100 commits");
    let gens: Vec<u64> = entries
        .iter()
        .map(|e| e["generation"].as_u64().expect("generation"))
        .collect();
    assert_eq!(
        gens,
        (g - 99..=g).collect::<Vec<_>>(),
        "the last 100, oldest first"
    );
    for entry in &entries {
        check_entry(entry);
    }

    // The oldest kept one is complete; the one before it is gone.
    let oldest = g - 99;
    let resp = server.get(&format!("/history/{oldest}"));
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json()["config"], trees[&oldest]);
    let evicted = oldest - 1;
    assert_error(
        &server.get(&format!("/history/{evicted}")),
        404,
        "Value doesn't exist.",
    );
    let before = server.snapshot();
    let resp = server.post(&format!("/history/{evicted}/restore"), "");
    assert_error(&resp, 404, "Value doesn't exist.");
    server.assert_unchanged(&before, "restoring an evicted generation");
}

#[test]
fn restore_creates_a_new_generation_with_the_old_tree() {
    let server = Server::start();
    let tree_a = echo_config(server.dir());
    server.load(&tree_a);
    let a = server.generation();
    assert_done(&server.put("/config/applications/echo/processes", "3"));
    assert_done(&server.post("/config/routes", r#"{"action": {"return": 204}}"#));
    let g = server.generation();

    let resp = server.post(&format!("/history/{a}/restore"), "");
    assert_done(&resp);
    let (tree, g_now) = server.snapshot();
    assert_eq!(g_now, g + 1, "a restore is a new commit");
    assert_eq!(tree, tree_a);
    let last = history(&server).pop().expect("an entry");
    assert_eq!(last["generation"], json!(g + 1), "{last}");
    let resp = server.get(&format!("/history/{}", g + 1));
    assert_eq!(resp.json()["config"], tree_a);

    // Generations after `a` are still there and restorable.
    let resp = server.post(&format!("/history/{g}/restore"), "");
    assert_done(&resp);
    assert_eq!(
        server.get("/config/routes").json(),
        json!([{"action": {"return": 204}}])
    );
    assert_eq!(server.generation(), g + 2);

    // Restoring the current generation is a (no-op) commit too.
    let resp = server.post(&format!("/history/{}/restore", g + 2), "");
    assert_done(&resp);
    assert_eq!(server.generation(), g + 3);
    assert_eq!(
        server.get("/config/applications/echo/processes").json(),
        json!(3)
    );
}

#[test]
fn restore_honours_if_match() {
    let server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    let a = server.generation();
    assert_done(&server.put("/config/applications/echo/processes", "3"));
    let before = server.snapshot();
    let g = before.1;
    let path = format!("/history/{a}/restore");
    for tag in [format!("\"{a}\""), format!("\"{}\"", g + 1)] {
        let resp = with_if_match(&server, "POST", &path, &tag, Some(""));
        assert_error(&resp, 412, PRECONDITION);
        server.assert_unchanged(&before, &format!("restore with If-Match {tag}"));
    }
    assert_done(&with_if_match(
        &server,
        "POST",
        &path,
        &format!("\"{g}\""),
        Some(""),
    ));
    assert_eq!(server.snapshot(), (config, g + 1));
    assert_done(&with_if_match(
        &server,
        "POST",
        &format!("/history/{g}/restore"),
        "*",
        Some(""),
    ));
    let (tree, g_now) = server.snapshot();
    assert_eq!(g_now, g + 2);
    assert_eq!(tree["applications"]["echo"]["processes"], json!(3));
}

#[test]
fn a_change_that_changes_nothing_answers_success_and_commits_nothing() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let unchanged = |what: &str, resp: Response, before: &(Value, u64), entries: &[Value]| {
        assert_done(&resp);
        assert_eq!(
            resp.etag(),
            before.1,
            "{what}: the ETag is the current generation"
        );
        server.assert_unchanged(before, what);
        assert_eq!(history(&server), entries, "{what}: no history entry");
    };
    let before = server.snapshot();
    let entries = history(&server);
    let app = server.get("/config/applications/echo").json();
    unchanged(
        "a PUT of the value already there",
        server.put_json("/config/applications/echo", &app),
        &before,
        &entries,
    );
    unchanged(
        "a PUT of the whole tree as it is",
        server.put_json("/config", &before.0),
        &before,
        &entries,
    );

    // Member order is part of the tree: the same members in another order are a change.
    let mut reordered = serde_json::Map::new();
    for (key, value) in before.0.as_object().unwrap().iter().rev() {
        reordered.insert(key.clone(), value.clone());
    }
    assert_done(&server.put_json("/config", &Value::Object(reordered)));
    assert_eq!(server.generation(), before.1 + 1);

    assert_done(&server.delete("/config"));
    let before = server.snapshot();
    assert_eq!(before.0, json!({}));
    let entries = history(&server);
    unchanged(
        "a DELETE of the empty config",
        server.delete("/config"),
        &before,
        &entries,
    );
}
