//! Decoding of the records the BPF side writes (conn_value, conn_event,
//! seed_record) into plain Rust values. Pure functions, tested without BPF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::skel::types;
use crate::model::{Metrics, Tuple};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

// Flag, event and counter values come from the BPF object's BTF (enums in
// src/bpf/conns.h), so C and Rust cannot disagree.
pub const CONN_ACTIVE: u16 = types::conn_flag::CONN_ACTIVE.0 as u16;
pub const CONN_PASSIVE: u16 = types::conn_flag::CONN_PASSIVE.0 as u16;
pub const CONN_SEEDED: u16 = types::conn_flag::CONN_SEEDED.0 as u16;
pub const CONN_OWNED: u16 = types::conn_flag::CONN_OWNED.0 as u16;
pub const CONN_ESTABLISHED: u16 = types::conn_flag::CONN_ESTABLISHED.0 as u16;

pub const EV_CONNECT: u32 = types::conn_event_type::EV_CONNECT.0;
pub const EV_ACCEPT: u32 = types::conn_event_type::EV_ACCEPT.0;
pub const EV_CLOSE: u32 = types::conn_event_type::EV_CLOSE.0;
pub const EV_CONNECT_FAILED: u32 = types::conn_event_type::EV_CONNECT_FAILED.0;

pub const LOSS_EVENTS: u32 = types::loss_counter::LOSS_EVENTS.0;
pub const LOSS_MAP_FULL: u32 = types::loss_counter::LOSS_MAP_FULL.0;
pub const LOSS_SEED_MAP_FULL: u32 = types::loss_counter::LOSS_SEED_MAP_FULL.0;
pub const LOSS_MAX: u32 = types::loss_counter::LOSS_MAX.0;

pub use crate::bpfio::read_record;

fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    }
    let v6 = Ipv6Addr::from(*raw);
    // Dual-stack sockets talking IPv4 carry ::ffff:a.b.c.d; show a.b.c.d.
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn tuple(v: &types::conn_value) -> Tuple {
    Tuple {
        local_addr: addr(v.family, &v.saddr),
        local_port: v.sport,
        remote_addr: addr(v.family, &v.daddr),
        remote_port: v.dport,
    }
}

pub fn metrics(v: &types::conn_value) -> Metrics {
    Metrics {
        bytes_sent: v.counters.bytes_sent,
        bytes_received: v.counters.bytes_received,
        packets_sent: v.counters.segs_out,
        packets_received: v.counters.segs_in,
        retransmits: v.counters.retrans,
        rtt_us: v.counters.srtt_us,
        rtt_var_us: v.counters.rttvar_us,
    }
}

pub fn comm(raw: &[i8; 16]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(family: u16, saddr: &[u8], daddr: &[u8]) -> types::conn_value {
        let mut v = types::conn_value {
            family,
            sport: 40000,
            dport: 80,
            ..Default::default()
        };
        v.saddr[..saddr.len()].copy_from_slice(saddr);
        v.daddr[..daddr.len()].copy_from_slice(daddr);
        v
    }

    #[test]
    fn ipv4_tuple() {
        let t = tuple(&value(AF_INET, &[192, 0, 2, 1], &[198, 51, 100, 7]));
        assert_eq!(t.local_addr, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(t.remote_addr, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!((t.local_port, t.remote_port), (40000, 80));
        assert_eq!(t.family(), 4);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_shown_as_ipv4() {
        let mapped = "::ffff:192.0.2.9".parse::<Ipv6Addr>().unwrap().octets();
        let plain = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let t = tuple(&value(AF_INET6, &mapped, &plain));
        assert_eq!(t.local_addr, "192.0.2.9".parse::<IpAddr>().unwrap());
        assert_eq!(t.remote_addr, "2001:db8::2".parse::<IpAddr>().unwrap());
        let t6 = tuple(&value(AF_INET6, &plain, &plain));
        assert_eq!(t6.family(), 6);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut raw = [0i8; 16];
        for (i, b) in b"curl".iter().enumerate() {
            raw[i] = *b as i8;
        }
        assert_eq!(comm(&raw), "curl");
        assert_eq!(comm(&[0i8; 16]), "");
    }

    #[test]
    fn read_record_checks_length() {
        let v = value(AF_INET, &[1, 2, 3, 4], &[5, 6, 7, 8]);
        let size = std::mem::size_of::<types::conn_value>();
        // SAFETY: conn_value is repr(C) plain data; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts((&v as *const types::conn_value).cast::<u8>(), size)
        };
        let back: types::conn_value = read_record(bytes).unwrap();
        assert_eq!(back.saddr, v.saddr);
        assert_eq!(back.sport, 40000);
        assert!(read_record::<types::conn_value>(&bytes[..size - 1]).is_none());
    }
}
