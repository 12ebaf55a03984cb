//! The compiled-artifact cache on disk: modules (and components) that Wharf compiled
//! once, kept in the state dir so that a restart does not compile them again.
//!
//! An entry is found by a key made of the module's content hash, its kind, and a
//! fingerprint of everything that shapes compiled code (wasmtime's version, the engine's
//! settings and target, the CPU features it compiles for), so an entry is only ever
//! looked up by an engine that could have written it.
//!
//! Deserializing compiled code runs it, so only entries this cache wrote are accepted:
//! each carries an HMAC-SHA256 tag over its key and contents, made with a random secret
//! kept beside the entries (mode 0600). A missing, foreign, truncated or altered entry is
//! a miss: it is logged, removed, and the module compiled again. Entries are written to a
//! temporary name and renamed into place, so a crash leaves either no entry or a whole
//! one; the tag catches anything else. The directory has a size bound: after each write
//! the least recently used entries are removed until it fits.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash as _, Hasher};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;

use super::ModuleHash;

/// The first bytes of every entry; a new layout gets a new magic.
const MAGIC: &[u8; 8] = b"WHARFAC1";
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + TAG_LEN;
const SECRET_FILE: &str = "secret";
const SECRET_LEN: usize = 32;
const ENTRY_SUFFIX: &str = ".cwasm";
const TEMP_MARKER: &str = ".tmp-";

type HmacSha256 = Hmac<Sha256>;

/// What a cached artifact was compiled from; part of the key, so a module and a
/// component with the same bytes never share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Module,
    Component,
}

impl ArtifactKind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Module => b"module",
            Self::Component => b"component",
        }
    }
}

pub struct ArtifactCache {
    dir: PathBuf,
    secret: [u8; SECRET_LEN],
    /// SHA-256 of what makes compiled code compatible with this engine.
    fingerprint: [u8; 32],
    capacity: u64,
    /// Serialises writes and evictions, so two of them never race over the total size.
    writing: Mutex<()>,
    temp_names: AtomicU64,
}

/// Artifact bytes whose tag checked out: written by this cache, with this secret, for
/// this key. Only this cache makes one.
pub struct Verified(Vec<u8>);

impl Verified {
    /// Loads the artifact as a compiled module.
    pub fn into_module(self, engine: &Engine) -> anyhow::Result<wasmtime::Module> {
        // SAFETY: `Module::deserialize` trusts its input to be wasmtime's own output. A
        // `Verified` holds only bytes whose HMAC, keyed by this state dir's private secret,
        // matched: bytes this cache wrote after `Module::serialize`, for an engine with the
        // same fingerprint. wasmtime still checks its version and settings header.
        #[allow(unsafe_code)]
        let module = unsafe { wasmtime::Module::deserialize(engine, &self.0) };
        module.map_err(anyhow::Error::from)
    }

