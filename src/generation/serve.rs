//! The request path through a generation: the listener's pass, then routing when a
//! route, a rewrite or the access log needs the request's facts, then the app, then what
//! the acting step says of the answer.

use crate::http::{self, Completion, Request, Response};
use crate::routing::Outcome;
use crate::routing::action::Pass;
use crate::routing::request::RequestInfo;

use super::Generation;

impl Generation {
    /// Serves a request that arrived on the listener `address`; the completion, if any,
    /// logs it once the response is written.
    pub async fn serve(&self, address: &str, request: Request) -> (Response, Option<Completion>) {
        let Some(pass) = self.listeners.get(address) else {
            // The listener was removed while this request was on its way.
            return (http::error_response(503), None);
        };
        // The common case goes straight to the app, with nothing to derive or keep.
        if let (Pass::Application(index), None) = (pass, &self.access_log) {
            return match self.applications.get(*index) {
                Some((_, app)) => (app.serve(request).await, None),
                None => (http::error_response(500), None),
            };
        }
        // Boxed, so that the fast path's future (moved on every request) stays small.
        Box::pin(self.dispatch(pass, request)).await
    }

    /// Routes a request, serves it, and applies what the acting step says to the answer.
    async fn dispatch(&self, pass: &Pass, request: Request) -> (Response, Option<Completion>) {
        let mut info = RequestInfo::new(request);
        let mut acted = None;
        let outcome = self.router.route(pass, &mut info, &mut acted);
        let mut response = match outcome {
            Outcome::Respond(response) => response,
            Outcome::Application(index) => match self.applications.get(index) {
                Some((_, app)) => {
                    // Keep the request's fields only if something reads them afterwards.
                    let keep = self.access_log.is_some()
                        || acted.is_some_and(|a| a.response_headers_need_request());
                    app.serve(info.take_request(keep)).await
                }
                None => http::error_response(500),
            },
            Outcome::Proxy(destination) => {
                let keep = self.access_log.is_some()
                    || acted.is_some_and(|a| a.response_headers_need_request());
                destination.forward(info.take_request(keep)).await
            }
        };
        if let Some(action) = acted
            && action.has_response_headers()
        {
            action.apply_response_headers(response.status, &mut response.headers, &info);
        }
        let completion = self
            .access_log
            .as_ref()
            .map(|log| log.completion(info, &response));
        (response, completion)
    }
}
