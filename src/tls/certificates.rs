//! The uploaded bundles by name, as the data plane and the validator see them: an
//! immutable map, replaced whole when a bundle is added, removed or renewed (the store
//! holds the durable copy; see `store.rs`), and the live slot that holds the current one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use serde_json::{Map, Value};

use super::bundle::Bundle;

#[derive(Debug, Clone, Default)]
pub struct Certificates {
    bundles: BTreeMap<String, Arc<Bundle>>,
}

impl Certificates {
    pub fn get(&self, name: &str) -> Option<&Arc<Bundle>> {
        self.bundles.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.bundles.contains_key(name)
    }

    /// Every bundle, by name in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Bundle>)> {
        self.bundles
            .iter()
            .map(|(name, bundle)| (name.as_str(), bundle))
    }

    /// This set with `bundle` added as `name`.
    pub fn with(&self, name: &str, bundle: Arc<Bundle>) -> Self {
        let mut bundles = self.bundles.clone();
        bundles.insert(name.to_owned(), bundle);
        Self { bundles }
    }

    /// This set without `name`.
    pub fn without(&self, name: &str) -> Self {
        let mut bundles = self.bundles.clone();
        bundles.remove(name);
        Self { bundles }
    }

    /// `GET /certificates`: every bundle's description by name; keys never appear.
    pub fn describe(&self) -> Value {
        let all: Map<String, Value> = self
            .bundles
            .iter()
            .map(|(name, bundle)| (name.clone(), bundle.description().clone()))
            .collect();
        Value::Object(all)
    }
}

/// The current set of bundles, shared by the controller (which replaces it) and every
/// TLS listener's resolver (which reads it at each handshake).
#[derive(Debug, Clone, Default)]
pub struct LiveCertificates(Arc<ArcSwap<Certificates>>);

impl LiveCertificates {
    pub fn load(&self) -> Guard<Arc<Certificates>> {
        self.0.load()
    }

    pub fn load_full(&self) -> Arc<Certificates> {
        self.0.load_full()
    }

    pub fn replace(&self, certificates: Certificates) {
        self.0.store(Arc::new(certificates));
    }
}
