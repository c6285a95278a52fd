//! The full-screen terminal UI of `netlens conns -d` and `netlens cost`,
//! used when stdout is a terminal (the plain table sinks serve pipes and
//! files).
//!
//! The collector thread never waits for the terminal: the sinks here only
//! copy the model values they are given ([`Snapshot`], close events,
//! [`CostReport`]) into a channel. A UI thread owns the terminal: it reads
//! keys (polling, so it also notices new data), keeps the view state
//! (scroll, sort, filter, grouping) and draws on new data, on keys and on
//! resize. Quitting sets the same stop flag as SIGINT/SIGTERM, so the run
//! loop ends as it does for a signal.

mod conns;
mod cost;
pub(crate) mod format;
mod terminal;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;

use super::pyroscope::PushCounters;
use super::Sink;
use crate::model::cost::CostReport;
use crate::model::{ConnEvent, EventKind, Snapshot};
pub use terminal::restore;

/// How long the UI thread waits for a key before it looks for new data.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// Updates queued for the UI thread at most (about 25 s of 100 ms flushes
/// with close events): should the terminal block the UI thread, the
/// collector drops updates instead of holding ever more snapshots.
const UPDATE_QUEUE: usize = 256;

/// Set (to anything) to make `!` panic the UI thread: tests/tui.rs checks
/// that a panic restores the terminal before its message and ends the run.
pub const PANIC_KEY_ENV: &str = "NETLENS_TEST_TUI_PANIC_KEY";

/// What the UI does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Nothing changed.
    Ignore,
    Redraw,
    /// Ask the collector for a snapshot now.
    Refresh,
    Quit,
}

/// The keys both screens share: quit, and scrolling by a row, a page of
/// `page` rows, or to either end (`End` is clamped to the last page when
/// drawn). `None` for any other key.
fn scroll_or_quit(code: KeyCode, scroll: &mut usize, page: usize) -> Option<Flow> {
    let page = page.max(1) as isize;
    *scroll = match code {
        KeyCode::Char('q') | KeyCode::Esc => return Some(Flow::Quit),
        KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => scroll.saturating_add(1),
        KeyCode::PageUp => scroll.saturating_add_signed(-page),
        KeyCode::PageDown | KeyCode::Char(' ') => scroll.saturating_add_signed(page),
        KeyCode::Home => 0,
        KeyCode::End => usize::MAX,
        _ => return None,
    };
    Some(Flow::Redraw)
}

/// One full-screen view: its state, keys and drawing.
trait Screen: Send + 'static {
    type Update: Send + 'static;
    fn update(&mut self, update: Self::Update);
    /// A progress or warning line of the run loop.
    fn status(&mut self, line: String);
    fn key(&mut self, key: KeyEvent) -> Flow;
    fn draw(&mut self, frame: &mut Frame);
}

enum Msg<U> {
    Update(U),
    Status(String),
}

/// State shared by a sink, its UI thread and its [`StatusLines`].
#[derive(Default)]
struct Shared {
    /// Why the UI thread ended with an error or a panic.
    failure: Mutex<Option<String>>,
    /// Status lines to print on stderr once the terminal is restored (when
    /// stderr is the terminal, printing them now would tear the screen).
    deferred: Mutex<Vec<String>>,
    /// The sink is gone: the UI thread ends (a [`StatusLines`] may still
    /// hold the channel open).
    closing: AtomicBool,
}

/// The UI thread of one screen; restores the terminal when dropped.
struct Ui<U> {
    tx: Option<SyncSender<Msg<U>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl<U: Send + 'static> Ui<U> {
    fn start<S: Screen<Update = U>>(
        screen: S,
        stop: Arc<AtomicBool>,
        refresh: Option<Sender<()>>,
    ) -> Result<(Ui<U>, StatusLines)> {
        let term = terminal::enter()
            .context("cannot enter full-screen mode (keys are read from stdin or /dev/tty)")?;
        let (tx, rx) = mpsc::sync_channel(UPDATE_QUEUE);
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("netlens-tui".into())
                .spawn(move || {
                    // Whatever ends this thread (quit key, error, panic)
                    // ends the run too.
                    let _stop = StopOnExit {
                        stop,
                        shared: Arc::clone(&shared),
                    };
                    if let Err(e) = ui_loop(term, screen, &rx, refresh.as_ref(), &shared) {
                        *lock(&shared.failure) = Some(format!("terminal UI: {e}"));
                    }
                    terminal::restore();
                })
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                terminal::restore();
                return Err(e).context("starting the terminal UI thread");
            }
        };
        let status = StatusLines {
            tx: {
                let tx = tx.clone();
                Arc::new(move |line: String| {
                    let _ = tx.try_send(Msg::Status(line));
                })
            },
            shared: Arc::clone(&shared),
            stderr_is_terminal: std::io::stderr().is_terminal(),
        };
        Ok((
            Ui {
                tx: Some(tx),
                thread: Some(thread),
                shared,
            },
            status,
        ))
    }

    /// An error once the UI thread failed (the run should end with it).
    fn check(&self) -> Result<()> {
        match lock(&self.shared.failure).as_ref() {
            // The run ends with it: nobody would see a dead screen.
            Some(why) => Err(super::guard::Fatal(why.clone()).into()),
            None => Ok(()),
        }
    }

    /// Hands `update` to the UI thread without waiting. Fails once the UI
    /// failed; the update is dropped after a quit key (the run is
    /// stopping) or when the queue is full (the UI thread is stuck).
    fn send(&self, update: U) -> Result<()> {
        self.check()?;
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Update(update));
        }
        Ok(())
    }
}

impl<U> Drop for Ui<U> {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        terminal::restore();
        for line in lock(&self.shared.deferred).drain(..) {
            eprintln!("{line}");
        }
    }
}

