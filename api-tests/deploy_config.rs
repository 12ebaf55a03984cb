//! The config the container image and the Kubernetes ConfigMap serve, `deploy/wharf.json`
//! (the two are the same text: `scripts/check-deploy`): it applies, and its route answers
//! the probes' `/healthz` with 200 from the listener alone, `/echo` from the echo example
//! and anything else from hello. Run here with the module paths moved from the image's
//! examples dir to `target/wasm/` and the listener to a free local port.

use serde_json::Value;

use crate::harness::{Server, example_guest, get_from, listener_key};

/// Where the Dockerfile puts the example guests.
const IMAGE_EXAMPLES: &str = "/usr/local/share/wharf/examples/";

/// deploy/wharf.json with its listener on `key` and its modules in `target/wasm/`.
fn deploy_config(key: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/wharf.json");
    let text = std::fs::read_to_string(path).expect("read deploy/wharf.json");
    let mut config: Value = serde_json::from_str(&text).expect("deploy/wharf.json is JSON");
    let listeners = config["listeners"].as_object_mut().expect("listeners");
    let listener = listeners
        .remove("*:8080")
        .expect("the image listens on *:8080");
    listeners.insert(key.to_string(), listener);
    for app in config["applications"]
        .as_object_mut()
        .expect("applications")
        .values_mut()
    {
        let module = app["module"].as_str().expect("a module path");
        let name = module
            .strip_prefix(IMAGE_EXAMPLES)
            .and_then(|file| file.strip_suffix(".wasm"))
            .unwrap_or_else(|| panic!("{module} is not in the image's examples dir"));
        app["module"] = Value::String(example_guest(name));
    }
    config
}

#[test]
fn the_images_config_answers_the_probes_and_serves_the_examples() {
    let server = Server::start();
    let key = listener_key();
    server.load(&deploy_config(&key));

    let health = get_from(&key, "/healthz");
    assert_eq!(health.status, 200, "the probes' route: {health}");
    assert!(
        health.body.is_empty(),
        "a return action has no body: {health}"
    );

    let hello = get_from(&key, "/");
    assert_eq!(hello.status, 200, "{hello}");
    assert_eq!(hello.body, "Hello, World!\n", "{hello}");

    let echo = get_from(&key, "/echo?x=1");
    assert_eq!(echo.status, 200, "{echo}");
    assert!(
        echo.body.contains("/echo") && echo.body.contains("x=1"),
        "the echo example: {echo}"
    );
}
