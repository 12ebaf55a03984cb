//! What requests are served by: the published config and the generation built from it,
//! swapped whole by the controller, and the handler that gives each request to the
//! generation current when it arrives.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::generation::Generation;
use crate::http::{Completion, Handler, Request, Response};

/// One published config and the generation that runs it.
pub struct Published {
    /// The generation number; 0 for the built-in default that was never committed.
    pub number: u64,
    pub tree: Value,
    pub running: Generation,
}

/// Hands each request of one listener to the generation that is current when it arrives.
pub struct ListenerHandler {
    address: String,
    published: Arc<ArcSwap<Published>>,
}

impl ListenerHandler {
    pub fn new(address: &str, published: &Arc<ArcSwap<Published>>) -> Self {
        Self {
            address: address.to_owned(),
            published: Arc::clone(published),
        }
    }
}

impl Handler for ListenerHandler {
    type Pinned = Arc<Published>;

    /// A head arriving in pieces keeps the generation it began in, so that a change
    /// removing its listener meanwhile does not leave it unserved. (Only then: a clone
    /// bumps the one reference count every connection's requests share.)
    fn pin(&self) -> Option<Arc<Published>> {
        Some(self.published.load_full())
    }

    async fn serve(
        &self,
        request: Request,
        pinned: Option<Arc<Published>>,
    ) -> (Response, Option<Completion>) {
        match pinned {
            Some(published) => published.running.serve(&self.address, request).await,
            None => {
                // A guard, not a clone: cloning would bump the one reference count every
                // connection's requests share, moving its cache line from core to core.
                let published = self.published.load();
                published.running.serve(&self.address, request).await
            }
        }
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.published.load().running.tls(&self.address).cloned()
    }
}
