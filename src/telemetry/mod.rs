//! OpenTelemetry traces, as Unit's `settings.telemetry` configures them: a server span
//! per request, its W3C trace context taken from the client (`context`) and handed on
//! to the application or the proxied server, exported over OTLP (HTTP/protobuf or
//! gRPC) in batches (`export`).
//!
//! The request path never waits for the collector: a finished span is offered to a
//! bounded queue and dropped (and counted) when the queue is full; the export task
//! drains the queue on the control plane's runtime. A trace that is not sampled costs
//! two random numbers and a header.

pub mod context;
mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::SpanData;
use tokio::sync::{mpsc, oneshot};

use crate::http::{Request, Sent};
use context::Incoming;

pub use export::ExportCounts;

/// `settings.telemetry`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySpec {
    pub endpoint: String,
    pub protocol: Protocol,
    pub batch_size: usize,
    /// The share of new traces recorded, 0 to 1.
    pub sampling_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over HTTP, protobuf-encoded.
    Http,
    Grpc,
}

/// The `batch_size` when none is set (Wharf's choice: a batch every 128 recorded spans,
/// or every second).
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// Spans that may wait for export: a few batches, and at least a second's worth of a
/// busy server's sampled requests, so that a collector that is slow for a moment costs
/// nothing.
fn queue_capacity(batch_size: usize) -> usize {
    (batch_size * 8).max(8192)
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("settings/telemetry: {0}")]
pub struct TelemetryError(String);

/// A running telemetry configuration: the sampler and the export queue.
pub struct Telemetry {
    spec: TelemetrySpec,
    queue: mpsc::Sender<SpanData>,
    flushes: mpsc::Sender<export::Flush>,
}

impl Telemetry {
    /// Builds the exporter and starts its task on the current runtime. Nothing is
    /// connected yet: a collector that is down delays no change, its exports fail.
    pub fn start(spec: &TelemetrySpec) -> Result<Arc<Self>, TelemetryError> {
        let exporter = export::exporter(spec).map_err(|e| TelemetryError(e.to_string()))?;
        let (queue, spans) = mpsc::channel(queue_capacity(spec.batch_size));
        let (flushes, flush_requests) = mpsc::channel(1);
        tokio::spawn(export::run(
            exporter,
            spans,
            flush_requests,
            spec.batch_size,
        ));
        Ok(Arc::new(Self {
            spec: spec.clone(),
            queue,
            flushes,
        }))
    }

    pub fn spec(&self) -> &TelemetrySpec {
        &self.spec
    }

    /// Exports every span queued so far, without waiting for batches to fill: for a
    /// graceful stop, which would otherwise lose up to a second of spans.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Starts the span of `request`: a child of the client's span if it sent a valid
    /// `traceparent` (whose sampling decision it follows), else the root of a new trace,
    /// sampled by its trace id at `sampling_ratio`.
    pub fn begin(&self, request: &Request) -> RequestSpan {
        let incoming = Incoming::of(&request.headers);
        let (trace_id, parent_span_id, sampled) = match incoming.parent {
            Some(parent) => (parent.trace_id, parent.span_id, parent.sampled),
            None => {
                let trace_id = fastrand::u128(1..);
                (
                    trace_id,
                    0,
                    sampled_by_ratio(trace_id, self.spec.sampling_ratio),
                )
            }
        };
        RequestSpan {
            trace_id,
            span_id: fastrand::u64(1..),
            parent_span_id,
            remote_parent: incoming.parent.is_some(),
            sampled,
            state: incoming.state,
            start: SystemTime::now(),
            name: if sampled {
                String::from_utf8_lossy(&request.method).into_owned()
            } else {
                String::new()
            },
            attributes: if sampled {
                request_attributes(request)
            } else {
                Vec::new()
            },
        }
    }

