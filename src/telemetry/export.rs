//! The export task: takes finished spans off the queue, sends them to the collector in
//! batches of `batch_size` (or whatever a second brought), one batch at a time, and
//! counts what it sent and what the collector did not take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::{Protocol, TelemetrySpec};

/// How long a batch waits to fill before it leaves anyway.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long one export may take (Unit's bound).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Export failures are logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What became of the sampled spans of every telemetry configuration so far, for the
/// metrics. Kept for the process, so that the counts never go back when a change
/// restarts the exporter.
pub struct ExportCounts {
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

static COUNTS: ExportCounts = ExportCounts {
    exported: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

impl ExportCounts {
    pub fn get() -> &'static ExportCounts {
        &COUNTS
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans in batches the collector refused or did not answer in time.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The OTLP exporter `spec` names.
pub(super) fn exporter(
    spec: &TelemetrySpec,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match spec.protocol {
        Protocol::Http => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(spec.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(spec.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
    };
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("wharf")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build(),
    );
    Ok(exporter)
}

/// A request to export everything queued now; answered once it has been sent.
pub(super) type Flush = oneshot::Sender<()>;

/// Exports what arrives on `spans` until every sender is gone, then what is left; a
/// request on `flushes` sends the queue at once, without waiting for batches to fill.
pub(super) async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<Flush>,
    batch_size: usize,
) {
    let mut export = Export {
        exporter,
        last_failure_logged: None,
    };
    loop {
        let first = tokio::select! {
            span = spans.recv() => match span {
                Some(span) => span,
                None => return,
            },
            Some(flush) = flushes.recv() => {
                export.all_queued(&mut spans, batch_size).await;
                let _ = flush.send(());
                continue;
            }
        };
        let mut batch = Vec::with_capacity(batch_size);
        batch.push(first);
        let deadline = Instant::now() + FLUSH_INTERVAL;
        let mut flush = None;
        while batch.len() < batch_size {
            tokio::select! {
                span = timeout_at(deadline, spans.recv()) => match span {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                },
                Some(asked) = flushes.recv() => {
                    flush = Some(asked);
                    break;
                }
            }
        }
        export.batch(batch).await;
        if let Some(flush) = flush {
            export.all_queued(&mut spans, batch_size).await;
            let _ = flush.send(());
        }
    }
}

struct Export {
    exporter: opentelemetry_otlp::SpanExporter,
    last_failure_logged: Option<Instant>,
}

impl Export {
    async fn batch(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        match self.exporter.export(batch).await {
            Ok(()) => {
                COUNTS.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                COUNTS.failed.fetch_add(count, Ordering::Relaxed);
                let now = Instant::now();
                if self
                    .last_failure_logged
                    .is_none_or(|at| now - at >= FAILURE_LOG_INTERVAL)
                {
                    self.last_failure_logged = Some(now);
                    tracing::warn!("telemetry: {count} spans were not exported: {e}");
                }
            }
        }
    }

    /// Sends what is queued right now, in batches.
    async fn all_queued(&mut self, spans: &mut mpsc::Receiver<SpanData>, batch_size: usize) {
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            while batch.len() < batch_size {
                match spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.batch(batch).await;
        }
    }
}
