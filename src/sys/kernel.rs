//! The running kernel: its version, whether it exposes BTF, and where its
//! tracing filesystem lives.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::ParseError;

/// Where the kernel publishes its own BTF type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where tracefs is mounted on current systems.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Where tracefs appears on older systems (inside debugfs).
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// A kernel release as `major.minor.patch`; ordering compares the three
/// numbers in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// True if this kernel is `major.minor` or newer (any patch level).
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses a release string as printed by `uname -r`, such as
/// `6.18.44-fc-v669`, `5.15.0-91-generic` or `6.9`. Only the leading
/// `major.minor[.patch]` matters; a missing patch level reads as 0.
pub fn parse_release(release: &str) -> Result<KernelVersion, ParseError> {
    let release = release.trim();
    let numeric_end = release
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(release.len());
    let mut parts = release[..numeric_end].split('.');
    let mut number = |required: bool| -> Result<u32, ParseError> {
        match parts.next() {
            Some(p) if !p.is_empty() => p
                .parse()
                .map_err(|_| ParseError::malformed("kernel release", release)),
            Some(_) => Err(ParseError::malformed("kernel release", release)),
            None if required => Err(ParseError::malformed("kernel release", release)),
            None => Ok(0),
        }
    };
    let major = number(true)?;
    let minor = number(true)?;
    let patch = number(false)?;
    Ok(KernelVersion::new(major, minor, patch))
}

/// The version of the running kernel, from `uname(2)`.
pub fn running() -> Result<KernelVersion> {
    // SAFETY: utsname is a plain struct of char arrays; all zeroes is a valid
    // value for it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname that outlives the call.
    let rc = unsafe { libc::uname(&mut uts) };
    if rc != 0 {
        bail!("uname() failed: {}", io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates every utsname field, and the array
    // lives as long as `uts`, which outlives this borrow.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    let release = release.to_string_lossy();
    Ok(parse_release(&release)?)
}

/// Names another path to look for the kernel's BTF at, so that the suite
/// can show what netlens does on a kernel without BTF (no kernel of the
/// matrix lacks it).
pub const BTF_PATH_ENV: &str = "NETLENS_TEST_VMLINUX_BTF";

/// True if the kernel exposes its BTF at [`VMLINUX_BTF`] (needed for CO-RE
/// relocations and `tp_btf` programs).
pub fn has_btf() -> bool {
    match std::env::var_os(BTF_PATH_ENV) {
        Some(path) => Path::new(&path).exists(),
        None => Path::new(VMLINUX_BTF).exists(),
    }
}

/// The first of `candidates` that looks like a mounted tracefs (has an
/// `events/` directory).
fn find_tracefs<'a>(candidates: impl IntoIterator<Item = &'a Path>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .find(|root| root.join("events").is_dir())
        .map(Path::to_path_buf)
}

/// The root of the tracing filesystem: [`TRACEFS`] if tracefs is mounted
/// there, else [`DEBUGFS_TRACING`] if debugfs exposes it, else this mounts
/// tracefs at [`TRACEFS`] (needs CAP_SYS_ADMIN) and returns that. The flag
/// says whether this call mounted it.
pub fn tracefs_root() -> Result<(PathBuf, bool)> {
    let candidates = [Path::new(TRACEFS), Path::new(DEBUGFS_TRACING)];
    if let Some(root) = find_tracefs(candidates) {
        return Ok((root, false));
    }
    let how = format!("mount it by hand with `mount -t tracefs tracefs {TRACEFS}`");
    // SAFETY: all three strings are NUL-terminated literals, and tracefs
    // takes no mount data, so a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); {how}");
    }
    match find_tracefs([Path::new(TRACEFS)]) {
        Some(root) => Ok((root, true)),
        None => {
            unmount_tracefs();
            bail!("mounted tracefs at {TRACEFS} but it has no events/ directory; {how}")
        }
    }
}

/// Undoes the mount [`tracefs_root`] made (lazily, if something still has
/// it open).
fn unmount_tracefs() {
    // SAFETY: a NUL-terminated literal path; umount2 only reads it.
    unsafe { libc::umount2(c"/sys/kernel/tracing".as_ptr(), libc::MNT_DETACH) };
}

/// True if the tracepoint `category:name` exists under the tracefs `root`
/// and this process can read its id (which attaching needs),
/// e.g. `tracepoint_exists(root, "sock", "inet_sock_set_state")`.
pub fn tracepoint_exists(root: &Path, category: &str, name: &str) -> bool {
    // The id file, not the directory: attaching reads it, and tracefs may
    // let a process see the directory but not read the id (without
    // CAP_DAC_READ_SEARCH on some kernels); for that process the
    // tracepoint cannot be used, and a fallback must be chosen instead.
    std::fs::File::open(root.join("events").join(category).join(name).join("id")).is_ok()
}

/// How a BPF program reaches its tracepoint, which decides how to tell
/// whether the kernel has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `tp_btf/NAME`: libbpf attaches through the kernel BTF type
    /// `btf_trace_NAME`, so the tracepoint exists for BPF when that type does.
    TpBtf,
    /// `tracepoint/CATEGORY/NAME`: attached through its tracefs id.
    Tracefs,
}

/// Set (to anything) to make the probe report that the kernel has no
/// per-call system call tracepoints (`syscalls:*`), as a kernel built
/// without CONFIG_FTRACE_SYSCALLS: the suite runs `cost`'s raw_syscalls
/// fallback that way (every kernel of the matrix has them).
pub const NO_SYSCALL_TRACEPOINTS_ENV: &str = "NETLENS_TEST_NO_SYSCALL_TRACEPOINTS";

