//! The `/metrics` exposition: what the data plane counts (`requests`: per application,
//! listener and status), the connection counters that `/status` also reads, each
//! application's instances, queue and stopped requests, where modules' compiled code
//! came from, the running generation and what became of the telemetry spans, written
//! in Prometheus's text format or OpenMetrics (`text`).
//!
//! Like `/status`, it is built on demand at scrape time; nothing on the request path
//! knows about the format.

pub mod reloads;
pub mod requests;
pub mod text;

use std::collections::BTreeMap;

use crate::counter::Counter;
use crate::http::ConnectionStats;
use crate::runtime::guest_counts::{self, StopReason};
use crate::runtime::{CodeLoads, CodeSource, InstanceCounts};
use crate::telemetry::ExportCounts;
use crate::tls::Certificates;
use reloads::{Refusal, Reloads};
use requests::{BUCKETS, Counts};
use text::{Encoder, Format, Kind};

/// What renders the whole exposition on demand: the control plane, which holds or
/// reaches everything a scrape reads. The control socket's `/metrics` and a route's
/// `metrics` action both go through it, so the two cannot differ.
pub trait Exposition: Send + Sync {
    fn render(&self, format: Format) -> String;
}

/// What a scrape reads of the control plane.
pub struct ControlPlane<'a> {
    /// The running generation's number.
    pub generation: u64,
    /// Its applications' instance counts (`Generation::application_counts`).
    pub apps: &'a [(&'a str, InstanceCounts)],
    pub reloads: &'a Reloads,
    pub certificates: &'a Certificates,
    pub code_loads: &'a CodeLoads,
}

/// The exposition of everything, in `format`.
pub fn render(format: Format, stats: &ConnectionStats, control: &ControlPlane<'_>) -> String {
    let mut e = Encoder::new(format);
    http_requests(&mut e);
    connections(&mut e, stats);
    instances(&mut e, control.apps);
    guests(&mut e);
    code_loads(&mut e, control.code_loads);
    config(&mut e, control);
    certificates(&mut e, control.certificates);
    telemetry(&mut e);
    e.finish()
}

fn config(e: &mut Encoder, control: &ControlPlane<'_>) {
    e.family(
        "wharf_config_generation",
        Kind::Gauge,
        None,
        "The number of the configuration generation that runs.",
    );
    e.sample("", &[], control.generation);
    e.family(
        "wharf_config_changes_refused_total",
        Kind::Counter,
        None,
        "Configuration changes and application restarts refused, by the step that refused \
         them (invalid, precondition, apply); what ran before goes on running.",
    );
    for why in Refusal::ALL {
        e.sample(
            "",
            &[("step", why.label())],
            control.reloads.refused_count(why),
        );
    }
    e.family(
        "wharf_config_last_reload_timestamp_seconds",
        Kind::Gauge,
        Some("seconds"),
        "When what serves last changed (a change, a restart, a module reloaded), in Unix \
         seconds; absent until the first.",
    );
    if let Some(seconds) = control.reloads.last_success_seconds() {
        e.sample("", &[], seconds);
    }
}

fn guests(e: &mut Encoder) {
    e.family(
        "wharf_guest_requests_stopped_total",
        Kind::Counter,
        None,
        "Requests whose guest was stopped, by application and reason: trap (a trap or a \
         broken ABI call), memory_limit (limits.memory), timeout (limits.timeout).",
    );
    let apps = guest_counts::all();
    for app in &apps {
        for reason in StopReason::ALL {
            let labels = [("app", app.app.as_str()), ("reason", reason.label())];
            e.sample("", &labels, app.stops(reason));
        }
    }
    e.family(
        "wharf_guest_cpu_seconds_total",
        Kind::Counter,
        Some("seconds"),
        "Time guest code ran on Wharf's threads, by application: requests (host calls \
         included) and instance starts and ends, as the wall time of each run slice.",
    );
    for app in &apps {
        let labels = [("app", app.app.as_str())];
        e.sample("", &labels, app.run_time().as_secs_f64());
    }
}

fn telemetry(e: &mut Encoder) {
    let counts = ExportCounts::get();
    e.family(
        "wharf_telemetry_spans_total",
        Kind::Counter,
        None,
        "Sampled request spans (settings.telemetry), by what became of them: exported (the \
         collector took them), failed (in a batch the collector refused or did not answer \
         in time), dropped (the export queue was full).",
    );
    for (outcome, count) in [
        ("exported", counts.exported()),
        ("failed", counts.failed()),
        ("dropped", counts.dropped()),
    ] {
        e.sample("", &[("outcome", outcome)], count);
    }
}

fn code_loads(e: &mut Encoder, loads: &CodeLoads) {
    e.family(
        "wharf_module_loads_total",
        Kind::Counter,
        None,
        "Modules and components loaded, by where their compiled code came from: memory \
         (already loaded), disk (the compiled-module cache) or compiled (a cache miss).",
    );
    for source in CodeSource::ALL {
        e.sample("", &[("source", source.label())], loads.get(source));
    }
}

