//! `share` actions (`docs/configuration.md`, Unit's `nxt_http_static.c`): files served
//! from disk with Unit's status codes and headers, conditional requests, byte ranges, a
//! 1 GiB file with the RSS flat, and adversarial paths that must never serve a file
//! outside what the config allows.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::harness::{
    IO_TIMEOUT, Server, connect_listener, example_app, fetch, get_from, listener_key, path_str,
    raw_request, read_head, vm_rss_kib,
};

const SECRET: &str = "the secret outside the share";

/// `<dir>/www` with a few files, and `<dir>/secret` beside it (outside it).
fn site(dir: &Path) -> String {
    let www = dir.join("www");
    fs::create_dir_all(www.join("dir")).unwrap();
    fs::create_dir_all(www.join("app")).unwrap();
    fs::write(www.join("index.html"), "<p>home</p>\n").unwrap();
    fs::write(www.join("app/index.html"), "<p>app</p>\n").unwrap();
    fs::write(www.join("style.css"), "p {}\n").unwrap();
    fs::write(www.join("logo.png"), "png").unwrap();
    fs::write(www.join("logo.svg"), "svg").unwrap();
    fs::write(www.join("notes.txt"), "0123456789").unwrap();
    fs::write(www.join("data.wh"), "wharf").unwrap();
    fs::write(www.join("README"), "read me").unwrap();
    fs::write(dir.join("secret"), SECRET).unwrap();
    path_str(&www)
}

/// A server with one listener on `routes`.
fn serve(routes: Value, extra: Value) -> (Server, String, String) {
    let server = Server::start();
    let www = site(server.dir());
    let key = listener_key();
    let routes = serde_json::to_string(&routes)
        .unwrap()
        .replace("@WWW@", &www)
        .replace("@DIR@", &path_str(server.dir()));
    let mut config = json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": serde_json::from_str::<Value>(&routes).unwrap(),
        "applications": {"api": example_app("echo")}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    server.load(&config);
    (server, key, www)
}

#[test]
fn front_end_files_with_fallback_to_a_wasm_app() {
    // The route at the top of issue 16.
    let (_server, key, _) = serve(
        json!([
            {"match": {"uri": "/api/*"}, "action": {"pass": "applications/api"}},
            {"action": {"share": "@WWW@$uri", "fallback": {"pass": "applications/api"}}}
        ]),
        json!({}),
    );
    let home = get_from(&key, "/");
    assert_eq!(home.status, 200, "{home}");
    assert_eq!(home.body, "<p>home</p>\n");
    assert_eq!(home.header("content-type"), Some("text/html"));
    let css = get_from(&key, "/style.css");
    assert_eq!((css.status, css.body.as_str()), (200, "p {}\n"));
    assert_eq!(css.header("content-type"), Some("text/css"));
    let app = get_from(&key, "/app/");
    assert_eq!(app.body, "<p>app</p>\n");
    // No file: the app answers, with the request as sent.
    let missing = get_from(&key, "/missing?x=1");
    assert_eq!(missing.status, 200, "{missing}");
    assert!(
        missing.body.contains("REQUEST_PATH = /missing?x=1\n"),
        "{missing}"
    );
    assert!(missing.body.contains("QUERY        = x=1\n"), "{missing}");
    let api = get_from(&key, "/api/users");
    assert!(api.body.contains("REQUEST_PATH = /api/users\n"), "{api}");
    // Not GET or HEAD: the fallback, as in Unit, even where a file exists.
    let post = fetch(&key, "POST", "/index.html", &[], Some(b"x")).unwrap();
    assert!(post.body.contains("METHOD       = POST\n"), "{post}");
}

