//! The tracepoints of `netlens conns`: what its collector attaches and
//! `netlens check` reports.

use crate::bpfio::Tracepoint;
use crate::sys::kernel::Hook;

/// The tracepoints `conns` attaches to, in attach order.
pub const TRACEPOINTS: [Tracepoint; 3] = [
    Tracepoint {
        category: "sock",
        name: "inet_sock_set_state",
        program: "on_set_state",
        hook: Hook::TpBtf,
        required: true,
        gives: "connection open, state changes and close",
        without: "connections cannot be tracked at all",
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept",
        program: "on_accept_exit_tp",
        hook: Hook::Tracefs,
        required: false,
        gives: "owner of inbound connections accepted with accept()",
        without: "inbound connections accepted with accept() get their owner \
                  from /proc at the next refresh, and none if they close before",
    },
    Tracepoint {
        category: "syscalls",
        name: "sys_exit_accept4",
        program: "on_accept4_exit",
        hook: Hook::Tracefs,
        required: false,
        gives: "owner of inbound connections accepted with accept4()",
        without: "inbound connections accepted with accept4() get their owner \
                  from /proc at the next refresh, and none if they close before",
    },
];
