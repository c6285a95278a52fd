//! The host side of netlens: what the running kernel offers, which
//! capabilities this process holds, what `/proc` says about processes,
//! sockets and network namespaces, and how to run code inside another
//! network namespace.
//!
//! Every parser here is a pure function over text so it can be tested on
//! sample input; the functions that touch the host are thin wrappers around
//! them.

pub mod caps;
pub mod cgroup;
pub mod check;
pub mod kernel;
pub mod netns;
pub mod procfs;

use thiserror::Error;

/// A `/proc` or `uname` text that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// A line or field that must be present was not found.
    #[error("no {0} found")]
    Missing(&'static str),
    /// The item was found but could not be understood.
    #[error("malformed {what}: {text:?}")]
    Malformed { what: &'static str, text: String },
}

impl ParseError {
    fn malformed(what: &'static str, text: &str) -> Self {
        ParseError::Malformed {
            what,
            text: text.to_owned(),
        }
    }
}
