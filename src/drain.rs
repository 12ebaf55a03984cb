//! Graceful exit (`SIGQUIT`): once the listeners are closed, waiting for the data
//! plane's open connections to finish the requests in hand, up to a bound.

use std::time::Duration;

use tokio::time::Instant;

use crate::http::ConnectionStats;

/// How often the count of open connections is read while draining: short next to any
/// request worth waiting for, and a read is a few atomic loads.
const POLL: Duration = Duration::from_millis(20);

/// Waits until no data-plane connection is open or `bound` has passed, whichever comes
/// first; returns how many connections were still open (0 when drained).
pub async fn until_connections_close(stats: &ConnectionStats, bound: Duration) -> u64 {
    let deadline = Instant::now() + bound;
    loop {
        let open = stats.active.get();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
    }
}
