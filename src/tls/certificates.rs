//! The uploaded bundles by name, as the data plane and the validator see them: an
//! immutable map, replaced whole when a bundle is added or removed (the store holds
//! the durable copy; see `store.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

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
