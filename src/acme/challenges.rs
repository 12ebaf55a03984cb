//! The HTTP-01 challenges in progress: the key authorization the ACME server expects at
//! `/.well-known/acme-challenge/<token>` (RFC 8555 §8.3), answered on every listener
//! before routing while an order waits for it, and only then.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where RFC 8555 puts the challenge responses.
pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens and their key authorizations, shared by the renewal tasks (which add and
/// remove them) and every generation's request path (which answers them).
#[derive(Debug, Default)]
pub struct Challenges {
    pending: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The key authorization to answer for a request path, if it is a pending challenge.
    pub fn answer(&self, path: &[u8]) -> Option<String> {
        let token = path.strip_prefix(PATH_PREFIX.as_bytes())?;
        let token = std::str::from_utf8(token).ok()?;
        self.lock().get(token).cloned()
    }

    /// Answers `token` with `key_authorization` until the returned guard is dropped.
    pub fn offer(&self, token: &str, key_authorization: &str) -> Offered<'_> {
        self.lock()
            .insert(token.to_owned(), key_authorization.to_owned());
        Offered {
            challenges: self,
            token: token.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the map cannot leave it half-changed: keep serving it.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A challenge answered while this lives.
pub struct Offered<'a> {
    challenges: &'a Challenges,
    token: String,
}

impl Drop for Offered<'_> {
    fn drop(&mut self) {
        self.challenges.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_pending_token_only_while_it_is_offered() {
        let challenges = Challenges::default();
        let path = b"/.well-known/acme-challenge/tok-1";
        assert_eq!(challenges.answer(path), None);
        {
            let _offered = challenges.offer("tok-1", "tok-1.thumb");
            assert_eq!(challenges.answer(path).as_deref(), Some("tok-1.thumb"));
            assert_eq!(
                challenges.answer(b"/.well-known/acme-challenge/tok-2"),
                None
            );
            assert_eq!(challenges.answer(b"/tok-1"), None);
        }
        assert_eq!(challenges.answer(path), None);
    }
}
