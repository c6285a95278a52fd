//! Kernel symbol table from `/proc/kallsyms`, used to turn the instruction
//! addresses of sampled kernel stacks into function names.
//!
//! Only text symbols are kept (functions: `t`/`T`, and weak `w`/`W`). Names are
//! interned into one `String` and the table is two parallel vectors sorted by
//! address, so ~65k functions cost about 1 MiB plus the name bytes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// Marks an entry that belongs to the core kernel rather than a module.
const NO_MODULE: u16 = u16::MAX;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "kernel symbol addresses are hidden (all zero): the NET_RX breakdown needs \
         CAP_SYSLOG and sysctl kernel.kptr_restrict at 0 or 1; run as root, or turn \
         sampling off with -f 0"
    )]
    AddressesHidden,
    #[error("no kernel function symbols found")]
    Empty,
    #[error("kallsyms line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
}

/// One resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The symbol as the kernel names it, compiler suffixes included
    /// (`__netif_receive_skb_core.constprop.0`).
    pub name: &'a str,
    /// `None` for the core kernel; `Some("bpf")` for JIT-ed BPF programs.
    pub module: Option<&'a str>,
    /// Distance of the address from the start of the symbol.
    pub offset: u64,
}

impl<'a> Symbol<'a> {
    /// The name without compiler clone suffixes; see [`base_name`].
    pub fn base_name(&self) -> &'a str {
        base_name(self.name)
    }
}

/// True when /proc/kallsyms shows this process real addresses rather than
/// zeros (it hides them without CAP_SYSLOG, unless kernel.kptr_restrict is
/// 0 and kernel.perf_event_paranoid at most 1). Reads only the first lines.
pub fn addresses_visible() -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(PROC_KALLSYMS) else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .take(64)
        .map_while(Result::ok)
        .any(|line| {
            line.split(' ')
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .is_some_and(|a| a != 0)
        })
}

