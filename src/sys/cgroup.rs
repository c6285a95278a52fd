//! Cgroups: which hierarchy names containers on this host, the path of a
//! cgroup the kernel gave by id, and the container and Kubernetes pod a
//! path names.
//!
//! The BPF side records the owner's cgroup as a kernfs id (the inode number
//! of the cgroup's directory). User space turns it into a path with
//! `open_by_handle_at(2)` on the hierarchy's mount (kernfs file handles are
//! the id itself), which needs CAP_DAC_READ_SEARCH and works for a cgroup
//! as long as it exists: each cgroup is looked up once, at its first
//! connection, and remembered. For a cgroup already removed, the names the
//! BPF side recorded (its directory's and two parents') still give the
//! container and pod.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{Cgroup, Container};

/// Which cgroup hierarchy the BPF side reads (its `enum cgroup_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: hosts whose `/sys/fs/cgroup` is the unified hierarchy.
    Unified,
    /// The v1 memory controller's hierarchy: cgroup v1 and hybrid hosts,
    /// where container runtimes place containers in the v1 controllers
    /// (the unified hierarchy there holds systemd's tree at most).
    V1Memory,
}

impl Hierarchy {
    pub fn describe(self) -> &'static str {
        match self {
            Hierarchy::Unified => "cgroup v2",
            Hierarchy::V1Memory => "cgroup v1 memory controller",
        }
    }
}

/// The hierarchy netlens reads and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub hierarchy: Hierarchy,
    /// Where netlens opens it: through `/proc/1/root` when the layout is
    /// the host's (see [`layout`]).
    pub mount_point: PathBuf,
    /// The mount point in the mount namespace the layout was read from,
    /// as the kernel writes paths below it.
    pub mounted_at: PathBuf,
    /// The mount's root within the hierarchy (`/` unless a subtree is
    /// mounted): paths are shown from the hierarchy's root.
    pub mount_root: String,
}

/// The layout of a `/proc/self/mountinfo` text: the v1 memory controller's
/// mount if there is one, else a cgroup2 mount; mounts of the whole
/// hierarchy (root `/`) first. `None` without either.
pub fn parse_layout(mountinfo: &str) -> Option<Layout> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount_point), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let entry = (unescape(root), PathBuf::from(unescape(mount_point)));
        match *fstype {
            "cgroup" if options.split(',').any(|o| o == "memory") => v1.push(entry),
            "cgroup2" => v2.push(entry),
            _ => {}
        }
    }
    let (hierarchy, mounts) = if v1.is_empty() {
        (Hierarchy::Unified, v2)
    } else {
        (Hierarchy::V1Memory, v1)
    };
    let (mount_root, mount_point) = mounts
        .iter()
        .find(|(root, _)| root == "/")
        .or(mounts.first())
        .cloned()?;
    Some(Layout {
        hierarchy,
        mounted_at: mount_point.clone(),
        mount_point,
        mount_root,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of this process's cgroup in `hierarchy`, from a
/// `/proc/<pid>/cgroup` text (`N:controllers:path` lines; v2's is `0::path`).
pub fn parse_proc_cgroup(text: &str, hierarchy: Hierarchy) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (number, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = match hierarchy {
            Hierarchy::Unified => number == "0" && controllers.is_empty(),
            Hierarchy::V1Memory => controllers.split(',').any(|c| c == "memory"),
        };
        ours.then(|| path.to_string())
    })
}

