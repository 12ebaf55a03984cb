//! TLS listeners and `/certificates`, over real TLS with a client that trusts only the
//! test CA: upload, describe and delete with every error Unit gives; a bundle that
//! survives `kill -9`; SNI choosing among three bundles (one a wildcard); `scheme`
//! and `$scheme`; session resumption by cache and by ticket; `conf_commands` accepted
//! and refused; and a client loop through 20 certificate rotations without a failure.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use serde_json::{Value, json};

use crate::harness::{IO_TIMEOUT, Server, assert_done, assert_error, free_port};

/// A test CA and the leaves it signs.
pub(crate) struct TestCa {
    pub(crate) pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Wharf Test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A bundle (leaf, CA, key) for `names`; the first is also the CN.
    pub(crate) fn bundle(&self, names: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Wharf");
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        format!("{}{}{}", leaf.pem(), self.pem, key.serialize_pem())
    }

    /// A client trusting only this CA; `tls12` restricts it to TLS 1.2.
    pub(crate) fn client(&self, tls12: bool) -> Arc<ClientConfig> {
        client_trusting(&self.pem, tls12)
    }
}

/// A client trusting only the certificates in `pem`; `tls12` restricts it to TLS 1.2.
pub(crate) fn client_trusting(pem: &str, tls12: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One TLS client connection (keep-alive capable).
pub(crate) struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsConn {
    pub(crate) fn open(config: &Arc<ClientConfig>, port: u16, name: &str) -> io::Result<TlsConn> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(io::Error::other)?;
        let conn =
            ClientConnection::new(Arc::clone(config), server_name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| io::Error::other(format!("handshake: {e}")))?;
        }
        Ok(TlsConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// The common name of the certificate the server presented.
    fn peer_name(&self) -> String {
        use x509_parser::prelude::FromDer as _;
        let certs = self.stream.conn.peer_certificates().expect("a certificate");
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&certs[0]).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        cn.as_str().unwrap().to_owned()
    }

    /// The leaf certificate the server presented, DER.
    pub(crate) fn peer_leaf(&self) -> Vec<u8> {
        let certs = self.stream.conn.peer_certificates().expect("a certificate");
        certs[0].to_vec()
    }

    fn resumed(&self) -> bool {
        self.stream.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// `GET target` with `Host: host`; returns the status and body.
    pub(crate) fn get(&mut self, target: &str, host: &str) -> io::Result<(u16, String)> {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        self.stream.flush()?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("bad head: {head}")))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill()?;
                }
                let body =
                    String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into_owned();
                self.buf.drain(..end + 4 + length);
                return Ok((status, body));
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn upload(server: &Server, name: &str, pem: &str) -> crate::harness::Response {
    server.request(
        "PUT",
        &format!("/certificates/{name}"),
        &[],
        Some(pem.as_bytes()),
    )
}

#[track_caller]
fn assert_uploaded(resp: &crate::harness::Response) {
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(
        resp.json(),
        json!({"success": "Certificate chain uploaded."})
    );
}

/// A TLS listener on a free port answering `return 200` with `$scheme` in a header.
fn tls_config(port: u16, tls: Value) -> Value {
    json!({
        "listeners": {format!("127.0.0.1:{port}"): {"pass": "routes", "tls": tls}},
        "routes": [
            {"match": {"scheme": "http"}, "action": {"return": 403}},
            {"match": {"scheme": "https", "uri": "/scheme"},
             "action": {"return": 301, "location": "$scheme://$host/"}},
            {"action": {"return": 200}}
        ]
    })
}

