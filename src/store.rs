//! Durable state in sled under the state dir: the committed config of every kept
//! generation with what made it, the uploaded certificate bundles (`/certificates`),
//! and the records set aside at startup because they no longer load.
//!
//! A commit writes the new generation's entry and tree, and drops the generations that
//! fall out of the history window, in one sled batch, then flushes to disk before it
//! returns: a crash at any instant leaves either the previous generation or the new one as
//! the latest, never a mix, and an acknowledged change is never lost. The latest
//! generation is simply the highest one stored. A bundle is one sled entry, written or
//! removed and flushed before the API answers: a crash leaves it whole or absent.
//!
//! Bundles hold private keys, so the database directory and its files are made
//! readable by the server's user only (0700 and 0600), whatever the umask.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many committed generations are kept.
pub const HISTORY_LEN: u64 = 100;

const ENTRY: &[u8] = b"entry/";
const TREE: &[u8] = b"tree/";
const QUARANTINE: &[u8] = b"quarantine/";
const CERTIFICATE: &[u8] = b"certificate/";
const ACME_ACCOUNT: &[u8] = b"acme-account/";

/// What made a generation: the request (or startup step) that committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub generation: u64,
    /// RFC 3339, UTC, to the second.
    pub time: String,
    pub method: String,
    pub path: String,
}

/// A generation read back from disk, its tree still as stored bytes.
pub struct StoredGeneration {
    pub entry: HistoryEntry,
    pub tree: Vec<u8>,
}

