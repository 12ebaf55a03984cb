//! `processes` unset means one instance, as in Unit: a guest that keeps state in its
//! memory sees every request of its app, however many arrive at once.

use serde_json::json;

use crate::harness::*;

/// Counts requests in a global and answers status 200 + the count, after a spin long
/// enough that concurrent requests overlap (so a second instance, if any, is used).
const COUNTING: &str = "
    (if (call $first_call (local.get $addr))
      (then
        (global.set $served (i32.add (global.get $served) (i32.const 1)))
        (local.set $spin (i32.const 20000000))
        (loop $busy
          (local.set $spin (i32.sub (local.get $spin) (i32.const 1)))
          (br_if $busy (i32.gt_s (local.get $spin) (i32.const 0))))
        (call $set_status (i32.add (i32.const 200) (global.get $served)))
        (call $respond (local.get $addr))))
    (i32.const 0)";

#[test]
fn unset_processes_is_one_instance_that_sees_every_request() {
    let server = Server::start();
    let mut wat = Wat::with_handler(&format!("(local $spin i32){COUNTING}"));
    wat.extra = "(global $served (mut i32) (i32.const 0))".to_owned();
    let module = write_file(server.dir(), "counting.wasm", wat.render().as_bytes());
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/counting"}},
        "applications": {"counting": wasm_app(&path_str(&module))}
    }));

    const REQUESTS: u16 = 8;
    let mut statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..REQUESTS)
            .map(|_| scope.spawn(|| fetch(&key, "GET", "/", &[], None).unwrap().status))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    statuses.sort_unstable();
    let expected: Vec<u16> = (1..=REQUESTS).map(|n| 200 + n).collect();
    assert_eq!(
        statuses, expected,
        "every request must reach the one instance, in turn"
    );
}
