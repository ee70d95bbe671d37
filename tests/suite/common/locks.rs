//! Who holds a file's lock and who waits for it, as the kernel lists them in
//! `/proc/locks`: a test sees one process wait for another's lock as an event, instead
//! of guessing it from how long something took.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One entry of `/proc/locks` on a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLock {
    /// The process that holds the lock or waits for it.
    pub pid: u32,
    /// `WRITE` (exclusive) or `READ` (shared).
    pub mode: String,
    /// Blocked in flock/fcntl until the holders let go (`->` in `/proc/locks`).
    pub waiting: bool,
}

/// The locks held on and waited for on the file at `path` (none if it does not exist).
pub fn on(path: &Path) -> Vec<FileLock> {
    let Ok(meta) = std::fs::metadata(path) else { return Vec::new() };
    let dev = meta.dev();
    // `MAJOR:MINOR:INODE`, major and minor in hex as the kernel prints them.
    let file = format!("{:02x}:{:02x}:{}", rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino());
    let table = std::fs::read_to_string("/proc/locks").expect("reading /proc/locks");
    table
        .lines()
        .filter_map(|line| {
            // `1: FLOCK  ADVISORY  WRITE 15315 fe:00:10011009 0 EOF`, `-> ` before the kind
            // for a waiter.
            let mut fields = line.split_whitespace().skip(1).peekable();
            let waiting = fields.next_if_eq(&"->").is_some();
            let (_kind, _advisory, mode, pid, id) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            if id != file {
                return None;
            }
            Some(FileLock { pid: pid.parse().ok()?, mode: mode.to_owned(), waiting })
        })
        .collect()
}

/// Whether process `pid` holds a lock of `mode` on `path`.
pub fn holds(path: &Path, pid: u32, mode: &str) -> bool {
    on(path).iter().any(|l| l.pid == pid && l.mode == mode && !l.waiting)
}

/// Whether process `pid` is blocked waiting for a lock of `mode` on `path`.
pub fn waits(path: &Path, pid: u32, mode: &str) -> bool {
    on(path).iter().any(|l| l.pid == pid && l.mode == mode && l.waiting)
}
