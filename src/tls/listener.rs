//! A listener's `tls` object compiled into the rustls server config its handshakes use:
//! the named bundles (each uploaded, or managed by `settings.acme`) behind the SNI resolver, the `session` settings
//! and the `conf_commands`. Compiled once per change, with the config's other checks;
//! every error names the offending value's path.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::default_provider;
use rustls::version::{TLS12, TLS13};
use serde_json::Value;
use thiserror::Error;

use super::certificates::LiveCertificates;
use super::commands;
use super::resolver::SniResolver;
use super::session::{SessionSpec, Sessions};

/// A listener's TLS, ready for handshakes.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub config: Arc<ServerConfig>,
    /// The bundles it names, in order (a bundle in use cannot be deleted).
    pub certificates: Vec<String>,
}

/// Why a `tls` object cannot be served; `path` is relative to the listener.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

fn error(path: impl Into<String>, message: impl Into<String>) -> TlsError {
    TlsError {
        path: path.into(),
        message: message.into(),
    }
}

impl TlsListener {
    /// Compiles `tls` (which passed the schema) for the listener `address`. Each bundle
    /// it names must be uploaded, or be one of the `managed` names, which may not be
    /// issued yet.
    pub fn compile(
        address: &str,
        tls: &Value,
        certificates: &LiveCertificates,
        managed: &[&str],
        sessions: &Sessions,
    ) -> Result<TlsListener, TlsError> {
        let (names, paths): (Vec<String>, Vec<String>) = match tls.get("certificate") {
            Some(Value::String(name)) => (vec![name.clone()], vec!["tls/certificate".to_owned()]),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        v.as_str().unwrap_or_default().to_owned(),
                        format!("tls/certificate/{i}"),
                    )
                })
                .unzip(),
            _ => return Err(error("tls/certificate", "required parameter is missing")),
        };
        let uploaded = certificates.load();
        for (name, path) in names.iter().zip(&paths) {
            if !uploaded.contains(name) && !managed.contains(&name.as_str()) {
                return Err(error(
                    path.clone(),
                    format!("certificate \"{name}\" does not exist"),
                ));
            }
        }
        let commands = commands::from_config(tls.get("conf_commands")).map_err(|(name, why)| {
            let path = if name.is_empty() {
                "tls/conf_commands".to_owned()
            } else {
                format!("tls/conf_commands/{name}")
            };
            error(path, why)
        })?;
        let spec = SessionSpec::from_config(tls.get("session"))
            .map_err(|(member, why)| error(format!("tls/session/{member}"), why))?;
        let session = sessions
            .for_listener(address, &spec)
            .map_err(|e| error("tls/session", format!("cannot set up session tickets: {e}")))?;
        let provider = CryptoProvider {
            cipher_suites: commands.cipher_suites,
            kx_groups: commands.kx_groups,
            ..default_provider()
        };
        let mut versions = Vec::new();
        if commands.tls13 {
            versions.push(&TLS13);
        }
        if commands.tls12 {
            versions.push(&TLS12);
        }
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
            .map_err(|e| error("tls/conf_commands", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver::new(
                names.clone(),
                certificates.clone(),
            )));
        config.ignore_client_order = commands.server_preference;
        match session.storage {
            Some(storage) => config.session_storage = storage,
            None => {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            }
        }
        match session.ticketer {
            Some(ticketer) => config.ticketer = ticketer,
            // Without a cache or tickets a TLS 1.3 ticket could not resume: send none.
            None if spec.cache_size == 0 => config.send_tls13_tickets = 0,
            None => {}
        }
        // Room for HTTP/2 later: ALPN offers only HTTP/1.1 today.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsListener {
            config: Arc::new(config),
            certificates: names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::bundle::{Bundle, tests::bundle_pem};
    use crate::tls::certificates::Certificates;
    use serde_json::json;

    fn certificates() -> LiveCertificates {
        let bundle = Bundle::parse(bundle_pem(&["a.test"]).as_bytes()).expect("ok");
        let live = LiveCertificates::default();
        live.replace(Certificates::default().with("a", Arc::new(bundle)));
        live
    }

    #[test]
    fn names_the_missing_bundle_with_its_path() {
        let certs = certificates();
        let sessions = Sessions::default();
        let compile =
            |tls: Value| TlsListener::compile("*:443", &tls, &certs, &["managed"], &sessions);
        assert!(compile(json!({"certificate": "a"})).is_ok());
        assert!(
            compile(json!({"certificate": ["managed", "a"]})).is_ok(),
            "a managed bundle need not be issued yet"
        );
        assert_eq!(
            compile(json!({"certificate": ["a", "b"]})).err(),
            Some(error(
                "tls/certificate/1",
                "certificate \"b\" does not exist"
            ))
        );
        let refused = compile(json!({"certificate": "a", "conf_commands": {"Bogus": "1"}}));
        assert!(refused.is_err_and(|e| e.path == "tls/conf_commands/Bogus"));
        let keys = compile(json!({"certificate": "a", "session": {"tickets": "k"}}));
        assert!(keys.is_err_and(|e| e.path == "tls/session/tickets"));
    }
}
