//! The `netlens cost` screen: the per-CPU table of the plain output (entry
//! points, the NET_RX breakdown, /proc/stat, `-u` processes) under a header
//! that stays, scrollable, with as many CPU columns as the width allows.

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::format::{cell, clip, Align};
use super::{scroll_or_quit, Flow, Screen};
use crate::model::cost::{CostReport, CpuStat, Entry};
use crate::output::cost::{pct, process_lines, sampling_note};
use crate::output::fmt_time;

/// Width of the row labels (the longest NET_RX category, indented).
const LABEL_WIDTH: usize = 25;
/// Width of a percentage column (`100.00%` and a space).
const PCT_WIDTH: usize = 8;
/// Width of the cumulative seconds column.
const TOTAL_WIDTH: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A network entry point.
    Network,
    /// A NET_RX category (indented under NET_RX softirq).
    Category,
    /// The sum of the network entry points.
    Total,
    /// Context: other softirqs and IRQs, /proc/stat.
    Context,
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum CostLine {
    Row {
        label: String,
        kind: Kind,
        /// This period's time per CPU, in report order.
        period_ns: Vec<u64>,
        /// Denominator of the "all" column (the period times the CPUs).
        all_of: u64,
        /// Since start, all CPUs; `None` where not kept (/proc/stat).
        total_ns: Option<u64>,
    },
    /// A full-width line (the `-u` processes).
    Text(String),
}

/// The table's lines for `r`, in the order of the plain table.
pub(super) fn cost_lines(r: &CostReport) -> Vec<CostLine> {
    let all_of = r.period_ns * r.cpus.len() as u64;
    let row = |label: &str, kind, period_ns: &[u64], total_ns: Option<u64>| CostLine::Row {
        label: label.to_string(),
        kind,
        period_ns: period_ns.to_vec(),
        all_of,
        total_ns,
    };
    let mut lines = Vec::new();
    let mut network_total = 0;
    for e in r.entries.iter().filter(|e| e.entry.is_network()) {
        network_total += e.time.total_sum();
        lines.push(row(
            e.entry.label(),
            Kind::Network,
            &e.time.period_ns,
            Some(e.time.total_sum()),
        ));
        if e.entry == Entry::NetRxSoftirq {
            // As in the plain table: categories never seen are left out.
            for c in r.categories.iter().filter(|c| c.time.total_sum() > 0) {
                lines.push(row(
                    &format!("  {}", c.label),
                    Kind::Category,
                    &c.time.period_ns,
                    Some(c.time.total_sum()),
                ));
            }
        }
    }
    lines.push(row(
        "network total",
        Kind::Total,
        &r.network_period_ns(),
        Some(network_total),
    ));
    for e in r.entries.iter().filter(|e| !e.entry.is_network()) {
        lines.push(row(
            e.entry.label(),
            Kind::Context,
            &e.time.period_ns,
            Some(e.time.total_sum()),
        ));
    }
    if !r.proc_stat.is_empty() {
        for (i, field) in CpuStat::FIELDS.iter().enumerate() {
            let per_cpu: Vec<u64> = r.proc_stat.iter().map(|s| s.values()[i]).collect();
            lines.push(row(
                &format!("/proc/stat {field}"),
                Kind::Context,
                &per_cpu,
                None,
            ));
        }
    }
    // The plain table's process line, in three lines that fit 80 columns.
    let of = |ns: u64| pct(ns, r.period_ns).trim().to_string();
    for p in &r.pids {
        lines.push(CostLine::Text(format!(
            "pid {} ({}){}: user {} system {} of one CPU",
            p.pid,
            p.comm,
            if p.alive { "" } else { " exited" },
            of(p.user_ns_period),
            of(p.system_ns_period)
        )));
        lines.push(CostLine::Text(format!(
            "  TX syscalls {}, RX syscalls {}, interrupts in its context {}",
            of(p.tx_syscall_ns_period),
            of(p.rx_syscall_ns_period),
            of(p.interrupt_ns_period)
        )));
        lines.push(CostLine::Text(format!(
            "  total user {:.3} s, system {:.3} s",
            p.user_ns_total as f64 / 1e9,
            p.system_ns_total as f64 / 1e9
        )));
    }
    lines.extend(process_lines(r).into_iter().map(CostLine::Text));
    lines
}