/// What the running kernel offers netlens's programs, looked up once: its
/// BTF (readable without privileges) and tracefs (usually root only).
/// `netlens check` and both collectors ask the same probe, so what `check`
/// announces is what `conns` and `cost` then load.
pub struct Probe {
    btf: Option<libbpf_rs::Btf<'static>>,
    tracefs: Option<PathBuf>,
    /// Tracefs was not mounted, and this probe mounted it.
    mounted_tracefs: bool,
    /// [`NO_SYSCALL_TRACEPOINTS_ENV`] is set.
    no_syscall_tracepoints: bool,
    /// The kernel refuses this process perf events, through which
    /// `tracepoint/` programs attach: kernel.perf_event_paranoid above 2
    /// (Debian's and Ubuntu's default) without CAP_SYS_ADMIN.
    perf_refused: bool,
}

impl Probe {
    /// Reads the kernel's BTF and finds tracefs (mounting it if it can).
    pub fn new() -> Probe {
        let btf = if has_btf() {
            libbpf_rs::Btf::from_vmlinux().ok()
        } else {
            None
        };
        let (tracefs, mounted_tracefs) = match tracefs_root() {
            // Without privileges the directory exists but cannot be listed.
            Ok((root, mounted)) => (
                std::fs::read_dir(root.join("events"))
                    .is_ok()
                    .then_some(root),
                mounted,
            ),
            Err(_) => (None, false),
        };
        let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let sys_admin = super::caps::effective()
            .is_ok_and(|eff| super::caps::has(eff, super::caps::CAP_SYS_ADMIN));
        Probe {
            btf,
            tracefs,
            mounted_tracefs,
            no_syscall_tracepoints: std::env::var_os(NO_SYSCALL_TRACEPOINTS_ENV).is_some(),
            perf_refused: paranoid.is_some_and(|p| p > 2) && !sys_admin,
        }
    }

    /// Unmounts tracefs if this probe mounted it: for `netlens check`, which
    /// must leave the system as it found it. (The commands keep the mount:
    /// their tracepoint programs are attached through it.)
    pub fn unmount_what_it_mounted(&self) {
        if self.mounted_tracefs {
            unmount_tracefs();
        }
    }

    /// Whether the kernel refuses this process perf events, so no
    /// `tracepoint/` program can attach whatever tracefs lists.
    pub fn perf_refused(&self) -> bool {
        self.perf_refused
    }

    /// Whether the kernel has tracepoint `category:name` for a program
    /// attached as `hook`; None when this process cannot tell (no BTF, or
    /// tracefs not readable).
    pub fn has_tracepoint(&self, hook: Hook, category: &str, name: &str) -> Option<bool> {
        match hook {
            Hook::TpBtf => self.btf.as_ref().map(|btf| {
                btf.type_by_name::<libbpf_rs::btf::types::Typedef<'_>>(&format!("btf_trace_{name}"))
                    .is_some()
            }),
            Hook::Tracefs if category == "syscalls" && self.no_syscall_tracepoints => Some(false),
            // There, but not for this process: attaching would fail.
            Hook::Tracefs if self.perf_refused => Some(false),
            Hook::Tracefs => self
                .tracefs
                .as_deref()
                .map(|root| tracepoint_exists(root, category, name)),
        }
    }
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn parses_distribution_releases() {
        let cases = [
            ("6.18.44-fc-v669", KernelVersion::new(6, 18, 44)),
            ("5.15.0-91-generic", KernelVersion::new(5, 15, 0)),
            ("4.18.0-513.5.1.el8_9.x86_64", KernelVersion::new(4, 18, 0)),
            ("6.8.0-rc3+", KernelVersion::new(6, 8, 0)),
            ("6.1.0-18-amd64\n", KernelVersion::new(6, 1, 0)),
            ("6.9", KernelVersion::new(6, 9, 0)),
            ("5.10.209+", KernelVersion::new(5, 10, 209)),
            ("6.6.21_1", KernelVersion::new(6, 6, 21)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_release(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_garbage_releases() {
        for text in ["", "linux", "6", "6.", ".6.1", "6..1", "-6.1"] {
            assert!(parse_release(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn versions_order_numerically() {
        let v = KernelVersion::new(5, 10, 0);
        assert!(v.at_least(5, 8));
        assert!(v.at_least(5, 10));
        assert!(!v.at_least(5, 11));
        assert!(!v.at_least(6, 0));
        assert!(KernelVersion::new(5, 9, 0) > KernelVersion::new(5, 8, 200));
        assert!(KernelVersion::new(6, 0, 0) > KernelVersion::new(5, 19, 17));
        assert_eq!(KernelVersion::new(6, 18, 44).to_string(), "6.18.44");
    }

    #[test]
    fn running_kernel_is_readable() {
        let v = running().expect("uname");
        assert!(v.major >= 3, "implausible kernel {v}");
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netlens-kernel-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn tracefs_candidates_need_an_events_dir() {
        let dir = scratch_dir("tracefs");
        let empty = dir.join("empty");
        let real = dir.join("real");
        fs::create_dir_all(&empty).expect("mkdir");
        fs::create_dir_all(real.join("events/sock/inet_sock_set_state")).expect("mkdir");
        fs::write(real.join("events/sock/inet_sock_set_state/id"), "1234\n").expect("write id");

        assert_eq!(
            find_tracefs([empty.as_path(), real.as_path()]),
            Some(real.clone())
        );
        assert_eq!(find_tracefs([empty.as_path()]), None);

        assert!(tracepoint_exists(&real, "sock", "inet_sock_set_state"));
        assert!(!tracepoint_exists(&real, "sock", "sock_send_length"));
        assert!(!tracepoint_exists(&real, "tcp", "tcp_probe"));
        let _ = fs::remove_dir_all(&dir);
    }
}
