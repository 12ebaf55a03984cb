//! The two exposition formats Prometheus scrapes: its text format 0.0.4 (what a scrape
//! gets by default) and OpenMetrics 1.0 (when the `Accept` header asks for it).
//!
//! They differ in little for the counters, gauges and histograms served here: OpenMetrics
//! names a counter's family without `_total`, may give a `# UNIT`, and ends with
//! `# EOF`. Both are written here by one encoder rather than by a crate: the crates that
//! encode (prometheus-client) write only OpenMetrics and want metrics kept in their own
//! types, while Wharf's are per-thread slots read at scrape time.

use std::fmt::Write as _;

/// Which format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header value asks for: OpenMetrics only when named.
    pub fn from_accept(accept: &[u8]) -> Format {
        let asks = accept.split(|b| *b == b',').any(|item| {
            let media = item.split(|b| *b == b';').next().unwrap_or_default();
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/openmetrics-text")
        });
        if asks {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The format a request's `Accept` fields ask for: OpenMetrics if any names it.
    pub fn negotiate<'a>(
        headers: impl IntoIterator<Item = &'a (bytes::Bytes, bytes::Bytes)>,
    ) -> Format {
        headers
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"accept"))
            .map(|(_, value)| Format::from_accept(value))
            .find(|format| *format == Format::OpenMetrics)
            .unwrap_or(Format::Text)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Writes families one after the other: `family`, then its samples.
pub struct Encoder {
    format: Format,
    out: String,
    /// The current family's name (for a counter, without `_total`).
    family: &'static str,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: String::new(),
            family: "",
        }
    }

    /// Starts a family. `name` is the family's name; a counter's must end in `_total`
    /// (what its samples are called in both formats). `unit`, if any, is the suffix the
    /// name ends with (`seconds`, `bytes`).
    pub fn family(&mut self, name: &'static str, kind: Kind, unit: Option<&str>, help: &str) {
        let family = match (kind, self.format) {
            (Kind::Counter, Format::OpenMetrics) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.family = name;
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
        if let (Some(unit), Format::OpenMetrics) = (unit, self.format) {
            let _ = writeln!(self.out, "# UNIT {family} {unit}");
        }
    }

    /// A sample of the current family; `suffix` is `_bucket`, `_sum` or `_count` for a
    /// histogram's samples, empty otherwise.
    pub fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(self.family);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                escape(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
    }

    /// The exposition, terminated as the format wants.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A sample's value.
pub trait Value {
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self:?}");
        }
    }
}

/// A label value as both formats quote it.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_of(format: Format) -> String {
        let mut e = Encoder::new(format);
        e.family("x_requests_total", Kind::Counter, None, "Requests.");
        e.sample("", &[("app", "a\"b\\c\nd")], 3u64);
        e.family("x_seconds", Kind::Histogram, Some("seconds"), "Time.");
        e.sample("_bucket", &[("le", "+Inf")], 1u64);
        e.sample("_sum", &[], 0.25f64);
        e.finish()
    }

    #[test]
    fn text_format_names_counters_with_total_and_has_no_eof() {
        assert_eq!(
            sample_of(Format::Text),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total{app=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP x_seconds Time.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"+Inf\"} 1\nx_seconds_sum 0.25\n"
        );
    }

    #[test]
    fn openmetrics_names_families_without_total_gives_units_and_ends_with_eof() {
        let out = sample_of(Format::OpenMetrics);
        assert!(out.contains("# TYPE x_requests counter\nx_requests_total{"));
        assert!(out.contains("# UNIT x_seconds seconds\n"));
        assert!(out.ends_with("x_seconds_sum 0.25\n# EOF\n"));
    }

    #[test]
    fn openmetrics_only_when_accept_names_it() {
        assert_eq!(Format::from_accept(b""), Format::Text);
        assert_eq!(
            Format::from_accept(b"text/plain;version=0.0.4"),
            Format::Text
        );
        let prometheus = b"application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
        assert_eq!(Format::from_accept(prometheus), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(b"*/*, Application/OpenMetrics-Text"),
            Format::OpenMetrics
        );
    }
}