#[test]
fn status_codes_and_headers_as_unit() {
    let (_server, key, www) = serve(
        json!([
            {"match": {"uri": "/typed/*"}, "action": {
                "rewrite": "/$arg_f",
                "share": "@WWW@$uri", "types": ["image/*", "!image/svg+xml"]}},
            {"match": {"uri": "/two/*"}, "action": {
                "rewrite": "/$arg_f",
                "share": ["@DIR@/nowhere$uri", "@WWW@$uri"], "index": "notes.txt"}},
            {"action": {"share": "@WWW@$uri",
                "response_headers": {"Cache-Control": "max-age=60", "X-Uri": "$uri"}}}
        ]),
        json!({"settings": {"http": {"static": {"mime_types": {
            "text/x-wharf": [".wh", "readme"]
        }}}}}),
    );
    assert_eq!(get_from(&key, "/missing").status, 404);
    assert_eq!(
        get_from(&key, "/dir/").status,
        404,
        "a directory without its index"
    );
    let post = fetch(&key, "POST", "/index.html", &[], Some(b"x")).unwrap();
    assert_eq!(post.status, 405, "{post}");
    let delete = fetch(&key, "DELETE", "/index.html", &[], None).unwrap();
    assert_eq!(delete.status, 405, "{delete}");

    // A directory without its slash: 301 to it, the query kept, nothing else.
    let dir = get_from(&key, "/dir?a=1&b");
    assert_eq!(dir.status, 301, "{dir}");
    assert_eq!(dir.header("location"), Some("/dir/?a=1&b"));
    assert_eq!(dir.header("content-length"), Some("0"));
    assert_eq!(dir.header("cache-control"), Some("max-age=60"));

    // Validators in Unit's form, and response_headers on the file.
    let notes = get_from(&key, "/notes.txt");
    assert_eq!(notes.status, 200, "{notes}");
    let meta = fs::metadata(Path::new(&www).join("notes.txt")).unwrap();
    let etag = format!("\"{:x}-{:x}\"", meta.mtime(), meta.len());
    assert_eq!(notes.header("etag"), Some(etag.as_str()));
    let last_modified = notes.header("last-modified").unwrap().to_string();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert_eq!(notes.header("content-type"), Some("text/plain"));
    assert_eq!(notes.header("content-length"), Some("10"));
    assert_eq!(notes.header("accept-ranges"), Some("bytes"));
    assert_eq!(notes.header("x-uri"), Some("/notes.txt"));

    // Conditional requests.
    for headers in [
        vec![("If-None-Match", etag.as_str())],
        vec![("If-None-Match", "\"other\", *")],
        vec![("If-Modified-Since", last_modified.as_str())],
    ] {
        let same = fetch(&key, "GET", "/notes.txt", &headers, None).unwrap();
        assert_eq!(same.status, 304, "{headers:?}: {same}");
        assert!(same.bytes.is_empty());
        assert_eq!(same.header("etag"), Some(etag.as_str()));
        assert_eq!(same.header("content-length"), None);
    }
    for headers in [
        vec![("If-None-Match", "\"other\"")],
        vec![("If-Modified-Since", "Mon, 01 Jan 1990 00:00:00 GMT")],
        vec![
            ("If-None-Match", "\"other\""),
            ("If-Modified-Since", last_modified.as_str()),
        ],
    ] {
        let changed = fetch(&key, "GET", "/notes.txt", &headers, None).unwrap();
        assert_eq!(changed.status, 200, "{headers:?}: {changed}");
        assert_eq!(changed.body, "0123456789");
    }

    // MIME types: built in, configured (extension or whole name), none.
    let wh = get_from(&key, "/data.wh");
    assert_eq!(wh.header("content-type"), Some("text/x-wharf"));
    let readme = get_from(&key, "/README");
    assert_eq!(readme.header("content-type"), Some("text/x-wharf"));

    // `types`, with negation.
    assert_eq!(get_from(&key, "/typed/?f=logo.png").status, 200);
    assert_eq!(get_from(&key, "/typed/?f=logo.svg").status, 403);
    assert_eq!(get_from(&key, "/typed/?f=notes.txt").status, 403);
    // Paths tried in order, and a custom index.
    let second = get_from(&key, "/two/?f=style.css");
    assert_eq!((second.status, second.body.as_str()), (200, "p {}\n"));
    let index = get_from(&key, "/two/?f=");
    assert_eq!((index.status, index.body.as_str()), (200, "0123456789"));

    // HEAD: the GET's head without its body (the next response follows at once).
    let mut stream = TcpStream::connect(key.replace("*", "127.0.0.1")).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let host: &[(&[u8], &[u8])] = &[(b"Host", b"x")];
    let mut both = raw_request("HEAD", b"/notes.txt", host, None);
    both.extend(raw_request("GET", b"/style.css", host, None));
    stream.write_all(&both).unwrap();
    let (status, headers) = read_head(&mut stream).unwrap();
    assert_eq!(status, 200);
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("content-length").as_deref(), Some("10"));
    assert_eq!(field("etag"), Some(etag.clone()));
    let (status, headers) = read_head(&mut stream).unwrap();
    assert_eq!(status, 200, "{headers:?}");
    let mut body = [0u8; 5];
    stream.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"p {}\n");
}

