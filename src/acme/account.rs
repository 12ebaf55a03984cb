//! The ACME account a directory's orders are placed with: created once per directory
//! and kept in the state database (its key included), so that a restart, a renewal or
//! a new bundle reuses it; its contacts follow the config.

use anyhow::Context as _;
use instant_acme::{Account, AccountBuilder, AccountCredentials, NewAccount};
use serde::{Deserialize, Serialize};

use crate::store::Store;

use super::spec::ManagedBundle;

/// What the state database keeps of an account.
#[derive(Serialize, Deserialize)]
struct Saved {
    credentials: AccountCredentials,
    contact: Vec<String>,
}

/// An HTTP client for the directory, checking its server against the configured root
/// or the system's.
fn builder(bundle: &ManagedBundle) -> anyhow::Result<AccountBuilder> {
    match &bundle.ca_certificate {
        Some(path) => Account::builder_with_root(path).with_context(|| {
            format!(
                "cannot use `{}` as the directory's root certificate",
                path.display()
            )
        }),
        None => Account::builder().context("cannot load the system's root certificates"),
    }
}

/// The stored account for the bundle's directory, or a new one (then stored). With
/// `fresh`, a stored account is not used (the directory no longer knows it).
pub async fn account(
    store: &Store,
    bundle: &ManagedBundle,
    fresh: bool,
) -> anyhow::Result<Account> {
    if !fresh && let Some(saved) = store.acme_account(&bundle.directory)? {
        let saved: Saved =
            serde_json::from_slice(&saved).context("the stored ACME account is unreadable")?;
        let account = builder(bundle)?
            .from_credentials(saved.credentials)
            .await
            .context("cannot reach the ACME directory")?;
        if saved.contact != bundle.contact {
            let contact: Vec<&str> = bundle.contact.iter().map(String::as_str).collect();
            account
                .update_contacts(&contact)
                .await
                .context("the directory refused the account's new contacts")?;
            tracing::info!(directory = %bundle.directory, "ACME account contacts updated");
            let credentials = reread(store, &bundle.directory)?;
            save(store, &bundle.directory, credentials, &bundle.contact)?;
        }
        return Ok(account);
    }
    let contact: Vec<&str> = bundle.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(bundle)?
        .create(&new, bundle.directory.clone(), None)
        .await
        .context("the directory did not create an account")?;
    save(store, &bundle.directory, credentials, &bundle.contact)?;
    tracing::info!(directory = %bundle.directory, id = account.id(), "ACME account created");
    Ok(account)
}

/// The stored credentials again (they are not `Clone`, and were moved into the account).
fn reread(store: &Store, directory: &str) -> anyhow::Result<AccountCredentials> {
    let saved = store
        .acme_account(directory)?
        .context("the stored ACME account disappeared")?;
    let saved: Saved =
        serde_json::from_slice(&saved).context("the stored ACME account is unreadable")?;
    Ok(saved.credentials)
}

fn save(
    store: &Store,
    directory: &str,
    credentials: AccountCredentials,
    contact: &[String],
) -> anyhow::Result<()> {
    let saved = Saved {
        credentials,
        contact: contact.to_vec(),
    };
    let bytes = serde_json::to_vec(&saved).context("cannot serialize the ACME account")?;
    store.put_acme_account(directory, &bytes)
}
