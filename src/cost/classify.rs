//! Classification of NET_RX kernel stack samples into network functions, and
//! the split of measured NET_RX time between them.
//!
//! A stack is a list of function names, leaf (the sampled instruction) first.
//! Only the frames above the RX loop (`net_rx_action`, or the NAPI thread
//! loop) count: frames below it are whatever the softirq interrupted, such as
//! a `sendmsg` that raised it. The innermost frame that matches a rule
//! decides, so time in `tcp_v4_rcv` under `ip_local_deliver` is TCP receive,
//! and a wake-up under `tcp_v4_rcv` is socket enqueue/wake-up.
//!
//! Some functions serve several stages (`nf_hook_slow` runs PREROUTING,
//! INPUT, FORWARD and OUTPUT chains; `ip_output` sends both forwarded packets
//! and a local socket's ACKs). Rules for them are *hooks*: they take the
//! category of the nearest enclosing rule, which may name a more specific one
//! for that kind of hook (`nf_hook_slow` inside `ip_rcv` is IPv4 PREROUTING).
//! The rules were checked against stacks sampled on Linux 6.18, where
//! `ip_rcv`, `ip_forward` and `udp_rcv` end in tail calls and so are often
//! missing from stacks; see the fixtures under `tests/fixtures/netrx/`.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::kallsyms::base_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    DriverPoll,
    Gro,
    XdpGeneric,
    TcIngress,
    NfIngress,
    Conntrack,
    Bridging,
    CoreReceive,
    IpReceiveV4,
    IpReceiveV6,
    NfPreroutingV4,
    NfPreroutingV6,
    ForwardV4,
    ForwardV6,
    LocalDeliverV4,
    LocalDeliverV6,
    TcpReceiveV4,
    TcpReceiveV6,
    UdpReceiveV4,
    UdpReceiveV6,
    SocketEnqueueWakeup,
    Tracing,
    Other,
    OutsideRxLoop,
    Unsampled,
}

impl Category {
    pub const COUNT: usize = 25;

    /// Every category, in report order.
    pub const ALL: [Category; Self::COUNT] = [
        Self::DriverPoll,
        Self::Gro,
        Self::XdpGeneric,
        Self::TcIngress,
        Self::NfIngress,
        Self::Conntrack,
        Self::Bridging,
        Self::CoreReceive,
        Self::IpReceiveV4,
        Self::IpReceiveV6,
        Self::NfPreroutingV4,
        Self::NfPreroutingV6,
        Self::ForwardV4,
        Self::ForwardV6,
        Self::LocalDeliverV4,
        Self::LocalDeliverV6,
        Self::TcpReceiveV4,
        Self::TcpReceiveV6,
        Self::UdpReceiveV4,
        Self::UdpReceiveV6,
        Self::SocketEnqueueWakeup,
        Self::Tracing,
        Self::Other,
        Self::OutsideRxLoop,
        Self::Unsampled,
    ];