#[test]
fn byte_ranges() {
    let (_server, key, _) = serve(json!([{"action": {"share": "@WWW@$uri"}}]), json!({}));
    let range = |value: &str| fetch(&key, "GET", "/notes.txt", &[("Range", value)], None).unwrap();
    let part = range("bytes=2-4");
    assert_eq!(part.status, 206, "{part}");
    assert_eq!(part.body, "234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    let tail = range("bytes=-3");
    assert_eq!((tail.status, tail.body.as_str()), (206, "789"));
    let open = range("bytes=7-");
    assert_eq!((open.status, open.body.as_str()), (206, "789"));
    let beyond = range("bytes=10-");
    assert_eq!(beyond.status, 416, "{beyond}");
    assert_eq!(beyond.header("content-range"), Some("bytes */10"));
    // Several ranges, or one that is malformed: the whole file.
    for value in ["bytes=0-1,3-4", "bytes=4-2", "lines=1-2"] {
        let whole = range(value);
        assert_eq!(
            (whole.status, whole.body.as_str()),
            (200, "0123456789"),
            "{value}"
        );
    }
    // If-Range: served only while the validator still holds.
    let etag = get_from(&key, "/notes.txt")
        .header("etag")
        .unwrap()
        .to_string();
    let fresh = fetch(
        &key,
        "GET",
        "/notes.txt",
        &[("Range", "bytes=0-0"), ("If-Range", &etag)],
        None,
    )
    .unwrap();
    assert_eq!((fresh.status, fresh.body.as_str()), (206, "0"));
    let stale = fetch(
        &key,
        "GET",
        "/notes.txt",
        &[("Range", "bytes=0-0"), ("If-Range", "\"stale\"")],
        None,
    )
    .unwrap();
    assert_eq!(stale.status, 200);
}

/// The response to a raw target on a fresh connection: its status and body.
fn raw_get(key: &str, target: &[u8]) -> (u16, Vec<u8>) {
    let mut conn = connect_listener(key).unwrap();
    conn.send(&raw_request("GET", target, &[(b"Host", b"x")], None))
        .unwrap();
    let response = conn.read_response().unwrap();
    (response.status, response.bytes)
}

#[track_caller]
fn refused(key: &str, target: &[u8]) -> u16 {
    let (status, body) = raw_get(key, target);
    let text = String::from_utf8_lossy(&body);
    assert!(
        status != 200 && !text.contains(SECRET),
        "{}: {status} {text}",
        String::from_utf8_lossy(target)
    );
    status
}

#[test]
fn no_path_escapes_the_share() {
    let (server, key, www) = serve(
        json!([
            {"match": {"uri": "/jail/*"}, "action": {
                "share": "@WWW@/$arg_f", "chroot": "@WWW@"}},
            {"match": {"uri": "/strict/*"}, "action": {
                "rewrite": "/$arg_f", "share": "@WWW@$uri", "follow_symlinks": false}},
            {"match": {"uri": "/outside/*"}, "action": {
                "share": "@DIR@/secret", "chroot": "@WWW@"}},
            {"action": {"share": "@WWW@$uri"}}
        ]),
        json!({}),
    );
    let secret = path_str(&server.dir().join("secret"));
    std::os::unix::fs::symlink(&secret, Path::new(&www).join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", Path::new(&www).join("rel-link")).unwrap();
    std::os::unix::fs::symlink("notes.txt", Path::new(&www).join("notes-link")).unwrap();

    // Dot segments, plain or encoded, and NUL never leave the share: Unit refuses them
    // in the target.
    for target in [
        &b"/../secret"[..],
        b"/%2e%2e/secret",
        b"/%2E%2E/%2e%2e/secret",
        b"/dir/..%2f..%2fsecret",
        b"/dir/%2e%2e/%2e%2e/secret",
        b"/.%2e/secret",
        b"/secret%00.html",
        b"/index.html%00",
    ] {
        refused(&key, target);
    }
    assert_eq!(
        raw_get(&key, b"/dir/%2e%2e/notes.txt").0,
        200,
        "inside is fine"
    );

    // Under a chroot, `..` and absolute symlinks resolve inside it.
    for f in [
        "../secret",
        "..%2fsecret",
        "%2e%2e/secret",
        "abs-link",
        "rel-link",
        "dir/../../secret",
        "a%00b",
    ] {
        refused(&key, format!("/jail/?f={f}").as_bytes());
    }
    let inside = get_from(&key, "/jail/?f=notes.txt");
    assert_eq!((inside.status, inside.body.as_str()), (200, "0123456789"));
    // A share outside its chroot: 403.
    assert_eq!(refused(&key, b"/outside/"), 403);

    // Symlinks followed by default (the share has no chroot), refused when told.
    let (status, _) = raw_get(&key, b"/abs-link");
    assert_eq!(status, 200, "the default follows symlinks, as Unit");
    assert_eq!(refused(&key, b"/strict/?f=abs-link"), 403);
    assert_eq!(refused(&key, b"/strict/?f=rel-link"), 403);
    assert_eq!(refused(&key, b"/strict/?f=notes-link"), 403);
    let plain = get_from(&key, "/strict/?f=notes.txt");
    assert_eq!(plain.status, 200, "{plain}");
}

#[test]
fn mount_points_are_not_crossed_when_told() {
    // /proc is a mount point of its own wherever it is mounted; the test needs one.
    let (Ok(root), Ok(proc)) = (fs::metadata("/"), fs::metadata("/proc/self")) else {
        println!("skipped: no /proc to cross into");
        return;
    };
    if root.dev() == proc.dev() {
        println!("skipped: /proc is not a separate mount here");
        return;
    }
    let (_server, key, _) = serve(
        json!([
            {"match": {"uri": "/stay/*"}, "action": {
                "rewrite": "/$arg_f", "share": "$uri", "chroot": "/", "traverse_mounts": false}},
            {"match": {"uri": "/www/*"}, "action": {
                "rewrite": "/$arg_f", "share": "@WWW@$uri", "chroot": "@WWW@",
                "traverse_mounts": false}},
            {"action": {"rewrite": "/$arg_f", "share": "$uri", "chroot": "/"}}
        ]),
        json!({}),
    );
    let crossed = get_from(&key, "/any/?f=proc/self/status");
    assert_eq!(crossed.status, 200, "{crossed}");
    assert_eq!(get_from(&key, "/stay/?f=proc/self/status").status, 403);
    let same = get_from(&key, "/www/?f=notes.txt");
    assert_eq!(
        same.status, 200,
        "no mount crossed under the chroot: {same}"
    );
}

#[test]
fn a_1_gib_file_leaves_the_rss_flat() {
    let (server, key, www) = serve(json!([{"action": {"share": "@WWW@$uri"}}]), json!({}));
    const SIZE: u64 = 1 << 30;
    // Sparse: a GiB of file without a GiB of disk.
    let big = fs::File::create(Path::new(&www).join("big.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    drop(big);
    assert_eq!(get_from(&key, "/notes.txt").status, 200);
    let before = vm_rss_kib(server.pid()).unwrap();

    let mut stream = TcpStream::connect(key.replace("*", "127.0.0.1")).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(&raw_request("GET", b"/big.bin", &[(b"Host", b"x")], None))
        .unwrap();
    let (status, headers) = read_head(&mut stream).unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), SIZE.to_string())));
    assert!(headers.contains(&("content-type".into(), "application/octet-stream".into())));
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    let mut peak = before;
    while received < SIZE {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        assert!(buf[..n].iter().all(|&b| b == 0));
        received += n as u64;
        if received % (64 << 20) < n as u64 {
            peak = peak.max(vm_rss_kib(server.pid()).unwrap());
        }
    }
    assert_eq!(received, SIZE);
    let after = vm_rss_kib(server.pid()).unwrap();
    peak = peak.max(after);
    // Generous: the body is never held, so the RSS moves by buffers, not by the file.
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB serving 1 GiB"
    );
    // A range at the end of it.
    let tail = fetch(&key, "GET", "/big.bin", &[("Range", "bytes=-5")], None).unwrap();
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.header("content-range"),
        Some("bytes 1073741819-1073741823/1073741824")
    );
    assert_eq!(tail.bytes, vec![0u8; 5]);
}

