//! The generated libbpf-rs skeleton of src/bpf/cost.bpf.c.
#![allow(clippy::all, missing_docs, non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/cost.skel.rs"));
