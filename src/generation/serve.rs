//! The request path through a generation: the listener's pass, then routing when a
//! route, a rewrite or the access log needs the request's facts, then the app, then what
//! the acting step says of the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::Either;

use crate::http::{self, Completion, Request, Response, ResponseBody, Sent};
use crate::metrics::requests::{ListenerSeries, Series};
use crate::metrics::text::Format;
use crate::routing::Outcome;
use crate::routing::action::Pass;
use crate::routing::request::RequestInfo;
use crate::telemetry::RequestSpan;

use super::Generation;

/// The answer to an ACME HTTP-01 validation (RFC 8555 §8.3): the key authorization, as
/// `application/octet-stream`, to a GET (or HEAD).
fn challenge_response(request: &Request, key_authorization: String) -> Response {
    if !matches!(&request.method[..], b"GET" | b"HEAD") {
        let mut response = http::error_response(405);
        response.headers.push((
            Bytes::from_static(b"Allow"),
            Bytes::from_static(b"GET, HEAD"),
        ));
        return response;
    }
    Response {
        status: 200,
        headers: vec![(
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(b"application/octet-stream"),
        )],
        body: ResponseBody::Full(Bytes::from(key_authorization)),
    }
}

pin_project_lite::pin_project! {
    /// An app's answer on the fast path, counted in its series when it comes.
    struct Counted<'a, F> {
        series: Option<&'a Series>,
        started: Instant,
        #[pin]
        serving: F,
    }
}

impl<F: Future<Output = Response>> Future for Counted<'_, F> {
    type Output = (Response, Option<Completion>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.serving.poll(cx));
        if let Some(series) = this.series {
            series.record(response.status, Some(this.started.elapsed()));
        }
        Poll::Ready((response, None))
    }
}

impl Generation {
    /// Serves a request that arrived on the listener `address`; the completion, if any,
    /// logs it once the response is written.
    ///
    /// A plain function returning the future rather than an `async fn`: the common case
    /// is the app's own future with its count around it, so no layer here holds the
    /// request or a copy of the app's future (the whole future is moved on every
    /// request, and each async layer would add both).
    pub fn serve<'a>(
        &'a self,
        address: &str,
        request: Request,
    ) -> impl Future<Output = (Response, Option<Completion>)> + Send + use<'a> {
        let answer = |response| Either::Left(std::future::ready((response, None)));
        let Some(served) = self.listeners.get(address) else {
            // The listener was removed while this request was on its way.
            return answer(http::error_response(503));
        };
        let (pass, series) = (&served.pass, &served.series);
        if let Some(challenges) = &self.challenges
            && let Some(key_authorization) = challenges.answer(request.target.path())
        {
            let response = challenge_response(&request, key_authorization);
            series.unserved().record(response.status, None);
            return answer(response);
        }
        // The common case goes straight to the app, with nothing to derive or keep.
        if let (Pass::Application(index), None, None) = (pass, &self.access_log, &self.telemetry) {
            let Some((_, app)) = self.applications.get(*index) else {
                return answer(http::error_response(500));
            };
            return Either::Right(Either::Left(Counted {
                series: series.application(*index),
                started: Instant::now(),
                serving: app.serve(request),
            }));
        }
        // Boxed, so that the fast path's future stays small.
        let dispatch: Pin<Box<dyn Future<Output = _> + Send + 'a>> =
            Box::pin(self.dispatch(pass, series, request));
        Either::Right(Either::Right(dispatch))
    }

    /// Routes a request, serves it, and applies what the acting step says to the answer.
    async fn dispatch(
        &self,
        pass: &Pass,
        series: &ListenerSeries,
        request: Request,
    ) -> (Response, Option<Completion>) {
        let mut info = RequestInfo::new(request);
        let span = self.telemetry.as_ref().map(|t| t.begin(&info));
        let mut app_name = None;
        let mut acted = None;
        let outcome = self.router.route(pass, &mut info, &mut acted);
        // Keep the request's fields only if something reads them after it is served.
        let keep =
            self.access_log.is_some() || acted.is_some_and(|a| a.response_headers_need_request());
        let mut response = match outcome {
            Outcome::Respond(response) => {
                series.unserved().record(response.status, None);
                response
            }
            Outcome::Application(index) => match self.applications.get(index) {
                Some((name, app)) => {
                    app_name = Some(name.as_str());
                    let request = handed_on(info.take_request(keep), span.as_ref());
                    let started = Instant::now();
                    let response = app.serve(request).await;
                    if let Some(series) = series.application(index) {
                        series.record(response.status, Some(started.elapsed()));
                    }
                    response
                }
                None => {
                    let response = http::error_response(500);
                    series.unserved().record(response.status, None);
                    response
                }
            },
            Outcome::Proxy(destination) => {
                let request = handed_on(info.take_request(keep), span.as_ref());
                let response = destination.forward(request).await;
                series.unserved().record(response.status, None);
                response
            }
            Outcome::Metrics => {
                let response = self.metrics(&info);
                series.unserved().record(response.status, None);
                response
            }
        };
        if let Some(action) = acted
            && action.has_response_headers()
        {
            action.apply_response_headers(response.status, &mut response.headers, &info);
        }
        let logged = self
            .access_log
            .as_ref()
            .map(|log| log.completion(info, &response));
        // Unit tells the client the span that served it; one a proxied server or another
        // Wharf named is replaced by this one, its parent.
        if let Some(span) = &span {
            span.propagate(&mut response.headers);
        }
        let completion = match (span, &self.telemetry) {
            // A span that is not recorded has nothing left to do.
            (Some(span), Some(telemetry)) if span.sampled() => {
                let telemetry = Arc::clone(telemetry);
                let app = app_name.map(str::to_owned);
                let ended: Completion = Box::new(move |sent: &Sent| {
                    if let Some(logged) = logged {
                        logged(sent);
                    }
                    telemetry.end(span, sent, app.as_deref());
                });
                Some(ended)
            }
            _ => logged,
        };
        (response, completion)
    }

    /// The metrics exposition, for a `metrics` action: GET and HEAD only (405 otherwise,
    /// as a share answers), 503 if the control plane is gone (the server is stopping).
    fn metrics(&self, request: &RequestInfo) -> Response {
        let method = &request.method[..];
        if method != b"GET" && method != b"HEAD" {
            return http::error_response(405);
        }
        let Some(exposition) = self.exposition.as_ref().and_then(Weak::upgrade) else {
            return http::error_response(503);
        };
        let format = Format::negotiate(&request.headers);
        let body = exposition.render(format);
        Response {
            status: 200,
            headers: vec![(
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(format.content_type().as_bytes()),
            )],
            body: ResponseBody::Full(Bytes::from(body)),
        }
    }
}

/// `request`, its `traceparent` naming the request's span if there is one.
fn handed_on(mut request: Request, span: Option<&RequestSpan>) -> Request {
    if let Some(span) = span {
        span.propagate(&mut request.headers);
    }
    request
}