/// This host's layout: the mounts of PID 1 (the host's init, also from a
/// container with the host's PID namespace), reached through its root, so
/// that a container's own cgroup mount (its subtree only, under a cgroup
/// namespace) is never taken for the host's; this process's mounts when
/// PID 1's cannot be read.
pub fn layout() -> Option<Layout> {
    if let Some(mut l) = std::fs::read_to_string("/proc/1/mountinfo")
        .ok()
        .and_then(|text| parse_layout(&text))
    {
        let below_root = l.mounted_at.strip_prefix("/").unwrap_or(&l.mounted_at);
        let through_init = Path::new("/proc/1/root").join(below_root);
        if through_init.is_dir() {
            l.mount_point = through_init;
            return Some(l);
        }
    }
    parse_layout(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// `check`'s line on cgroups: the hierarchy, and whether this process's
/// own cgroup id resolves to the path `/proc/self/cgroup` gives.
pub fn check_line() -> String {
    let Some(layout) = layout() else {
        return "[warn] cgroups: no cgroup hierarchy mounted: connections carry no cgroup or \
                container\n"
            .into();
    };
    let place = format!(
        "the {} hierarchy at {}",
        layout.hierarchy.describe(),
        layout.mount_point.display()
    );
    match resolve_own(layout) {
        Ok(path) => format!(
            "[ ok ] cgroups: owners' cgroups and containers from {place} (this process: {path})\n"
        ),
        Err(e) => format!(
            "[warn] cgroups: {place}: cgroup paths cannot be read ({e}): connections carry their \
             cgroup id and container but no path; reading paths needs CAP_DAC_READ_SEARCH\n"
        ),
    }
}

/// This process's cgroup in `layout`: its path (from /proc) and its id
/// (the inode number of its directory under the mount).
fn own_cgroup(layout: &Layout) -> Result<(String, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = parse_proc_cgroup(&text, layout.hierarchy).ok_or("no cgroup of this process")?;
    let below = own
        .strip_prefix(layout.mount_root.trim_end_matches('/'))
        .ok_or("this process's cgroup is outside the mount")?;
    let dir = layout.mount_point.join(below.trim_start_matches('/'));
    let id = std::fs::metadata(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .ino();
    Ok((own, id))
}

/// This process's cgroup path, through its id, as connections get theirs.
fn resolve_own(layout: Layout) -> Result<String, String> {
    let (own, id) = own_cgroup(&layout)?;
    let mut r = Resolver::new(Some(layout));
    let found = r.resolve(id).and_then(|c| c.path.clone());
    match (found, r.error) {
        (Some(path), _) if path == own => Ok(path),
        (Some(path), _) => Err(format!("id {id} named {path}, not {own}")),
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err(format!("id {id} not found")),
    }
}

/// Cgroup name prefixes (before the ID, after the parent's path) of the
/// runtimes that put their name in it, with the runtime as Kubernetes
/// names it. Their `-conmon-` siblings (podman's and CRI-O's monitor
/// processes) do not match: what follows the prefix must be an ID.
const RUNTIME_PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The container and the Kubernetes pod UID a cgroup path names, the
/// innermost container first (a cgroup inside a container's belongs to
/// it). `bare_runtime` is the runtime of an ID without a runtime prefix
/// (Kubernetes with the cgroupfs driver: `/kubepods/burstable/pod<UID>/<ID>`),
/// whose path does not say which runtime made it.
pub fn parse_container(
    path: &str,
    bare_runtime: &'static str,
) -> (Option<Container>, Option<String>) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut container = None;
    for (i, part) in parts.iter().enumerate().rev() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        let prefixed = RUNTIME_PREFIXES.iter().find_map(|&(prefix, runtime)| {
            let id = name.strip_prefix(prefix)?;
            is_container_id(id).then_some((runtime, id))
        });
        let found = prefixed.or_else(|| {
            let runtime = match i.checked_sub(1).map(|p| parts[p]) {
                Some("docker") => "docker",
                _ => bare_runtime,
            };
            is_container_id(name).then_some((runtime, name))
        });
        if let Some((runtime, id)) = found {
            container = Some(Container {
                runtime,
                id: id.to_string(),
            });
            break;
        }
    }
    // Not only below a `kubepods` component: the names the kernel keeps for
    // a removed cgroup reach up three levels only, not always that far.
    (container, parts.iter().find_map(|p| pod_uid(p)))
}

/// `pod<UID>` (cgroupfs driver) or `kubepods-<class>-pod<UID with _>.slice`
/// (systemd driver).
fn pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let tail = match name.strip_prefix("pod") {
        Some(t) => t,
        None => name.rsplit_once("-pod")?.1,
    };
    let uid = tail.replace('_', "-");
    let valid = uid.len() == 36
        && uid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    valid.then_some(uid)
}

