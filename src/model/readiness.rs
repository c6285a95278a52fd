//! Whether a command has its BPF programs attached: set by the collector,
//! answered by the HTTP endpoints at `/healthz`.
//!
//! The endpoints start before the programs load (so that a taken port fails
//! at once), so the flag starts unset and is set later, from another thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared "ready" flag; clones are handles to the same flag. It is set
/// once every part it waits for said it is ready (one part by default; both
/// roles in `netlens agent`), and then stays set: netlens never detaches its
/// programs while it keeps serving.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicUsize>);

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness::needing(1)
    }
}

impl Readiness {
    /// A flag that is not set yet, waiting for one part.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// A flag set once `parts` calls of [`Readiness::set_ready`] were made,
    /// one by each part (each collector calls it once).
    pub fn needing(parts: usize) -> Readiness {
        Readiness(Arc::new(AtomicUsize::new(parts)))
    }

    /// Marks one part ready (its programs attached and collecting).
    pub fn set_ready(&self) {
        // Release pairs with the Acquire in is_ready: whoever sees the flag
        // also sees what was set up before it. Saturating: a part that says
        // it twice cannot make the count wrap.
        let _ = self
            .0
            .fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_flag() {
        let ready = Readiness::new();
        let seen_by_server = ready.clone();
        assert!(!seen_by_server.is_ready());
        ready.set_ready();
        assert!(seen_by_server.is_ready());
        assert!(!Readiness::new().is_ready(), "a new flag is unset");
    }

    #[test]
    fn a_flag_of_two_parts_waits_for_both() {
        let ready = Readiness::needing(2);
        let (conns, cost) = (ready.clone(), ready.clone());
        conns.set_ready();
        assert!(!ready.is_ready());
        cost.set_ready();
        assert!(ready.is_ready());
        cost.set_ready();
        assert!(ready.is_ready(), "stays set");
    }
}
