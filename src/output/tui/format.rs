//! Short number formats and fixed-width cells for the terminal UI, where
//! every column is a few characters wide (the plain table and the logs keep
//! their exact formats).

/// Bytes in at most four characters, binary units: `512`, `1.5K`, `15K`,
/// `999K`, `1.0M`, ... (`K` = KiB).
pub fn compact_bytes(b: u64) -> String {
    if b < 1000 {
        return b.to_string();
    }
    compact_scaled(b as f64)
}

/// A per-second rate in at most six characters: `0/s`, `1.5K/s`, `999M/s`.
pub fn compact_rate(per_sec: f64) -> String {
    let v = per_sec.max(0.0);
    if v < 999.5 {
        return format!("{:.0}/s", v);
    }
    format!("{}/s", compact_scaled(v))
}

/// `v` (at least 999.5) divided by 1024 until it fits in three digits,
/// with one decimal below ten.
fn compact_scaled(mut v: f64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    let mut unit = 0;
    v /= 1024.0;
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// A count in at most five characters: `12345`, `123K`, `12M` (decimal
/// units: packets and retransmits are counted, not sized).
pub fn compact_count(n: u64) -> String {
    if n < 100_000 {
        return n.to_string();
    }
    let mut v = n as f64 / 1000.0;
    for unit in ["K", "M", "G", "T", "P"] {
        if v < 999.5 {
            return format!("{v:.0}{unit}");
        }
        v /= 1000.0;
    }
    format!("{v:.0}E")
}

/// Microseconds for people: `345us`, `12.3ms`, `345ms`, `1.23s`.
pub fn compact_micros(us: u32) -> String {
    match us {
        0..1000 => format!("{us}us"),
        1000..9_950 => format!("{:.2}ms", us as f64 / 1e3),
        9_950..999_500 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// `text` padded or cut to exactly `width` characters; a cut shows `…` as
/// its last character so it is never mistaken for the whole value.
pub fn cell(text: &str, width: usize, align: Align) -> String {
    let len = text.chars().count();
    if len > width {
        if width == 0 {
            return String::new();
        }
        let mut s: String = text.chars().take(width - 1).collect();
        s.push('…');
        return s;
    }
    match align {
        Align::Left => format!("{text:<width$}"),
        Align::Right => format!("{text:>width$}"),
    }
}

/// `text` cut to `width` characters (no padding).
pub fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    cell(text, width, Align::Left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_fit_four_characters() {
        assert_eq!(compact_bytes(0), "0");
        assert_eq!(compact_bytes(999), "999");
        assert_eq!(compact_bytes(1000), "1.0K");
        assert_eq!(compact_bytes(1536), "1.5K");
        assert_eq!(compact_bytes(10_188), "9.9K");
        assert_eq!(compact_bytes(10_240), "10K");
        assert_eq!(compact_bytes(1_000_000), "977K");
        // Just below 1 MiB rounds into the next unit, not to "1024K".
        assert_eq!(compact_bytes(1_048_000), "1.0M");
        assert_eq!(compact_bytes(5 << 30), "5.0G");
        assert_eq!(compact_bytes(u64::MAX), "16E");
        for b in [
            0,
            999,
            1000,
            123_456,
            999_999,
            1 << 40,
            u64::MAX / 3,
            u64::MAX,
        ] {
            assert!(compact_bytes(b).chars().count() <= 4, "{b}");
        }
    }

    #[test]
    fn rates_fit_six_characters() {
        assert_eq!(compact_rate(0.0), "0/s");
        assert_eq!(compact_rate(-3.0), "0/s");
        assert_eq!(compact_rate(999.4), "999/s");
        assert_eq!(compact_rate(1024.0 * 1024.0 * 3.5), "3.5M/s");
        for r in [0.4, 999.6, 1e6, 1e12, 1e19] {
            assert!(compact_rate(r).chars().count() <= 6, "{r}");
        }
    }

    #[test]
    fn counts_and_micros() {
        assert_eq!(compact_count(99_999), "99999");
        assert_eq!(compact_count(100_000), "100K");
        assert_eq!(compact_count(12_345_678), "12M");
        assert_eq!(compact_count(u64::MAX), "18E");
        assert_eq!(compact_micros(345), "345us");
        assert_eq!(compact_micros(1234), "1.23ms");
        assert_eq!(compact_micros(12_340), "12.3ms");
        assert_eq!(compact_micros(1_234_567), "1.23s");
    }

    #[test]
    fn cells_pad_and_cut_by_characters() {
        assert_eq!(cell("ab", 4, Align::Left), "ab  ");
        assert_eq!(cell("ab", 4, Align::Right), "  ab");
        assert_eq!(cell("µs", 3, Align::Right), " µs");
        assert_eq!(cell("abcdef", 4, Align::Left), "abc…");
        assert_eq!(cell("abc", 0, Align::Left), "");
        assert_eq!(clip("abcdef", 3), "ab…");
        assert_eq!(clip("ab", 3), "ab");
    }
}
