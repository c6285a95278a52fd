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
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
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

    fn start_sample(&mut self, labels: &Labels) -> bool {
        if !self.open {
            return false;
        }
        self.out.text.push_str(self.name);
        if !labels.0.is_empty() {
            self.out.text.push('{');
            self.out.text.push_str(&labels.0);
            self.out.text.push('}');
        }
        self.out.text.push(' ');
        true
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