/// netlens's own cost in this period, as the plain table says it but
/// shorter.
pub(super) fn self_cost_line(r: &CostReport) -> String {
    let s = &r.self_cost;
    let of = |ns: u64| pct(ns, r.period_ns).trim().to_string();
    let bpf = match s.bpf_ns_period {
        None => "not measured".to_string(),
        Some(ns) if s.bpf_estimated => format!("~{} (estimated)", of(ns)),
        Some(ns) => of(ns),
    };
    format!(
        "netlens itself: BPF programs {bpf}, process {} of one CPU",
        of(s.process_ns_period)
    )
}

/// What was lost since start, when anything was: the plain table's
/// `lost:` line, shorter.
pub(super) fn lost_line(r: &CostReport, pushes_failed: u64) -> Option<String> {
    let (sm, missed) = (&r.sampling, r.self_cost.bpf_runs_missed_total);
    if sm.lost_total == 0 && sm.stack_errors_total == 0 && missed == 0 && pushes_failed == 0 {
        return None;
    }
    let mut line = format!(
        "lost: {} NET_RX samples, {} unreadable stacks, {missed} BPF runs skipped",
        sm.lost_total, sm.stack_errors_total
    );
    if pushes_failed > 0 {
        line.push_str(&format!(", {pushes_failed} pushes"));
    }
    Some(line)
}

/// The CPU columns that fit at `width`: (index of the first, how many),
/// starting at `first` or as close to it as still fills the columns.
pub(super) fn cpu_window(width: usize, cpus: usize, first: usize) -> (usize, usize) {
    let room = width.saturating_sub(LABEL_WIDTH + PCT_WIDTH + TOTAL_WIDTH);
    let count = (room / PCT_WIDTH).min(cpus);
    if count == 0 {
        return (0, 0);
    }
    (first.min(cpus - count), count)
}

/// A report for the screen, with the Pyroscope pushes that failed so far
/// (0 without --pyroscope).
pub(super) struct CostUpdate {
    pub report: CostReport,
    pub pushes_failed: u64,
}

pub(super) struct CostScreen {
    report: Option<Box<CostReport>>,
    pushes_failed: u64,
    lines: Vec<CostLine>,
    scroll: usize,
    first_cpu: usize,
    /// Body rows of the last frame (a page for PgUp/PgDn).
    page: usize,
    status: Option<String>,
    warning: Option<String>,
}

impl CostScreen {
    pub fn new() -> CostScreen {
        CostScreen {
            report: None,
            pushes_failed: 0,
            lines: Vec::new(),
            scroll: 0,
            first_cpu: 0,
            page: 1,
            status: None,
            warning: None,
        }
    }
}

fn row_text(line: &CostLine, cpus: (usize, usize)) -> String {
    match line {
        CostLine::Text(t) => t.clone(),
        CostLine::Row {
            label,
            period_ns,
            all_of,
            total_ns,
            ..
        } => {
            let mut s = cell(label, LABEL_WIDTH, Align::Left);
            let per_cpu_period = all_of / period_ns.len().max(1) as u64;
            for &ns in period_ns.iter().skip(cpus.0).take(cpus.1) {
                s.push_str(&pct(ns, per_cpu_period));
            }
            s.push_str(&pct(period_ns.iter().sum(), *all_of));
            if let Some(t) = total_ns {
                s.push_str(&format!("{:>TOTAL_WIDTH$.3}", *t as f64 / 1e9));
            }
            s
        }
    }
}

impl Screen for CostScreen {
    type Update = Box<CostUpdate>;

    fn update(&mut self, update: Box<CostUpdate>) {
        let CostUpdate {
            report,
            pushes_failed,
        } = *update;
        self.lines = cost_lines(&report);
        self.report = Some(Box::new(report));
        self.pushes_failed = pushes_failed;
    }

    fn status(&mut self, line: String) {
        if line.starts_with("warning") {
            self.warning = Some(line);
        } else {
            self.status = Some(line);
        }
    }

    fn key(&mut self, key: KeyEvent) -> Flow {
        if let Some(flow) = scroll_or_quit(key.code, &mut self.scroll, self.page) {
            return flow;
        }
        match key.code {
            KeyCode::Left | KeyCode::Char('h') => {
                self.first_cpu = self.first_cpu.saturating_sub(1);
                Flow::Redraw
            }
            KeyCode::Right | KeyCode::Char('l') => {
                self.first_cpu = self.first_cpu.saturating_add(1);
                Flow::Redraw
            }
            _ => Flow::Ignore,
        }
    }

