//! A TLS listener's `session` settings (Unit's `cache_size`, `timeout`, `tickets`) and
//! the rustls pieces that honour them: a bounded session cache whose entries expire
//! after `timeout`, and a ticketer whose tickets are refused once older than `timeout`.
//!
//! The cache and the ticket keys of a listener are kept across config changes while its
//! `session` settings stay the same, so a reconfiguration (a certificate rotation, say)
//! does not end every client's resumable session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::server::{ProducesTickets, StoresServerSessions};
use serde_json::Value;

/// Unit's defaults: no session cache, sessions live 5 minutes, no tickets.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a listener's `session` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// Sessions kept for resumption by ID (TLS 1.2) or stateful ticket (TLS 1.3); 0: none.
    pub cache_size: usize,
    pub timeout: Duration,
    /// Stateless tickets, with keys Wharf generates and rotates.
    pub tickets: bool,
}

impl Default for SessionSpec {
    fn default() -> Self {
        Self {
            cache_size: 0,
            timeout: DEFAULT_TIMEOUT,
            tickets: false,
        }
    }
}

impl SessionSpec {
    /// Reads `session` (which passed the schema); the error names the offending member
    /// relative to `session`.
    pub fn from_config(session: Option<&Value>) -> Result<SessionSpec, (String, String)> {
        let mut spec = SessionSpec::default();
        let Some(session) = session else {
            return Ok(spec);
        };
        if let Some(size) = session.get("cache_size").and_then(Value::as_u64) {
            spec.cache_size = usize::try_from(size).unwrap_or(usize::MAX);
        }
        if let Some(seconds) = session.get("timeout").and_then(Value::as_u64) {
            spec.timeout = Duration::from_secs(seconds);
        }
        match session.get("tickets") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => spec.tickets = true,
            Some(_) => {
                return Err((
                    "tickets".to_owned(),
                    "ticket keys given as strings are not supported: rustls cannot read \
                     OpenSSL's ticket key format, so tickets made by other servers with \
                     these keys would not resume here; use true (keys generated and \
                     rotated by Wharf) or false"
                        .to_owned(),
                ));
            }
        }
        Ok(spec)
    }
}

/// The session cache and ticketer of one listener.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub spec: SessionSpec,
    pub storage: Option<Arc<dyn StoresServerSessions>>,
    pub ticketer: Option<Arc<dyn ProducesTickets>>,
}

impl SessionState {
    fn new(spec: &SessionSpec) -> Result<SessionState, rustls::Error> {
        let storage = (spec.cache_size > 0).then(|| {
            Arc::new(TimedCache::new(spec.cache_size, spec.timeout))
                as Arc<dyn StoresServerSessions>
        });
        let ticketer = if spec.tickets {
            let inner = rustls::crypto::ring::Ticketer::new()?;
            Some(Arc::new(TimedTickets {
                inner,
                timeout: spec.timeout,
            }) as Arc<dyn ProducesTickets>)
        } else {
            None
        };
        Ok(SessionState {
            spec: spec.clone(),
            storage,
            ticketer,
        })
    }
}

/// The session state of every TLS listener, by address, kept while its spec stays.
#[derive(Debug, Default)]
pub struct Sessions {
    by_listener: Mutex<HashMap<String, SessionState>>,
}

impl Sessions {
    /// The state for `address` under `spec`: the kept one if the spec is unchanged.
    pub fn for_listener(
        &self,
        address: &str,
        spec: &SessionSpec,
    ) -> Result<SessionState, rustls::Error> {
        let mut map = self
            .by_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = map.get(address)
            && state.spec == *spec
        {
            return Ok(state.clone());
        }
        let state = SessionState::new(spec)?;
        map.insert(address.to_owned(), state.clone());
        Ok(state)
    }
}

/// A bounded session cache: the oldest entry goes when full, and entries older than
/// `timeout` are never handed out.
#[derive(Debug)]
struct TimedCache {
    size: usize,
    timeout: Duration,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    order: VecDeque<Vec<u8>>,
}