#[test]
fn certificates_are_uploaded_described_and_deleted_like_unit() {
    let server = Server::start();
    let ca = TestCa::new();
    let pem = ca.bundle(&["a.test", "www.a.test"]);
    assert_eq!(server.get("/certificates").json(), json!({}));
    assert_uploaded(&upload(&server, "a", &pem));

    let all = server.get("/certificates").json();
    let a = &all["a"];
    assert_eq!(a["key"], "ECDSA (prime256v1)");
    assert_eq!(a["chain"][0]["subject"]["common_name"], "a.test");
    assert_eq!(a["chain"][0]["subject"]["organization"], "Wharf");
    assert_eq!(
        a["chain"][0]["subject"]["alt_names"],
        json!(["a.test", "www.a.test"])
    );
    assert_eq!(a["chain"][0]["issuer"]["common_name"], "Wharf Test CA");
    assert_eq!(a["chain"][1]["subject"]["common_name"], "Wharf Test CA");
    assert!(
        a["chain"][0]["validity"]["until"]
            .as_str()
            .unwrap()
            .ends_with(" GMT")
    );
    assert!(
        !all.to_string().contains("PRIVATE"),
        "keys are never returned"
    );
    assert_eq!(server.get("/certificates/a").json(), *a);
    assert_eq!(
        server.get("/").json()["certificates"],
        all,
        "GET / lists them, as Unit"
    );
    assert_eq!(
        server
            .get("/certificates/a/chain/0/subject/alt_names/1")
            .json(),
        json!("www.a.test")
    );
    assert_error(
        &server.get("/certificates/a/chain/7"),
        404,
        "Value doesn't exist.",
    );
    assert_error(
        &server.get("/certificates/b"),
        404,
        "Certificate doesn't exist.",
    );

    // Unit never overwrites a bundle.
    assert_error(
        &upload(&server, "a", &pem),
        400,
        "Certificate already exists.",
    );
    // Each reason a bundle is invalid, with a detail saying which.
    let key_at = pem.find("-----BEGIN PRIVATE KEY").unwrap();
    let other = ca.bundle(&["b.test"]);
    let other_key = &other[other.find("-----BEGIN PRIVATE KEY").unwrap()..];
    let cases = [
        (pem[..key_at].to_owned(), "no private key"),
        (pem[key_at..].to_owned(), "no certificate"),
        (format!("{}{other_key}", &pem[..key_at]), "does not match"),
        (pem[..pem.len() / 3].to_owned(), "not readable PEM"),
    ];
    for (body, why) in cases {
        let resp = upload(&server, "bad", &body);
        assert_error(&resp, 400, "Invalid certificate.");
        assert!(
            resp.json()["detail"].as_str().unwrap().contains(why),
            "{why}: {resp}"
        );
    }
    assert_error(
        &server.get("/certificates/bad"),
        404,
        "Certificate doesn't exist.",
    );

    // A listener naming a bundle: the bundle cannot go; a missing one is invalid.
    let port = free_port();
    let resp = server.put_json(
        "/config",
        &tls_config(port, json!({"certificate": ["a", "gone"]})),
    );
    assert_error(&resp, 400, "Invalid configuration.");
    assert_eq!(
        resp.json()["detail"],
        format!(
            "listeners/127.0.0.1:{port}/tls/certificate/1: certificate \"gone\" does not exist"
        )
    );
    server.load(&tls_config(port, json!({"certificate": "a"})));
    assert_error(
        &server.delete("/certificates/a"),
        400,
        "Certificate is used in the configuration.",
    );
    assert_done(&server.delete(&format!("/config/listeners/127.0.0.1:{port}")));
    let resp = server.delete("/certificates/a");
    assert_eq!(
        resp.json(),
        json!({"success": "Certificate deleted."}),
        "{resp}"
    );
    assert_error(
        &server.delete("/certificates/a"),
        404,
        "Certificate doesn't exist.",
    );
    assert_eq!(server.get("/certificates").json(), json!({}));
}

#[test]
fn a_bundle_survives_kill_9_and_its_key_is_private() {
    let mut server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "site", &ca.bundle(&["site.test"])));
    let port = free_port();
    server.load(&tls_config(port, json!({"certificate": "site"})));
    let described = server.get("/certificates").json();
    server.kill9();
    server.start_again();
    assert_eq!(server.get("/certificates").json(), described);
    let mut conn = TlsConn::open(&ca.client(false), port, "site.test").unwrap();
    assert_eq!(conn.get("/", "site.test").unwrap().0, 200);
    assert_eq!(conn.peer_name(), "site.test");

    // The store holding the key is the server's user's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let statedir = server.dir().join("state");
    let db = std::fs::read_dir(&statedir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sled"))
        .expect("the sled dir");
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&db).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{meta:?}");
    }
}

