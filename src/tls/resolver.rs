//! Choosing a listener's certificate by the client's SNI name, as Unit does: the first
//! bundle whose leaf names the host (its CN or a DNS alternative name, `*.example.com`
//! matching one label), else the first bundle of the listener.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::bundle::Bundle;

#[derive(Debug)]
pub struct SniResolver {
    /// In the listener's order; the first is the default.
    candidates: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// `bundles` must not be empty (the schema asks for at least one name).
    pub fn new(bundles: &[Arc<Bundle>]) -> Self {
        Self {
            candidates: bundles
                .iter()
                .map(|b| (b.names().to_vec(), Arc::clone(b.certified_key())))
                .collect(),
        }
    }

    /// The key for a server name (`None`: the client sent none).
    pub fn choose(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.candidates
                .iter()
                .find(|(names, _)| names.iter().any(|pattern| matches(pattern, &name)))
        });
        by_name.or(self.candidates.first()).map(|(_, key)| key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()).cloned()
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
    use crate::tls::bundle::tests::bundle_pem;

    #[test]
    fn chooses_by_name_and_wildcard_with_the_first_as_default() {
        let bundles: Vec<Arc<Bundle>> = [&["a.test"][..], &["*.w.test"], &["c.test", "d.test"]]
            .iter()
            .map(|names| Arc::new(Bundle::parse(bundle_pem(names).as_bytes()).expect("ok")))
            .collect();
        let resolver = SniResolver::new(&bundles);
        let chosen = |name: Option<&str>| {
            let key = resolver.choose(name).expect("some");
            bundles
                .iter()
                .position(|b| Arc::ptr_eq(b.certified_key(), key))
        };
        assert_eq!(chosen(Some("a.test")), Some(0));
        assert_eq!(chosen(Some("x.W.test")), Some(1));
        assert_eq!(chosen(Some("y.x.w.test")), Some(0), "one label only");
        assert_eq!(chosen(Some("w.test")), Some(0));
        assert_eq!(chosen(Some("d.test")), Some(2));
        assert_eq!(chosen(Some("other.test")), Some(0));
        assert_eq!(chosen(None), Some(0));
    }
}