/// `name` or `name [module]`: the frame label used in folded stacks.
impl fmt::Display for Symbol<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.module {
            Some(module) => write!(f, "{} [{module}]", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// Strips the suffixes GCC and Clang add to cloned or split functions
/// (`.cold`, `.isra.0`, `.constprop.0`, `.part.0`, `.llvm.<hash>`), so that
/// rules match `ip_rcv_finish_core.isra.0` as `ip_rcv_finish_core`. Kernel
/// function names never contain a dot otherwise.
pub fn base_name(name: &str) -> &str {
    match name.split_once('.') {
        Some((base, _)) if !base.is_empty() => base,
        _ => name,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name_start: u32,
    name_len: u16,
    module: u16,
}

#[derive(Debug, Default)]
pub struct Kallsyms {
    /// Sorted ascending; binary-searched on every resolve, so kept apart
    /// from the entries for cache density.
    addrs: Vec<u64>,
    entries: Vec<Entry>,
    names: String,
    modules: Vec<Box<str>>,
}

impl Kallsyms {
    /// Reads and parses `/proc/kallsyms`.
    pub fn load() -> Result<Self, KallsymsError> {
        Self::load_from(Path::new(PROC_KALLSYMS))
    }

    pub fn load_from(path: &Path) -> Result<Self, KallsymsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KallsymsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses kallsyms text: `address type name [module]` per line.
    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        let mut table = Kallsyms {
            names: String::with_capacity(text.len() / 3),
            ..Default::default()
        };
        let mut pairs: Vec<(u64, Entry)> = Vec::with_capacity(text.len() / 64);
        let mut module_ids: HashMap<&str, u16> = HashMap::new();
        let mut text_symbols = 0usize;

        for (index, line) in text.lines().enumerate() {
            let malformed = |reason| KallsymsError::Malformed {
                line: index + 1,
                reason,
            };
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(malformed("expected address, type and name"));
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            // Padding and CFI preambles in front of every function: never the
            // address of executing code, and they would double the table.
            if name.starts_with("__pfx_") || name.starts_with("__cfi_") {
                continue;
            }
            let addr = u64::from_str_radix(addr, 16).map_err(|_| malformed("bad address"))?;
            text_symbols += 1;
            // Hidden addresses read as zero; they cannot be resolved anyway.
            if addr == 0 {
                continue;
            }
            let module = match fields.next() {
                Some(field) => {
                    let module = field
                        .strip_prefix('[')
                        .and_then(|m| m.strip_suffix(']'))
                        .ok_or_else(|| malformed("module is not in [brackets]"))?;
                    match module_ids.get(module) {
                        Some(&id) => id,
                        None => {
                            let id = u16::try_from(table.modules.len())
                                .ok()
                                .filter(|&id| id != NO_MODULE)
                                .ok_or_else(|| malformed("too many modules"))?;
                            table.modules.push(module.into());
                            module_ids.insert(module, id);
                            id
                        }
                    }
                }
                None => NO_MODULE,
            };
            let name_start = u32::try_from(table.names.len())
                .map_err(|_| malformed("symbol names exceed 4 GiB"))?;
            let name_len = u16::try_from(name.len()).map_err(|_| malformed("name too long"))?;
            table.names.push_str(name);
            pairs.push((
                addr,
                Entry {
                    name_start,
                    name_len,
                    module,
                },
            ));
        }

        if pairs.is_empty() {
            return Err(if text_symbols > 0 {
                KallsymsError::AddressesHidden
            } else {
                KallsymsError::Empty
            });
        }
        // Stable sort: of several names at one address (aliases such as
        // `_text`/`_stext`) the first listed is kept.
        pairs.sort_by_key(|&(addr, _)| addr);
        pairs.dedup_by_key(|&mut (addr, _)| addr);
        table.addrs = pairs.iter().map(|&(addr, _)| addr).collect();
        table.entries = pairs.into_iter().map(|(_, entry)| entry).collect();
        table.names.shrink_to_fit();
        Ok(table)
    }

    /// The function containing `addr`: the symbol with the highest start
    /// address not above it. Addresses past the last symbol resolve to it, as
    /// kallsyms does not give symbol sizes.
    pub fn resolve(&self, addr: u64) -> Option<Symbol<'_>> {
        let index = self.addrs.partition_point(|&start| start <= addr);
        let index = index.checked_sub(1)?;
        let entry = self.entries[index];
        let start = entry.name_start as usize;
        Some(Symbol {
            name: &self.names[start..start + usize::from(entry.name_len)],
            module: (entry.module != NO_MODULE).then(|| &*self.modules[usize::from(entry.module)]),
            offset: addr - self.addrs[index],
        })
    }

    /// Number of distinct function addresses kept.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNTHETIC: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81e69000 t __pfx_net_rx_action
ffffffff81e69010 t net_rx_action
ffffffff81e68900 t process_backlog
ffffffff82100000 D some_data
ffffffff81e68a00 t __netif_receive_skb_core.constprop.0
ffffffff81e69800 W weak_function
ffffffffc0025b94 t bpf_prog_614b434cd8324ecc_xdp_pass\t[bpf]
ffffffffc0030000 T veth_poll\t[veth]
ffffffffc0030400 t veth_xdp_rcv\t[veth]
";

    #[test]
    fn resolves_to_the_containing_function() {
        let table = Kallsyms::parse(SYNTHETIC).unwrap();
        let sym = table.resolve(0xffffffff81e6913b).unwrap();
        assert_eq!(sym.name, "net_rx_action");
        assert_eq!(sym.offset, 0x12b);
        assert_eq!(sym.module, None);
        assert_eq!(
            table.resolve(0xffffffff81e68900).unwrap().name,
            "process_backlog"
        );
        assert_eq!(
            table.resolve(0xffffffff81e68a01).unwrap().name,
            "__netif_receive_skb_core.constprop.0"
        );
        assert_eq!(
            table.resolve(0xffffffff81e69805).unwrap().name,
            "weak_function"
        );
    }

    #[test]
    fn padding_data_and_low_addresses_are_not_symbols() {
        let table = Kallsyms::parse(SYNTHETIC).unwrap();
        // The __pfx_ padding belongs to the function before it.
        let in_padding = table.resolve(0xffffffff81e69004).unwrap();
        assert_eq!(in_padding.name, "__netif_receive_skb_core.constprop.0");
        assert!(table.resolve(0xffffffff80000000).is_none());
        assert!(table.resolve(0).is_none());
        // _stext and _text share an address: one entry, the first listed.
        assert_eq!(table.resolve(0xffffffff81000010).unwrap().name, "_stext");
        assert_eq!(table.len(), 8);
    }

    #[test]
    fn modules_are_kept_per_symbol() {
        let table = Kallsyms::parse(SYNTHETIC).unwrap();
        let prog = table.resolve(0xffffffffc0025ba0).unwrap();
        assert_eq!(prog.module, Some("bpf"));
        assert_eq!(prog.to_string(), "bpf_prog_614b434cd8324ecc_xdp_pass [bpf]");
        let rcv = table.resolve(0xffffffffc0030410).unwrap();
        assert_eq!(
            (rcv.name, rcv.module, rcv.offset),
            ("veth_xdp_rcv", Some("veth"), 0x10)
        );
    }

    #[test]
    fn hidden_addresses_are_a_clear_error() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t net_rx_action\n";
        let err = Kallsyms::parse(hidden).unwrap_err();
        assert!(matches!(err, KallsymsError::AddressesHidden));
        assert!(err.to_string().contains("kptr_restrict"));
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let err = Kallsyms::parse("ffffffff81000000 T _stext\nzz T broken\n").unwrap_err();
        assert!(
            matches!(err, KallsymsError::Malformed { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn base_name_strips_compiler_suffixes() {
        assert_eq!(
            base_name("__netif_receive_skb_core.constprop.0"),
            "__netif_receive_skb_core"
        );
        assert_eq!(base_name("ip_rcv_finish_core.isra.0"), "ip_rcv_finish_core");
        assert_eq!(base_name("__napi_poll.cold"), "__napi_poll");
        assert_eq!(base_name("do_softirq.part.0"), "do_softirq");
        assert_eq!(base_name("tcp_v4_rcv"), "tcp_v4_rcv");
        assert_eq!(base_name(".weird"), ".weird");
    }

    /// Not a timing assertion: prints the parse time of this machine's table
    /// (`cargo test --lib kallsyms -- --nocapture`).
    #[test]
    fn parses_the_running_kernel_table() {
        let Ok(text) = std::fs::read_to_string(PROC_KALLSYMS) else {
            return;
        };
        let started = std::time::Instant::now();
        match Kallsyms::parse(&text) {
            Ok(table) => {
                eprintln!(
                    "parsed {} lines into {} functions in {:?}",
                    text.lines().count(),
                    table.len(),
                    started.elapsed()
                );
                assert!(table.resolve(table.addrs[table.len() / 2]).is_some());
            }
            Err(KallsymsError::AddressesHidden) => eprintln!("kallsyms addresses hidden here"),
            Err(err) => panic!("{err}"),
        }
    }
}