/// Sets the stop flag when the UI thread ends, and records a panic.
struct StopOnExit {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.shared.failure).get_or_insert_with(|| "terminal UI panicked".into());
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ui_loop<S: Screen>(
    mut term: terminal::Term,
    mut screen: S,
    rx: &Receiver<Msg<S::Update>>,
    refresh: Option<&Sender<()>>,
    shared: &Shared,
) -> std::io::Result<()> {
    let panic_key = std::env::var_os(PANIC_KEY_ENV).is_some();
    let mut dirty = true;
    loop {
        if shared.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Update(u)) => screen.update(u),
                Ok(Msg::Status(line)) => screen.status(line),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
            dirty = true;
        }
        if !terminal::is_active() {
            return Ok(());
        }
        if dirty {
            terminal::draw(&mut term, |f| screen.draw(f))?;
            dirty = false;
        }
        if !event::poll(INPUT_POLL)? {
            continue;
        }
        match event::read()? {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                if panic_key && key.code == KeyCode::Char('!') {
                    panic!("{PANIC_KEY_ENV} is set and ! was pressed");
                }
                let flow = if is_ctrl_c(&key) {
                    Flow::Quit
                } else {
                    screen.key(key)
                };
                match flow {
                    Flow::Ignore => {}
                    Flow::Redraw => dirty = true,
                    Flow::Refresh => {
                        if let Some(r) = refresh {
                            let _ = r.send(());
                        }
                    }
                    Flow::Quit => return Ok(()),
                }
            }
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}

/// Raw mode turns Ctrl-C into a key instead of SIGINT.
fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c' | 'C'))
}

/// Where the run loop's progress and warning lines go while the UI runs:
/// shown in the UI, and written to stderr at once when stderr is not the
/// terminal, or else after the terminal is restored.
#[derive(Clone)]
pub struct StatusLines {
    tx: Arc<dyn Fn(String) + Send + Sync>,
    shared: Arc<Shared>,
    stderr_is_terminal: bool,
}

impl StatusLines {
    pub fn line(&self, line: &str) {
        if self.stderr_is_terminal {
            lock(&self.shared.deferred).push(line.to_string());
        } else {
            eprintln!("{line}");
        }
        (self.tx)(line.to_string());
    }
}

/// `netlens conns -d` on a terminal.
pub struct ConnsTui {
    ui: Ui<conns::Update>,
    /// Close events since the last flush, sent in one message.
    closed: Vec<ConnEvent>,
}

impl ConnsTui {
    /// Enters full-screen mode. Quitting sets `stop`; the returned receiver
    /// gets a request for a snapshot at once (the first screen should not
    /// wait a whole interval) and on Enter.
    pub fn start(stop: Arc<AtomicBool>) -> Result<(ConnsTui, StatusLines, Receiver<()>)> {
        let (refresh_tx, refresh_rx) = mpsc::channel();
        let _ = refresh_tx.send(());
        let (ui, status) = Ui::start(conns::ConnsScreen::new(), stop, Some(refresh_tx))?;
        Ok((
            ConnsTui {
                ui,
                closed: Vec::new(),
            },
            status,
            refresh_rx,
        ))
    }
}

impl Sink for ConnsTui {
    fn event(&mut self, ev: &ConnEvent) -> Result<()> {
        // Only closes matter to the screen (final counters of a row it
        // shows); opens are seen in the next snapshot.
        if ev.kind == EventKind::Close {
            self.closed.push(ev.clone());
        }
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        self.flush()?;
        self.ui
            .send(conns::Update::Snapshot(Box::new(snap.clone())))
    }

    fn flush(&mut self) -> Result<()> {
        if self.closed.is_empty() {
            return self.ui.check();
        }
        self.ui
            .send(conns::Update::Closed(std::mem::take(&mut self.closed)))
    }
}

/// `netlens cost` on a terminal.
pub struct CostTui {
    ui: Ui<Box<cost::CostUpdate>>,
    pushes: Option<Arc<PushCounters>>,
}

impl CostTui {
    /// Enters full-screen mode; quitting sets `stop`.
    pub fn start(stop: Arc<AtomicBool>) -> Result<(CostTui, StatusLines)> {
        let (ui, status) = Ui::start(cost::CostScreen::new(), stop, None)?;
        Ok((CostTui { ui, pushes: None }, status))
    }

    /// Shows the failed Pyroscope pushes on the `lost:` line.
    pub fn with_pushes(mut self, pushes: Arc<PushCounters>) -> CostTui {
        self.pushes = Some(pushes);
        self
    }
}

impl Sink for CostTui {
    fn report(&mut self, report: &CostReport) -> Result<()> {
        if report.period_ns < super::cost::MIN_TABLE_PERIOD_NS {
            return Ok(());
        }
        self.ui.send(Box::new(cost::CostUpdate {
            report: report.clone(),
            pushes_failed: self.pushes.as_ref().map_or(0, |p| p.totals().failed),
        }))
    }
}

#[cfg(test)]
mod test_support {
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::Terminal;

    use super::Screen;

    /// The screen drawn at `width` x `height`.
    pub fn screen_buffer(screen: &mut impl Screen, width: u16, height: u16) -> Buffer {
        let mut term = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        term.draw(|f| screen.draw(f)).expect("draw");
        term.backend().buffer().clone()
    }

    /// The screen drawn at `width` x `height`, one string per row.
    pub fn screen_lines(screen: &mut impl Screen, width: u16, height: u16) -> Vec<String> {
        screen_buffer(screen, width, height)
            .content
            .chunks(width as usize)
            .map(|row| row.iter().map(|c| c.symbol()).collect())
            .collect()
    }
}
