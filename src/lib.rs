//! netlens: eBPF network observability.
//!
//! Collection (BPF programs and maps, under [`conn`] and [`cost`]) is kept apart from
//! presentation (under [`output`]); both meet in the types of [`model`].

pub mod bpfio;
pub mod conn;
pub mod cost;
pub mod model;
pub mod output;
pub mod sys;
