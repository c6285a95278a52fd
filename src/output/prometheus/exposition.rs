//! The Prometheus text exposition format, version 0.0.4: the format every
//! scraper understands (Prometheus 2 and 3, the OpenTelemetry collector,
//! VictoriaMetrics, `curl`).
//!
//! Written here rather than with the `prometheus-client` crate because that
//! crate only produces OpenMetrics text (`# EOF`, counters typed under their
//! name without `_total`), which is not valid under the `text/plain;
//! version=0.0.4` content type the issue asks for, and because producers here
//! render straight from their own aggregated state at scrape time: there is no
//! second copy of ten thousand series in a metrics registry to keep in sync.
//!
//! [`Exposition`] keeps the format's rules in one place: every family gets its
//! `# HELP` and `# TYPE` lines before its samples, names are checked, label
//! values and help texts are escaped, and a family name used twice is refused
//! (two producers must not both define one).

use std::collections::HashSet;
use std::fmt::Write as _;

/// The `Content-Type` of a response carrying an [`Exposition`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `# TYPE` of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (or restarts from zero when netlens restarts). Names end in `_total`.
    Counter,
    /// Any value, as of now.
    Gauge,
    /// Observations counted in buckets: `_bucket{le=..}` (cumulative),
    /// `_sum` and `_count` series under the family's name.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One scrape's worth of text, built family by family.
#[derive(Default)]
pub struct Exposition {
    text: String,
    names: HashSet<&'static str>,
    /// Families refused (bad or duplicate name); their samples are dropped.
    refused: Vec<&'static str>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: writes its HELP and TYPE lines and returns a writer
    /// for its samples. A family whose name is invalid, does not end in
    /// `_total` while being a counter, or was already written in this
    /// exposition, is refused: its samples are dropped and [`Exposition::refused`]
    /// names it (a programming error, caught by the unit tests of each producer).
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        let valid = is_metric_name(name)
            && (kind != Kind::Counter || name.ends_with("_total"))
            && (kind != Kind::Histogram || !name.ends_with("_total"))
            && self.names.insert(name);
        if !valid {
            self.refused.push(name);
            return Family {
                out: self,
                name,
                open: false,
            };
        }
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        escape_into(&mut self.text, help, false);
        self.text.push_str("\n# TYPE ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(kind.as_str());
        self.text.push('\n');
        Family {
            out: self,
            name,
            open: true,
        }
    }

    /// Families that were refused (see [`Exposition::family`]).
    pub fn refused(&self) -> &[&'static str] {
        &self.refused
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

/// Writes the samples of one family.
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: &'static str,
    open: bool,
}

impl Family<'_> {
    /// One sample of an integer counter or gauge. `labels` is a rendered
    /// label set (see [`Labels`]), empty for none.
    pub fn sample(&mut self, labels: &Labels, value: u64) {
        if self.start_sample(labels) {
            let mut n = itoa::Buffer::new();
            self.out.text.push_str(n.format(value));
            self.out.text.push('\n');
        }
    }

    /// One sample with a fractional value (seconds, ratios).
    pub fn sample_f64(&mut self, labels: &Labels, value: f64) {
        if self.start_sample(labels) {
            push_f64(&mut self.out.text, value);
            self.out.text.push('\n');
        }
    }

    /// The series of one histogram: a cumulative `_bucket` sample per bound
    /// and `+Inf`, then `_sum` (in seconds) and `_count`.
    pub fn histogram(&mut self, labels: &Labels, h: &Histogram) {
        if !self.open {
            return;
        }
        let mut n = itoa::Buffer::new();
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h.bounds.labels.get(i).copied().unwrap_or("+Inf");
            self.push_series(Some("_bucket"), labels, Some(le));
            self.out.text.push_str(n.format(cumulative));
            self.out.text.push('\n');
        }
        self.push_series(Some("_sum"), labels, None);
        push_f64(&mut self.out.text, h.sum_ns as f64 / 1e9);
        self.out.text.push('\n');
        self.push_series(Some("_count"), labels, None);
        self.out.text.push_str(n.format(cumulative));
        self.out.text.push('\n');
    }

    /// `<name><suffix>{<labels>,le="<le>"} ` (braces only when non-empty).
    fn push_series(&mut self, suffix: Option<&str>, labels: &Labels, le: Option<&str>) {
        let text = &mut self.out.text;
        text.push_str(self.name);
        text.push_str(suffix.unwrap_or(""));
        if !labels.0.is_empty() || le.is_some() {
            text.push('{');
            text.push_str(&labels.0);
            if let Some(le) = le {
                if !labels.0.is_empty() {
                    text.push(',');
                }
                text.push_str("le=\"");
                text.push_str(le);
                text.push('"');
            }
            text.push('}');
        }
        text.push(' ');
    }

    fn start_sample(&mut self, labels: &Labels) -> bool {
        if self.open {
            self.push_series(None, labels, None);
        }
        self.open
    }
}

