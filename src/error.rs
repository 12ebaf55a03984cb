//! The errors of a change, of a restart and of a certificate upload or deletion, which the control API turns into replies.
//! A leaf: every layer that can fail a change (config, listeners, applications,
//! generations) names these without importing the others.

use thiserror::Error;

use crate::config::edit::EditError;
use crate::config::validate::InvalidConfig;
use crate::tls::BundleError;

/// A valid config that cannot be run (a module that does not load, an address that
/// cannot be bound, a file that cannot be opened); what runs stays as it was.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// Why a change was not made; the committed config stays as it was.
#[derive(Debug, Error)]
pub enum ChangeError {
    #[error("{0}")]
    Edit(EditError),
    #[error("{0}")]
    Invalid(#[from] InvalidConfig),
    #[error("the config is at generation {current}, not the one the change was made against")]
    PreconditionFailed { current: u64 },
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("failed to store the new configuration: {0:#}")]
    Store(anyhow::Error),
}

/// Why an application was not restarted; its old instances keep serving.
#[derive(Debug, Error)]
pub enum RestartError {
    #[error("application \"{0}\" does not exist")]
    UnknownApplication(String),
    #[error("{0}")]
    Failed(#[from] ApplyError),
}

/// Why a certificate bundle was not uploaded or deleted; the stored bundles stay as
/// they were.
#[derive(Debug, Error)]
pub enum CertificateError {
    #[error("{0}")]
    Invalid(#[from] BundleError),
    #[error("a certificate bundle named \"{0}\" already exists; delete it first")]
    Exists(String),
    #[error("there is no certificate bundle named \"{0}\"")]
    NotFound(String),
    #[error("the certificate bundle \"{0}\" is named by a listener's \"tls\"")]
    InUse(String),
    #[error("failed to store the certificate bundle: {0:#}")]
    Store(anyhow::Error),
}
