//! Connection tracing: BPF load/attach, event intake, connection table, seeding.

pub mod decode;
pub mod skel;
pub mod table;
pub mod collector;
pub mod seed;
pub mod run;