/// Where a runtime's socket lives, and the runtime's name: the runtime of
/// IDs without a prefix is the one whose socket exists. Looked up through
/// `/proc/1/root`, the host's root also from a container with the host's
/// PID namespace.
const RUNTIME_SOCKETS: [(&str, &str); 4] = [
    ("/proc/1/root/run/containerd/containerd.sock", "containerd"),
    ("/proc/1/root/run/crio/crio.sock", "cri-o"),
    ("/proc/1/root/var/run/cri-dockerd.sock", "docker"),
    ("/proc/1/root/run/docker.sock", "docker"),
];

fn bare_id_runtime() -> &'static str {
    RUNTIME_SOCKETS
        .iter()
        .find(|(socket, _)| Path::new(socket).exists())
        .map_or("containerd", |&(_, runtime)| runtime)
}

/// The names the kernel recorded for a cgroup id (leaf first), for a
/// cgroup that is gone by the time its path is looked up.
pub type NamesLookup = Box<dyn Fn(u64) -> Option<Vec<String>> + Send>;

/// Turns the kernel's cgroup ids into [`Cgroup`]s, each looked up once.
pub struct Resolver {
    layout: Option<Layout>,
    /// The hierarchy's mount, for `open_by_handle_at`; `None` until first
    /// needed or if it cannot be opened.
    mount: Option<OwnedFd>,
    bare_runtime: &'static str,
    known: HashMap<u64, Arc<Cgroup>>,
    names: Option<NamesLookup>,
    /// The last `open_by_handle_at` error other than a vanished cgroup
    /// (a missing privilege), for `check` and the status line.
    pub error: Option<std::io::Error>,
}

/// Cgroups remembered at most; beyond, the table starts afresh (ids of
/// removed cgroups would otherwise pile up on a long-running node).
const MAX_KNOWN: usize = 65_536;

/// `FILEID_KERNFS`: a kernfs file handle is its node's 64-bit id.
const FILEID_KERNFS: i32 = 0xfe;

impl Default for Resolver {
    /// Without a hierarchy: no connection gets a cgroup.
    fn default() -> Resolver {
        Resolver::new(None)
    }
}

impl Resolver {
    pub fn new(layout: Option<Layout>) -> Resolver {
        // Without a hierarchy no path is ever parsed: no need to probe.
        let bare_runtime = if layout.is_some() {
            bare_id_runtime()
        } else {
            "containerd"
        };
        Resolver {
            layout,
            mount: None,
            bare_runtime,
            known: HashMap::new(),
            names: None,
            error: None,
        }
    }

    /// Names a cgroup that is gone through `names` (the kernel's record).
    pub fn with_names(mut self, names: NamesLookup) -> Resolver {
        self.names = Some(names);
        self
    }

    /// The cgroup of kernel id `id`; `None` for 0 (unknown) or without a
    /// hierarchy. A cgroup that is gone, or that cannot be opened, has no
    /// path (and so no container).
    pub fn resolve(&mut self, id: u64) -> Option<Arc<Cgroup>> {
        if id == 0 {
            return None;
        }
        if let Some(c) = self.known.get(&id) {
            return Some(Arc::clone(c));
        }
        // Without a hierarchy, no cgroup.
        self.layout.as_ref()?;
        let path = self.path_of(id);
        let (container, pod_uid) = match &path {
            Some(p) => parse_container(p, self.bare_runtime),
            None => self
                .names
                .as_ref()
                .and_then(|lookup| lookup(id))
                .map(|names| parse_container(&names_path(&names), self.bare_runtime))
                .unwrap_or_default(),
        };
        let cgroup = Arc::new(Cgroup {
            id,
            path,
            container,
            pod_uid,
        });
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert(id, Arc::clone(&cgroup));
        Some(cgroup)
    }

