//! Black-box tests of the `wharf` binary.
//!
//! Each test starts the real server in its own temp dir (see `harness`) and talks to
//! it over its control socket and its listeners with a small hand-written HTTP/1.1
//! client. The contract under test is `control-api.md`, `unit-abi.md` and the binary's
//! command line. Applying a config compiles and starts every app, so every app in these
//! tests runs a real module: the minimal WAT guest of `harness::Wat` (or a misbehaving
//! variant of it), or an example guest built by `scripts/build-examples` into
//! `target/wasm/` (`scripts/test` builds them before running the tests).

#![allow(clippy::unwrap_used)]

mod harness;

mod acme;
mod cli;
mod components;
mod concurrency;
mod conformance;
mod connections;
mod deploy_config;
mod generations;
mod guests;
mod hostile_control;
mod hostile_guests;
mod hot_swap;
mod invalid_configs;
mod json_dialect;
mod limits;
mod listeners;
mod methods;
mod metrics;
mod persistence;
mod processes;
mod proxy;
mod resources;
mod routing;
mod serving;
mod static_files;
mod status;
mod telemetry;
mod tls;
mod uris;
