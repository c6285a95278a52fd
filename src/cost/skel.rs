//! The generated libbpf-rs skeleton of src/bpf/cost.bpf.c.
#![allow(clippy::all, missing_docs, non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/cost.skel.rs"));

// SAFETY: generated from the structs of src/bpf/cost.h, which hold integers,
// integer arrays and structs of those only (that header says so to whoever
// edits it): every bit pattern is a valid value.
unsafe impl crate::bpfio::Record for types::cpu_cost {}
unsafe impl crate::bpfio::Record for types::pid_cost {}
unsafe impl crate::bpfio::Record for types::rx_sample {}