    fn draw(&mut self, frame: &mut Frame) {
        let area = frame.area();
        let width = area.width as usize;
        let lost = self
            .report
            .as_deref()
            .and_then(|r| lost_line(r, self.pushes_failed));
        let itself = self.report.as_deref().map(self_cost_line);
        let warn_height = u16::from(self.warning.is_some());
        let [title, note, header, body, warn, self_cost, lost_area, keys] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(warn_height),
            Constraint::Length(1),
            Constraint::Length(u16::from(lost.is_some())),
            Constraint::Length(1),
        ])
        .areas(area);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let ncpus = self.report.as_ref().map_or(0, |r| r.cpus.len());
        let window = cpu_window(width, ncpus, self.first_cpu);
        self.first_cpu = window.0;

        let title_text = match &self.report {
            Some(r) => format!(
                "netlens cost  {}Z  period {:.2} s  elapsed {:.1} s",
                &fmt_time(r.timestamp)[11..19],
                r.period_ns as f64 / 1e9,
                r.elapsed_ns as f64 / 1e9
            ),
            None => "netlens cost".to_string(),
        };
        frame.render_widget(Paragraph::new(clip(&title_text, width)).style(bold), title);
        if let Some(r) = &self.report {
            frame.render_widget(Paragraph::new(clip(&sampling_note(r), width)), note);
        }

        let mut header_text = cell("% of CPU", LABEL_WIDTH, Align::Left);
        if let Some(r) = &self.report {
            for cpu in r.cpus.iter().skip(window.0).take(window.1) {
                header_text.push_str(&format!("{:>PCT_WIDTH$}", format!("CPU{cpu}")));
            }
        }
        header_text.push_str(&format!("{:>PCT_WIDTH$}{:>TOTAL_WIDTH$}", "all", "total s"));
        frame.render_widget(
            Paragraph::new(clip(&header_text, width))
                .style(Style::default().add_modifier(Modifier::REVERSED)),
            header,
        );

        self.page = body.height as usize;
        self.scroll = self.scroll.min(self.lines.len().saturating_sub(self.page));
        if self.report.is_none() {
            let waiting = match &self.status {
                Some(s) => format!("waiting for the first period ({s})"),
                None => "loading the BPF programs...".into(),
            };
            frame.render_widget(Paragraph::new(clip(&waiting, width)), body);
        } else {
            let lines: Vec<Line> = self
                .lines
                .iter()
                .skip(self.scroll)
                .take(self.page)
                .map(|l| {
                    let style = match l {
                        CostLine::Row {
                            kind: Kind::Total, ..
                        } => bold,
                        CostLine::Row {
                            kind: Kind::Context,
                            ..
                        } => Style::default().add_modifier(Modifier::DIM),
                        _ => Style::default(),
                    };
                    Line::styled(clip(&row_text(l, window), width), style)
                })
                .collect();
            frame.render_widget(Paragraph::new(lines), body);
        }

        if let Some(w) = &self.warning {
            frame.render_widget(
                Paragraph::new(clip(w, width)).style(Style::default().fg(Color::Yellow)),
                warn,
            );
        }
        if let Some(s) = &itself {
            frame.render_widget(Paragraph::new(clip(s, width)), self_cost);
        }
        if let Some(l) = &lost {
            frame.render_widget(
                Paragraph::new(clip(l, width))
                    .style(Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)),
                lost_area,
            );
        }
        let shown_cpus = if window.1 < ncpus {
            format!(
                "  ←→ CPUs ({}-{} of {ncpus})",
                window.0 + 1,
                window.0 + window.1
            )
        } else {
            String::new()
        };
        let first = self.scroll + 1;
        let last = (self.scroll + self.page).min(self.lines.len());
        let keys_text = format!(
            "q quit  ↑↓ PgUp PgDn Home End scroll{shown_cpus}  rows {first}-{last} of {}",
            self.lines.len()
        );
        frame.render_widget(
            Paragraph::new(clip(&keys_text, width))
                .style(Style::default().add_modifier(Modifier::REVERSED)),
            keys,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::screen_lines;
    use super::*;
    use crate::model::cost::{CategoryRow, EntryRow, PerCpu, PidCpu, SelfCost};
    use ratatui::crossterm::event::KeyModifiers;

    /// Every entry 100 ms of a 500 ms period on the first CPU, a GRO
    /// category seen and a never-seen one, /proc/stat and one process.
    fn report(cpus: u32) -> CostReport {
        let n = cpus as usize;
        let per_cpu = |first: u64| {
            let mut v = vec![0; n];
            v[0] = first;
            v
        };
        let time = |first: u64| PerCpu {
            period_ns: per_cpu(first),
            total_ns: per_cpu(first * 3),
        };
        CostReport {
            timestamp: 1_700_000_000_000_000_000,
            period_ns: 500_000_000,
            elapsed_ns: 1_500_000_000,
            cpus: (0..cpus).collect(),
            entries: Entry::ALL
                .iter()
                .map(|&entry| EntryRow {
                    entry,
                    time: time(100_000_000),
                    spans_period: 3,
                })
                .collect(),
            categories: vec![
                CategoryRow {
                    name: "gro",
                    label: "GRO",
                    time: time(25_000_000),
                    samples_period: 25,
                },
                CategoryRow {
                    name: "bridging",
                    label: "bridging",
                    time: PerCpu::zeroed(n),
                    samples_period: 0,
                },
            ],
            proc_stat: vec![CpuStat::default(); n],
            pids: vec![PidCpu {
                pid: 42,
                comm: "iperf3".into(),
                user_ns_period: 10_000_000,
                system_ns_period: 490_000_000,
                user_ns_total: 10_000_000,
                system_ns_total: 490_000_000,
                tx_syscall_ns_period: 0,
                rx_syscall_ns_period: 0,
                tx_syscall_ns_total: 0,
                rx_syscall_ns_total: 0,
                interrupt_ns_period: 0,
                interrupt_ns_total: 0,
                alive: true,
            }],
            self_cost: SelfCost {
                bpf_ns_period: Some(5_000_000),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn labels(lines: &[CostLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| match l {
                CostLine::Row { label, .. } => label.clone(),
                CostLine::Text(t) => t.split(':').next().unwrap_or_default().to_string(),
            })
            .collect()
    }

    #[test]
    fn lines_follow_the_plain_table() {
        let lines = cost_lines(&report(2));
        let want: Vec<String> = [
            "TX syscalls",
            "RX syscalls",
            "NET_TX softirq",
            "NET_RX softirq",
            "  GRO",
            "net hard IRQs",
            "NAPI threads",
            "io_uring workers",
            "network total",
            "other softirqs",
            "other hard IRQs",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(CpuStat::FIELDS.iter().map(|f| format!("/proc/stat {f}")))
        .chain([
            "pid 42 (iperf3)".to_string(),
            "  TX syscalls 0.00%, RX syscalls 0.00%, interrupts in its context 0.00%".to_string(),
            "  total user 0.010 s, system 0.490 s".to_string(),
        ])
        .collect();
        assert_eq!(labels(&lines), want, "the never-seen category is left out");
        let total = lines.iter().find(|l| {
            matches!(
                l,
                CostLine::Row {
                    kind: Kind::Total,
                    ..
                }
            )
        });
        // Seven network entries of 100 ms: 700 ms on CPU0, 2.1 s since start.
        assert_eq!(
            total,
            Some(&CostLine::Row {
                label: "network total".into(),
                kind: Kind::Total,
                period_ns: vec![700_000_000, 0],
                all_of: 1_000_000_000,
                total_ns: Some(2_100_000_000),
            })
        );
        let tx = row_text(&lines[0], (0, 2));
        assert_eq!(
            tx,
            format!(
                "{:<25}{:>8}{:>8}{:>8}{:>10}",
                "TX syscalls", "20.00%", "0.00%", "10.00%", "0.300"
            )
        );
    }

    #[test]
    fn self_cost_and_losses_fit_80_columns() {
        let mut r = report(2);
        r.self_cost.process_ns_period = 2_500_000;
        assert_eq!(
            self_cost_line(&r),
            "netlens itself: BPF programs 1.00%, process 0.50% of one CPU"
        );
        r.self_cost.bpf_estimated = true;
        r.self_cost.bpf_ns_period = Some(123_456_789);
        assert_eq!(
            self_cost_line(&r),
            "netlens itself: BPF programs ~24.69% (estimated), process 0.50% of one CPU"
        );
        r.self_cost.bpf_ns_period = None;
        assert!(self_cost_line(&r).contains("BPF programs not measured,"));
        assert_eq!(lost_line(&r, 0), None, "nothing lost, no line");
        assert_eq!(
            lost_line(&r, 3).as_deref(),
            Some("lost: 0 NET_RX samples, 0 unreadable stacks, 0 BPF runs skipped, 3 pushes"),
            "failed Pyroscope pushes alone make the line"
        );
        r.self_cost.bpf_runs_missed_total = 12;
        r.sampling.stack_errors_total = 2;
        assert_eq!(
            lost_line(&r, 0).as_deref(),
            Some("lost: 0 NET_RX samples, 2 unreadable stacks, 12 BPF runs skipped")
        );
        let lost = lost_line(&r, 1000).unwrap_or_default();
        assert!(lost.chars().count() <= 80, "{lost}");
    }

    #[test]
    fn cpu_columns_by_width() {
        assert_eq!(cpu_window(80, 2, 0), (0, 2));
        assert_eq!(cpu_window(80, 64, 0), (0, 4));
        assert_eq!(
            cpu_window(80, 64, 62),
            (60, 4),
            "the last columns stay full"
        );
        assert_eq!(cpu_window(120, 64, 3), (3, 9));
        assert_eq!(cpu_window(40, 64, 5), (0, 0), "too narrow for any CPU");
        assert_eq!(cpu_window(80, 0, 0), (0, 0));
    }

    #[test]
    fn frame_at_80x24_keeps_header_and_footer() {
        let mut s = CostScreen::new();
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[0].starts_with("netlens cost"));
        assert!(
            lines[3].starts_with("loading the BPF programs"),
            "{lines:#?}"
        );

        s.update(Box::new(CostUpdate {
            report: report(2),
            pushes_failed: 0,
        }));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(
            lines[0].starts_with("netlens cost  22:13:20Z  period 0.50 s  elapsed 1.5 s"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[2].trim_end(),
            format!(
                "{:<25}{:>8}{:>8}{:>8}{:>10}",
                "% of CPU", "CPU0", "CPU1", "all", "total s"
            )
        );
        assert!(lines[3].starts_with("TX syscalls"), "{}", lines[3]);
        assert!(
            lines[22].starts_with("netlens itself: BPF programs 1.00%"),
            "{lines:#?}"
        );
        assert!(lines[23].starts_with("q quit"), "{}", lines[23]);
        assert!(
            lines[23].trim_end().ends_with("rows 1-19 of 22"),
            "{}",
            lines[23]
        );

        // Scrolled to the end: the process line shows, the header stays.
        s.key(KeyEvent::new(KeyCode::End, KeyModifiers::NONE));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(lines[2].starts_with("% of CPU"));
        assert_eq!(
            lines[19].trim_end(),
            "pid 42 (iperf3): user 2.00% system 98.00% of one CPU"
        );
        assert_eq!(lines[21].trim_end(), "  total user 0.010 s, system 0.490 s");
        assert!(
            lines[23].trim_end().ends_with("rows 4-22 of 22"),
            "{}",
            lines[23]
        );

        // Losses get a line of their own.
        let mut lossy = report(2);
        lossy.sampling.lost_total = 3;
        s.update(Box::new(CostUpdate {
            report: lossy,
            pushes_failed: 0,
        }));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(
            lines[22].starts_with("lost: 3 NET_RX samples"),
            "{lines:#?}"
        );
        assert!(lines[21].starts_with("netlens itself:"), "{lines:#?}");
    }

    #[test]
    fn tiny_windows_do_not_panic() {
        let mut s = CostScreen::new();
        s.update(Box::new(CostUpdate {
            report: report(64),
            pushes_failed: 0,
        }));
        for (w, h) in [(1, 1), (5, 2), (12, 4), (30, 7), (200, 3)] {
            assert_eq!(screen_lines(&mut s, w, h).len(), h as usize);
            s.key(KeyEvent::new(KeyCode::End, KeyModifiers::NONE));
            s.key(KeyEvent::new(KeyCode::Right, KeyModifiers::NONE));
        }
    }

    #[test]
    fn many_cpus_scroll_sideways() {
        let mut s = CostScreen::new();
        s.update(Box::new(CostUpdate {
            report: report(64),
            pushes_failed: 0,
        }));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(
            lines[2].contains("CPU0") && lines[2].contains("CPU3"),
            "{}",
            lines[2]
        );
        assert!(!lines[2].contains("CPU4"), "{}", lines[2]);
        assert!(lines[23].contains("←→ CPUs (1-4 of 64)"), "{}", lines[23]);
        s.key(KeyEvent::new(KeyCode::Right, KeyModifiers::NONE));
        let lines = screen_lines(&mut s, 80, 24);
        assert!(
            !lines[2].contains("CPU0 ") && lines[2].contains("CPU4"),
            "{}",
            lines[2]
        );
        assert!(lines[23].contains("CPUs (2-5 of 64)"), "{}", lines[23]);
        assert_eq!(
            s.key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE)),
            Flow::Quit
        );
        assert_eq!(
            s.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)),
            Flow::Quit
        );
    }
}
