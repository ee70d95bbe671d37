//! Guards for privileged tests: a loop-mounted btrfs file system made for the test, and
//! a sweep that undoes leftover mounts even when an assertion fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TempStore;

/// Mount points in this process's mount namespace at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Lazily unmounts, on drop, whatever is still mounted below its directories (deepest
/// first): a failed assertion must not leave mounts behind.
pub struct MountSweep(pub Vec<PathBuf>);

impl Drop for MountSweep {
    fn drop(&mut self) {
        for dir in &self.0 {
            let mut left = mounts_under(dir);
            left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for m in left {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// A fresh btrfs file system in a sparse 1 GiB file, loop-mounted; unmounted and its loop
/// device detached on drop.
pub struct BtrfsLoop {
    mount: tempfile::TempDir,
    _image_dir: tempfile::TempDir,
    device: String,
}

impl BtrfsLoop {
    pub fn new() -> BtrfsLoop {
        let image_dir = tempfile::Builder::new().prefix("racker-btrfs-img-").tempdir().expect("temporary dir");
        let mount = tempfile::Builder::new().prefix("racker-btrfs-").tempdir().expect("mount point");
        let img = image_dir.path().join("fs.img");
        run(Command::new("truncate").args(["-s", "1G"]).arg(&img));
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&img));
        // From here on the guard exists, so the loop device is detached whatever happens.
        let guard = BtrfsLoop { mount, _image_dir: image_dir, device };
        run(Command::new("mount").arg(&guard.device).arg(guard.mount.path()));
        guard
    }

    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Every subvolume of the file system, by its path in it: what racker made and did
    /// not remove is listed here, also where no directory of the store names it.
    pub fn subvolumes(&self) -> BTreeSet<PathBuf> {
        let list = run(Command::new("btrfs").args(["subvolume", "list"]).arg(self.path()));
        list.lines()
            .map(|l| PathBuf::from(l.split_once(" path ").unwrap_or_else(|| panic!("btrfs subvolume list: {l}")).1))
            .collect()
    }

    /// The overlay stores' leak check ([`TempStore::assert_clean`]) for `store` on this
    /// file system, and on btrfs: no container record, and no subvolume but the
    /// materialised images of images the store still has (no container snapshot, no
    /// half-built image).
    pub fn assert_clean(&self, store: &TempStore) {
        store.assert_clean();
        assert_eq!(store.ok(&["ps", "-aq"]), "", "container records left behind");
        let in_fs = store.root().strip_prefix(self.path()).expect("the store is on this file system");
        let images: BTreeSet<PathBuf> = store
            .ok(&["images", "-q", "--no-trunc"])
            .lines()
            .map(|id| in_fs.join("btrfs/images").join(id.trim_start_matches("sha256:")))
            .collect();
        let subvolumes = self.subvolumes();
        let leaked: Vec<_> = subvolumes.difference(&images).collect();
        assert!(leaked.is_empty(), "subvolumes left behind: {leaked:?} (images' are {images:?})");
    }
}

impl Drop for BtrfsLoop {
    fn drop(&mut self) {
        drop(MountSweep(vec![self.mount.path().to_owned()]));
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Runs `test` on a store on a fresh loop-mounted btrfs holding the busybox image as
/// `bb`, then checks that nothing of it is left on the file system.
pub fn with_busybox_store(test: impl FnOnce(&TempStore)) {
    crate::common::require_root();
    let fs = BtrfsLoop::new();
    let _sweep = MountSweep(vec![fs.path().to_owned()]);
    let store = TempStore::at(fs.path());
    let _dir = crate::common::images::add_busybox(&store);
    test(&store);
    fs.assert_clean(&store);
}
