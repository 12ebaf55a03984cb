//! A `wasm` application's settings, read from its validated config object.

use std::path::PathBuf;

use serde_json::Value;

use crate::runtime::limits::Limits;
use crate::runtime::wasi::{self, Preopen};

/// A `wasm` application's settings, from its config object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAppSpec {
    pub module: PathBuf,
    pub request_handler: String,
    pub malloc_handler: String,
    pub free_handler: String,
    pub module_init_handler: Option<String>,
    pub module_end_handler: Option<String>,
    pub request_init_handler: Option<String>,
    pub request_end_handler: Option<String>,
    pub response_end_handler: Option<String>,
    pub environment: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// `limits.memory`: bytes of linear memory an instance may have.
    pub memory_limit: usize,
}

impl UnitAppSpec {
    /// Reads the members of a validated `wasm` application object.
    pub fn from_config(app: &Value) -> Self {
        let string = |key: &str| app.get(key).and_then(Value::as_str).map(str::to_owned);
        let required = |key: &str| string(key).unwrap_or_default();
        Self {
            module: PathBuf::from(required("module")),
            request_handler: required("request_handler"),
            malloc_handler: required("malloc_handler"),
            free_handler: required("free_handler"),
            module_init_handler: string("module_init_handler"),
            module_end_handler: string("module_end_handler"),
            request_init_handler: string("request_init_handler"),
            request_end_handler: string("request_end_handler"),
            response_end_handler: string("response_end_handler"),
            environment: wasi::environment(app),
            preopens: wasi::preopens(app),
            memory_limit: Limits::from_config(app).memory,
        }
    }
}
