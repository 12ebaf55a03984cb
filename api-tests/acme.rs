//! `settings.acme` against a real ACME server: Debian's `pebble`, started by each test on
//! loopback with `pebble-challtestsrv` as its DNS (every name is 127.0.0.1), so that
//! pebble validates HTTP-01 against Wharf's own plain listener. A bundle is issued,
//! served over TLS to a client that trusts only pebble's root, renewed before it expires
//! (short validity) under a client loop that sees no failure, and kept serving when a
//! renewal's challenge fails; a restart keeps a valid bundle and the account.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, assert_error, free_port, path_str, wait_until};
use crate::tls::{TestCa, TlsConn, client_trusting};

/// How long an issuance may take on a loaded machine (pebble validates in well under a
/// second here).
const ISSUE_LIMIT: Duration = Duration::from_secs(90);

/// pebble and its DNS server, killed when dropped (their logs printed if a test failed).
struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    directory: String,
    /// The test CA pebble's own HTTPS server presents.
    https_ca: TestCa,
    management_port: u16,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and issuing certificates valid
    /// for `validity` seconds.
    fn start(http_port: u16, validity: u64) -> Pebble {
        let dir = tempfile::Builder::new()
            .prefix("wharf-pebble-")
            .tempdir()
            .unwrap();
        let https_ca = TestCa::new();
        let bundle = dir.path().join("pebble.pem");
        fs::write(&bundle, https_ca.bundle(&["127.0.0.1", "localhost"])).unwrap();
        let (acme_port, management_port, dns_port) = (free_port(), free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            // Go reads the certificates and the first key from one PEM file.
            "certificate": path_str(&bundle),
            "privateKey": path_str(&bundle),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let config_path = dir.path().join("pebble.json");
        fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| Stdio::from(fs::File::create(dir.path().join(name)).unwrap());
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect(
                "start pebble-challtestsrv (Debian's pebble package; scripts/setup installs it)",
            );
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random waits or nonce rejections, and a new challenge for every order,
            // so that a renewal proves its names again.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble (Debian's pebble package; scripts/setup installs it)");
        let pebble = Pebble {
            dir,
            children: vec![dns, pebble],
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            https_ca,
            management_port,
        };
        let up = |port| {
            wait_until(Duration::from_secs(30), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
        };
        assert!(
            up(acme_port) && up(management_port),
            "pebble did not start\n{}",
            pebble.logs()
        );
        pebble
    }

    /// Where Wharf finds the root pebble's HTTPS server is checked against.
    fn https_ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("pebble-https-ca.pem");
        fs::write(&path, &self.https_ca.pem).unwrap();
        path
    }

    /// The root pebble issues under, from its management interface.
    fn issuing_root(&self) -> String {
        let client = self.https_ca.client(false);
        let mut conn = TlsConn::open(&client, self.management_port, "127.0.0.1").unwrap();
        let (status, root) = conn.get("/roots/0", "127.0.0.1").unwrap();
        assert_eq!(status, 200, "{root}");
        root
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for name in [
            "pebble.log",
            "pebble.err",
            "challtestsrv.log",
            "challtestsrv.err",
        ] {
            let mut text = String::new();
            if let Ok(mut file) = fs::File::open(self.dir.path().join(name)) {
                let _ = file.read_to_string(&mut text);
            }
            all.push_str(&format!("--- {name}\n{text}\n"));
        }
        all
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A plain listener for HTTP-01, a TLS listener presenting the managed bundle `site`,
/// and a route answering 200 to everything else.
fn acme_config(plain: u16, tls: u16, pebble: &Pebble, names: &[&str]) -> Value {
    json!({
        "listeners": {
            format!("127.0.0.1:{plain}"): {"pass": "routes"},
            format!("127.0.0.1:{tls}"): {"pass": "routes", "tls": {"certificate": "site"}},
        },
        "routes": [{"action": {"return": 200}}],
        "applications": {},
        "settings": {"acme": {
            "directory": pebble.directory,
            "ca_certificate": path_str(&pebble.https_ca_file()),
            "contact": "mailto:ops@wharf.test",
            "certificates": {"site": {"names": names}},
        }},
    })
}

fn acme_state(server: &Server) -> Value {
    server.get("/status/acme/site").json()
}

#[track_caller]
fn wait_for_state(server: &Server, pebble: &Pebble, state: &str) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(ISSUE_LIMIT, || {
        last = acme_state(server);
        last["state"] == state
    });
    assert!(
        reached,
        "the bundle never became {state}: {last}\n{}\n{}",
        server.log(),
        pebble.logs()
    );
    last
}

/// The leaf a TLS handshake for `name` presents, checked against pebble's root; and
/// the answer to a request on it.
fn served_leaf(
    client: &Arc<rustls::ClientConfig>,
    port: u16,
    name: &str,
) -> std::io::Result<Vec<u8>> {
    let mut conn = TlsConn::open(client, port, name)?;
    let (status, _) = conn.get("/", name)?;
    if status != 200 {
        return Err(std::io::Error::other(format!("status {status}")));
    }
    Ok(conn.peer_leaf())
}

#[test]
fn a_bundle_is_issued_renewed_without_a_failed_request_and_kept_when_a_challenge_fails() {
    let (plain, tls) = (free_port(), free_port());
    // Valid 20 s: the renewal is due after two thirds of it.
    let pebble = Pebble::start(plain, 20);
    let server = Server::start();
    let names = ["a.wharf.test", "b.wharf.test"];
    server.load(&acme_config(plain, tls, &pebble, &names));
    let issued = wait_for_state(&server, &pebble, "valid");
    assert_eq!(issued["names"], json!(names), "{issued}");
    assert_eq!(issued["failures"], 0, "{issued}");
    assert!(
        issued["expires"].is_string() && issued["next_attempt"].is_string(),
        "{issued}"
    );

    // Served for each name, to a client that trusts only pebble's root.
    let client = client_trusting(&pebble.issuing_root(), false);
    let first = served_leaf(&client, tls, "a.wharf.test").unwrap();
    assert_eq!(served_leaf(&client, tls, "b.wharf.test").unwrap(), first);
    let described = server.get("/certificates/site/chain/0/subject/alt_names");
    let mut alt_names: Vec<String> = serde_json::from_value(described.json()).unwrap();
    alt_names.sort();
    assert_eq!(
        alt_names, names,
        "installed like an uploaded bundle (in the CA's order)"
    );
    // A managed bundle cannot be deleted while the config manages it.
    assert_error(
        &server.delete("/certificates/site"),
        400,
        "Certificate is used in the configuration.",
    );

    // Renewal, under a loop of new connections that must all succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let looping = {
        let (stop, failures, requests) = (stop.clone(), failures.clone(), requests.clone());
        let client = client.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match served_leaf(&client, tls, "a.wharf.test") {
                    Ok(_) => requests.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut renewed = Vec::new();
    let was_renewed = wait_until(ISSUE_LIMIT, || {
        renewed = served_leaf(&client, tls, "a.wharf.test").unwrap_or_default();
        !renewed.is_empty() && renewed != first
    });
    stop.store(true, Ordering::Relaxed);
    looping.join().unwrap();
    assert!(
        was_renewed,
        "not renewed\n{}\n{}",
        server.log(),
        pebble.logs()
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the renewal"
    );
    assert!(requests.load(Ordering::Relaxed) > 0);
    assert_eq!(wait_for_state(&server, &pebble, "valid")["failures"], 0);

    // The plain listener moves off the port pebble validates on: the next renewal's
    // challenge fails, and the renewed bundle keeps serving.
    server.load(&acme_config(free_port(), tls, &pebble, &names));
    let failed = wait_for_state(&server, &pebble, "failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("challenge") && error.contains("wharf.test"),
        "the error names the failed challenge: {failed}"
    );
    assert_eq!(failed["failures"], 1, "{failed}");
    assert!(
        failed["next_attempt"].is_string(),
        "a retry is planned: {failed}"
    );
    assert_eq!(
        served_leaf(&client, tls, "a.wharf.test").unwrap(),
        renewed,
        "the last good bundle still serves"
    );
}

#[test]
fn a_restart_keeps_a_valid_issued_bundle_and_its_account() {
    let (plain, tls) = (free_port(), free_port());
    let pebble = Pebble::start(plain, 3600);
    let mut server = Server::start();
    server.load(&acme_config(plain, tls, &pebble, &["c.wharf.test"]));
    wait_for_state(&server, &pebble, "valid");
    let client = client_trusting(&pebble.issuing_root(), false);
    let issued = served_leaf(&client, tls, "c.wharf.test").unwrap();
    assert_eq!(server.log().matches("ACME account created").count(), 1);

    server.kill9();
    server.start_again();
    let kept = wait_for_state(&server, &pebble, "valid");
    assert!(
        kept.get("issued").is_none(),
        "nothing issued after the restart: {kept}"
    );
    assert_eq!(served_leaf(&client, tls, "c.wharf.test").unwrap(), issued);
    let log = server.current_log();
    assert!(!log.contains("ACME certificate installed"), "{log}");

    // A name added to the bundle makes it due at once, with the same account.
    let mut more = server.config();
    more["settings"]["acme"]["certificates"]["site"]["names"] =
        json!(["c.wharf.test", "d.wharf.test"]);
    server.load(&more);
    let mut reissued = Vec::new();
    assert!(
        wait_until(ISSUE_LIMIT, || {
            reissued = served_leaf(&client, tls, "d.wharf.test").unwrap_or_default();
            !reissued.is_empty() && reissued != issued
        }),
        "not re-issued for the new name\n{}",
        server.log()
    );
    assert_eq!(
        server.log().matches("ACME account created").count(),
        1,
        "the account is kept"
    );
}

#[test]
fn a_first_issuance_that_fails_says_why_and_the_listener_presents_nothing_else() {
    let (plain, tls) = (free_port(), free_port());
    // pebble validates on a port where nothing listens.
    let pebble = Pebble::start(free_port(), 3600);
    let server = Server::start();
    server.load(&acme_config(plain, tls, &pebble, &["e.wharf.test"]));
    let failed = wait_for_state(&server, &pebble, "failed");
    assert!(failed.get("expires").is_none(), "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("e.wharf.test"),
        "{failed}"
    );
    let client = client_trusting(&pebble.issuing_root(), false);
    assert!(
        TlsConn::open(&client, tls, "e.wharf.test").is_err(),
        "no certificate yet, so no handshake"
    );
    // The plain listener still serves its routes.
    let answer = crate::harness::Conn::open_tcp(&format!("127.0.0.1:{plain}"))
        .unwrap()
        .request("GET", "/.well-known/acme-challenge/not-pending", &[], None)
        .unwrap();
    assert_eq!(answer.status, 200, "a token not pending goes to the routes");
}