/// A handle on the state database; clones share it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("config.sled");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .with_context(|| format!("failed to open the state database `{}`", path.display()))?;
        owner_only(&path)
            .with_context(|| format!("failed to restrict the modes of `{}`", path.display()))?;
        Ok(Self { db })
    }

    /// Durably stores the PEM bundle `name`, in one write: uploads never overwrite one,
    /// an ACME renewal replaces its own.
    pub fn put_certificate(&self, name: &str, pem: &[u8]) -> anyhow::Result<()> {
        self.db
            .insert([CERTIFICATE, name.as_bytes()].concat(), pem)
            .context("failed to write the certificate bundle")?;
        self.db
            .flush()
            .context("failed to flush the certificate bundle to disk")?;
        Ok(())
    }

    /// Durably removes the bundle `name`.
    pub fn delete_certificate(&self, name: &str) -> anyhow::Result<()> {
        self.db
            .remove([CERTIFICATE, name.as_bytes()].concat())
            .context("failed to remove the certificate bundle")?;
        self.db
            .flush()
            .context("failed to flush the removal to disk")?;
        Ok(())
    }

    /// The ACME account kept for `directory`, as `put_acme_account` stored it.
    pub fn acme_account(&self, directory: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let account = self
            .db
            .get([ACME_ACCOUNT, directory.as_bytes()].concat())
            .context("failed to read the ACME account")?;
        Ok(account.map(|a| a.to_vec()))
    }

    /// Durably stores the ACME account (its key included) for `directory`.
    pub fn put_acme_account(&self, directory: &str, account: &[u8]) -> anyhow::Result<()> {
        self.db
            .insert([ACME_ACCOUNT, directory.as_bytes()].concat(), account)
            .context("failed to write the ACME account")?;
        self.db
            .flush()
            .context("failed to flush the ACME account to disk")?;
        Ok(())
    }

    /// Every stored bundle, by name.
    pub fn certificates(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.db
            .scan_prefix(CERTIFICATE)
            .map(|item| {
                let (key, pem) = item?;
                let name = String::from_utf8_lossy(&key[CERTIFICATE.len()..]).into_owned();
                Ok((name, pem.to_vec()))
            })
            .collect()
    }

    /// The most recently committed generation, if any was ever committed.
    pub fn latest(&self) -> anyhow::Result<Option<StoredGeneration>> {
        let last = self.db.scan_prefix(ENTRY).next_back().transpose()?;
        match last {
            Some((key, _)) => self.generation(decode_generation(&key)?),
            None => Ok(None),
        }
    }

    /// One kept generation with its tree.
    pub fn generation(&self, generation: u64) -> anyhow::Result<Option<StoredGeneration>> {
        let (Some(entry), Some(tree)) = (
            self.db.get(key(ENTRY, generation))?,
            self.db.get(key(TREE, generation))?,
        ) else {
            return Ok(None);
        };
        let entry = serde_json::from_slice(&entry).with_context(|| {
            format!("the history entry of generation {generation} is unreadable")
        })?;
        Ok(Some(StoredGeneration {
            entry,
            tree: tree.to_vec(),
        }))
    }

    /// The kept history, oldest first.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let mut entries = Vec::new();
        for item in self.db.scan_prefix(ENTRY) {
            let (key, bytes) = item?;
            match serde_json::from_slice(&bytes) {
                Ok(entry) => entries.push(entry),
                Err(e) => tracing::warn!(key = ?key, "skipping an unreadable history entry: {e}"),
            }
        }
        Ok(entries)
    }

    /// Durably records `tree` as `generation`, dropping generations beyond the window.
    pub fn commit(
        &self,
        generation: u64,
        method: &str,
        path: &str,
        tree: &Value,
    ) -> anyhow::Result<HistoryEntry> {
        let entry = HistoryEntry {
            generation,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            method: method.to_owned(),
            path: path.to_owned(),
        };
        let mut batch = sled::Batch::default();
        batch.insert(key(ENTRY, generation), serde_json::to_vec(&entry)?);
        batch.insert(key(TREE, generation), serde_json::to_vec(tree)?);
        let oldest_kept = generation.saturating_sub(HISTORY_LEN - 1);
        for prefix in [ENTRY, TREE] {
            for item in self.db.range(key(prefix, 0)..key(prefix, oldest_kept)) {
                batch.remove(item?.0);
            }
        }
        self.db
            .apply_batch(batch)
            .context("failed to write the new configuration")?;
        self.db
            .flush()
            .context("failed to flush the new configuration to disk")?;
        Ok(entry)
    }

    /// Keeps a stored tree that no longer loads, with the reason, for inspection.
    pub fn quarantine(&self, generation: u64, tree: &[u8], reason: &str) -> anyhow::Result<()> {
        let record = serde_json::json!({
            "generation": generation,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "reason": reason,
            "tree": String::from_utf8_lossy(tree),
        });
        self.db
            .insert(key(QUARANTINE, generation), serde_json::to_vec(&record)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// Records set aside by `quarantine`, oldest first.
    pub fn quarantined(&self) -> anyhow::Result<Vec<Value>> {
        self.db
            .scan_prefix(QUARANTINE)
            .map(|item| Ok(serde_json::from_slice(&item?.1)?))
            .collect()
    }

    /// Writes a tree without validation, as an older or damaged server might have left it.
    #[cfg(test)]
    pub fn commit_raw(&self, generation: u64, tree: &[u8]) -> anyhow::Result<()> {
        let entry = HistoryEntry {
            generation,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            method: "PUT".to_owned(),
            path: "/config".to_owned(),
        };
        self.db
            .insert(key(ENTRY, generation), serde_json::to_vec(&entry)?)?;
        self.db.insert(key(TREE, generation), tree)?;
        self.db.flush()?;
        Ok(())
    }
}

/// The database directory 0700 and every file in it 0600.
fn owner_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mode = if entry.file_type()?.is_dir() {
            0o700
        } else {
            0o600
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn key(prefix: &[u8], generation: u64) -> Vec<u8> {
    [prefix, &generation.to_be_bytes()].concat()
}

fn decode_generation(key: &[u8]) -> anyhow::Result<u64> {
    let bytes = key
        .get(ENTRY.len()..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .context("a history key in the state database is malformed")?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_last_hundred_generations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(store.latest().expect("read").is_none());
        for generation in 1..=105 {
            store
                .commit(generation, "PUT", "/config", &json!({"n": generation}))
                .expect("commit");
        }
        let history = store.history().expect("history");
        assert_eq!(history.len(), 100);
        assert_eq!(history[0].generation, 6);
        assert!(store.generation(5).expect("read").is_none());
        let latest = store.latest().expect("read").expect("some");
        assert_eq!(latest.entry.generation, 105);
        assert_eq!(latest.tree, br#"{"n":105}"#);
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit(1, "PUT", "/config", &json!({"a": 1}))
                .expect("commit");
            store
                .quarantine(1, b"{bad", "does not parse")
                .expect("quarantine");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let latest = store.latest().expect("read").expect("some");
        assert_eq!(
            (latest.entry.generation, latest.entry.method.as_str()),
            (1, "PUT")
        );
        assert_eq!(
            store.quarantined().expect("read")[0]["reason"],
            "does not parse"
        );
    }
}
