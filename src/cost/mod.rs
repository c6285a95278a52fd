//! Network CPU cost (`netlens cost`): exact time in the kernel's networking
//! entry points per CPU, and a breakdown of NET_RX by kernel stack sampling.
//!
//! collector (BPF, maps, perf events) -> account (arithmetic) and stacks
//! (kallsyms, classify, folded) -> run (the loop building each CostReport).

pub mod account;
pub mod classify;
pub mod collector;
pub mod folded;
pub mod irqs;
pub mod kallsyms;
pub mod probes;
pub mod processes;
pub mod run;
pub mod selfstats;
pub mod skel;
pub mod stacks;
pub mod syscalls;