fn certificates(e: &mut Encoder, certificates: &Certificates) {
    e.family(
        "wharf_tls_certificate_expiry_timestamp_seconds",
        Kind::Gauge,
        Some("seconds"),
        "When each uploaded bundle stops being valid (its chain's earliest notAfter), in \
         Unix seconds.",
    );
    for (name, bundle) in certificates.iter() {
        e.sample("", &[("certificate", name)], bundle.expires() as f64);
    }
}

fn http_requests(e: &mut Encoder) {
    let series = requests::all();
    e.family(
        "wharf_http_requests_total",
        Kind::Counter,
        None,
        "Requests answered, by application (empty: none), listener and status code.",
    );
    // Per application, over its listeners, for the histogram.
    let mut by_app: BTreeMap<&str, Counts> = BTreeMap::new();
    for s in &series {
        let counts = s.read();
        for (code, n) in &counts.codes {
            let code = code.to_string();
            let labels = [
                ("app", s.app.as_str()),
                ("listener", s.listener.as_str()),
                ("code", code.as_str()),
            ];
            e.sample("", &labels, *n);
        }
        if !s.app.is_empty() {
            let sum = by_app.entry(&s.app).or_default();
            for (total, n) in sum.buckets.iter_mut().zip(counts.buckets) {
                *total += n;
            }
            sum.nanos += counts.nanos;
        }
    }
    e.family(
        "wharf_http_request_duration_seconds",
        Kind::Histogram,
        Some("seconds"),
        "Time from a request's head to its response's head, by application.",
    );
    for (app, counts) in by_app {
        let mut cumulative = 0;
        for (i, n) in counts.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS
                .get(i)
                .map_or("+Inf".to_owned(), |b| format!("{b:?}"));
            e.sample("_bucket", &[("app", app), ("le", &le)], cumulative);
        }
        // Nanoseconds to seconds: a sum of u64 nanoseconds is exact to the nanosecond.
        let seconds = counts.nanos as f64 / 1e9;
        e.sample("_sum", &[("app", app)], seconds);
        e.sample("_count", &[("app", app)], cumulative);
    }
}

fn connections(e: &mut Encoder, stats: &ConnectionStats) {
    let families: [(&'static str, Kind, Option<&str>, &str, &Counter); 7] = [
        (
            "wharf_connections_accepted_total",
            Kind::Counter,
            None,
            "Data-plane connections accepted.",
            &stats.accepted,
        ),
        (
            "wharf_connections_closed_total",
            Kind::Counter,
            None,
            "Data-plane connections closed.",
            &stats.closed,
        ),
        (
            "wharf_connections_open",
            Kind::Gauge,
            None,
            "Open data-plane connections, idle ones included.",
            &stats.active,
        ),
        (
            "wharf_connections_idle",
            Kind::Gauge,
            None,
            "Open data-plane connections waiting for their next request.",
            &stats.idle,
        ),
        (
            "wharf_http_request_heads_total",
            Kind::Counter,
            None,
            "Request heads read (what /status counts as requests.total).",
            &stats.requests,
        ),
        (
            "wharf_http_received_bytes_total",
            Kind::Counter,
            Some("bytes"),
            "HTTP bytes read from data-plane clients (after TLS decryption).",
            &stats.received,
        ),
        (
            "wharf_http_sent_bytes_total",
            Kind::Counter,
            Some("bytes"),
            "HTTP bytes written to data-plane clients (before TLS encryption).",
            &stats.sent,
        ),
    ];
    for (name, kind, unit, help, counter) in families {
        e.family(name, kind, unit, help);
        e.sample("", &[], counter.get());
    }
}

fn instances(e: &mut Encoder, counts: &[(&str, InstanceCounts)]) {
    e.family(
        "wharf_application_instances",
        Kind::Gauge,
        None,
        "Instances of each application by state: idle, busy (serving) or starting.",
    );
    for (app, c) in counts {
        let busy = c.running.saturating_sub(c.idle);
        for (state, n) in [("idle", c.idle), ("busy", busy), ("starting", c.starting)] {
            e.sample("", &[("app", app), ("state", state)], n);
        }
    }
    type PerApp = fn(&InstanceCounts) -> u64;
    let gauges: [(&'static str, &str, PerApp); 2] = [
        (
            "wharf_application_requests_active",
            "Requests an application's instances are serving.",
            |c| c.active,
        ),
        (
            "wharf_application_requests_queued",
            "Requests waiting for one of an application's instances (at most limits.queue).",
            |c| c.queued,
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, Kind::Gauge, None, help);
        for (app, c) in counts {
            e.sample("", &[("app", app)], value(c));
        }
    }
}
