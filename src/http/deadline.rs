//! A connection's wait timer, moved lazily.
//!
//! A kept-alive connection waits for every next request head with a fresh deadline.
//! Arming a tokio timer for each wait would register it in the timer wheel and remove
//! it again on every request; instead, the connection keeps one `Sleep`, and a new
//! deadline only moves it when it would fire too late. When it fires before the current
//! deadline (which has moved on since it was set), it is re-armed for that deadline, so
//! a timer registration happens about once per timeout period, not once per request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

pub(super) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When the current wait expires; `None`: never (a timeout too large to represent).
    at: Option<Instant>,
}

impl Deadline {
    pub(super) fn new() -> Self {
        Self {
            sleep: Box::pin(sleep_until(Instant::now())),
            at: None,
        }
    }

    /// The current wait expires `after` from now.
    pub(super) fn set_after(&mut self, after: Duration) {
        self.set(Instant::now().checked_add(after));
    }

    /// The current wait expires at `at` (never if `None`).
    pub(super) fn set(&mut self, at: Option<Instant>) {
        self.at = at;
        if let Some(at) = at
            && self.sleep.deadline() > at
        {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ready once the current wait has expired.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        loop {
            // Pending while it is armed; a timer armed for an earlier wait that fires is
            // moved to the current deadline and polled again, which registers it.
            ready!(self.sleep.as_mut().poll(cx));
            if self.sleep.deadline() >= at {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test]
    async fn expires_at_the_latest_deadline_only() {
        let mut deadline = Deadline::new();
        let start = Instant::now();
        deadline.set_after(Duration::from_millis(200));
        // The wait moves on before the timer fires: it must not expire at 200 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        deadline.set_after(Duration::from_millis(200));
        poll_fn(|cx| deadline.poll_expired(cx)).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        // A shorter wait moves the timer earlier.
        let start = Instant::now();
        deadline.set_after(Duration::from_secs(60));
        deadline.set_after(Duration::from_millis(50));
        poll_fn(|cx| deadline.poll_expired(cx)).await;
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn an_unrepresentable_deadline_never_expires() {
        let mut deadline = Deadline::new();
        deadline.set_after(Duration::MAX);
        let waited = tokio::time::timeout(
            Duration::from_millis(100),
            poll_fn(|cx| deadline.poll_expired(cx)),
        )
        .await;
        assert!(waited.is_err());
    }
}
