//! The config tree: Unit's JSON dialect, addressing nodes by path, the edits the control
//! API makes, and validation (schema, then references).

pub mod constraints;
pub mod dialect;
pub mod edit;
pub mod path;
pub mod references;
pub mod validate;
