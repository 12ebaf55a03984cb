//! TLS for listeners, with rustls (the `ring` provider): certificate bundles as Unit's
//! `/certificates` holds them (`bundle`, `certificates`), choosing one by SNI
//! (`resolver`), a listener's `tls` object compiled into a rustls server config
//! (`listener`) with its `session` settings (`session`) and `conf_commands`
//! (`commands`), and the handshake of an accepted connection (`accept`).

mod accept;
mod bundle;
mod certificates;
mod commands;
mod listener;
mod resolver;
mod session;

pub use accept::handshake;
pub use bundle::{Bundle, BundleError};
pub use certificates::{Certificates, LiveCertificates};
pub use listener::{TlsError, TlsListener};
pub use session::Sessions;
