//! Running code inside another network namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;

use anyhow::{Context, Result};

/// Runs `f` inside the network namespace at `path` (a `/proc/.../ns/net`
/// link or a `/run/netns/<name>` bind mount) and returns its result.
///
/// A network namespace belongs to a thread, not a process, so `f` runs on a
/// freshly spawned thread that enters the namespace first; the calling
/// thread stays where it is, and the helper thread ends with `f`. Inside
/// `f`, `/proc/thread-self/net` shows the target namespace while
/// `/proc/self/net` still shows the main thread's. Sockets created in `f`
/// stay in the target namespace. A panic in `f` is passed on to the caller.
///
/// Needs CAP_SYS_ADMIN (over the target namespace's user namespace);
/// without it the error is one [`lacks_sys_admin`] recognises. Entering the
/// namespace the thread is already in needs it too: call `f` directly then.
pub fn with_netns<T, F>(path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    let ns = File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netlens-netns".into())
            .spawn_scoped(scope, || {
                // SAFETY: `ns` is an open descriptor that outlives this call
                // (it is borrowed from the enclosing scope); setns only
                // affects the calling thread, which is this helper thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let err = io::Error::last_os_error();
                    // The io::Error's own text already ends in "(os error N)".
                    return Err(anyhow::Error::new(err).context(format!(
                        "setns(CLONE_NEWNET) into {} failed",
                        path.display()
                    )));
                }
                f()
            })
            .context("spawning a thread to enter a network namespace")?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Whether `e` (from [`with_netns`]) says the namespace could not be
/// entered for want of CAP_SYS_ADMIN: setns() failed with EPERM.
pub fn lacks_sys_admin(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::procfs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::process::Command;

    /// A namespace made with `ip netns add`, deleted again on drop.
    struct TempNetns {
        name: String,
        path: PathBuf,
    }

    impl TempNetns {
        fn create(tag: &str) -> TempNetns {
            let name = format!("nlsys-test-{}{tag}", std::process::id());
            let status = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("run ip netns add");
            assert!(status.success(), "ip netns add {name} failed: {status}");
            let path = Path::new(procfs::RUN_NETNS).join(&name);
            TempNetns { name, path }
        }

        fn inode(&self) -> u32 {
            let meta = std::fs::metadata(&self.path).expect("stat netns");
            u32::try_from(meta.ino()).expect("32-bit inode")
        }
    }

    impl Drop for TempNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .status();
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn runs_inside_the_namespace_and_leaves_caller_alone() {
        if !is_root() {
            eprintln!("skipping with_netns test: needs root");
            return;
        }
        let ns = TempNetns::create("");
        let before = procfs::current_netns_inode().expect("own netns");
        let target = ns.inode();
        assert_ne!(before, target);

        let inside = with_netns(&ns.path, procfs::current_netns_inode).expect("with_netns");
        assert_eq!(inside, target);
        assert_eq!(procfs::current_netns_inode().expect("own netns"), before);

        let listed = procfs::network_namespaces();
        let handle = listed
            .iter()
            .find(|h| h.inode == target)
            .expect("new namespace listed");
        assert_eq!(handle.path, ns.path, "the bind mount is the preferred path");
    }

    #[test]
    fn closure_errors_and_borrows_pass_through() {
        if !is_root() {
            eprintln!("skipping with_netns test: needs root");
            return;
        }
        let ns = TempNetns::create("-b");
        let mut seen = Vec::new();
        let r: Result<()> = with_netns(&ns.path, || {
            seen.push(procfs::current_netns_inode()?);
            Err(anyhow::anyhow!("from inside"))
        });
        let err = r.expect_err("closure error");
        assert_eq!(err.to_string(), "from inside");
        assert_eq!(seen, [ns.inode()]);
    }

    #[test]
    fn setns_on_a_non_namespace_names_the_path() {
        let err = with_netns(Path::new("/proc/self/status"), || Ok(()))
            .expect_err("a regular file is no namespace");
        let msg = format!("{err:#}");
        assert!(msg.contains("/proc/self/status"), "{msg}");
        // The errno once, as the io::Error gives it.
        assert_eq!(msg.matches("os error 22").count(), 1, "{msg}");
        assert!(!msg.contains("errno"), "{msg}");
        // EINVAL: not a namespace, not a missing capability.
        assert!(!lacks_sys_admin(&err), "{err:#}");
    }

    #[test]
    fn eperm_means_cap_sys_admin_is_missing() {
        let eperm = anyhow::Error::new(io::Error::from_raw_os_error(libc::EPERM)).context("setns");
        assert!(lacks_sys_admin(&eperm));
        let eacces = anyhow::Error::new(io::Error::from_raw_os_error(libc::EACCES)).context("open");
        assert!(!lacks_sys_admin(&eacces));
        assert!(!lacks_sys_admin(&anyhow::anyhow!("creating an iterator")));
    }

    #[test]
    fn missing_namespace_file_names_the_path() {
        let err = with_netns(Path::new("/run/netns/nlsys-does-not-exist"), || Ok(()))
            .expect_err("no such file");
        assert!(format!("{err:#}").contains("nlsys-does-not-exist"));
    }
}
