//! A store on a small tmpfs, for disk-full tests: the file system fills up for real,
//! and the test can make room afterwards to show that the store is still usable.

use std::ops::Deref;
use std::path::Path;
use std::process::Command;

use super::{require_root, TempStore};

/// How big the store's file system is: too small for the 48 MiB the tests add.
pub const SMALL_MIB: u64 = 40;
/// Room enough for the content once the test makes room.
pub const ROOMY_MIB: u64 = 400;

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when a test fails).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(mib: u64) -> Tmpfs {
        require_root();
        let dir = tempfile::Builder::new().prefix("racker-tmpfs-").tempdir().expect("creating a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs on {} failed", dir.path().display());
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows (or shrinks) the file system in place, keeping its contents.
    pub fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "resizing the tmpfs on {} failed", self.path().display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// A store on a tmpfs of [`SMALL_MIB`]. Fields drop in order: the store (its containers
/// and mounts) goes before its file system.
pub struct SmallStore {
    pub store: TempStore,
    pub fs: Tmpfs,
}

impl SmallStore {
    pub fn new() -> SmallStore {
        let fs = Tmpfs::new(SMALL_MIB);
        SmallStore { store: TempStore::at(fs.path()), fs }
    }

    /// Runs racker with `args`, which must fail for want of space as a user must be told:
    /// "no space left on device" and a path in the store, a plain error exit (no panic,
    /// no talk of corruption), and the store left exactly as before, still usable.
    /// Returns stderr.
    pub fn assert_runs_out_of_space(&self, args: &[&str]) -> String {
        let before = self.snapshot();
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "racker {args:?} fit in {SMALL_MIB} MiB: make the content bigger");
        assert_ne!(out.status.code(), Some(101), "racker {args:?} panicked:\n{err}");
        assert!(
            err.to_lowercase().contains("no space left on device"),
            "racker {args:?} does not say the disk is full:\n{err}"
        );
        let root = self.root().display().to_string();
        assert!(err.contains(&root), "racker {args:?} does not name the path in the store it could not write:\n{err}");
        for wrong in ["digest mismatch", "tampered", "corrupt"] {
            assert!(!err.contains(wrong), "racker {args:?} blames the data ({wrong}):\n{err}");
        }
        assert_eq!(self.snapshot(), before, "racker {args:?} left part of its work in the store");
        self.ok(&["images"]);
        err
    }

    /// Makes room on the store's file system.
    pub fn make_room(&self) {
        self.fs.resize(ROOMY_MIB);
    }
}

impl Deref for SmallStore {
    type Target = TempStore;
    fn deref(&self) -> &TempStore {
        &self.store
    }
}
