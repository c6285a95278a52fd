//! The log file of logging mode, rotated by size so that a long run cannot
//! fill the disk.
//!
//! The file is `<dir>/netlens-<YYYYmmdd-HHMMSS>.log` (UTC, like the
//! timestamps inside). When it would grow past `max_bytes` it is renamed to
//! `.1`, the older `.1` to `.2`, and so on; at most `keep` old files remain.
//!
//! Each `write` call goes entirely into one file, so a caller that writes
//! whole lines (as every sink of this crate does) never has a line split
//! between two files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

/// Default directory, relative to the working directory.
pub const DEFAULT_DIR: &str = "log";
/// Default size at which the file is rotated: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of rotated files kept next to the current one.
pub const DEFAULT_KEEP: usize = 5;

/// A size-rotated log file; see the module documentation.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    /// Creates `dir` if needed and a new log file in it named after the
    /// current time.
    pub fn create(dir: &Path, max_bytes: u64, keep: usize) -> anyhow::Result<RotatingFile> {
        RotatingFile::create_at(dir, SystemTime::now(), max_bytes, keep)
    }

    /// As [`RotatingFile::create`], with the time that names the file given.
    /// Never reuses an existing file: a second run within the same second
    /// gets `netlens-<time>-2.log`.
    pub fn create_at(
        dir: &Path,
        now: SystemTime,
        max_bytes: u64,
        keep: usize,
    ) -> anyhow::Result<RotatingFile> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        let stamp = file_stamp(now);
        let mut n = 1;
        loop {
            let name = if n == 1 {
                format!("netlens-{stamp}.log")
            } else {
                format!("netlens-{stamp}-{n}.log")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(RotatingFile {
                        path,
                        file,
                        written: 0,
                        max_bytes,
                        keep,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot create log file {} (is {} a writable directory?)",
                            path.display(),
                            dir.display()
                        )
                    })
                }
            }
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the `n`th rotated file: `<path>.<n>`.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            ignore_not_found(fs::remove_file(&self.path), &self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                ignore_not_found(fs::rename(&from, self.rotated(n + 1)), &from)?;
            }
            // Gone only if someone removed it under us; start afresh then.
            ignore_not_found(fs::rename(&self.path, self.rotated(1)), &self.path)?;
        }
        self.file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|e| with_path(e, "reopening log file", &self.path))?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len() as u64;
        // A single write larger than max_bytes still goes into one (fresh)
        // file rather than being split.
        if self.written > 0 && self.written.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(buf) {
            // A full disk can take part of the batch: cut it off again, so
            // the file never ends in half a line (the caller counts the
            // whole batch as dropped).
            let _ = self.file.set_len(self.written);
            let _ = self.file.seek(SeekFrom::Start(self.written));
            return Err(with_path(e, "writing log file", &self.path));
        }
        self.written += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn file_stamp(t: SystemTime) -> String {
    // "2026-11-23T13:31:47Z"
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    let digits: String = rfc.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = digits.split_at(digits.len().min(8));
    format!("{date}-{time}")
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn ignore_not_found(res: io::Result<()>, path: &Path) -> io::Result<()> {
    match res {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(with_path(e, "rotating log file", path))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!(
                "netlens-test-{}-{name}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn t0() -> SystemTime {
        // 2026-11-23T13:31:47Z
        UNIX_EPOCH + Duration::from_secs(1_795_440_707)
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stamp_is_utc_date_dash_time() {
        assert_eq!(file_stamp(t0()), "20261123-133147");
        assert_eq!(file_stamp(UNIX_EPOCH), "19700101-000000");
    }

    #[test]
    fn creates_missing_directory_and_named_file() {
        let tmp = TempDir::new("create");
        let dir = tmp.0.join("a/b/log");
        let mut f = RotatingFile::create_at(&dir, t0(), 100, 2).expect("create");
        assert_eq!(f.path(), dir.join("netlens-20261123-133147.log"));
        f.write_all(b"hello\n").expect("write");
        f.flush().expect("flush");
        assert_eq!(read(f.path()), "hello\n");

        // Same second again: a new file, the first one untouched.
        let g = RotatingFile::create_at(&dir, t0(), 100, 2).expect("create again");
        assert_eq!(g.path(), dir.join("netlens-20261123-133147-2.log"));
        assert_eq!(read(f.path()), "hello\n");
        assert_eq!(read(g.path()), "");
    }

    #[test]
    fn rotates_and_keeps_at_most_keep_old_files() {
        let tmp = TempDir::new("rotate");
        let mut f = RotatingFile::create_at(&tmp.0, t0(), 10, 2).expect("create");
        let p = f.path().to_path_buf();
        let old = |n: usize| tmp.0.join(format!("netlens-20261123-133147.log.{n}"));

        f.write_all(b"aaaaaaaa\n").expect("write"); // 9 bytes, fits
        assert_eq!(names(&tmp.0), ["netlens-20261123-133147.log"]);
        f.write_all(b"bbb\n").expect("write"); // 13 > 10: rotate first
        assert_eq!(read(&old(1)), "aaaaaaaa\n");
        assert_eq!(read(&p), "bbb\n");

        f.write_all(b"cccccccc\n").expect("write");
        assert_eq!(read(&old(2)), "aaaaaaaa\n");
        assert_eq!(read(&old(1)), "bbb\n");
        assert_eq!(read(&p), "cccccccc\n");

        f.write_all(b"dddd\n").expect("write");
        assert_eq!(read(&old(2)), "bbb\n");
        assert_eq!(read(&old(1)), "cccccccc\n");
        assert_eq!(read(&p), "dddd\n");
        assert_eq!(
            names(&tmp.0),
            [
                "netlens-20261123-133147.log",
                "netlens-20261123-133147.log.1",
                "netlens-20261123-133147.log.2",
            ],
            "the oldest file was dropped"
        );

        // Larger than max_bytes: goes whole into a fresh file.
        f.write_all(b"eeeeeeeeeeeeeeeeeeee\n").expect("write");
        assert_eq!(read(&p), "eeeeeeeeeeeeeeeeeeee\n");
        assert_eq!(read(&old(1)), "dddd\n");
        f.write_all(b"f\n").expect("write");
        assert_eq!(read(&p), "f\n");
        assert_eq!(read(&old(1)), "eeeeeeeeeeeeeeeeeeee\n");
        assert_eq!(read(&old(2)), "dddd\n");
    }

    #[test]
    fn keep_zero_only_truncates() {
        let tmp = TempDir::new("keep0");
        let mut f = RotatingFile::create_at(&tmp.0, t0(), 8, 0).expect("create");
        f.write_all(b"1234567\n").expect("write");
        f.write_all(b"abc\n").expect("write");
        assert_eq!(read(f.path()), "abc\n");
        assert_eq!(names(&tmp.0), ["netlens-20261123-133147.log"]);
    }

    #[test]
    fn text_sink_lines_are_never_split_across_files() {
        use crate::model::{ConnEvent, Direction, EventKind};
        use crate::output::test_util::conn;
        use crate::output::{text::TextSink, Sink};

        let tmp = TempDir::new("lines");
        let f = RotatingFile::create_at(&tmp.0, t0(), 400, 3).expect("create");
        let mut sink = TextSink::new(f);
        for i in 0..20u64 {
            let ev = ConnEvent {
                kind: EventKind::Connect,
                timestamp: 1_795_440_707_000_000_000 + i,
                conn: conn("192.0.2.1", 40000, "192.0.2.2", 80, Direction::Outbound),
                metrics: None,
            };
            sink.event(&ev).expect("event");
            if i % 3 == 2 {
                sink.flush().expect("flush");
            }
        }
        sink.flush().expect("flush");
        let files = names(&tmp.0);
        assert_eq!(files.len(), 4, "current + 3 kept: {files:?}");
        for name in files {
            let text = read(&tmp.0.join(&name));
            assert!(text.len() <= 400, "{name} has {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name}");
            for line in text.lines() {
                assert!(line.starts_with("2026-11-23T13:31:47.000000Z event connect "));
                assert!(line.ends_with(" comm:curl connect_us:250"), "{line}");
            }
        }
    }

    #[test]
    fn error_names_the_directory() {
        let tmp = TempDir::new("err");
        let blocker = tmp.0.join("not-a-dir");
        fs::write(&blocker, b"x").expect("write");
        let err = RotatingFile::create_at(&blocker.join("log"), t0(), 10, 1)
            .expect_err("a file is in the way");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "cannot create log directory {}",
                blocker.join("log").display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn error_when_directory_not_writable() {
        use std::os::unix::fs::PermissionsExt;

        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("skipped: root ignores directory permissions");
            return;
        }
        let tmp = TempDir::new("ro");
        let dir = tmp.0.join("ro");
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod");
        let err = RotatingFile::create_at(&dir, t0(), 10, 1).expect_err("read-only dir");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "cannot create log file {}",
                dir.join("netlens-20261123-133147.log").display()
            )),
            "{msg}"
        );
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
    }
}
