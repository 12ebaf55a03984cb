//! The config tree: Unit's JSON dialect, addressing nodes by path, the edits the control
//! API makes, validation (schema, then references), and the typed model (`Plan`) a valid
//! tree compiles to.

pub mod constraints;
pub mod dialect;
pub mod edit;
pub mod model;
pub mod path;
pub mod references;
mod unsupported;
pub mod validate;
