//! netlens's own BPF run time, measured without paying for it all the time.
//!
//! The kernel records a program's run time only while BPF_ENABLE_STATS is on,
//! and then reads the clock twice around every run of every program on the
//! host: with netlens's programs on every system call and softirq, that
//! alone was a third of their cost. So by default the statistics are on for
//! one report period in [`SAMPLE_EVERY`]; that period's run time is exact,
//! and the others are estimated (and say so). The estimate follows the
//! load: it scales the last measured run time by the period's activity,
//! the number of spans netlens's counters saw (system calls, softirqs, IRQ
//! handlers, samples), which the programs count anyway; it falls back to
//! scaling by time when the measured period had no activity.

use crate::bpfio::ProgStats;

/// One measured period in this many (the first one is measured).
pub const SAMPLE_EVERY: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsMode {
    /// Measure one period in ten, estimate the others.
    Sampled,
    /// Measure every period (adds two clock reads to every program run).
    Always,
    /// Do not measure.
    Off,
}

/// The BPF run time of one period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BpfTime {
    pub ns: Option<u64>,
    pub runs: Option<u64>,
    /// False when `ns` was measured in this period, true when estimated.
    pub estimated: bool,
}

pub struct BpfStatsSampler {
    mode: StatsMode,
    /// Index of the current period.
    period: u64,
    /// Program totals when measurement of the current period began.
    baseline: Option<ProgStats>,
    /// Run time per nanosecond of wall time, and per unit of activity, in
    /// the last measured period.
    per_ns: Option<f64>,
    per_activity: Option<f64>,
}

impl BpfStatsSampler {
    pub fn new(mode: StatsMode) -> BpfStatsSampler {
        BpfStatsSampler {
            mode,
            period: 0,
            baseline: None,
            per_ns: None,
            per_activity: None,
        }
    }

    /// Whether the current period is to be measured.
    pub fn measure_now(&self) -> bool {
        match self.mode {
            StatsMode::Always => true,
            StatsMode::Sampled => self.period % SAMPLE_EVERY == 0,
            StatsMode::Off => false,
        }
    }

    /// Statistics were just turned on (or are on) for the current period.
    pub fn begin(&mut self, totals: ProgStats) {
        self.baseline = Some(totals);
    }

    /// The period ended after `period_ns` with `activity` spans counted;
    /// `totals` are the programs' totals now.
    pub fn end(&mut self, totals: ProgStats, period_ns: u64, activity: u64) -> BpfTime {
        self.period += 1;
        let Some(base) = self.baseline.take() else {
            let estimate = match (self.per_activity, self.per_ns) {
                (Some(per), _) => Some(per * activity as f64),
                (None, Some(per)) => Some(per * period_ns as f64),
                (None, None) => None,
            };
            return BpfTime {
                ns: estimate.map(|ns| ns.round() as u64),
                runs: None,
                estimated: true,
            };
        };
        let ns = totals.run_ns.saturating_sub(base.run_ns);
        let runs = totals.runs.saturating_sub(base.runs);
        if runs == 0 && ns == 0 {
            // The kernel refused the statistics: nothing was recorded.
            return BpfTime::default();
        }
        self.per_ns = (period_ns > 0).then(|| ns as f64 / period_ns as f64);
        self.per_activity = (activity > 0).then(|| ns as f64 / activity as f64);
        BpfTime {
            ns: Some(ns),
            runs: Some(runs),
            estimated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(run_ns: u64, runs: u64) -> ProgStats {
        ProgStats {
            run_ns,
            runs,
            recursion_misses: 0,
        }
    }

    #[test]
    fn sampled_measures_one_period_in_ten_and_estimates_the_rest() {
        let mut s = BpfStatsSampler::new(StatsMode::Sampled);
        assert!(s.measure_now());
        s.begin(stats(1_000, 10));
        // 5 ms of BPF in a 500 ms period with 1000 spans: 5 us per span.
        let t = s.end(stats(5_001_000, 1_010), 500_000_000, 1_000);
        assert_eq!(
            t,
            BpfTime {
                ns: Some(5_000_000),
                runs: Some(1_000),
                estimated: false
            }
        );
        for _ in 1..SAMPLE_EVERY {
            assert!(!s.measure_now());
            // Estimated from the activity, whatever the period's length.
            let t = s.end(stats(5_001_000, 1_010), 250_000_000, 100);
            assert_eq!(t.ns, Some(500_000));
            assert!(t.estimated && t.runs.is_none());
        }
        assert!(s.measure_now(), "period 10 is measured again");
    }

    #[test]
    fn always_and_off() {
        let mut s = BpfStatsSampler::new(StatsMode::Always);
        for _ in 0..3 {
            assert!(s.measure_now());
            s.begin(stats(0, 0));
            assert!(!s.end(stats(7, 1), 100, 1).estimated);
        }
        let mut s = BpfStatsSampler::new(StatsMode::Off);
        assert!(!s.measure_now());
        assert_eq!(
            s.end(stats(7, 1), 100, 1),
            BpfTime {
                ns: None,
                runs: None,
                estimated: true
            }
        );
    }

    #[test]
    fn refused_statistics_read_as_unknown() {
        let mut s = BpfStatsSampler::new(StatsMode::Sampled);
        s.begin(stats(0, 0));
        assert_eq!(s.end(stats(0, 0), 100, 5).ns, None);
        // No rate to estimate from either.
        assert_eq!(s.end(stats(0, 0), 100, 5).ns, None);
    }

    #[test]
    fn a_measured_period_without_activity_estimates_by_time() {
        let mut s = BpfStatsSampler::new(StatsMode::Sampled);
        s.begin(stats(0, 0));
        s.end(stats(1_000, 10), 1_000_000, 0);
        assert_eq!(s.end(stats(1_000, 10), 2_000_000, 50).ns, Some(2_000));
    }
}