#[test]
fn sni_chooses_among_three_bundles_and_the_scheme_is_https() {
    let server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "one", &ca.bundle(&["one.test"])));
    assert_uploaded(&upload(&server, "wild", &ca.bundle(&["*.wild.test"])));
    assert_uploaded(&upload(
        &server,
        "three",
        &ca.bundle(&["three.test", "3.test"]),
    ));
    let port = free_port();
    server.load(&tls_config(
        port,
        json!({"certificate": ["one", "wild", "three"]}),
    ));
    let client = ca.client(false);
    for (name, cn) in [
        ("one.test", "one.test"),
        ("x.wild.test", "*.wild.test"),
        ("3.test", "three.test"),
        ("three.test", "three.test"),
    ] {
        let mut conn = TlsConn::open(&client, port, name).unwrap();
        assert_eq!(conn.peer_name(), cn, "{name}");
        assert_eq!(conn.get("/", name).unwrap(), (200, String::new()), "{name}");
    }
    // An unknown name gets the first bundle (the client then rejects it).
    let mut config = (*client).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AnyCert));
    let conn = TlsConn::open(&Arc::new(config), port, "other.test").unwrap();
    assert_eq!(conn.peer_name(), "one.test");
    assert!(TlsConn::open(&client, port, "other.test").is_err());

    // `scheme: https` matches and `$scheme` is `https`.
    let mut conn = TlsConn::open(&client, port, "one.test").unwrap();
    let request = "GET /scheme HTTP/1.1\r\nHost: one.test\r\n\r\n";
    conn.stream.write_all(request.as_bytes()).unwrap();
    let mut head = vec![0u8; 4096];
    let n = conn.stream.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert!(head.contains("Location: https://one.test/\r\n"), "{head}");
    // Plain HTTP on the TLS port is not served as HTTP.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    assert!(
        !out.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// Accepts any certificate: to see what the server presents for an unknown name.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether a second connection with the same client resumes the first one's session.
fn resumes(client: &Arc<ClientConfig>, port: u16) -> bool {
    let mut first = TlsConn::open(client, port, "s.test").unwrap();
    assert!(!first.resumed());
    // The response brings the TLS 1.3 tickets along.
    assert_eq!(first.get("/", "s.test").unwrap().0, 200);
    let mut second = TlsConn::open(client, port, "s.test").unwrap();
    assert_eq!(second.get("/", "s.test").unwrap().0, 200);
    second.resumed()
}

#[test]
fn sessions_resume_by_cache_and_by_ticket_as_configured() {
    let server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "s", &ca.bundle(&["s.test"])));
    let port = free_port();
    let cases = [
        (json!({}), false, false),
        (json!({}), true, false),
        (json!({"tickets": true}), false, true),
        (json!({"tickets": true}), true, true),
        (json!({"cache_size": 10}), false, true),
        (json!({"cache_size": 10}), true, true),
        (json!({"cache_size": 10, "tickets": false}), true, true),
        (json!({"tickets": false}), true, false),
    ];
    for (session, tls12, expected) in cases {
        server.load(&tls_config(
            port,
            json!({"certificate": "s", "session": session}),
        ));
        // A fresh client each time: no session of an earlier case.
        let client = ca.client(tls12);
        assert_eq!(
            resumes(&client, port),
            expected,
            "session {session}, TLS 1.2 only: {tls12}"
        );
    }
    // Ticket keys as strings cannot be honoured by rustls: refused, not ignored.
    let key = "A".repeat(64);
    let resp = server.put_json(
        &format!("/config/listeners/127.0.0.1:{port}/tls/session"),
        &json!({"tickets": key}),
    );
    assert_error(&resp, 400, "Invalid configuration.");
    assert!(
        resp.json()["detail"]
            .as_str()
            .unwrap()
            .contains("tls/session/tickets: ticket keys")
    );
}

#[test]
fn conf_commands_map_onto_rustls_and_others_are_refused() {
    let server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "c", &ca.bundle(&["c.test"])));
    let port = free_port();
    server.load(&tls_config(
        port,
        json!({"certificate": "c", "conf_commands": {
            "MinProtocol": "TLSv1.3",
            "Ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"
        }}),
    ));
    let mut conn = TlsConn::open(&ca.client(false), port, "c.test").unwrap();
    assert_eq!(conn.get("/", "c.test").unwrap().0, 200);
    assert_eq!(
        conn.stream
            .conn
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    assert!(
        TlsConn::open(&ca.client(true), port, "c.test").is_err(),
        "TLS 1.2 is off"
    );

    let before = server.snapshot();
    for (command, value) in [
        ("SignatureAlgorithms", "ECDSA+SHA256"),
        ("MinProtocol", "TLSv1"),
        ("CipherString", "HIGH:!aNULL"),
    ] {
        let resp = server.put_json(
            &format!("/config/listeners/127.0.0.1:{port}/tls/conf_commands"),
            &json!({command: value}),
        );
        assert_error(&resp, 400, "Invalid configuration.");
        let detail = resp.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.starts_with(&format!(
                "listeners/127.0.0.1:{port}/tls/conf_commands/{command}: "
            )),
            "{detail}"
        );
    }
    server.assert_unchanged(&before, "refused conf_commands");
}