#[test]
fn share_configs_are_checked() {
    let server = Server::start();
    let before = server.snapshot();
    for (action, path) in [
        (json!({"share": "/srv$nope"}), "routes/0/action/share"),
        (
            json!({"share": ["/a", "/b$nope"]}),
            "routes/0/action/share/1",
        ),
        (
            json!({"share": "/s", "chroot": "$nope"}),
            "routes/0/action/chroot",
        ),
        (
            json!({"share": "/s", "types": "~("}),
            "routes/0/action/types",
        ),
        (
            json!({"share": "/s", "fallback": {"pass": "applications/none"}}),
            "routes/0/action/fallback/pass",
        ),
        (
            json!({"share": "/s", "fallback": {"proxy": "http://localhost:9"}}),
            "routes/0/action/fallback/proxy",
        ),
    ] {
        let config = json!({"listeners": {}, "routes": [{"action": action}], "applications": {}});
        let response = server.put_json("/config", &config);
        assert_eq!(response.status, 400, "{action}: {response}");
        assert!(response.body.contains(path), "{action}: {response}");
    }
    let clash = json!({"listeners": {}, "routes": [], "applications": {},
        "settings": {"http": {"static": {"mime_types": {"a/b": ".x", "c/d": ".X"}}}}});
    let response = server.put_json("/config", &clash);
    assert_eq!(response.status, 400, "{response}");
    assert!(
        response.body.contains("settings/http/static/mime_types"),
        "{response}"
    );
    server.assert_unchanged(&before, "refused share configs");
}
