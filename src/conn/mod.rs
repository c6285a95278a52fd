//! Connection tracing: BPF load/attach, event intake, connection table, seeding.

pub mod collector;
pub mod decode;
pub mod probes;
pub mod refresh;
pub mod run;
pub mod seed;
pub mod skel;
pub mod table;