/// The upper bounds of a histogram's buckets: nanoseconds for counting,
/// and the `le` label value of each, in seconds as written.
#[derive(Debug, PartialEq, Eq)]
pub struct Bounds {
    pub ns: &'static [u64],
    pub labels: &'static [&'static str],
}

/// Durations from 50 µs to 10 s in 1-2.5-5 steps: loopback and same-rack
/// round trips at the low end, SYN retransmissions (1 s, 3 s, 7 s) at the
/// high end.
pub const SECONDS_BOUNDS: Bounds = Bounds {
    ns: &[
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
    ],
    labels: &[
        "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
        "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    ],
};

/// Observed durations in buckets (counts per bucket, not cumulative; the
/// last bucket is `+Inf`), with their sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static Bounds,
    counts: Vec<u64>,
    sum_ns: u64,
}

impl Histogram {
    pub fn new(bounds: &'static Bounds) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.ns.len() + 1],
            sum_ns: 0,
        }
    }

    /// Counts one observation of `ns` nanoseconds, in the first bucket
    /// whose bound is not below it (`le` is "less or equal").
    pub fn observe(&mut self, ns: u64) {
        let bucket = self.bounds.ns.partition_point(|&bound| bound < ns);
        self.counts[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A rendered, escaped label set (`a="1",b="x"`, without braces). Producers
/// with many series build it once per series and keep it, so a scrape only
/// copies bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(String);

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    /// Adds `name="value"`, escaping the value. Panics in debug builds on an
    /// invalid label name (names are constants in the code, not data).
    pub fn with(mut self, name: &str, value: &str) -> Labels {
        self.push(name, value);
        self
    }

    pub fn push(&mut self, name: &str, value: &str) {
        debug_assert!(is_label_name(name), "invalid label name {name:?}");
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape_into(&mut self.0, value, true);
        self.0.push('"');
    }

    /// This label set plus one more label (e.g. a `reason`).
    pub fn and(&self, name: &str, value: &str) -> Labels {
        self.clone().with(name, value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Backslash and newline are escaped everywhere; double quotes only inside
/// label values (the format's two escaping rules).
fn escape_into(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Go's ParseFloat reads Rust's shortest round-trip decimal form; only the
/// special values are spelled differently.
fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_has_help_and_type_before_samples() {
        let mut e = Exposition::new();
        let mut f = e.family("x_bytes_total", Kind::Counter, "Bytes.");
        f.sample(&Labels::new().with("a", "1"), 42);
        f.sample(&Labels::new(), 7);
        let mut g = e.family("y_ratio", Kind::Gauge, "A ratio.");
        g.sample_f64(&Labels::new(), 0.25);
        assert_eq!(
            e.as_str(),
            "# HELP x_bytes_total Bytes.\n\
             # TYPE x_bytes_total counter\n\
             x_bytes_total{a=\"1\"} 42\n\
             x_bytes_total 7\n\
             # HELP y_ratio A ratio.\n\
             # TYPE y_ratio gauge\n\
             y_ratio 0.25\n"
        );
        assert!(e.refused().is_empty());
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        const BOUNDS: Bounds = Bounds {
            ns: &[1_000, 500_000],
            labels: &["1e-06", "0.0005"],
        };
        let mut h = Histogram::new(&BOUNDS);
        // On a bound counts in its bucket (le is "less or equal").
        for ns in [1_000, 2_000, 500_000, 3_000_000_000] {
            h.observe(ns);
        }
        assert_eq!(h.count(), 4);
        let mut e = Exposition::new();
        let mut f = e.family("rtt_seconds", Kind::Histogram, "RTT.");
        f.histogram(&Labels::new().with("pid", "7"), &h);
        f.histogram(&Labels::new(), &Histogram::new(&BOUNDS));
        assert_eq!(
            e.as_str(),
            "# HELP rtt_seconds RTT.\n\
             # TYPE rtt_seconds histogram\n\
             rtt_seconds_bucket{pid=\"7\",le=\"1e-06\"} 1\n\
             rtt_seconds_bucket{pid=\"7\",le=\"0.0005\"} 3\n\
             rtt_seconds_bucket{pid=\"7\",le=\"+Inf\"} 4\n\
             rtt_seconds_sum{pid=\"7\"} 3.000503\n\
             rtt_seconds_count{pid=\"7\"} 4\n\
             rtt_seconds_bucket{le=\"1e-06\"} 0\n\
             rtt_seconds_bucket{le=\"0.0005\"} 0\n\
             rtt_seconds_bucket{le=\"+Inf\"} 0\n\
             rtt_seconds_sum 0\n\
             rtt_seconds_count 0\n"
        );
        // A histogram named like a counter is refused.
        e.family("x_total", Kind::Histogram, "x");
        assert_eq!(e.refused(), ["x_total"]);
    }

    #[test]
    fn second_bounds_are_labelled_with_their_value() {
        let b = &SECONDS_BOUNDS;
        assert_eq!(b.ns.len(), b.labels.len());
        assert!(b.ns.windows(2).all(|w| w[0] < w[1]), "ascending");
        for (ns, label) in b.ns.iter().zip(b.labels) {
            let seconds: f64 = label.parse().expect("a number");
            assert_eq!((seconds * 1e9).round() as u64, *ns, "{label}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let l = Labels::new().with("comm", "a\"b\\c\nd").with("x", "é ok");
        assert_eq!(l.as_str(), r#"comm="a\"b\\c\nd",x="é ok""#);
        let mut e = Exposition::new();
        e.family("h", Kind::Gauge, "line\\one\ntwo \"quoted\"");
        assert_eq!(
            e.as_str().lines().next(),
            Some(r#"# HELP h line\\one\ntwo "quoted""#)
        );
    }

    #[test]
    fn labels_extend_without_changing_the_original() {
        let base = Labels::new().with("pid", "1");
        assert_eq!(
            base.and("reason", "refused").as_str(),
            r#"pid="1",reason="refused""#
        );
        assert_eq!(base.as_str(), r#"pid="1""#);
    }

    #[test]
    fn special_floats_use_prometheus_spelling() {
        let mut e = Exposition::new();
        let mut f = e.family("v", Kind::Gauge, "v");
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5e-7, 3.0] {
            f.sample_f64(&Labels::new(), v);
        }
        let values: Vec<&str> = e
            .as_str()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(values, ["NaN", "+Inf", "-Inf", "0.00000015", "3"]);
    }

    #[test]
    fn bad_and_duplicate_families_are_refused() {
        let mut e = Exposition::new();
        e.family("ok_total", Kind::Counter, "h")
            .sample(&Labels::new(), 1);
        e.family("ok_total", Kind::Counter, "again")
            .sample(&Labels::new(), 2);
        e.family("no_suffix", Kind::Counter, "h")
            .sample(&Labels::new(), 3);
        e.family("1bad", Kind::Gauge, "h").sample(&Labels::new(), 4);
        assert_eq!(e.refused(), ["ok_total", "no_suffix", "1bad"]);
        assert_eq!(e.as_str().matches("ok_total 1").count(), 1);
        assert!(!e.as_str().contains(" 2\n") && !e.as_str().contains(" 3\n"));
    }

    #[test]
    fn names() {
        assert!(is_metric_name("netlens_tcp_sent_bytes_total"));
        assert!(is_metric_name("a:b_c"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("9x"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("remote_addr"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name(""));
    }
}