#[test]
fn the_handshake_is_bounded_by_header_read_timeout() {
    let server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "t", &ca.bundle(&["t.test"])));
    let port = free_port();
    let mut config = tls_config(port, json!({"certificate": "t"}));
    config["settings"] = json!({"http": {"header_read_timeout": 1}});
    server.load(&config);
    // A client that connects and never says hello is closed.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let closed = idle.read_to_end(&mut out);
    assert!(closed.is_ok() && out.is_empty(), "{closed:?} {out:?}");
}

#[test]
fn twenty_rotations_under_a_client_loop_fail_no_request() {
    let server = Server::start();
    let ca = TestCa::new();
    let port = free_port();
    let key = format!("127.0.0.1:{port}");
    assert_uploaded(&upload(&server, "r0", &ca.bundle(&["rot.test", "gen-0"])));
    server.load(&tls_config(port, json!({"certificate": "r0"})));
    let client = ca.client(false);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Half the clients reconnect for each request (new handshakes), half keep one
    // connection across every rotation (established connections go on).
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failures, client) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failures),
                Arc::clone(&client),
            );
            thread::spawn(move || {
                let mut kept: Option<TlsConn> = None;
                while !stop.load(Ordering::Relaxed) {
                    let result = if i % 2 == 0 {
                        TlsConn::open(&client, port, "rot.test")
                            .and_then(|mut c| c.get("/", "rot.test"))
                    } else {
                        if kept.is_none() {
                            kept = Some(TlsConn::open(&client, port, "rot.test").unwrap());
                        }
                        kept.as_mut().unwrap().get("/", "rot.test")
                    };
                    match result {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    for n in 1..=20 {
        let name = format!("r{n}");
        assert_uploaded(&upload(
            &server,
            &name,
            &ca.bundle(&["rot.test", &format!("gen-{n}")]),
        ));
        assert_done(&server.put_json(
            &format!("/config/listeners/{key}/tls/certificate"),
            &json!(name),
        ));
        // New handshakes present the new bundle at once.
        let mut conn = TlsConn::open(&client, port, "rot.test").unwrap();
        assert_eq!(conn.get("/", "rot.test").unwrap().0, 200);
        let presented = conn.stream.conn.peer_certificates().unwrap()[0].to_vec();
        let expected = server
            .get(&format!("/certificates/{name}/chain/0/subject/alt_names/1"))
            .json();
        assert_eq!(expected, json!(format!("gen-{n}")));
        assert!(
            presented
                .windows(format!("gen-{n}").len())
                .any(|w| w == format!("gen-{n}").as_bytes()),
            "rotation {n}: the new handshake must present bundle {name}"
        );
        let old = format!("r{}", n - 1);
        assert_eq!(
            server.delete(&format!("/certificates/{old}")).status,
            200,
            "{old}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 40,
        "the loop ran: {}",
        ok.load(Ordering::Relaxed)
    );
}

#[test]
fn static_files_are_served_over_tls_small_and_large() {
    let server = Server::start();
    let ca = TestCa::new();
    assert_uploaded(&upload(&server, "site", &ca.bundle(&["site.test"])));
    let www = server.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.txt"), "small file\n").unwrap();
    // Larger than what leaves with the head and than one copy buffer: the body goes
    // through the TLS writer's copy path (no sendfile on an encrypted stream).
    let large: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(www.join("large.txt"), &large).unwrap();
    let port = free_port();
    server.load(&json!({
        "listeners": {format!("127.0.0.1:{port}"):
            {"pass": "routes", "tls": {"certificate": "site"}}},
        "routes": [{"action": {"share": format!("{}$uri", www.display())}}]
    }));
    let client = ca.client(false);
    let mut conn = TlsConn::open(&client, port, "site.test").unwrap();
    assert_eq!(
        conn.get("/small.txt", "site.test").unwrap(),
        (200, "small file\n".to_owned())
    );
    let (status, body) = conn.get("/large.txt", "site.test").unwrap();
    assert_eq!(status, 200);
    assert!(
        body == large,
        "the large file came back different ({} bytes)",
        body.len()
    );
    // The connection stays usable after a file body.
    assert_eq!(conn.get("/missing", "site.test").unwrap().0, 404);
}