    /// Loads the artifact as a compiled component.
    pub fn into_component(self, engine: &Engine) -> anyhow::Result<wasmtime::component::Component> {
        // SAFETY: as in `into_module`: only bytes this cache wrote from
        // `Component::serialize`, checked by their keyed tag.
        #[allow(unsafe_code)]
        let component = unsafe { wasmtime::component::Component::deserialize(engine, &self.0) };
        component.map_err(anyhow::Error::from)
    }
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache in `dir` for artifacts of `engine`, bounded
    /// to `capacity` bytes. Temporary files a crash left behind are removed.
    pub fn open(dir: &Path, engine: &Engine, capacity: u64) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
        let secret = load_or_create_secret(dir)?;
        let cache = Self {
            dir: dir.to_path_buf(),
            secret,
            fingerprint: engine_fingerprint(engine),
            capacity,
            writing: Mutex::new(()),
            temp_names: AtomicU64::new(0),
        };
        for entry in fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(cache)
    }

    /// The entry for this module, if there is a whole, untampered one.
    pub fn get(&self, kind: ArtifactKind, hash: &ModuleHash) -> Option<Verified> {
        let key = self.key(kind, hash);
        let path = self.entry_path(&key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "compiled-module cache: cannot read `{}`: {e}",
                    path.display()
                );
                return None;
            }
        };
        if !self.tag_matches(&key, &bytes) {
            tracing::warn!(
                "compiled-module cache: `{}` failed its integrity check (altered, truncated \
                 or not written by this server); removing it and compiling again",
                path.display()
            );
            let _ = fs::remove_file(&path);
            return None;
        }
        // Recently used entries are the last to be evicted.
        if let Ok(file) = File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        let mut artifact = bytes;
        artifact.drain(..HEADER_LEN);
        Some(Verified(artifact))
    }

    /// Removes an entry that verified but could not be loaded (wasmtime refused it).
    pub fn discard(&self, kind: ArtifactKind, hash: &ModuleHash) {
        let _ = fs::remove_file(self.entry_path(&self.key(kind, hash)));
    }

    /// Stores an artifact, then evicts the least recently used entries beyond the bound.
    /// The cache only saves time, so a failure is logged, never returned.
    pub fn put(&self, kind: ArtifactKind, hash: &ModuleHash, artifact: &[u8]) {
        let size = (HEADER_LEN + artifact.len()) as u64;
        if size > self.capacity {
            tracing::info!(
                "compiled-module cache: an artifact of {size} bytes exceeds the cache size \
                 ({} bytes); not stored",
                self.capacity
            );
            return;
        }
        let Ok(_writing) = self.writing.lock() else {
            return;
        };
        let key = self.key(kind, hash);
        let path = self.entry_path(&key);
        if let Err(e) = self.write_entry(&key, &path, artifact) {
            tracing::warn!(
                "compiled-module cache: cannot write `{}`: {e:#}",
                path.display()
            );
            return;
        }
        if let Err(e) = self.evict(&path) {
            tracing::warn!("compiled-module cache: eviction failed: {e:#}");
        }
    }

    fn write_entry(&self, key: &[u8; 32], path: &Path, artifact: &[u8]) -> anyhow::Result<()> {
        let temp = self.dir.join(format!(
            "{}{TEMP_MARKER}{}-{}",
            hex(key),
            std::process::id(),
            self.temp_names.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&self.tag(key, artifact))?;
            file.write_all(artifact)?;
            fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(anyhow::Error::from)
    }

    /// Removes the least recently used entries until the total fits the bound; `keep`
    /// (the entry just written) goes last.
    fn evict(&self, keep: &Path) -> anyhow::Result<()> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let is_entry = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(ENTRY_SUFFIX) && !n.contains(TEMP_MARKER));
            let Ok(meta) = entry.metadata() else { continue };
            if !is_entry || !meta.is_file() {
                continue;
            }
            total += meta.len();
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((path == keep, used, meta.len(), path));
        }
        entries.sort();
        for (_, _, len, path) in entries {
            if total <= self.capacity {
                break;
            }
            fs::remove_file(&path)?;
            total -= len;
            tracing::info!(
                "compiled-module cache: evicted `{}` ({len} bytes)",
                path.display()
            );
        }
        Ok(())
    }

    fn key(&self, kind: ArtifactKind, hash: &ModuleHash) -> [u8; 32] {
        let mut key = Sha256::new();
        key.update(kind.tag());
        key.update(hash);
        key.update(self.fingerprint);
        key.finalize().into()
    }

    fn entry_path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}{ENTRY_SUFFIX}", hex(key)))
    }

    fn mac(&self, key: &[u8; 32], artifact: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(MAGIC);
        mac.update(key);
        mac.update(artifact);
        mac
    }

    fn tag(&self, key: &[u8; 32], artifact: &[u8]) -> [u8; TAG_LEN] {
        self.mac(key, artifact).finalize().into_bytes().into()
    }

    fn tag_matches(&self, key: &[u8; 32], entry: &[u8]) -> bool {
        let Some((header, artifact)) = entry.split_at_checked(HEADER_LEN) else {
            return false;
        };
        let (magic, tag) = header.split_at(MAGIC.len());
        // `verify_slice` compares in constant time.
        magic == MAGIC && self.mac(key, artifact).verify_slice(tag).is_ok()
    }
}

