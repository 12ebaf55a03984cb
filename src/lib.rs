//! Wharf: a WebAssembly application server with a live REST control plane that speaks
//! NGINX Unit's configuration API and Wasm guest ABI.
//!
//! `main.rs` only wires these together: `config` owns the tree, its rules and the typed
//! `Plan` it compiles to, `store` its durable history, `controller` the one path by which
//! it changes, `generation` what runs (`application`: each app in it), `dispatch` what
//! requests are served by, `routing` where requests go, `static_files` the files `share`
//! serves, `access_log` the record of them, `runtime` the Wasm engine and guests,
//! `listeners` and `http` the data plane (`tls`: its TLS and the certificate bundles;
//! `acme`: the bundles Wharf obtains and renews itself), `control`
//! the API, `status` the counters (`counter`: how they are kept), `metrics` their
//! Prometheus exposition, `telemetry` the OpenTelemetry spans of requests,
//! `process_title` how the process shows itself to Unit's
//! tools, `watch` the module files
//! that swap themselves in, `error` the errors of a change. `docs/architecture.md` has
//! the map.

pub mod access_log;
pub mod acme;
pub mod application;
pub mod config;
pub mod control;
pub mod controller;
pub mod counter;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod generation;
pub mod http;
pub mod listeners;
pub mod log_file;
pub mod metrics;
pub mod privileges;
pub mod process_title;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod sockets;
pub mod static_files;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;
