//! The full-screen views of `netlens conns -d` and `netlens cost`, driven
//! like a person would: the real binary runs as root in a tmux pane of a
//! private tmux server (`tmux -L <unique socket>`, killed at the end), the
//! test types keys with send-keys and reads the screen with capture-pane.
//! The connections shown are made in namespaces the test creates, and
//! netlens is limited to them with --netns.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Bound on waiting for something to appear on the screen: as long as
/// netlens may take to be ready (a debug build on an emulated CPU), not a
/// measurement.
const SCREEN_TIMEOUT: Duration = READY_TIMEOUT;
/// Bound on netlens exiting after q or a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// tmux is installed (scripts/deps.sh NETLENS_TEST_PKGS); otherwise a
/// message and false, and the test returns.
fn require_tmux() -> bool {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("SKIP: tmux is not installed (scripts/deps.sh installs it)");
            false
        }
    }
}

/// One tmux server of our own, with one window running `command` through
/// `sh`; the command's exit status lands in a file. The server (and what
/// still runs in it) is killed on Drop.
struct Pane {
    socket: String,
    status: TempFile,
}

impl Pane {
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Pane {
        let socket = format!("netlens-{tag}-{}", std::process::id());
        let status = TempFile::new(&format!("{tag}-status"));
        // The pane lives on after netlens (sleep), so its screen can be
        // read; the status file tells that netlens is done.
        let script = format!(
            "{command}; echo $? > {}; echo netlens-exited; exec sleep 600",
            status.arg()
        );
        let pane = Pane { socket, status };
        pane.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sh",
            "-c",
            &script,
        ]);
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let mut full = vec!["-L", self.socket.as_str()];
        full.extend_from_slice(args);
        run_ok("tmux", &full)
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// The screen once `pred` holds for it, twice in a row and unchanged
    /// (a capture can land while a frame is being written); panics with
    /// the screen after `SCREEN_TIMEOUT`.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + SCREEN_TIMEOUT;
        let mut last: Option<String> = None;
        loop {
            let s = self.screen();
            if pred(&s) {
                if last.as_deref() == Some(s.as_str()) {
                    return s;
                }
                last = Some(s);
                std::thread::sleep(Duration::from_millis(30));
                continue;
            }
            last = None;
            assert!(
                Instant::now() < end,
                "no {what} on the screen within {SCREEN_TIMEOUT:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    fn resize(&self, width: u16, height: u16) {
        self.tmux(&[
            "resize-window",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    /// Whether the pane shows the alternate screen (a full-screen program).
    fn alternate_on(&self) -> bool {
        self.tmux(&["display-message", "-p", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// The PID of the command the shell runs (the pane's process's child).
    fn command_pid(&self) -> u32 {
        let shell = self.tmux(&["display-message", "-p", "#{pane_pid}"]);
        let shell = shell.trim();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .expect("children of the pane's shell");
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the pane's shell {shell} has no child"))
    }

    /// netlens's exit status, waiting for it.
    fn exit_status(&self) -> i32 {
        let end = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.status.0) {
                if let Ok(code) = s.trim().parse() {
                    return code;
                }
            }
            assert!(
                Instant::now() < end,
                "netlens still running {EXIT_TIMEOUT:?} after being told to stop:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Lines of the screen, and the index of the first containing `needle`.
fn line_of(screen: &str, needle: &str) -> Option<usize> {
    screen.lines().position(|l| l.contains(needle))
}

/// The `sort: COLUMN direction` part of the title.
fn sort_title(screen: &str) -> String {
    let title = screen.lines().next().unwrap_or("");
    let sort = title.split("sort: ").nth(1).unwrap_or("");
    sort.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Presses `>` until the title says the table is sorted by `title`,
/// largest first, waiting for each press to show (a slow machine must not
/// make it overshoot); returns that screen.
fn sort_by(pane: &Pane, title: &str) -> String {
    let want = format!("{title} desc");
    // At most once around the columns.
    for _ in 0..20 {
        let screen = pane.screen();
        let now = sort_title(&screen);
        if now == want {
            return screen;
        }
        pane.keys(&[">"]);
        pane.wait_screen("the next sort column", |s| sort_title(s) != now);
    }
    panic!("no sort by {title}:\n{}", pane.screen());
}

fn netlens() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netlens"))
}

/// Two clients (1,000,000 and 20,000 bytes sent, then idle) and 30 idle
/// connections between two namespaces: 64 rows with both ends. The test
/// sorts, filters, scrolls, groups and resizes, then quits with q.
#[test]
fn conns_screen_keys_and_resize() {
    if !require_root() || !require_tmux() {
        return;
    }
    let pair = served_pair("tui", 0, false, &["--max-secs", "300"]);
    let to = pair.addr.to_string();
    let send = |bytes: &str| {
        let p = peer(
            Some(&pair.a),
            &[
                "connect",
                "--to",
                &to,
                "--send",
                bytes,
                "--pause-after-send",
            ],
        );
        let local = addr(&p.wait_event("sent"), "local");
        (p, local)
    };
    let (_big, big) = send("1000000");
    let (_small, small) = send("20000");
    let hold = peer(
        Some(&pair.a),
        &["hold", "--to", &to, "--count", "30", "--secs", "300"],
    );
    hold.wait_event("holding");

    let stderr = TempFile::new("tui-stderr");
    let command = format!(
        "{} conns -d --no-log-file -t 0.5 --netns {} --netns {} 2>{}",
        netlens().display(),
        pair.a.inode(),
        pair.b.inode(),
        stderr.arg()
    );
    let pane = Pane::start("tui-conns", 80, 24, &command);
    // The server's ends of the two clients' connections: their remote
    // address is the client's own.
    let (big_row, small_row) = (big.to_string(), small.to_string());
    let screen = pane.wait_screen("all 64 connections", |s| s.contains("rows 1-19 of 64"));
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 24, "{screen}");
    assert!(lines[0].starts_with("netlens conns"), "{screen}");
    for column in ["PID", "COMMAND", "REMOTE", "SENT", "TX/s", "RECV", "RX/s"] {
        assert!(lines[1].contains(column), "no {column}: {screen}");
    }
    assert!(
        lines[21].starts_with("rows 1-19 of 64  64 conns: "),
        "{screen}"
    );
    assert!(lines[22].starts_with("lost: events 0"), "{screen}");
    assert!(lines[23].starts_with("q quit"), "{screen}");
    assert!(
        pane.alternate_on(),
        "a full-screen view uses the alternate screen"
    );
    let text = std::fs::read_to_string(&stderr.0).unwrap_or_default();
    assert!(text.contains(NETLENS_READY), "{text}");

    // Sorted by SENT: the clients' ends first, with the server's address.
    let screen = sort_by(&pane, "SENT");
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[1].contains("SENT▼"), "{screen}");
    for (line, sent) in [(lines[2], "977K"), (lines[3], "20K")] {
        assert!(
            line.contains(&to) && line.contains(sent) && line.contains("netlens-peer"),
            "{screen}"
        );
    }

    // By RECV, largest first: the 1,000,000-byte receiver above the
    // 20,000-byte one, both above the 62 idle rows.
    let screen = sort_by(&pane, "RECV");
    assert!(
        screen.lines().nth(1).unwrap_or("").contains("RECV▼"),
        "{screen}"
    );
    assert_eq!(line_of(&screen, &big_row), Some(2), "{screen}");
    assert_eq!(line_of(&screen, &small_row), Some(3), "{screen}");
    assert!(
        screen.lines().nth(2).unwrap_or("").contains("977K"),
        "{screen}"
    );
    // Reversed, they are the last two rows: scroll to the end.
    pane.keys(&["r"]);
    pane.wait_screen("the ascending sort", |s| s.contains("sort: RECV asc"));
    let screen = pane.screen();
    assert_eq!(line_of(&screen, &big_row), None, "{screen}");
    pane.keys(&["End"]);
    let screen = pane.wait_screen("the last page", |s| s.contains("rows 46-64 of 64"));
    assert_eq!(line_of(&screen, &small_row), Some(19), "{screen}");
    assert_eq!(line_of(&screen, &big_row), Some(20), "{screen}");
    pane.keys(&["Home"]);
    pane.wait_screen("the first page", |s| s.contains("rows 1-19 of 64"));
    pane.keys(&["PageDown"]);
    pane.wait_screen("the second page", |s| s.contains("rows 20-38 of 64"));
    pane.keys(&["Up"]);
    pane.wait_screen("one row up", |s| s.contains("rows 19-37 of 64"));

    // A filter on the big client's port: its two ends remain.
    pane.keys(&["/"]);
    pane.type_text(&format!(":{}", big.port()));
    pane.keys(&["Enter"]);
    let screen = pane.wait_screen("the filtered rows", |s| s.contains("rows 1-2 of 2"));
    assert!(screen.contains(&big_row), "{screen}");
    assert!(!screen.contains(&small_row), "{screen}");
    assert!(screen
        .lines()
        .next()
        .unwrap_or("")
        .contains(&format!("filter: :{}", big.port())));
    // Esc while typing clears it.
    pane.keys(&["/", "Escape"]);
    pane.wait_screen("all rows again", |s| s.contains("rows 1-19 of 64"));

    // Grouped by process: the server holds 32 connections, hold 30.
    pane.keys(&["g"]);
    let screen = pane.wait_screen("process groups", |s| s.contains("group: process"));
    assert!(
        screen.lines().nth(1).unwrap_or("").contains("CONNS"),
        "{screen}"
    );
    let server_pid = pair.server.pid().to_string();
    let server_line = screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(server_pid.as_str()))
        .unwrap_or_else(|| panic!("no group of the server {server_pid}:\n{screen}"));
    assert_eq!(
        server_line.split_whitespace().nth(2),
        Some("32"),
        "{server_line}"
    );
    assert!(screen.contains("groups 1-4 of 4"), "{screen}");
    pane.keys(&["g", "g"]);
    pane.wait_screen("no grouping", |s| s.contains("group: none"));

    // Resized: smaller, the header and the footer stay; wider, more columns.
    pane.resize(60, 12);
    // Until netlens redraws, tmux shows the old frame's last lines.
    let screen = pane.wait_screen("the 60x12 screen", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 12 && lines[0].starts_with("netlens conns") && lines[10].starts_with("lost:")
    });
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("netlens conns"), "{screen}");
    assert!(lines[1].contains("REMOTE"), "{screen}");
    assert!(lines[10].starts_with("lost: events 0"), "{screen}");
    pane.resize(150, 30);
    let screen = pane.wait_screen("the 150x30 screen", |s| {
        s.lines().nth(1).is_some_and(|l| l.contains("LOCAL"))
    });
    assert!(
        screen.lines().nth(1).unwrap_or("").contains("RETR"),
        "{screen}"
    );

    pane.keys(&["q"]);
    assert_eq!(pane.exit_status(), 0, "{}", pane.screen());
    assert!(!pane.alternate_on(), "the alternate screen was left");
    let screen = pane.wait_screen("the shell's line", |s| s.contains("netlens-exited"));
    assert!(!screen.contains("REMOTE"), "the table is gone: {screen}");
    let text = std::fs::read_to_string(&stderr.0).unwrap_or_default();
    assert!(text.contains("netlens: stopped"), "{text}");
}

/// The first snapshot comes at once, the next on Enter (the interval is
/// an hour): a connection made in between shows, marked new.
#[test]
fn enter_refreshes_and_new_connections_are_marked() {
    if !require_root() || !require_tmux() {
        return;
    }
    let pair = served_pair("tuient", 1, false, &["--max-secs", "300"]);
    let command = format!(
        "{} conns -d --no-log-file -t 3600 --netns {} --netns {}",
        netlens().display(),
        pair.a.inode(),
        pair.b.inode()
    );
    let pane = Pane::start("tui-enter", 80, 24, &command);
    pane.wait_screen("the first snapshot", |s| s.contains("rows 0 of 0"));
    let client = peer(
        Some(&pair.a),
        &[
            "connect",
            "--to",
            &pair.addr.to_string(),
            "--send",
            "5000",
            "--pause-after-send",
        ],
    );
    let local = addr(&client.wait_event("sent"), "local").to_string();
    pane.keys(&["Enter"]);
    let screen = pane.wait_screen("the second snapshot", |s| s.contains("rows 1-2 of 2"));
    let rows: Vec<&str> = screen.lines().skip(2).take(2).collect();
    assert!(rows.iter().all(|r| r.starts_with('+')), "{screen}");
    assert!(rows.iter().any(|r| r.contains(&local)), "{screen}");
    assert!(
        rows.iter()
            .any(|r| r.contains(&pair.addr.to_string()) && r.contains("4.9K")),
        "{screen}"
    );
    pane.keys(&["q"]);
    assert_eq!(pane.exit_status(), 0, "{}", pane.screen());
}

/// How a test ends the view.
#[derive(Clone, Copy, Debug)]
enum Quit {
    Signal(libc::c_int),
    Key(&'static str),
}

/// SIGTERM, SIGINT, Ctrl-C and Esc end the view as q does, and restore
/// the terminal; the status lines, kept while the view covered stderr's
/// terminal, are printed after it.
#[test]
fn signals_and_keys_restore_the_terminal() {
    if !require_root() || !require_tmux() {
        return;
    }
    for (name, quit) in [
        ("TERM", Quit::Signal(libc::SIGTERM)),
        ("INT", Quit::Signal(libc::SIGINT)),
        ("ctrlc", Quit::Key("C-c")),
        ("esc", Quit::Key("Escape")),
    ] {
        let ns = Netns::new("tuisig");
        let command = format!(
            "{} conns -d --no-log-file -t 0.5 --netns {}",
            netlens().display(),
            ns.inode()
        );
        let pane = Pane::start(&format!("tui-quit{name}"), 80, 24, &command);
        pane.wait_screen("the first snapshot", |s| s.contains("rows 0 of 0"));
        assert!(pane.alternate_on());
        match quit {
            Quit::Signal(sig) => {
                let pid = pane.command_pid();
                // SAFETY: kill() on the PID of the netlens this test started.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
            }
            Quit::Key(key) => pane.keys(&[key]),
        }
        assert_eq!(pane.exit_status(), 0, "{name}: {}", pane.screen());
        assert!(
            !pane.alternate_on(),
            "{name}: the alternate screen was left"
        );
        let screen = pane.wait_screen("the shell's line", |s| s.contains("netlens-exited"));
        let ready = line_of(&screen, NETLENS_READY);
        let stopped = line_of(&screen, "netlens: stopped");
        assert!(
            ready.is_some() && ready < stopped,
            "{name}: status lines after the view: {screen}"
        );
    }
}

/// A panic in the view (forced with a test-only key) restores the
/// terminal before the panic message, and ends the run with an error.
#[test]
fn panic_restores_the_terminal() {
    if !require_root() || !require_tmux() {
        return;
    }
    let ns = Netns::new("tuipanic");
    let command = format!(
        "NETLENS_TEST_TUI_PANIC_KEY=1 {} conns -d --no-log-file -t 0.5 --netns {}",
        netlens().display(),
        ns.inode()
    );
    let pane = Pane::start("tui-panic", 80, 24, &command);
    pane.wait_screen("the first snapshot", |s| s.contains("rows 0 of 0"));
    assert!(pane.alternate_on());
    pane.keys(&["!"]);
    assert_eq!(pane.exit_status(), 1, "{}", pane.screen());
    assert!(!pane.alternate_on(), "the alternate screen was left");
    let screen = pane.wait_screen("the shell's line", |s| s.contains("netlens-exited"));
    assert!(screen.contains("panicked"), "{screen}");
    assert!(
        screen.contains("netlens: error: terminal UI panicked"),
        "{screen}"
    );
    assert!(!screen.contains("q quit"), "the view is gone: {screen}");
}

/// Without a controlling terminal to read keys from (setsid, stdin not a
/// terminal) the full-screen view cannot start: netlens says so and
/// redraws the plain table on the terminal that is its stdout.
#[test]
fn plain_table_without_a_controlling_terminal() {
    if !require_root() || !require_tmux() {
        return;
    }
    let ns = Netns::new("tuitty");
    let stderr = TempFile::new("tui-notty-stderr");
    let command = format!(
        "setsid {} conns -d --no-log-file -t 0.5 --netns {} </dev/null 2>{}",
        netlens().display(),
        ns.inode(),
        stderr.arg()
    );
    let pane = Pane::start("tui-notty", 80, 24, &command);
    let screen = pane.wait_screen("the plain table", |s| s.contains("counters: totals"));
    assert!(
        screen.contains("LOCAL") && screen.contains("RTTVAR µs"),
        "{screen}"
    );
    assert!(!pane.alternate_on(), "no full-screen mode");
    let text = std::fs::read_to_string(&stderr.0).unwrap_or_default();
    assert!(text.contains("showing the plain table instead"), "{text}");
    // SAFETY: kill() on the PID of the netlens this test started.
    unsafe { libc::kill(pane.command_pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(pane.exit_status(), 0, "{}", pane.screen());
}

/// `netlens cost` at 80x24: the title, the CPU header and the self-cost
/// footer; the header stays when resized; q quits with status 0.
#[test]
fn cost_screen_header_resize_and_quit() {
    if !require_root() || !require_tmux() {
        return;
    }
    let stderr = TempFile::new("tui-cost-stderr");
    let command = format!("{} cost -f 0 2>{}", netlens().display(), stderr.arg());
    let pane = Pane::start("tui-cost", 80, 24, &command);
    let screen = pane.wait_screen("the first period", |s| s.contains("netlens itself"));
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("netlens cost"), "{screen}");
    assert!(lines[1].starts_with("sampling off"), "{screen}");
    assert!(
        lines[2].starts_with("% of CPU") && lines[2].contains("CPU0") && lines[2].contains("all"),
        "{screen}"
    );
    assert!(lines[3].starts_with("TX syscalls"), "{screen}");
    assert!(lines[23].starts_with("q quit"), "{screen}");
    assert!(pane.alternate_on());

    pane.keys(&["End"]);
    let screen = pane.wait_screen("the last rows", |s| s.contains("/proc/stat steal"));
    assert!(
        screen.lines().nth(2).unwrap_or("").starts_with("% of CPU"),
        "{screen}"
    );
    pane.resize(70, 10);
    // Until netlens redraws, tmux shows the old frame's last lines.
    let screen = pane.wait_screen("the 70x10 screen", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 10 && lines[0].starts_with("netlens cost") && lines[9].starts_with("q quit")
    });
    assert!(
        screen.lines().nth(2).unwrap_or("").starts_with("% of CPU"),
        "{screen}"
    );
    assert!(
        screen.lines().nth(9).unwrap_or("").starts_with("q quit"),
        "{screen}"
    );

    pane.keys(&["q"]);
    assert_eq!(pane.exit_status(), 0, "{}", pane.screen());
    assert!(!pane.alternate_on(), "the alternate screen was left");
    let text = std::fs::read_to_string(&stderr.0).unwrap_or_default();
    assert!(text.contains("netlens: stopped after"), "{text}");
}

/// A failing Pyroscope backend while the cost view owns the terminal,
/// stderr included: its warning is shown in the view, never written over
/// it, the failed pushes are on the `lost:` line, and the warning is
/// printed again once the terminal is restored.
#[test]
fn cost_screen_shows_pyroscope_failures_in_place() {
    if !require_root() || !require_tmux() {
        return;
    }
    // A port nobody listens on once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pair = served_pair("tuipy", 0, false, &["--sink", "--max-secs", "30"]);
    let command = format!(
        "{} cost -f 1000 --user-period 250 --pyroscope http://127.0.0.1:{port}",
        netlens().display()
    );
    let pane = Pane::start("tui-pyro", 110, 30, &command);
    pane.wait_screen("the first period", |s| s.contains("netlens itself"));
    // NET_RX work to sample, so that there are stacks to push.
    let out = peer(
        Some(&pair.a),
        &["bulk", "--to", &pair.addr.to_string(), "--secs", "1"],
    )
    .finish();
    assert!(out.iter().any(|v| v["event"] == "bulk"), "{out:?}");
    let screen = pane.wait_screen("the failed pushes", |s| {
        s.contains("warning: pyroscope: ")
            && s.lines()
                .any(|l| l.starts_with("lost:") && l.contains(" pushes"))
    });
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("netlens cost"), "{screen}");
    assert!(lines[2].starts_with("% of CPU"), "{screen}");
    assert_eq!(
        screen.matches("warning: pyroscope: ").count(),
        1,
        "{screen}"
    );
    assert!(pane.alternate_on());
    pane.keys(&["q"]);
    assert_eq!(pane.exit_status(), 0, "{}", pane.screen());
    let after = pane.screen();
    assert!(after.contains("warning: pyroscope: "), "{after}");
    assert!(after.contains("netlens: stopped after"), "{after}");
}
