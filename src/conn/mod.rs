//! Connection tracing: BPF load/attach, event intake, connection table, seeding.

pub mod skel;
pub mod decode;
pub mod table;
