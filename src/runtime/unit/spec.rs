//! A `wasm` application's settings (`config::model` reads them from the config).

use std::path::PathBuf;

use crate::runtime::wasi::Preopen;

/// A `wasm` application's module, handlers and guest environment.
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