    /// Stable snake_case name: the `category` label in JSON and Prometheus.
    pub fn name(self) -> &'static str {
        match self {
            Self::DriverPoll => "driver_poll",
            Self::Gro => "gro",
            Self::XdpGeneric => "xdp_generic",
            Self::TcIngress => "tc_ingress",
            Self::NfIngress => "nf_ingress",
            Self::Conntrack => "conntrack",
            Self::Bridging => "bridging",
            Self::CoreReceive => "core_receive",
            Self::IpReceiveV4 => "ip_receive_v4",
            Self::IpReceiveV6 => "ip_receive_v6",
            Self::NfPreroutingV4 => "nf_prerouting_v4",
            Self::NfPreroutingV6 => "nf_prerouting_v6",
            Self::ForwardV4 => "forward_v4",
            Self::ForwardV6 => "forward_v6",
            Self::LocalDeliverV4 => "local_deliver_v4",
            Self::LocalDeliverV6 => "local_deliver_v6",
            Self::TcpReceiveV4 => "tcp_receive_v4",
            Self::TcpReceiveV6 => "tcp_receive_v6",
            Self::UdpReceiveV4 => "udp_receive_v4",
            Self::UdpReceiveV6 => "udp_receive_v6",
            Self::SocketEnqueueWakeup => "socket_enqueue_wakeup",
            Self::Tracing => "tracing",
            Self::Other => "other",
            Self::OutsideRxLoop => "outside_rx_loop",
            Self::Unsampled => "unsampled",
        }
    }

    /// Short human label for the terminal table.
    pub fn label(self) -> &'static str {
        match self {
            Self::DriverPoll => "driver poll",
            Self::Gro => "GRO",
            Self::XdpGeneric => "XDP generic",
            Self::TcIngress => "TC ingress",
            Self::NfIngress => "netfilter ingress",
            Self::Conntrack => "conntrack",
            Self::Bridging => "bridging",
            Self::CoreReceive => "core receive",
            Self::IpReceiveV4 => "IPv4 receive",
            Self::IpReceiveV6 => "IPv6 receive",
            Self::NfPreroutingV4 => "netfilter prerouting v4",
            Self::NfPreroutingV6 => "netfilter prerouting v6",
            Self::ForwardV4 => "forwarding v4",
            Self::ForwardV6 => "forwarding v6",
            Self::LocalDeliverV4 => "local delivery v4",
            Self::LocalDeliverV6 => "local delivery v6",
            Self::TcpReceiveV4 => "TCP receive v4",
            Self::TcpReceiveV6 => "TCP receive v6",
            Self::UdpReceiveV4 => "UDP receive v4",
            Self::UdpReceiveV6 => "UDP receive v6",
            Self::SocketEnqueueWakeup => "socket enqueue/wakeup",
            Self::Tracing => "tracing programs",
            Self::Other => "other",
            Self::OutsideRxLoop => "outside RX loop",
            Self::Unsampled => "unsampled",
        }
    }

    /// One line on what the category matches (README and `--help` text).
    pub fn description(self) -> &'static str {
        match self {
            Self::DriverPoll => {
                "the driver's NAPI poll function called by __napi_poll (veth_poll, \
                 virtnet_poll, process_backlog for loopback and RPS), with native XDP \
                 and the skb allocation done there"
            }
            Self::Gro => {
                "generic receive offload: gro_receive_skb/napi_gro_receive, \
                 dev_gro_receive, *_gro_receive, *_gro_complete, napi_complete_done"
            }
            Self::XdpGeneric => {
                "generic (skb) XDP: do_xdp_generic, netif_receive_generic_xdp and the \
                 program it runs"
            }
            Self::TcIngress => {
                "tc ingress: tc_run/tcf_classify/tcx and BPF programs called from \
                 __netif_receive_skb_core, sch_handle_ingress"
            }
            Self::NfIngress => {
                "netfilter netdev ingress chains: nf_hook_slow called from \
                 __netif_receive_skb_core, nf_hook_ingress"
            }
            Self::Conntrack => {
                "connection tracking wherever it runs: nf_conntrack_*, nf_ct_*, \
                 ipv4/ipv6_conntrack_*, nf_confirm"
            }
            Self::Bridging => {
                "the Linux bridge: br_* and __br_*, with bridge netfilter and the \
                 transmit to the egress port"
            }
            Self::CoreReceive => {
                "protocol demultiplexing: __netif_receive_skb*, \
                 netif_receive_skb_list_internal, packet taps (packet_rcv)"
            }
            Self::IpReceiveV4 => {
                "ip_rcv, ip_rcv_core, ip_rcv_finish*, ip_list_rcv, ip_sublist_rcv: \
                 header checks, early demux and the route lookup"
            }
            Self::IpReceiveV6 => {
                "ipv6_rcv, ip6_rcv_core, ip6_rcv_finish*, ipv6_list_rcv, \
                 ip6_sublist_rcv: header checks, early demux and the route lookup"
            }
            Self::NfPreroutingV4 => {
                "netfilter PREROUTING (nf_hook_slow called from IPv4 receive), \
                 except conntrack"
            }
            Self::NfPreroutingV6 => {
                "netfilter PREROUTING (nf_hook_slow called from IPv6 receive), \
                 except conntrack"
            }
            Self::ForwardV4 => {
                "ip_forward*, and ip_output/ip_finish_output* called from IPv4 receive \
                 (ip_forward tail-calls them): FORWARD/POSTROUTING chains and transmit"
            }
            Self::ForwardV6 => {
                "ip6_forward*, and ip6_output/ip6_finish_output* called from IPv6 \
                 receive: FORWARD/POSTROUTING chains and transmit"
            }
            Self::LocalDeliverV4 => {
                "ip_local_deliver*, ip_protocol_deliver_rcu: INPUT chains, raw \
                 sockets, ICMP and protocols other than TCP and UDP"
            }
            Self::LocalDeliverV6 => {
                "ip6_input*, ip6_protocol_deliver_rcu, ip6_mc_input: INPUT chains, raw \
                 sockets, ICMPv6 and protocols other than TCP and UDP"
            }
            Self::TcpReceiveV4 => {
                "tcp_v4_rcv, tcp_v4_do_rcv and all they call (ACK processing, replies \
                 sent from there), except socket enqueue/wakeup"
            }
            Self::TcpReceiveV6 => {
                "tcp_v6_rcv, tcp_v6_do_rcv and all they call (ACK processing, replies \
                 sent from there), except socket enqueue/wakeup"
            }
            Self::UdpReceiveV4 => {
                "udp_rcv, __udp4_lib_rcv and their callees, except enqueue/wakeup"
            }
            Self::UdpReceiveV6 => {
                "udpv6_rcv, __udp6_lib_rcv and their callees, except enqueue/wakeup"
            }
            Self::SocketEnqueueWakeup => {
                "queueing to a socket and waking its reader: sock_def_readable, \
                 tcp_data_ready, __udp_enqueue_schedule_skb, sock_queue_rcv_skb*, \
                 __wake_up*, try_to_wake_up, ep_poll_callback"
            }
            Self::Tracing => {
                "BPF and perf tracing programs run inside NET_RX (bpf_trace_run*, \
                 perf_trace_*): the cost of observers, netlens included"
            }
            Self::Other => {
                "inside the RX loop but none of the above: NAPI bookkeeping, deferred \
                 skb freeing, RPS"
            }
            Self::OutsideRxLoop => {
                "NET_RX samples whose stack shows no net_rx_action or NAPI thread: \
                 softirq entry/exit and its tracepoints, or an unwinding failure"
            }
            Self::Unsampled => "NET_RX time of an interval without a single stack sample",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Kinds of multi-purpose functions whose category depends on their caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookKind {
    Netfilter,
    Tc,
    /// A JIT-ed BPF program (`bpf_prog_<tag>_<name>`).
    Bpf,
    OutputV4,
    OutputV6,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// The frame belongs to this category. Hooks directly inside it take the
    /// category the site names for their kind, or this one.
    Category(Category, &'static [(HookKind, Category)]),
    Hook(HookKind),
}

#[derive(Debug, Clone, Copy)]
enum Pattern {
    Exact(&'static str),
    Prefix(&'static str),
    Suffix(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    pattern: Pattern,
    action: Action,
}

const fn exact(name: &'static str, category: Category) -> Rule {
    Rule {
        pattern: Pattern::Exact(name),
        action: Action::Category(category, &[]),
    }
}

const fn prefix(start: &'static str, category: Category) -> Rule {
    Rule {
        pattern: Pattern::Prefix(start),
        action: Action::Category(category, &[]),
    }
}

const fn suffix(end: &'static str, category: Category) -> Rule {
    Rule {
        pattern: Pattern::Suffix(end),
        action: Action::Category(category, &[]),
    }
}

const fn hook(name: &'static str, kind: HookKind) -> Rule {
    Rule {
        pattern: Pattern::Exact(name),
        action: Action::Hook(kind),
    }
}

impl Rule {
    /// Names the categories of hooks called from this function.
    const fn sites(self, sites: &'static [(HookKind, Category)]) -> Rule {
        match self.action {
            Action::Category(category, _) => Rule {
                pattern: self.pattern,
                action: Action::Category(category, sites),
            },
            Action::Hook(_) => self,
        }
    }
}

use Category::*;
use HookKind::{Bpf, Netfilter, OutputV4, OutputV6, Tc};

/// Where tc, netdev netfilter and tcx BPF run on ingress.
const INGRESS_SITES: &[(HookKind, Category)] =
    &[(Netfilter, NfIngress), (Tc, TcIngress), (Bpf, TcIngress)];
/// `ip_rcv` and `ipv6_rcv` are tail-called from here, so a forwarded packet's
/// `ip_output` may sit right above it.
const DEMUX_SITES: &[(HookKind, Category)] = &[(OutputV4, ForwardV4), (OutputV6, ForwardV6)];
const IPV4_RECEIVE_SITES: &[(HookKind, Category)] =
    &[(Netfilter, NfPreroutingV4), (OutputV4, ForwardV4)];
const IPV6_RECEIVE_SITES: &[(HookKind, Category)] =
    &[(Netfilter, NfPreroutingV6), (OutputV6, ForwardV6)];

/// Functions that run the receive loop; frames below them are not NET_RX work.
const RX_LOOP_ROOTS: &[&str] = &[
    "net_rx_action",
    "napi_threaded_poll_loop",
    "napi_threaded_poll",
];
/// Functions that call a driver's poll callback through `napi->poll`.
const NAPI_POLL_CALLERS: &[&str] = &["__napi_poll", "napi_poll"];

const RULES: &[Rule] = &[
    // NAPI core: scheduling and bookkeeping of the RX loop itself.
    exact("net_rx_action", Other),
    exact("napi_threaded_poll_loop", Other),
    exact("napi_threaded_poll", Other),
    exact("__napi_poll", Other),
    exact("napi_poll", Other),
    // GRO. napi_complete_done flushes held packets up the stack, whose own
    // frames then win as the innermost.
    exact("gro_receive_skb", Gro),
    exact("napi_gro_receive", Gro),
    exact("dev_gro_receive", Gro),
    exact("napi_gro_frags", Gro),
    exact("napi_gro_flush", Gro),
    exact("gro_flush", Gro),
    exact("__gro_flush", Gro),
    exact("gro_flush_normal", Gro),
    exact("gro_complete", Gro),
    exact("napi_gro_complete", Gro),
    exact("gro_normal_list", Gro),
    exact("gro_normal_one", Gro),
    exact("gro_pull_from_frag0", Gro),
    exact("gro_cells_receive", Gro),
    exact("skb_gro_receive", Gro),
    exact("skb_gro_receive_list", Gro),
    exact("napi_skb_finish", Gro),
    exact("napi_frags_finish", Gro),
    exact("napi_complete_done", Gro),
    suffix("_gro_receive", Gro),
    suffix("_gro_complete", Gro),
    // Generic XDP.
    exact("do_xdp_generic", XdpGeneric),
    exact("netif_receive_generic_xdp", XdpGeneric),
    exact("bpf_prog_run_generic_xdp", XdpGeneric),
    exact("generic_xdp_tx", XdpGeneric),
    exact("xdp_do_generic_redirect", XdpGeneric),
    // tc: ingress when called from __netif_receive_skb_core (where
    // sch_handle_ingress and tcx_run are inlined), egress otherwise.
    exact("sch_handle_ingress", TcIngress),
    hook("tc_run", Tc),
    hook("tcx_run", Tc),
    hook("tcf_classify", Tc),
    hook("__tcf_classify", Tc),
    // Netfilter.
    exact("nf_hook_ingress", NfIngress),
    exact("nf_ingress", NfIngress),
    hook("nf_hook_slow", Netfilter),
    hook("nf_hook_slow_list", Netfilter),
    // Conntrack, in any hook.
    exact("nf_confirm", Conntrack),
    exact("resolve_normal_ct", Conntrack),
    exact("init_conntrack", Conntrack),
    exact("hash_conntrack_raw", Conntrack),
    prefix("nf_conntrack_", Conntrack),
    prefix("__nf_conntrack_", Conntrack),
    prefix("nf_ct_", Conntrack),
    prefix("__nf_ct_", Conntrack),
    prefix("ipv4_conntrack_", Conntrack),
    prefix("ipv6_conntrack_", Conntrack),
    // Bridge.
    prefix("br_", Bridging),
    prefix("__br_", Bridging),
    // Core receive and protocol demultiplexing.
    exact("__netif_receive_skb_core", CoreReceive).sites(INGRESS_SITES),
    exact("__netif_receive_skb_one_core", CoreReceive).sites(DEMUX_SITES),
    exact("__netif_receive_skb_list_core", CoreReceive).sites(DEMUX_SITES),
    exact("__netif_receive_skb_list_ptype", CoreReceive).sites(DEMUX_SITES),
    exact("__netif_receive_skb", CoreReceive),
    exact("__netif_receive_skb_list", CoreReceive),
    exact("netif_receive_skb", CoreReceive),
    exact("netif_receive_skb_core", CoreReceive),
    exact("netif_receive_skb_internal", CoreReceive),
    exact("netif_receive_skb_list", CoreReceive),
    exact("netif_receive_skb_list_internal", CoreReceive),
    exact("packet_rcv", CoreReceive),
    exact("tpacket_rcv", CoreReceive),
    // IPv4 and IPv6 receive up to the routing decision.
    exact("ip_rcv", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_rcv_core", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_rcv_finish", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_rcv_finish_core", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_list_rcv", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_sublist_rcv", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_list_rcv_finish", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ip_sublist_rcv_finish", IpReceiveV4).sites(IPV4_RECEIVE_SITES),
    exact("ipv6_rcv", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ip6_rcv_core", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ip6_rcv_finish", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ip6_rcv_finish_core", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ipv6_list_rcv", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ip6_sublist_rcv", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    exact("ip6_list_rcv_finish", IpReceiveV6).sites(IPV6_RECEIVE_SITES),
    // Forwarding. The output functions are hooks because local sockets send
    // through them too (an ACK from tcp_v4_rcv is TCP receive work).
    exact("ip_forward", ForwardV4),
    exact("ip_forward_finish", ForwardV4),
    exact("ip_forward_options", ForwardV4),
    exact("ip6_forward", ForwardV6),
    exact("ip6_forward_finish", ForwardV6),
    hook("ip_output", OutputV4),
    hook("ip_finish_output", OutputV4),
    hook("__ip_finish_output", OutputV4),
    hook("ip_finish_output2", OutputV4),
    hook("ip6_output", OutputV6),
    hook("ip6_finish_output", OutputV6),
    hook("__ip6_finish_output", OutputV6),
    hook("ip6_finish_output2", OutputV6),
    // Local delivery.
    exact("ip_local_deliver", LocalDeliverV4),
    exact("ip_local_deliver_finish", LocalDeliverV4),
    exact("ip_protocol_deliver_rcu", LocalDeliverV4),
    exact("ip6_input", LocalDeliverV6),
    exact("ip6_input_finish", LocalDeliverV6),
    exact("ip6_protocol_deliver_rcu", LocalDeliverV6),
    exact("ip6_mc_input", LocalDeliverV6),
    // Transport receive.
    exact("tcp_v4_rcv", TcpReceiveV4),
    exact("tcp_v4_do_rcv", TcpReceiveV4),
    exact("tcp_v6_rcv", TcpReceiveV6),
    exact("tcp_v6_do_rcv", TcpReceiveV6),
    exact("udp_rcv", UdpReceiveV4),
    exact("__udp4_lib_rcv", UdpReceiveV4),
    exact("udp_unicast_rcv_skb", UdpReceiveV4),
    exact("__udp4_lib_mcast_deliver", UdpReceiveV4),
    exact("udpv6_rcv", UdpReceiveV6),
    exact("__udp6_lib_rcv", UdpReceiveV6),
    exact("udp6_unicast_rcv_skb", UdpReceiveV6),
    exact("__udp6_lib_mcast_deliver", UdpReceiveV6),
    // Socket enqueue and reader wake-up.
    exact("sock_def_readable", SocketEnqueueWakeup),
    exact("tcp_data_ready", SocketEnqueueWakeup),
    exact("tcp_queue_rcv", SocketEnqueueWakeup),
    exact("__udp_enqueue_schedule_skb", SocketEnqueueWakeup),
    exact("sock_queue_rcv_skb", SocketEnqueueWakeup),
    exact("sock_queue_rcv_skb_reason", SocketEnqueueWakeup),
    exact("__sock_queue_rcv_skb", SocketEnqueueWakeup),
    exact("try_to_wake_up", SocketEnqueueWakeup),
    exact("ep_poll_callback", SocketEnqueueWakeup),
    exact("pollwake", SocketEnqueueWakeup),
    exact("autoremove_wake_function", SocketEnqueueWakeup),
    exact("default_wake_function", SocketEnqueueWakeup),
    exact("woken_wake_function", SocketEnqueueWakeup),
    prefix("__wake_up", SocketEnqueueWakeup),
    // Observers: tracepoints firing inside NET_RX run BPF or perf programs.
    prefix("bpf_trace_run", Tracing),
    prefix("__bpf_trace_", Tracing),
    prefix("perf_trace_", Tracing),
    prefix("__traceiter_", Tracing),
    exact("trace_call_bpf", Tracing),
    exact("perf_tp_event", Tracing),
    // BPF programs (and the XDP dispatcher) count where they are called from.
    Rule {
        pattern: Pattern::Prefix("bpf_prog_"),
        action: Action::Hook(Bpf),
    },
    Rule {
        pattern: Pattern::Prefix("bpf_dispatcher_"),
        action: Action::Hook(Bpf),
    },
];

/// The rule table, indexed for lookup by function name.
pub struct Classifier {
    exact: HashMap<&'static str, Action>,
    /// Prefix and suffix rules, in table order.
    partial: Vec<Rule>,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    pub fn new() -> Self {
        let mut exact = HashMap::new();
        let mut partial = Vec::new();
        for rule in RULES {
            match rule.pattern {
                Pattern::Exact(name) => {
                    exact.entry(name).or_insert(rule.action);
                }
                Pattern::Prefix(_) | Pattern::Suffix(_) => partial.push(*rule),
            }
        }
        Classifier { exact, partial }
    }

    /// Category of one stack, given as function names leaf first. Compiler
    /// suffixes (`.isra.0`, `.constprop.0`, `.cold`) are ignored.
    pub fn classify<S: AsRef<str>>(&self, frames: &[S]) -> Category {
        let names: Vec<&str> = frames.iter().map(|f| base_name(f.as_ref())).collect();
        let Some(root) = names.iter().position(|name| RX_LOOP_ROOTS.contains(name)) else {
            return OutsideRxLoop;
        };
        let stack = &names[..=root];
        (0..stack.len())
            .find_map(|index| self.resolve(stack, index))
            .unwrap_or(Other)
    }

    fn action_at(&self, stack: &[&str], index: usize) -> Option<Action> {
        let name = stack[index];
        if let Some(&action) = self.exact.get(name) {
            return Some(action);
        }
        let partial = self.partial.iter().find(|rule| match rule.pattern {
            Pattern::Prefix(start) => name.starts_with(start),
            Pattern::Suffix(end) => name.ends_with(end),
            Pattern::Exact(_) => false,
        });
        if let Some(rule) = partial {
            return Some(rule.action);
        }
        // The driver's poll callback has no fixed name: it is whatever the
        // NAPI core called.
        let caller = stack.get(index + 1)?;
        NAPI_POLL_CALLERS
            .contains(caller)
            .then_some(Action::Category(DriverPoll, &[]))
    }

    /// Category of the frame at `index`, if a rule matches it.
    fn resolve(&self, stack: &[&str], index: usize) -> Option<Category> {
        match self.action_at(stack, index)? {
            Action::Category(category, _) => Some(category),
            Action::Hook(kind) => Some(self.resolve_hook(stack, index, kind)),
        }
    }

    /// A hook takes its category from the nearest enclosing matched frame: a
    /// hook inside another hook counts as that hook (a BPF program run by a
    /// netfilter chain is netfilter); a category frame may name a more
    /// specific category for this kind of hook.
    fn resolve_hook(&self, stack: &[&str], index: usize, kind: HookKind) -> Category {
        for caller in index + 1..stack.len() {
            match self.action_at(stack, caller) {
                None => continue,
                Some(Action::Hook(_)) => return self.resolve(stack, caller).unwrap_or(Other),
                Some(Action::Category(category, sites)) => {
                    return sites
                        .iter()
                        .find(|(site_kind, _)| *site_kind == kind)
                        .map_or(category, |&(_, specific)| specific);
                }
            }
        }
        Other
    }
}

static CLASSIFIER: LazyLock<Classifier> = LazyLock::new(Classifier::new);

/// [`Classifier::classify`] with the built-in rule table.
pub fn classify<S: AsRef<str>>(frames: &[S]) -> Category {
    CLASSIFIER.classify(frames)
}

/// Sample counts per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CategoryCounts([u64; Category::COUNT]);

impl CategoryCounts {
    pub fn add(&mut self, category: Category, samples: u64) {
        let count = &mut self.0[category.index()];
        *count = count.saturating_add(samples);
    }

    pub fn get(&self, category: Category) -> u64 {
        self.0[category.index()]
    }

    /// All samples (saturating; see [`category_times`] for an exact sum).
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0, |sum, &n| sum.saturating_add(n))
    }

    /// Every category with its count, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (Category, u64)> + '_ {
        Category::ALL
            .into_iter()
            .map(|category| (category, self.get(category)))
    }
}

/// Classifies each stack (function names leaf first) and adds up its samples.
pub fn categorize<I, F, S>(stacks: I) -> CategoryCounts
where
    I: IntoIterator<Item = (F, u64)>,
    F: AsRef<[S]>,
    S: AsRef<str>,
{
    let mut counts = CategoryCounts::default();
    for (frames, samples) in stacks {
        counts.add(CLASSIFIER.classify(frames.as_ref()), samples);
    }
    counts
}

/// Splits `net_rx_ns` of measured NET_RX time between the categories in
/// proportion to their samples. The parts add up exactly to `net_rx_ns`: each
/// gets the floor of its share, and the nanoseconds left over go one each to
/// the largest remainders (ties to the category first in report order). With
/// no samples at all, everything is [`Category::Unsampled`]: the time was
/// measured but nothing says where it went. Every category is returned, in
/// report order.
pub fn category_times(net_rx_ns: u64, counts: &CategoryCounts) -> Vec<(Category, u64)> {
    let total: u128 = counts.iter().map(|(_, samples)| u128::from(samples)).sum();
    if total == 0 {
        return Category::ALL
            .into_iter()
            .map(|category| (category, if category == Unsampled { net_rx_ns } else { 0 }))
            .collect();
    }
    let mut parts: Vec<(Category, u64, u128)> = counts
        .iter()
        .map(|(category, samples)| {
            let exact = u128::from(net_rx_ns) * u128::from(samples);
            // The floor is at most net_rx_ns, so it fits in u64.
            (category, (exact / total) as u64, exact % total)
        })
        .collect();
    let floors: u64 = parts.iter().map(|&(_, floor, _)| floor).sum();
    let leftover = (net_rx_ns - floors) as usize;
    let mut by_remainder: Vec<usize> = (0..parts.len()).collect();
    by_remainder.sort_by(|&a, &b| parts[b].2.cmp(&parts[a].2).then(a.cmp(&b)));
    for &index in by_remainder.iter().take(leftover) {
        parts[index].1 += 1;
    }
    parts
        .into_iter()
        .map(|(category, time, _)| (category, time))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames are written root first, as one reads a call chain; the kernel
    /// (and `classify`) takes them leaf first.
    fn class(root_first: &str) -> Category {
        let mut frames: Vec<&str> = root_first.split(';').collect();
        frames.reverse();
        classify(&frames)
    }

    const RX: &str = "handle_softirqs;net_rx_action;__napi_poll";

    #[test]
    fn category_table_is_consistent() {
        for (index, category) in Category::ALL.into_iter().enumerate() {
            assert_eq!(category.index(), index, "{category:?} out of order in ALL");
            assert!(!category.label().is_empty() && !category.description().is_empty());
            let name = category.name();
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        let mut names: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Category::COUNT);
    }

    #[test]
    fn readme_documents_every_category() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        for category in Category::ALL {
            assert!(
                readme.contains(&format!("`{}`", category.name())),
                "{category:?} missing in README"
            );
        }
    }

    #[test]
    fn innermost_matching_frame_decides() {
        let deliver =
            format!("{RX};process_backlog;__netif_receive_skb_one_core;ip_local_deliver_finish");
        assert_eq!(class(&deliver), LocalDeliverV4);
        assert_eq!(
            class(&format!(
                "{deliver};ip_protocol_deliver_rcu;tcp_v4_rcv;tcp_ack"
            )),
            TcpReceiveV4
        );
        assert_eq!(
            class(&format!("{deliver};ip_protocol_deliver_rcu;tcp_v4_rcv;tcp_data_queue;sock_def_readable;_raw_spin_unlock")),
            SocketEnqueueWakeup
        );
        assert_eq!(
            class(&format!(
                "{deliver};ip_protocol_deliver_rcu;__udp4_lib_rcv;udp_queue_rcv_one_skb"
            )),
            UdpReceiveV4
        );
    }

    #[test]
    fn driver_poll_is_whatever_the_napi_core_called() {
        assert_eq!(
            class(&format!("{RX};mlx5e_napi_poll;mlx5e_poll_rx_cq;memcpy")),
            DriverPoll
        );
        assert_eq!(class(&format!("{RX};process_backlog")), DriverPoll);
        // GRO frames above the driver win.
        assert_eq!(
            class(&format!(
                "{RX};virtnet_poll;napi_gro_receive;dev_gro_receive;inet_gro_receive"
            )),
            Gro
        );
        assert_eq!(
            class(&format!(
                "{RX};virtnet_poll;napi_gro_receive;dev_gro_receive;tcp4_gro_receive"
            )),
            Gro
        );
        assert_eq!(class(RX), Other);
        assert_eq!(
            class("handle_softirqs;net_rx_action;skb_defer_free_flush;kfree"),
            Other
        );
    }

    #[test]
    fn frames_below_the_rx_loop_are_ignored() {
        // A sendmsg whose softirq ran on exit from local_bh_disable: its TCP
        // frames are not NET_RX work.
        let sender = "tcp_sendmsg;__tcp_transmit_skb;ip_output;__dev_queue_xmit;__local_bh_enable_ip;do_softirq;handle_softirqs";
        assert_eq!(
            class(&format!("{sender};net_rx_action;skb_defer_free_flush")),
            Other
        );
        assert_eq!(
            class(&format!("{sender};perf_trace_softirq;perf_tp_event")),
            OutsideRxLoop
        );
        assert_eq!(class("bpf_prog_614b434cd8324ecc_xdp_pass"), OutsideRxLoop);
        assert_eq!(classify::<&str>(&[]), OutsideRxLoop);
        // Threaded NAPI has no net_rx_action.
        assert_eq!(
            class("kthread;napi_threaded_poll;napi_threaded_poll_loop;__napi_poll;veth_poll"),
            DriverPoll
        );
    }

    #[test]
    fn netfilter_hooks_take_the_stage_that_calls_them() {
        let list = format!("{RX};veth_poll;gro_receive_skb;netif_receive_skb_list_internal;__netif_receive_skb_list_core");
        let v4 = format!("{list};ip_list_rcv;ip_sublist_rcv");
        let v6 = format!("{list};ipv6_list_rcv;ip6_sublist_rcv");
        assert_eq!(
            class(&format!(
                "{v4};nf_hook_slow_list;nf_hook_slow;nft_do_chain_inet"
            )),
            NfPreroutingV4
        );
        assert_eq!(
            class(&format!("{v6};nf_hook_slow_list;nf_hook_slow;nft_do_chain")),
            NfPreroutingV6
        );
        assert_eq!(
            class(&format!(
                "{RX};process_backlog;__netif_receive_skb_one_core;ip_rcv;nf_hook_slow"
            )),
            NfPreroutingV4
        );
        // Conntrack inside prerouting is conntrack.
        assert_eq!(
            class(&format!(
                "{v4};nf_hook_slow_list;nf_hook_slow;nf_conntrack_in;nf_conntrack_tcp_packet"
            )),
            Conntrack
        );
        assert_eq!(
            class(&format!(
                "{v6};nf_hook_slow_list;nf_hook_slow;ipv6_conntrack_in"
            )),
            Conntrack
        );
        assert_eq!(
            class(&format!("{v4};ip_forward;nf_hook_slow;nft_do_chain")),
            ForwardV4
        );
        assert_eq!(
            class(&format!(
                "{list};__netif_receive_skb_core.constprop.0;nf_hook_slow;nft_do_chain_netdev"
            )),
            NfIngress
        );
        assert_eq!(
            class(&format!(
                "{RX};process_backlog;__netif_receive_skb_one_core;ip_local_deliver;nf_hook_slow"
            )),
            LocalDeliverV4
        );
        // A BPF program run by a netfilter hook counts as that hook.
        assert_eq!(
            class(&format!(
                "{v4};nf_hook_slow_list;nf_hook_slow;nf_hook_run_bpf;bpf_prog_1_nf"
            )),
            NfPreroutingV4
        );
    }

    #[test]
    fn output_functions_are_forwarding_only_when_called_from_ip_receive() {
        let v4 = format!("{RX};veth_poll;__netif_receive_skb_list_core;ip_list_rcv;ip_sublist_rcv");
        // ip_forward tail-calls into ip_output, so its frame is gone.
        assert_eq!(
            class(&format!(
                "{v4};ip_output;ip_finish_output2;__dev_queue_xmit;veth_xmit"
            )),
            ForwardV4
        );
        assert_eq!(
            class(&format!("{v4};ip_output;nf_hook_slow;nft_do_chain")),
            ForwardV4
        );
        assert_eq!(
            class(&format!("{v4};ip_output;nf_hook_slow;nf_confirm")),
            Conntrack
        );
        assert_eq!(
            class(&format!("{RX};process_backlog;__netif_receive_skb_one_core;ip6_output;ip6_finish_output;veth_xmit")),
            ForwardV6
        );
        // An ACK sent while receiving is TCP receive work.
        let tcp = format!("{RX};process_backlog;__netif_receive_skb_one_core;ip_local_deliver_finish;ip_protocol_deliver_rcu;tcp_v4_rcv");
        assert_eq!(
            class(&format!(
                "{tcp};__tcp_transmit_skb;__ip_queue_xmit;ip_output;ip_finish_output2"
            )),
            TcpReceiveV4
        );
        assert_eq!(
            class(&format!(
                "{tcp};__tcp_transmit_skb;__ip_local_out;nf_hook_slow;nft_do_chain"
            )),
            TcpReceiveV4
        );
    }

    #[test]
    fn tc_and_bpf_on_ingress() {
        let core = format!(
            "{RX};veth_poll;__netif_receive_skb_list_core;__netif_receive_skb_core.constprop.0"
        );
        assert_eq!(
            class(&format!(
                "{core};tc_run;tcf_classify;__tcf_classify.constprop.0;u32_classify"
            )),
            TcIngress
        );
        assert_eq!(
            class(&format!("{core};bpf_prog_0123456789abcdef_tcx_ingress")),
            TcIngress
        );
        assert_eq!(
            class(&format!("{core};sch_handle_ingress;tcf_classify")),
            TcIngress
        );
        assert_eq!(
            class(&format!(
                "{core};do_xdp_generic;bpf_prog_run_generic_xdp;bpf_prog_1_xdp"
            )),
            XdpGeneric
        );
        // Native XDP runs inside the driver.
        assert_eq!(class(&format!("{RX};veth_poll;veth_xdp_rcv;veth_xdp_rcv_skb;bpf_dispatcher_xdp_func;bpf_prog_1_xdp")), DriverPoll);
        // A packet socket's filter is not tc.
        assert_eq!(
            class(&format!("{core};packet_rcv;bpf_prog_2_filter")),
            CoreReceive
        );
        // tc egress on a forwarded packet is forwarding.
        assert_eq!(
            class(&format!("{RX};veth_poll;__netif_receive_skb_list_core;ip_list_rcv;ip_sublist_rcv;ip_output;ip_finish_output2;__dev_queue_xmit;tc_run;tcf_classify")),
            ForwardV4
        );
    }

    #[test]
    fn bridging_and_tracing() {
        let core = format!("{RX};process_backlog;__netif_receive_skb_one_core;__netif_receive_skb_core.constprop.0");
        assert_eq!(
            class(&format!(
                "{core};br_handle_frame;br_nf_pre_routing;nf_hook_slow;ip_sabotage_in"
            )),
            Bridging
        );
        assert_eq!(class(&format!("{core};br_handle_frame;br_handle_frame_finish;__br_forward;nf_hook_slow;br_nf_forward_ip.part.0")), Bridging);
        // Frames passed up from the bridge to the host stack are the host's.
        assert_eq!(
            class(&format!("{core};br_handle_frame;br_handle_frame_finish;br_pass_frame_up;netif_receive_skb;__netif_receive_skb_one_core;ip_local_deliver_finish;ip_protocol_deliver_rcu;tcp_v4_rcv")),
            TcpReceiveV4
        );
        assert_eq!(
            class(&format!("{core};ip6_input;ip6_protocol_deliver_rcu;tcp_v6_rcv;tcp_rcv_established;bpf_trace_run2;bpf_prog_1_probe;htab_map_update_elem")),
            Tracing
        );
    }

    #[test]
    fn compiler_suffixes_do_not_hide_rules() {
        assert_eq!(class(&format!("{RX};process_backlog;__netif_receive_skb_one_core;ipv6_rcv;ip6_rcv_finish_core.isra.0")), IpReceiveV6);
        assert_eq!(
            class(&format!(
                "{RX};process_backlog;__netif_receive_skb_one_core;ip_rcv;ip_rcv_finish_core.cold"
            )),
            IpReceiveV4
        );
    }

    fn check_fixture(name: &str, text: &str) {
        let mut checked = 0;
        for (number, line) in text.lines().enumerate() {
            let (expected, rest) = line.split_once(' ').expect("category first");
            let (stack, samples) = rest.rsplit_once(' ').expect("samples last");
            samples.parse::<u64>().expect("sample count");
            let mut frames: Vec<&str> = stack.split(';').collect();
            frames.reverse();
            let got = classify(&frames);
            assert_eq!(got.name(), expected, "{name}:{}: {stack}", number + 1);
            checked += 1;
        }
        assert!(checked > 0, "{name} is empty");
    }

    macro_rules! fixture {
        ($file:literal) => {
            (
                $file,
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/netrx/",
                    $file
                )),
            )
        };
    }

    const FIXTURES: [(&str, &str); 6] = [
        fixture!("loopback_tcp4.txt"),
        fixture!("forward_v4_nft_tc_xdp.txt"),
        fixture!("forward_v6_nft_tc_xdp.txt"),
        fixture!("forward_udp_v4_v6.txt"),
        fixture!("bridge_v4.txt"),
        fixture!("context_cases.txt"),
    ];

    #[test]
    fn real_stacks_of_linux_6_18_classify_as_checked_by_hand() {
        for (name, text) in FIXTURES {
            check_fixture(name, text);
        }
    }

    #[test]
    fn categorize_adds_samples_per_category() {
        let stacks = [
            (vec!["tcp_v4_rcv", "ip_local_deliver", "net_rx_action"], 5),
            (vec!["sock_def_readable", "tcp_v4_rcv", "net_rx_action"], 3),
            (vec!["tcp_ack", "tcp_v4_do_rcv", "net_rx_action"], 2),
            (vec!["perf_tp_event", "handle_softirqs"], 1),
        ];
        let counts = categorize(stacks);
        assert_eq!(counts.get(TcpReceiveV4), 7);
        assert_eq!(counts.get(SocketEnqueueWakeup), 3);
        assert_eq!(counts.get(OutsideRxLoop), 1);
        assert_eq!(counts.total(), 11);
    }

    fn times(net_rx_ns: u64, samples: &[(Category, u64)]) -> Vec<(Category, u64)> {
        let mut counts = CategoryCounts::default();
        for &(category, n) in samples {
            counts.add(category, n);
        }
        category_times(net_rx_ns, &counts)
            .into_iter()
            .filter(|&(_, ns)| ns > 0)
            .collect()
    }

    #[test]
    fn times_are_proportional_and_add_up_exactly() {
        assert_eq!(
            times(1_000, &[(Gro, 1), (TcpReceiveV4, 3)]),
            [(Gro, 250), (TcpReceiveV4, 750)]
        );
        // 100 ns in thirds: 33.3 each, the spare nanosecond to the first tie.
        assert_eq!(
            times(100, &[(Gro, 1), (Conntrack, 1), (Other, 1)]),
            [(Gro, 34), (Conntrack, 33), (Other, 33)]
        );
        // The largest remainder gets the spare: 2/3 of 10 = 6.67, 1/3 = 3.33.
        assert_eq!(
            times(10, &[(Gro, 1), (Bridging, 2)]),
            [(Gro, 3), (Bridging, 7)]
        );
        // Huge values do not overflow.
        assert_eq!(
            times(u64::MAX, &[(Gro, u64::MAX), (Other, 1)])
                .iter()
                .map(|&(_, ns)| u128::from(ns))
                .sum::<u128>(),
            u128::from(u64::MAX)
        );
    }

    #[test]
    fn times_add_up_for_many_splits() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let net_rx_ns = next() % 10_000_000_000;
            let mut counts = CategoryCounts::default();
            for category in Category::ALL {
                if next() % 3 == 0 {
                    counts.add(category, next() % 5_000);
                }
            }
            let parts = category_times(net_rx_ns, &counts);
            assert_eq!(parts.len(), Category::COUNT);
            assert_eq!(parts.iter().map(|&(_, ns)| ns).sum::<u64>(), net_rx_ns);
            let total = counts.total();
            for (category, ns) in parts {
                if total == 0 {
                    continue;
                }
                let exact = net_rx_ns as f64 * counts.get(category) as f64 / total as f64;
                assert!(
                    (ns as f64 - exact).abs() < 1.0 + 1e-6,
                    "{category:?}: {ns} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn without_samples_all_time_is_unsampled() {
        assert_eq!(times(12_345, &[]), [(Unsampled, 12_345)]);
        assert_eq!(times(0, &[]), []);
        assert_eq!(times(0, &[(Gro, 4)]), []);
    }
}
