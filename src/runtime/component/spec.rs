//! A `wasm-wasi-component` application's settings, read from its validated config object.

use std::path::PathBuf;

use serde_json::Value;

use crate::runtime::limits::Limits;
use crate::runtime::wasi::{self, Preopen};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    pub component: PathBuf,
    /// The variables the guest sees, and no others.
    pub environment: Vec<(String, String)>,
    /// `access.filesystem`, in the same forms as for `wasm` apps.
    pub preopens: Vec<Preopen>,
    /// `limits.memory`: bytes of linear memory an instance may have.
    pub memory_limit: usize,
}

impl ComponentSpec {
    pub fn from_config(app: &Value) -> Self {
        Self {
            component: PathBuf::from(
                app.get("component")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            environment: wasi::environment(app),
            preopens: wasi::preopens(app),
            memory_limit: Limits::from_config(app).memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_component_environment_and_preopens() {
        let spec = ComponentSpec::from_config(&json!({
            "type": "wasm-wasi-component",
            "component": "/srv/app.wasm",
            "environment": {"A": "1"},
            "access": {"filesystem": ["/tmp", {"host": "/srv", "guest": "/data", "readonly": true}]},
            "limits": {"memory": 1048576}
        }));
        assert_eq!(spec.component, PathBuf::from("/srv/app.wasm"));
        assert_eq!(spec.environment, vec![("A".to_owned(), "1".to_owned())]);
        assert_eq!(spec.preopens.len(), 2);
        assert!(spec.preopens[1].readonly);
        assert_eq!(spec.preopens[1].guest, "/data");
        assert_eq!(spec.memory_limit, 1 << 20);
    }
}
