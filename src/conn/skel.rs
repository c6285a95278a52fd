//! The generated libbpf-rs skeleton of src/bpf/conns.bpf.c.
#![allow(clippy::all, missing_docs, non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/conns.skel.rs"));

// SAFETY: generated from the structs of src/bpf/conns.h, which hold integers,
// integer arrays and structs of those only (that header says so to whoever
// edits it): every bit pattern is a valid value.
unsafe impl crate::bpfio::Record for types::conn_value {}
unsafe impl crate::bpfio::Record for types::conn_event {}
unsafe impl crate::bpfio::Record for types::seed_record {}
unsafe impl crate::bpfio::Record for types::conn_refresh {}
