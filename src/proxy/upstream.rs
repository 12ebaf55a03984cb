//! An upstream (`upstreams/<name>`): its servers and their weights, chosen by Unit's
//! (and nginx's) smooth weighted round robin: each pick adds every server's weight to
//! its current weight, takes the largest, and takes the total off the one taken. A
//! server of weight 0 gets no requests.

use std::sync::{Arc, Mutex, PoisonError};

use super::pool::Server;

#[derive(Debug)]
pub struct Upstream {
    servers: Box<[(Arc<Server>, i64)]>,
    /// Each server's current weight.
    current: Mutex<Box<[i64]>>,
}

impl Upstream {
    /// Servers with their weights (Unit's numbers, scaled to hundredths).
    pub fn new(servers: Vec<(Arc<Server>, i64)>) -> Upstream {
        let current = vec![0; servers.len()].into_boxed_slice();
        Upstream {
            servers: servers.into_boxed_slice(),
            current: Mutex::new(current),
        }
    }

    /// A weight as the config states it (0 to 1000000, fractions allowed), in the
    /// integer steps the round robin counts in.
    pub fn scale(weight: f64) -> i64 {
        (weight * 100.0).round() as i64
    }

    /// The next server; `None` when every weight is 0.
    pub fn next(&self) -> Option<&Arc<Server>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, (_, weight)) in self.servers.iter().enumerate() {
            if *weight == 0 {
                continue;
            }
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        self.servers.get(best).map(|(server, _)| server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Address, Timeouts};

    fn server(port: u16) -> Arc<Server> {
        let address = Address::Tcp(([127, 0, 0, 1], port).into());
        Server::new(address, Timeouts::default())
    }

    #[test]
    fn spreads_requests_by_weight_smoothly() {
        let upstream = Upstream::new(vec![
            (server(1), Upstream::scale(2.0)),
            (server(2), Upstream::scale(1.0)),
            (server(3), Upstream::scale(0.0)),
        ]);
        let picks: Vec<String> = (0..6)
            .map(|_| upstream.next().expect("a server").address.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:1",
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:1"
            ]
        );
        let none = Upstream::new(vec![(server(1), 0)]);
        assert!(none.next().is_none());
    }
}
