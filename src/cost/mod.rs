//! Network CPU cost: the NET_RX breakdown by kernel stack sampling.

pub mod classify;
pub mod folded;
pub mod kallsyms;