/// Reads the cache's secret, or makes one from the OS's randomness on first use. A
/// secret of the wrong size (a damaged file) is replaced, which invalidates every entry.
fn load_or_create_secret(dir: &Path) -> anyhow::Result<[u8; SECRET_LEN]> {
    let path = dir.join(SECRET_FILE);
    if let Ok(bytes) = fs::read(&path) {
        if let Ok(secret) = <[u8; SECRET_LEN]>::try_from(bytes.as_slice()) {
            return Ok(secret);
        }
        tracing::warn!(
            "compiled-module cache: `{}` is damaged; making a new secret (every cached \
             artifact will be compiled again)",
            path.display()
        );
        fs::remove_file(&path)?;
    }
    let mut secret = [0u8; SECRET_LEN];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut secret))
        .context("failed to read /dev/urandom")?;
    let temp = dir.join(format!("{SECRET_FILE}{TEMP_MARKER}{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("failed to create `{}`", temp.display()))?;
    file.write_all(&secret)?;
    file.sync_all()?;
    fs::rename(&temp, &path)?;
    Ok(secret)
}

/// SHA-256 over wasmtime's own compatibility hash: its version, target, CPU features,
/// compiler flags and tunables.
fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(MAGIC);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    fn compiled(engine: &Engine, body: &str) -> (ModuleHash, Vec<u8>) {
        let wat = format!("(module (func (export \"f\") (result i32) {body}))");
        let bytes = wat.into_bytes();
        let module = wasmtime::Module::new(engine, &bytes).expect("compile");
        (
            Sha256::digest(&bytes).into(),
            module.serialize().expect("serialize"),
        )
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<_> = fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(ENTRY_SUFFIX))
            .collect();
        paths.sort();
        paths
    }

    #[test]
    fn a_stored_module_comes_back_and_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let cache = ArtifactCache::open(dir.path(), &engine, 1 << 30).expect("open");
        let (hash, artifact) = compiled(&engine, "i32.const 7");
        assert!(cache.get(ArtifactKind::Module, &hash).is_none());
        cache.put(ArtifactKind::Module, &hash, &artifact);
        assert!(cache.get(ArtifactKind::Component, &hash).is_none());
        let module = cache
            .get(ArtifactKind::Module, &hash)
            .expect("hit")
            .into_module(&engine)
            .expect("deserialize");
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiate");
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "f")
            .expect("f");
        assert_eq!(f.call(&mut store, ()).expect("call"), 7);
        // The secret survives a reopen, so entries do too.
        let reopened = ArtifactCache::open(dir.path(), &engine, 1 << 30).expect("open");
        assert!(reopened.get(ArtifactKind::Module, &hash).is_some());
    }

    #[test]
    fn altered_truncated_or_foreign_entries_are_misses_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let cache = ArtifactCache::open(dir.path(), &engine, 1 << 30).expect("open");
        let (hash, artifact) = compiled(&engine, "i32.const 1");
        let path_of = |hash| cache.entry_path(&cache.key(ArtifactKind::Module, hash));
        let put_and_path = || {
            cache.put(ArtifactKind::Module, &hash, &artifact);
            path_of(&hash)
        };

        let path = put_and_path();
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(cache.get(ArtifactKind::Module, &hash).is_none());
        assert!(!path.exists(), "a tampered entry is removed");

        let path = put_and_path();
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        assert!(cache.get(ArtifactKind::Module, &hash).is_none());

        // Written by another state dir: a different secret.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = ArtifactCache::open(other_dir.path(), &engine, 1 << 30).expect("open");
        other.put(ArtifactKind::Module, &hash, &artifact);
        let foreign = entries(other_dir.path()).pop().expect("entry");
        let path = put_and_path();
        fs::copy(&foreign, &path).expect("copy");
        assert!(cache.get(ArtifactKind::Module, &hash).is_none());

        // A valid entry moved to another key's name.
        let (other_hash, other_artifact) = compiled(&engine, "i32.const 2");
        cache.put(ArtifactKind::Module, &other_hash, &other_artifact);
        let path = put_and_path();
        fs::copy(&path, path_of(&other_hash)).expect("copy");
        assert!(cache.get(ArtifactKind::Module, &other_hash).is_none());
        assert!(cache.get(ArtifactKind::Module, &hash).is_some());
    }

    #[test]
    fn the_least_recently_used_entries_go_beyond_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let modules: Vec<_> = (0..3)
            .map(|i| compiled(&engine, &format!("i32.const {i}")))
            .collect();
        let largest = modules.iter().map(|(_, a)| a.len()).max().unwrap_or(0);
        // Room for two entries, not three.
        let capacity = 2 * (HEADER_LEN + largest) as u64 + 16;
        let cache = ArtifactCache::open(dir.path(), &engine, capacity).expect("open");
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for (i, (hash, artifact)) in modules.iter().enumerate() {
            cache.put(ArtifactKind::Module, hash, artifact);
            // Distinct use times without sleeping: entry 0 is made the oldest.
            let path = cache.entry_path(&cache.key(ArtifactKind::Module, hash));
            let when = old + std::time::Duration::from_secs(i as u64 * 10);
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .expect("set mtime");
            if i == 1 {
                // Entry 0 is used again, so entry 1 becomes the least recent.
                assert!(cache.get(ArtifactKind::Module, &modules[0].0).is_some());
            }
        }
        assert_eq!(entries(dir.path()).len(), 2);
        assert!(cache.get(ArtifactKind::Module, &modules[0].0).is_some());
        assert!(cache.get(ArtifactKind::Module, &modules[1].0).is_none());
        assert!(cache.get(ArtifactKind::Module, &modules[2].0).is_some());
    }
}
