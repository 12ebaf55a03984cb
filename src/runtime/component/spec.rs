//! A `wasm-wasi-component` application's settings (`config::model` reads them from the
//! config).

use std::path::PathBuf;

use crate::runtime::wasi::Preopen;

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