impl TimedCache {
    fn new(size: usize, timeout: Duration) -> Self {
        Self {
            size,
            timeout,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self, entry: Option<(Instant, Vec<u8>)>) -> Option<Vec<u8>> {
        entry.and_then(|(at, value)| (at.elapsed() <= self.timeout).then_some(value))
    }
}

impl StoresServerSessions for TimedCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut inner = self.lock();
        if inner.entries.contains_key(&key) {
            inner.order.retain(|k| *k != key);
        }
        while inner.order.len() >= self.size {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.entries.remove(&old);
                }
                None => break,
            }
        }
        inner.order.push_back(key.clone());
        inner.entries.insert(key, (Instant::now(), value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let entry = self.lock().entries.get(key).cloned();
        self.fresh(entry)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        let entry = inner.entries.remove(key);
        if entry.is_some() {
            inner.order.retain(|k| k != key);
        }
        drop(inner);
        self.fresh(entry)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// rustls's ticketer (ChaCha20-Poly1305, keys rotated every 6 hours), with the time a
/// ticket was made sealed inside it, so that one older than `timeout` does not resume.
#[derive(Debug)]
struct TimedTickets {
    inner: Arc<dyn ProducesTickets>,
    timeout: Duration,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ProducesTickets for TimedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.timeout.as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut sealed = Vec::with_capacity(8 + plain.len());
        sealed.extend_from_slice(&unix_seconds().to_be_bytes());
        sealed.extend_from_slice(plain);
        self.inner.encrypt(&sealed)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher)?;
        let (made, rest) = plain.split_first_chunk::<8>()?;
        let age = unix_seconds().saturating_sub(u64::from_be_bytes(*made));
        (age <= self.timeout.as_secs()).then(|| rest.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_unit_session_settings() {
        assert_eq!(SessionSpec::from_config(None), Ok(SessionSpec::default()));
        let spec = SessionSpec::from_config(Some(
            &json!({"cache_size": 10, "timeout": 60, "tickets": true}),
        ))
        .expect("ok");
        assert_eq!(
            spec,
            SessionSpec {
                cache_size: 10,
                timeout: Duration::from_secs(60),
                tickets: true
            }
        );
        let keys = SessionSpec::from_config(Some(&json!({"tickets": ["a"]})));
        assert!(keys.is_err_and(|(at, why)| at == "tickets" && why.contains("not supported")));
    }

    #[test]
    fn the_cache_is_bounded_and_entries_expire() {
        let cache = TimedCache::new(2, Duration::from_secs(60));
        for k in [1u8, 2, 3] {
            assert!(cache.put(vec![k], vec![k]));
        }
        assert_eq!(cache.get(&[1]), None, "the oldest went");
        assert_eq!(cache.get(&[3]), Some(vec![3]));
        assert_eq!(cache.take(&[2]), Some(vec![2]));
        assert_eq!(cache.get(&[2]), None);
        let expired = TimedCache::new(2, Duration::ZERO);
        expired.put(vec![1], vec![1]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(expired.get(&[1]), None);
    }

    #[test]
    fn tickets_carry_their_age() {
        let make = |timeout| TimedTickets {
            inner: rustls::crypto::ring::Ticketer::new().expect("ticketer"),
            timeout,
        };
        let tickets = make(Duration::from_secs(60));
        let sealed = tickets.encrypt(b"state").expect("sealed");
        assert_eq!(tickets.decrypt(&sealed), Some(b"state".to_vec()));
        assert_eq!(tickets.lifetime(), 60);
        let sessions = Sessions::default();
        let spec = SessionSpec {
            tickets: true,
            ..SessionSpec::default()
        };
        let a = sessions.for_listener("*:443", &spec).expect("state");
        let b = sessions.for_listener("*:443", &spec).expect("state");
        let same = match (&a.ticketer, &b.ticketer) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        assert!(same, "an unchanged spec keeps its ticket keys");
    }
}
