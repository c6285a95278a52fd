//! Small pieces shared by every collector: reading the records BPF
//! programs write, and draining a BPF ring buffer.

use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::RingBuffer;

/// Reads a plain-old-data record from the start of `bytes`.
///
/// Only for the skeleton's generated `types::*` structs, which contain
/// integers and integer arrays only, so every bit pattern is a valid value.
pub fn read_record<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, read_unaligned copes with any
    // alignment, and T is a repr(C) struct of integers (see doc comment), for
    // which every bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Waits up to `timeout` for the ring to signal data, then runs the
/// callbacks of every record queued. A signal interrupting the wait (that
/// is how Ctrl-C arrives) is not an error. `what` names the ring in errors.
pub fn poll_ring(ring: &RingBuffer<'_>, timeout: Duration, what: &str) -> Result<()> {
    if let Err(e) = ring.poll(timeout) {
        if e.kind() != libbpf_rs::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("polling the {what} ring buffer"));
        }
    }
    ring.consume()
        .with_context(|| format!("reading the {what} ring buffer"))?;
    Ok(())
}
