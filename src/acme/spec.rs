//! `settings.acme` as the config declares it: the directory, the account's contacts,
//! the roots its HTTPS server is checked against, and each managed bundle's names.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The ACME directory's certificates, managed by Wharf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSpec {
    /// The directory URL (`https://`).
    pub directory: String,
    /// The account's contact URIs (`mailto:`), in order.
    pub contact: Vec<String>,
    /// A PEM file with the root the directory's server is checked against, instead of
    /// the system's roots.
    pub ca_certificate: Option<PathBuf>,
    /// Each managed bundle's name and the DNS names it is issued for (lower case, in
    /// the config's order).
    pub certificates: BTreeMap<String, Vec<String>>,
}

/// What one managed bundle is obtained with: everything its renewal task needs, so that
/// a change to any of it starts a new task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedBundle {
    pub name: String,
    pub names: Vec<String>,
    pub directory: String,
    pub contact: Vec<String>,
    pub ca_certificate: Option<PathBuf>,
}

impl AcmeSpec {
    /// The bundle names it manages.
    pub fn bundle_names(&self) -> impl Iterator<Item = &str> {
        self.certificates.keys().map(String::as_str)
    }

    /// Each managed bundle with the directory settings it is obtained with.
    pub fn bundles(&self) -> impl Iterator<Item = ManagedBundle> + '_ {
        self.certificates.iter().map(|(name, names)| ManagedBundle {
            name: name.clone(),
            names: names.clone(),
            directory: self.directory.clone(),
            contact: self.contact.clone(),
            ca_certificate: self.ca_certificate.clone(),
        })
    }
}