    /// The path of cgroup `id` from the hierarchy's root, through a kernfs
    /// file handle on the mount.
    fn path_of(&mut self, id: u64) -> Option<String> {
        let layout = self.layout.as_ref()?;
        if self.mount.is_none() {
            let dir = CString::new(layout.mount_point.as_os_str().as_bytes()).ok()?;
            // SAFETY: dir is a NUL-terminated path; the fd is owned below.
            let fd = unsafe {
                libc::open(
                    dir.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                self.error = Some(std::io::Error::last_os_error());
                return None;
            }
            // SAFETY: fd was just opened and is not owned elsewhere.
            self.mount = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let mount = self.mount.as_ref()?;
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: u64,
        }
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: handle is a struct file_handle with its 8 bytes of
        // f_handle following the header, as the system call reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                &mut handle as *mut KernfsHandle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // ESTALE: the cgroup is gone; anything else is worth reporting.
            if e.raw_os_error() != Some(libc::ESTALE) {
                self.error = Some(e);
            }
            return None;
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        // The kernel writes the path from this process's root where it can
        // reach it, else from the root of the mount's own namespace.
        let below = target
            .strip_prefix(&layout.mount_point)
            .or_else(|_| target.strip_prefix(&layout.mounted_at))
            .ok()?;
        Some(hierarchy_path(&layout.mount_root, below))
    }
}

/// Directory names, leaf first, as the tail of a path (`a/b/leaf`).
fn names_path(names: &[String]) -> String {
    let parts: Vec<&str> = names
        .iter()
        .rev()
        .map(String::as_str)
        .filter(|n| !n.is_empty() && *n != "/")
        .collect();
    parts.join("/")
}

/// `below` (a path under the mount) as a path from the hierarchy's root.
fn hierarchy_path(mount_root: &str, below: &Path) -> String {
    let mut path = mount_root.trim_end_matches('/').to_string();
    for part in below.components() {
        path.push('/');
        path.push_str(&part.as_os_str().to_string_lossy());
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 29 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
36 29 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_and_v1_hosts_use_the_memory_controller() {
        let l = parse_layout(HYBRID).expect("layout");
        assert_eq!(l.hierarchy, Hierarchy::V1Memory);
        assert_eq!(l.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(l.mount_root, "/");
    }

    #[test]
    fn unified_hosts_use_cgroup2_and_the_whole_mount_first() {
        let text = "\
40 30 0:27 /kubepods.slice /host/cg rw - cgroup2 cgroup2 rw
30 24 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        let l = parse_layout(text).expect("layout");
        assert_eq!(l.hierarchy, Hierarchy::Unified);
        assert_eq!(l.mount_point, Path::new("/sys/fs/cgroup"));
        // Only a subtree mounted: paths start at its root.
        let l = parse_layout(text.lines().next().unwrap()).expect("layout");
        assert_eq!(l.mount_root, "/kubepods.slice");
        assert_eq!(
            hierarchy_path(&l.mount_root, Path::new("a/b")),
            "/kubepods.slice/a/b"
        );
        assert_eq!(hierarchy_path("/", Path::new("")), "/");
        assert_eq!(hierarchy_path("/", Path::new("x")), "/x");
        assert_eq!(
            parse_layout("24 30 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        let text = "30 24 0:27 / /mnt/cg\\040root rw - cgroup2 cgroup2 rw\n";
        let l = parse_layout(text).expect("layout");
        assert_eq!(l.mount_point, Path::new("/mnt/cg root"));
    }

    const ID: &str = "3f2a6b1c9d8e7f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn container(path: &str) -> (Option<String>, Option<String>) {
        let (c, pod) = parse_container(path, "containerd");
        (c.map(|c| c.kube_id()), pod)
    }

    #[test]
    fn container_ids_of_every_runtime_and_driver() {
        let cases = [
            // Docker, cgroupfs and systemd drivers.
            (format!("/docker/{ID}"), format!("docker://{ID}"), None),
            (
                format!("/system.slice/docker-{ID}.scope"),
                format!("docker://{ID}"),
                None,
            ),
            // Kubernetes with containerd, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
                    UID.replace('-', "_")
                ),
                format!("containerd://{ID}"),
                Some(UID.to_string()),
            ),
            // Kubernetes, cgroupfs driver: the runtime is the host's.
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                format!("containerd://{ID}"),
                Some(UID.to_string()),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                format!("containerd://{ID}"),
                Some(UID.to_string()),
            ),
            // CRI-O.
            (
                format!("/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope", UID.replace('-', "_")),
                format!("cri-o://{ID}"),
                Some(UID.to_string()),
            ),
            // podman: cgroupfs (this project's hosts), systemd, rootless.
            (format!("/libpod_parent/libpod-{ID}"), format!("podman://{ID}"), None),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                format!("podman://{ID}"),
                None,
            ),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
                format!("podman://{ID}"),
                None,
            ),
        ];
        for (path, id, pod) in cases {
            assert_eq!(container(&path), (Some(id), pod), "{path}");
        }
    }

    #[test]
    fn paths_without_a_container() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/nginx.service",
            "/process_api/8699e4a1d4048ab7cc7baaf02bc97c65",
            // The monitors beside containers are not containers.
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/kubepods.slice/crio-conmon-{ID}.scope"),
            // Upper case, or one digit short: not an ID.
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/docker/{}", &ID[1..]),
        ] {
            assert_eq!(container(path).0, None, "{path}");
        }
        // A pod's own cgroup: the pod, no container.
        assert_eq!(
            container(&format!("/kubepods/burstable/pod{UID}")),
            (None, Some(UID.to_string()))
        );
        // "pod" and no UID is not a pod.
        assert_eq!(container("/kubepods/podcast"), (None, None));
    }

    #[test]
    fn bare_ids_take_the_hosts_runtime() {
        let (c, _) = parse_container(&format!("/kubepods/pod{UID}/{ID}"), "cri-o");
        assert_eq!(c.map(|c| c.runtime), Some("cri-o"));
    }

    #[test]
    fn own_cgroup_from_proc() {
        let text = "9:name=systemd:/\n4:memory:/process_api/86\n2:cpu,cpuacct:/x\n0::/init.scope\n";
        assert_eq!(
            parse_proc_cgroup(text, Hierarchy::V1Memory).as_deref(),
            Some("/process_api/86")
        );
        assert_eq!(
            parse_proc_cgroup(text, Hierarchy::Unified).as_deref(),
            Some("/init.scope")
        );
        assert_eq!(parse_proc_cgroup("0::/\n", Hierarchy::V1Memory), None);
    }

    /// The real thing, on this host: the id of this process's cgroup (its
    /// directory's inode number) resolves to its path.
    #[test]
    fn resolves_its_own_cgroup_on_this_host() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: open_by_handle_at needs CAP_DAC_READ_SEARCH (run as root)");
            return;
        }
        let Some(layout) = layout() else {
            eprintln!("skipped: no cgroup hierarchy mounted");
            return;
        };
        let line = check_line();
        assert!(line.starts_with("[ ok ] cgroups: "), "{line}");
        let (own, id) = own_cgroup(&layout).expect("this process's cgroup");
        let mut r = Resolver::new(Some(layout));
        let c = r.resolve(id).expect("a cgroup");
        assert_eq!(c.path.as_deref(), Some(own.as_str()), "{:?}", r.error);
        assert!(Arc::ptr_eq(&c, &r.resolve(id).unwrap()), "looked up once");
        // An id no cgroup has: no path, and not an error worth reporting.
        let gone = r.resolve(u64::MAX - 1).expect("a cgroup");
        assert_eq!(gone.path, None);
    }

    #[test]
    fn a_removed_cgroup_is_named_from_the_kernels_record() {
        let names = vec![
            format!("libpod-{ID}"),
            "libpod_parent".to_string(),
            String::new(),
        ];
        assert_eq!(names_path(&names), format!("libpod_parent/libpod-{ID}"));
        let layout = Layout {
            hierarchy: Hierarchy::Unified,
            mount_point: PathBuf::from("/nonexistent/netlens-test"),
            mounted_at: PathBuf::from("/nonexistent/netlens-test"),
            mount_root: "/".into(),
        };
        let mut r = Resolver::new(Some(layout))
            .with_names(Box::new(move |id| (id == 7).then(|| names.clone())));
        let c = r.resolve(7).expect("a cgroup");
        assert_eq!(c.path, None, "no path: the mount cannot be opened");
        assert_eq!(
            c.container.as_ref().map(|k| k.kube_id()),
            Some(format!("podman://{ID}"))
        );
        let unknown = r.resolve(8).expect("a cgroup");
        assert_eq!((&unknown.path, &unknown.container), (&None, &None));
    }

    #[test]
    fn unknown_and_zero_ids() {
        let mut r = Resolver::new(None);
        assert_eq!(r.resolve(0), None);
        assert_eq!(r.resolve(42), None, "no hierarchy, nothing to name");
    }
}
