//! Black-box tests of the `wharf` binary.
//!
//! Each test starts the real server in its own temp dir (see `harness`) and talks to
//! it over its control socket with a small hand-written HTTP/1.1 client. The contract
//! under test is `control-api.md` plus the binary's command line.

#![allow(clippy::unwrap_used)]

mod harness;

mod cli;
mod concurrency;
mod connections;
mod generations;
mod hostile;
mod invalid_configs;
mod json_dialect;
mod methods;
mod persistence;
mod status;
mod uris;
