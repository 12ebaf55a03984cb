//! A generation: an immutable, fully built snapshot of what the server runs, made from
//! one validated config tree and swapped in whole.
//!
//! Building one is the step where a valid config can still fail to run; nothing is
//! published until it has succeeded. The data plane (listeners, compiled routes,
//! application instances) attaches here as it is built.

use serde_json::Value;
use thiserror::Error;

/// A valid config that cannot be run; the running generation stays as it was.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

#[derive(Debug)]
pub struct Generation {
    /// Configured application names, in config order.
    applications: Vec<String>,
}

impl Generation {
    /// Builds everything the tree asks for; fails without side effects.
    pub fn build(tree: &Value) -> Result<Self, ApplyError> {
        let applications = tree
            .get("applications")
            .and_then(Value::as_object)
            .map(|apps| apps.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Self { applications })
    }

    pub fn applications(&self) -> &[String] {
        &self.applications
    }

    pub fn has_application(&self, name: &str) -> bool {
        self.applications.iter().any(|a| a == name)
    }
}
