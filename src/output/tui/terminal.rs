//! Entering and leaving full-screen mode, and the one rule that keeps the
//! user's terminal usable: whatever way netlens ends (quit key, signal,
//! error, panic), raw mode is turned off and the alternate screen is left
//! exactly once, before anything else is printed.

use std::io::{self, BufWriter, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::{Frame, Terminal};

/// Frames are buffered and written at once (ratatui flushes after each),
/// so a terminal never shows half a frame, and a frame costs one write.
pub(super) type Term = Terminal<CrosstermBackend<BufWriter<Stdout>>>;

/// Larger than a full frame of a big window with colours.
const FRAME_BUFFER: usize = 256 * 1024;

/// Full-screen mode is on (raw mode, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Held while a frame is written and while the terminal is restored, so a
/// restore from another thread (the panic hook) never lands in the middle
/// of a frame, and no frame follows it.
static OUTPUT: Mutex<()> = Mutex::new(());
/// How long the panic hook waits for a frame being written to finish: the
/// panic may have happened while drawing, on the thread holding the lock.
const RESTORE_LOCK_WAIT: Duration = Duration::from_millis(200);

/// Turns on raw mode and the alternate screen, with a panic hook that
/// restores the terminal before the panic message is printed.
pub(super) fn enter() -> io::Result<Term> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let entered = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
        .and_then(|()| {
            Terminal::new(CrosstermBackend::new(BufWriter::with_capacity(
                FRAME_BUFFER,
                io::stdout(),
            )))
        })
        .and_then(|mut term| term.clear().map(|()| term));
    if entered.is_err() {
        restore();
    }
    entered
}

/// Leaves full-screen mode; does nothing when it is not on. Safe to call
/// from any thread and more than once.
pub fn restore() {
    if !ACTIVE.load(Ordering::SeqCst) {
        return;
    }
    let _lock = lock_output(Some(RESTORE_LOCK_WAIT));
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: there is nowhere left to report a failure to.
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// Still in full-screen mode (not restored by a panic or an exit path).
pub(super) fn is_active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Draws one frame, unless the terminal was restored meanwhile.
pub(super) fn draw(term: &mut Term, render: impl FnOnce(&mut Frame)) -> io::Result<()> {
    let _lock = lock_output(None);
    if !is_active() {
        return Ok(());
    }
    term.draw(render).map(drop)
}

/// The output lock; `wait` bounds the wait (None: block). A poisoned lock
/// (a panic while drawing) is still a lock.
fn lock_output(wait: Option<Duration>) -> Option<MutexGuard<'static, ()>> {
    let Some(wait) = wait else {
        return Some(OUTPUT.lock().unwrap_or_else(|e| e.into_inner()));
    };
    let end = Instant::now() + wait;
    loop {
        match OUTPUT.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() >= end => return None,
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
