//! Choosing a listener's certificate by the client's SNI name, as Unit does: the first
//! bundle whose leaf names the host (its CN or a DNS alternative name, `*.example.com`
//! matching one label), else the first bundle of the listener.
//!
//! The bundles are looked up by name at each handshake, in the live set: a managed
//! bundle renewed under its name (`acme`) is presented from the next handshake on, and
//! one not issued yet is skipped (a listener with none of its bundles fails handshakes
//! rather than present another certificate).

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificates::LiveCertificates;

#[derive(Debug)]
pub struct SniResolver {
    /// The listener's bundle names, in its order; the first present is the default.
    names: Vec<String>,
    certificates: LiveCertificates,
}

impl SniResolver {
    pub fn new(names: Vec<String>, certificates: LiveCertificates) -> Self {
        Self {
            names,
            certificates,
        }
    }

    /// The key for a server name (`None`: the client sent none).
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let server_name = server_name.map(str::to_ascii_lowercase);
        let certificates = self.certificates.load();
        let mut default = None;
        for bundle in self.names.iter().filter_map(|name| certificates.get(name)) {
            let named = server_name.as_deref().is_some_and(|server_name| {
                bundle
                    .names()
                    .iter()
                    .any(|pattern| matches(pattern, server_name))
            });
            if named {
                return Some(Arc::clone(bundle.certified_key()));
            }
            default.get_or_insert(bundle);
        }
        default.map(|bundle| Arc::clone(bundle.certified_key()))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// `pattern` (lower case) names `host` (lower case): equal, or `*.rest` where `host` is
/// one label followed by `.rest`.
fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::bundle::{Bundle, tests::bundle_pem};
    use crate::tls::certificates::Certificates;

    #[test]
    fn chooses_by_name_and_wildcard_with_the_first_as_default() {
        let bundles: Vec<Arc<Bundle>> = [&["a.test"][..], &["*.w.test"], &["c.test", "d.test"]]
            .iter()
            .map(|names| Arc::new(Bundle::parse(bundle_pem(names).as_bytes()).expect("ok")))
            .collect();
        let live = LiveCertificates::default();
        let names = ["a", "w", "c"];
        let mut set = Certificates::default();
        for (name, bundle) in names.iter().zip(&bundles) {
            set = set.with(name, Arc::clone(bundle));
        }
        live.replace(set);
        let resolver = SniResolver::new(names.map(str::to_owned).to_vec(), live.clone());
        let chosen = |name: Option<&str>| {
            let key = resolver.choose(name)?;
            bundles
                .iter()
                .position(|b| Arc::ptr_eq(b.certified_key(), &key))
        };
        assert_eq!(chosen(Some("a.test")), Some(0));
        assert_eq!(chosen(Some("x.W.test")), Some(1));
        assert_eq!(chosen(Some("y.x.w.test")), Some(0), "one label only");
        assert_eq!(chosen(Some("w.test")), Some(0));
        assert_eq!(chosen(Some("d.test")), Some(2));
        assert_eq!(chosen(Some("other.test")), Some(0));
        assert_eq!(chosen(None), Some(0));
        // A bundle that is gone (a managed one not issued yet) is skipped.
        live.replace(live.load().without("a"));
        assert_eq!(
            chosen(Some("a.test")),
            Some(1),
            "the first present is the default"
        );
        live.replace(Certificates::default());
        assert_eq!(chosen(Some("a.test")), None, "no bundle, no certificate");
    }
}