    /// Ends `span` with what was sent, and queues it for export if it is sampled.
    pub fn end(&self, mut span: RequestSpan, sent: &Sent, app: Option<&str>) {
        if !span.sampled {
            return;
        }
        let status = i64::from(sent.status);
        span.attributes
            .push(KeyValue::new("http.response.status_code", status));
        span.attributes.push(KeyValue::new(
            "http.response.body.size",
            i64::try_from(sent.body_bytes).unwrap_or(i64::MAX),
        ));
        if let Some(app) = app {
            span.attributes
                .push(KeyValue::new("wharf.application", app.to_owned()));
        }
        let data = span.into_data(sent.status);
        if self.queue.try_send(data).is_err() {
            ExportCounts::get().count_dropped();
        }
    }
}

/// Whether a new trace is recorded: the trace id's lower 63 bits against the ratio, as
/// OpenTelemetry's `TraceIdRatioBased` sampler decides, so that every server sampling
/// at a ratio keeps the same traces.
fn sampled_by_ratio(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = (trace_id as u64) >> 1;
    low < bound
}

/// The request's attributes, by OpenTelemetry's HTTP server conventions.
fn request_attributes(request: &Request) -> Vec<KeyValue> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut attributes = vec![
        KeyValue::new("http.request.method", text(&request.method)),
        KeyValue::new("url.path", text(request.target.path())),
        KeyValue::new("url.scheme", if request.tls { "https" } else { "http" }),
        KeyValue::new(
            "network.protocol.version",
            request.version.as_str().trim_start_matches("HTTP/"),
        ),
    ];
    let query = request.target.query();
    if !query.is_empty() {
        attributes.push(KeyValue::new("url.query", text(query)));
    }
    if !request.host.is_empty() {
        attributes.push(KeyValue::new("server.address", text(&request.host)));
    }
    if let Some(local) = request.local {
        attributes.push(KeyValue::new("server.port", i64::from(local.port())));
    }
    if let Some(remote) = request.remote {
        attributes.push(KeyValue::new("client.address", remote.ip().to_string()));
    }
    if let Some((_, agent)) = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"user-agent"))
    {
        attributes.push(KeyValue::new("user_agent.original", text(agent)));
    }
    attributes
}

/// One request's span, from its start to its end.
pub struct RequestSpan {
    trace_id: u128,
    span_id: u64,
    /// 0 for the root of a trace.
    parent_span_id: u64,
    remote_parent: bool,
    sampled: bool,
    state: Option<Bytes>,
    start: SystemTime,
    /// The method, as OpenTelemetry names HTTP server spans without a route template.
    name: String,
    attributes: Vec<KeyValue>,
}

impl RequestSpan {
    /// Sets `traceparent` in `headers` (a request's, or the response's) to this span,
    /// leaving `tracestate` as it is: what the application or the proxied server
    /// records then joins the trace as this span's child.
    pub fn propagate(&self, headers: &mut Vec<(Bytes, Bytes)>) {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(b"traceparent"));
        headers.push((Bytes::from_static(b"traceparent"), self.traceparent()));
    }

    /// Whether the span is recorded (and exported once it ends).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` naming this span.
    pub fn traceparent(&self) -> Bytes {
        context::format_traceparent(self.trace_id, self.span_id, self.sampled)
    }

    fn into_data(self, status: u16) -> SpanData {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        let state = self
            .state
            .as_deref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(self.trace_id),
                SpanId::from(self.span_id),
                flags,
                false,
                state,
            ),
            parent_span_id: SpanId::from(self.parent_span_id),
            parent_span_is_remote: self.remote_parent,
            span_kind: SpanKind::Server,
            name: Cow::Owned(self.name),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            // Server spans: 5xx is the server's error, 4xx the client's (left unset).
            status: if status >= 500 {
                Status::error(format!("HTTP {status}"))
            } else {
                Status::Unset
            },
            instrumentation_scope: scope(),
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("wharf")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_keeps_that_share_of_trace_ids() {
        assert!(sampled_by_ratio(0, 0.5));
        assert!(!sampled_by_ratio(u128::MAX, 0.5));
        assert!(sampled_by_ratio(u128::MAX, 1.0));
        assert!(!sampled_by_ratio(0, 0.0));
        let kept = (0..10_000)
            .filter(|_| sampled_by_ratio(fastrand::u128(..), 0.25))
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept} of 10000 at 0.25");
    }
}
