//! The overlayfs snapshotter: the image's unpacked layer directories stacked as lowers
//! (top first) under a per-container upper directory. Nothing is copied, so setup and
//! teardown take the same few system calls for a 1 MB and a 1 GB image.
//!
//! Mounts go through the new mount API with one `lowerdir+` per layer, so the number of
//! layers is bounded by overlayfs's stack depth ([`MAX_LAYERS`]), not by the 4 KiB option page; a
//! kernel without `lowerdir+` (before 6.8) gets the classic `lowerdir=a:b:c` string, which
//! the store's short integer layer ids keep short for about a hundred layers.
//!
//! The system calls sit behind [`Mounter`] ([`SysMounter`] is the real one) so that a fault
//! the running kernel cannot produce can be injected: a kernel before 6.8 refusing
//! `lowerdir+`. The unit tests below do that with a fake that also records the calls;
//! the privileged suite (tests/suite/snapshot.rs) runs every conformance check through the
//! fallback on real mounts, the fault injected in front of [`SysMounter`].

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{chown, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::{check_key, io_err, keys_in, Driver, ImageLayers, Result, Snapshot, SnapshotError, Snapshotter};
use crate::digest::Digest;
use crate::oci::MAX_LAYERS;

/// The kernel copies mount options into one page; the string and its NUL must fit.
/// 4096 is the smallest page size Linux runs on, hence the safe limit everywhere.
const OPTIONS_LIMIT: usize = 4096 - 1;

/// Overlay options besides the directories, set explicitly so that the kernel's build-time
/// defaults (`CONFIG_OVERLAY_FS_*`, which distributions set differently) do not matter:
///
/// - `index=off`: the index ties an upper to the exact lower directories it was made with
///   and hardlinks copy-ups through it; our lowers are shared by every container of an
///   image, and we need neither NFS export nor hardlink-preserving copy-up.
/// - `redirect_dir=off`: renaming a lower directory returns EXDEV (userspace `mv` then
///   copies) instead of writing redirect xattrs, so an upper stays a plain diff that a
///   later `commit` can turn into a layer tar without understanding redirects.
/// - `metacopy=off`: a metadata change copies the whole file up, for the same reason, and
///   because the kernel documents metacopy as unsafe with uppers it did not make.
///
/// `userxattr` is deliberately absent: we run as root and the unpacker writes `trusted.*`
/// whiteouts and opaque markers, which `userxattr` would ignore.
const FIXED_OPTIONS: [(&str, &str); 3] = [("index", "off"), ("redirect_dir", "off"), ("metacopy", "off")];

/// The step of a mount that failed, for error messages and for choosing the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    Open,
    Config { key: String, value: String },
    Create,
    Mount,
    Move,
    Classic,
}

impl fmt::Display for MountStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountStep::Open => f.write_str("fsopen"),
            MountStep::Config { key, value } => write!(f, "fsconfig {key}={value}"),
            MountStep::Create => f.write_str("fsconfig create"),
            MountStep::Mount => f.write_str("fsmount"),
            MountStep::Move => f.write_str("move_mount"),
            MountStep::Classic => f.write_str("mount(2)"),
        }
    }
}

/// The mount system calls the overlay snapshotter makes.
pub trait Mounter: Send + Sync {
    /// New mount API: `fsopen(fstype)`, `fsconfig_set_string` of each parameter in order,
    /// `fsconfig_create`, `fsmount`, `move_mount` onto `target`.
    fn mount_fs(&self, fstype: &str, params: &[(&str, &str)], target: &Path) -> Result<(), (MountStep, io::Error)>;
    /// Classic `mount(fstype, target, fstype, 0, data)`.
    fn mount_classic(&self, fstype: &str, data: &str, target: &Path) -> io::Result<()>;
    /// `umount2(target, 0)`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// The real system calls.
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_fs(&self, fstype: &str, params: &[(&str, &str)], target: &Path) -> Result<(), (MountStep, io::Error)> {
        use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount};
        use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
        let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| (MountStep::Open, e.into()))?;
        for (key, value) in params {
            fsconfig_set_string(&fs, *key, *value).map_err(|e| {
                (MountStep::Config { key: (*key).to_owned(), value: (*value).to_owned() }, io::Error::from(e))
            })?;
        }
        fsconfig_create(&fs).map_err(|e| (MountStep::Create, e.into()))?;
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
            .map_err(|e| (MountStep::Mount, e.into()))?;
        move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            .map_err(|e| (MountStep::Move, e.into()))
    }

    fn mount_classic(&self, fstype: &str, data: &str, target: &Path) -> io::Result<()> {
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(fstype, target, fstype, rustix::mount::MountFlags::empty(), data.as_c_str())
            .map_err(Into::into)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).map_err(Into::into)
    }
}

/// Overlay snapshots, kept ones in the store at `root`.
pub struct OverlaySnapshotter {
    /// `<root>/snapshots`: kept containers.
    kept: PathBuf,
    /// Ephemeral containers, each on its own tmpfs.
    runtime: PathBuf,
    mounter: Box<dyn Mounter>,
}

impl OverlaySnapshotter {
    pub fn new(store_root: &Path, runtime_dir: &Path, mounter: Box<dyn Mounter>) -> Result<Self> {
        let kept = store_root.join("snapshots");
        make_private_dir(&kept)?;
        Ok(OverlaySnapshotter { kept, runtime: runtime_dir.to_owned(), mounter })
    }

    fn base(&self, key: &str, ephemeral: bool) -> PathBuf {
        if ephemeral { &self.runtime } else { &self.kept }.join(key)
    }

    /// The base directory of the existing snapshot `key` (kept or ephemeral).
    fn existing_base(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        [false, true]
            .into_iter()
            .map(|ephemeral| self.base(key, ephemeral))
            .find(|base| base.join("upper").is_dir())
            .ok_or_else(|| SnapshotError::NotFound { key: key.to_owned() })
    }

    /// Mounts `fstype` with `params`, falling back to a classic mount string when the new
    /// mount API is missing (ENOSYS) or refuses `lowerdir+` (EINVAL, before Linux 6.8).
    fn mount(&self, fstype: &'static str, params: &[(&str, &str)], target: &Path) -> Result<()> {
        let (step, source) = match self.mounter.mount_fs(fstype, params, target) {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        let errno = source.raw_os_error().map(Errno::from_raw_os_error);
        let fallback = match &step {
            MountStep::Open => errno == Some(Errno::NOSYS),
            MountStep::Config { key, .. } => key == "lowerdir+" && errno == Some(Errno::INVAL),
            _ => false,
        };
        if !fallback {
            return Err(SnapshotError::Mount { target: target.to_owned(), fstype, step, source });
        }
        let data = classic_options(params, target)?;
        self.mounter.mount_classic(fstype, &data, target).map_err(|source| SnapshotError::Mount {
            target: target.to_owned(),
            fstype,
            step: MountStep::Classic,
            source,
        })
    }

    /// Lays out a new snapshot's directories in `base`: upper, work, the mount point, and
    /// an empty lower for an image without layers. Mounts nothing.
    fn lay_out(&self, base: &Path, image: &ImageLayers) -> Result<()> {
        check_layer_count(image)?;
        let (upper, work, rootfs) = (base.join("upper"), base.join("work"), base.join("rootfs"));
        let top = match image.layers.last() {
            Some(layer) => layer.dir.clone(),
            None => {
                // An image without layers (FROM scratch and nothing added) still needs a lower.
                let empty = base.join("empty");
                fs::create_dir(&empty).map_err(io_err(&empty, "creating the empty lower directory"))?;
                empty
            }
        };
        for dir in [&upper, &work, &rootfs] {
            fs::create_dir(dir).map_err(io_err(dir, "creating"))?;
        }
        // The merged root directory takes the upper's owner and mode: make them the image's
        // (its top layer's root), as containerd does, not those of a fresh mkdir.
        let top = fs::metadata(&top).map_err(io_err(&top, "reading the top layer's root"))?;
        chown(&upper, Some(top.uid()), Some(top.gid())).map_err(io_err(&upper, "chown"))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(top.mode() & 0o7777)).map_err(io_err(&upper, "chmod"))
    }

    /// Claims `key` and makes its snapshot, mounted or not; a failure leaves nothing.
    fn make(&self, key: &str, image: &ImageLayers, ephemeral: bool, mounted: bool) -> Result<Snapshot> {
        check_key(key)?;
        let other = self.base(key, !ephemeral);
        if other.symlink_metadata().is_ok() {
            return Err(SnapshotError::AlreadyExists { key: key.to_owned(), path: other });
        }
        if !ephemeral {
            refuse_upper_on_overlay(&self.kept)?;
        }
        let base = self.base(key, ephemeral);
        // mkdir is the claim on the key: whoever creates it owns the snapshot. The store's
        // ephemeral area may vanish meanwhile (remove drops it once empty): then again.
        let mut attempts = 0;
        loop {
            if ephemeral {
                make_private_dir(&self.runtime)?;
            }
            match fs::DirBuilder::new().mode(crate::private::DIR_MODE).create(&base) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(SnapshotError::AlreadyExists { key: key.to_owned(), path: base })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && ephemeral && attempts < 3 => attempts += 1,
                Err(e) => return Err(io_err(&base, "creating")(e)),
            }
        }
        let made = (|| {
            if ephemeral {
                // The tmpfs holds upper, work and the mount point: teardown is two unmounts
                // and an rmdir, and a reboot forgets it.
                self.mount("tmpfs", &[("source", "tmpfs"), ("mode", "0700")], &base)?;
            }
            self.lay_out(&base, image)?;
            match mounted {
                true => Snapshotter::mount(self, key, image),
                false => Ok(base.join("rootfs")),
            }
        })();
        match made {
            Ok(rootfs) => Ok(Snapshot { key: key.to_owned(), rootfs, driver: Driver::Overlay, ephemeral }),
            Err(e) => {
                if let Err(cleanup) = self.remove(key) {
                    tracing::warn!("cleaning up the failed snapshot {key}: {cleanup}");
                }
                Err(e)
            }
        }
    }
}

/// Refuses an image with more layers than one overlay mount takes. The store refuses such
/// images as they come in; one from an older racker may remain.
fn check_layer_count(image: &ImageLayers) -> Result<()> {
    if image.layers.len() > MAX_LAYERS {
        return Err(SnapshotError::TooManyLayers {
            image: image.id.clone(),
            layers: image.layers.len(),
            limit: MAX_LAYERS,
        });
    }
    Ok(())
}

/// The overlay parameters in order: `source`, one `lowerdir+` per lower (top first),
/// `upperdir`, `workdir`, then [`FIXED_OPTIONS`].
fn overlay_params(lowers: &[PathBuf], upper: &Path, work: &Path) -> Vec<(&'static str, String)> {
    let mut params = vec![("source", "overlay".to_owned())];
    params.extend(lowers.iter().map(|l| ("lowerdir+", l.display().to_string())));
    params.push(("upperdir", upper.display().to_string()));
    params.push(("workdir", work.display().to_string()));
    params.extend(FIXED_OPTIONS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    params
}

/// The classic `mount(2)` data string for `params`: `lowerdir+` values joined into one
/// `lowerdir=top:...:base`, `source` dropped (it is mount's first argument).
fn classic_options(params: &[(&str, &str)], target: &Path) -> Result<String> {
    let mut lowers = Vec::new();
    let mut rest = Vec::new();
    for (key, value) in params {
        for ch in [',', ':'] {
            if value.contains(ch) && (*key != "source") {
                return Err(SnapshotError::UnsafeMountPath { path: PathBuf::from(value), ch });
            }
        }
        match *key {
            "source" => {}
            "lowerdir+" => lowers.push(*value),
            _ => rest.push(format!("{key}={value}")),
        }
    }
    let mut options = Vec::new();
    if !lowers.is_empty() {
        options.push(format!("lowerdir={}", lowers.join(":")));
    }
    options.extend(rest);
    let data = options.join(",");
    if data.len() > OPTIONS_LIMIT {
        return Err(SnapshotError::OptionsTooLong { target: target.to_owned(), len: data.len(), limit: OPTIONS_LIMIT });
    }
    Ok(data)
}

/// Creates `dir` (and parents) readable by root only: a container's root file system holds
/// setuid binaries that no host user should reach through it.
fn make_private_dir(dir: &Path) -> Result<()> {
    crate::private::dir(dir).map_err(io_err(dir, "creating"))
}

impl Snapshotter for OverlaySnapshotter {
    fn driver(&self) -> Driver {
        Driver::Overlay
    }

    fn prepare(&self, key: &str, image: &ImageLayers, ephemeral: bool) -> Result<Snapshot> {
        self.make(key, image, ephemeral, true)
    }

    /// The directories only: the first mount is the container's first start.
    fn create(&self, key: &str, image: &ImageLayers) -> Result<Snapshot> {
        self.make(key, image, false, false)
    }

    fn remove(&self, key: &str) -> Result<()> {
        check_key(key)?;
        for ephemeral in [true, false] {
            let base = self.base(key, ephemeral);
            if base.symlink_metadata().is_err() {
                continue;
            }
            unmount_all(&*self.mounter, &base.join("rootfs"))?;
            if ephemeral {
                unmount_all(&*self.mounter, &base)?;
            }
            // Nothing is mounted below `base` any more: deleting cannot reach a lower.
            match fs::remove_dir_all(&base) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&base, "deleting")(e)),
            }
            if ephemeral {
                // The store's ephemeral area goes with its last snapshot (fails while not empty).
                let _ = fs::remove_dir(&self.runtime);
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut keys = keys_in(&self.kept)?;
        keys.extend(keys_in(&self.runtime)?);
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        [false, true]
            .into_iter()
            .map(|ephemeral| self.base(key, ephemeral).join("upper"))
            .find(|upper| upper.is_dir())
            .ok_or_else(|| SnapshotError::NotFound { key: key.to_owned() })
    }

    /// Only the overlay goes: upper and work stay (and an ephemeral snapshot's tmpfs,
    /// which holds them).
    fn unmount(&self, key: &str) -> Result<()> {
        let base = self.existing_base(key)?;
        unmount_all(&*self.mounter, &base.join("rootfs"))
    }

    fn changes(&self, key: &str, image: &ImageLayers) -> Result<Vec<super::diff::Change>> {
        let upper = self.upper_dir(key)?;
        let lowers: Vec<PathBuf> = image.layers.iter().rev().map(|l| l.dir.clone()).collect();
        Ok(super::diff::upper_changes(&upper, &lowers)?)
    }

    fn mount(&self, key: &str, image: &ImageLayers) -> Result<PathBuf> {
        let base = self.existing_base(key)?;
        let rootfs = base.join("rootfs");
        if is_overlay(&rootfs) {
            return Ok(rootfs);
        }
        check_layer_count(image)?;
        let mut lowers: Vec<PathBuf> = image.layers.iter().rev().map(|l| l.dir.clone()).collect();
        if lowers.is_empty() {
            lowers.push(base.join("empty"));
        }
        let params = overlay_params(&lowers, &base.join("upper"), &base.join("work"));
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.mount("overlay", &params, &rootfs)?;
        tracing::debug!(
            "overlay of image {} ({} layers) mounted at {}",
            image.id,
            image.layers.len(),
            rootfs.display()
        );
        Ok(rootfs)
    }

    fn prune(&self, _live_images: &[Digest]) -> Result<Vec<Digest>> {
        // Overlay keeps nothing per image: the lowers are the store's own layers.
        Ok(Vec::new())
    }
}

/// `statfs.f_type` of overlayfs (linux/magic.h).
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Whether an overlay is mounted on `rootfs` (a kept snapshot's base is never on
/// overlayfs, an ephemeral one's is a tmpfs: only the mount makes it overlayfs).
fn is_overlay(rootfs: &Path) -> bool {
    rustix::fs::statfs(rootfs).is_ok_and(|s| s.f_type == OVERLAYFS_SUPER_MAGIC)
}

/// overlayfs refuses an upper directory on an overlayfs (a store inside a container or a
/// volatile root), with a bare EINVAL at mount time: say so, and what to do, before.
fn refuse_upper_on_overlay(dir: &Path) -> Result<()> {
    let magic = rustix::fs::statfs(dir).map_err(|e| io_err(dir, "statfs")(e.into()))?.f_type as i64;
    if magic == OVERLAYFS_SUPER_MAGIC {
        return Err(SnapshotError::UpperOnOverlay { dir: dir.to_owned() });
    }
    Ok(())
}

/// Unmounts whatever is stacked on `target` until nothing is (EINVAL: not a mount point).
fn unmount_all(mounter: &dyn Mounter, target: &Path) -> Result<()> {
    for _ in 0..64 {
        match mounter.unmount(target) {
            Ok(()) => continue,
            Err(e) if matches!(e.raw_os_error().map(Errno::from_raw_os_error), Some(Errno::INVAL | Errno::NOENT)) => {
                return Ok(())
            }
            Err(source) => return Err(SnapshotError::Unmount { target: target.to_owned(), source }),
        }
    }
    Err(SnapshotError::Unmount {
        target: target.to_owned(),
        source: io::Error::other("still mounted after 64 unmounts"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::snapshot::LayerSource;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Fs { fstype: String, params: Vec<(String, String)>, target: PathBuf },
        Classic { fstype: String, data: String, target: PathBuf },
        Unmount(PathBuf),
    }

    /// A fake kernel, for fault injection and without root: it mounts nothing, records
    /// every call, refuses `lowerdir+` with EINVAL when told to (as Linux < 6.8 does: a
    /// fault this host's kernel cannot produce), and reports EINVAL (not mounted) for an
    /// unmount of anything it did not mount. Real mounts are the privileged suite's.
    #[derive(Clone, Default)]
    struct FaultInjectingMounter {
        calls: Arc<Mutex<Vec<Call>>>,
        mounted: Arc<Mutex<Vec<PathBuf>>>,
        refuse_lowerdir_plus: bool,
    }

    impl FaultInjectingMounter {
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Mounter for FaultInjectingMounter {
        fn mount_fs(&self, fstype: &str, params: &[(&str, &str)], target: &Path) -> Result<(), (MountStep, io::Error)> {
            let owned = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            self.calls.lock().unwrap().push(Call::Fs { fstype: fstype.into(), params: owned, target: target.into() });
            if let Some((k, v)) = params.iter().find(|(k, _)| self.refuse_lowerdir_plus && *k == "lowerdir+") {
                let step = MountStep::Config { key: (*k).into(), value: (*v).into() };
                return Err((step, io::Error::from_raw_os_error(libc_einval())));
            }
            self.mounted.lock().unwrap().push(target.into());
            Ok(())
        }
        fn mount_classic(&self, fstype: &str, data: &str, target: &Path) -> io::Result<()> {
            let call = Call::Classic { fstype: fstype.into(), data: data.into(), target: target.into() };
            self.calls.lock().unwrap().push(call);
            self.mounted.lock().unwrap().push(target.into());
            Ok(())
        }
        fn unmount(&self, target: &Path) -> io::Result<()> {
            self.calls.lock().unwrap().push(Call::Unmount(target.into()));
            let mut mounted = self.mounted.lock().unwrap();
            match mounted.iter().rposition(|m| m == target) {
                Some(i) => {
                    mounted.remove(i);
                    Ok(())
                }
                None => Err(io::Error::from_raw_os_error(libc_einval())),
            }
        }
    }

    fn libc_einval() -> i32 {
        Errno::INVAL.raw_os_error()
    }

    struct Setup {
        root: tempfile::TempDir,
        runtime: tempfile::TempDir,
        kernel: FaultInjectingMounter,
        snap: OverlaySnapshotter,
    }

    fn setup(refuse_lowerdir_plus: bool) -> Setup {
        let root = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let kernel = FaultInjectingMounter { refuse_lowerdir_plus, ..FaultInjectingMounter::default() };
        let snap =
            OverlaySnapshotter::new(root.path(), &runtime.path().join("snaps"), Box::new(kernel.clone())).unwrap();
        let s = Setup { root, runtime, kernel, snap };
        for id in [7, 8, 9] {
            fs::create_dir_all(s.lower(id)).unwrap();
        }
        s
    }

    impl Setup {
        /// Where layer `id`'s directory is (created by the test that needs it).
        fn lower(&self, id: i64) -> PathBuf {
            self.root.path().join("layers").join(id.to_string())
        }

        /// An image of the layers `ids`, base first. Overlay reads only their directories.
        fn layers(&self, ids: &[i64]) -> ImageLayers {
            let d = Digest::of(b"x");
            let source = |id| LayerSource {
                dir: self.lower(id),
                blob: PathBuf::new(),
                blob_digest: d.clone(),
                media_type: String::new(),
                diff_id: d.clone(),
            };
            ImageLayers { id: d.clone(), layers: ids.iter().copied().map(source).collect() }
        }
    }

    fn expected_overlay_params(root: &Path, base: &Path) -> Vec<(String, String)> {
        let mut want = vec![("source".to_owned(), "overlay".to_owned())];
        for id in [9, 8, 7] {
            want.push(("lowerdir+".into(), root.join("layers").join(id.to_string()).display().to_string()));
        }
        want.push(("upperdir".into(), base.join("upper").display().to_string()));
        want.push(("workdir".into(), base.join("work").display().to_string()));
        for (k, v) in [("index", "off"), ("redirect_dir", "off"), ("metacopy", "off")] {
            want.push((k.into(), v.into()));
        }
        want
    }

    #[test]
    fn kept_snapshot_mounts_one_lowerdir_plus_per_layer_top_first() {
        let s = setup(false);
        let snap = s.snap.prepare("web", &s.layers(&[7, 8, 9]), false).unwrap();
        let base = s.root.path().join("snapshots/web");
        assert_eq!(snap.rootfs, base.join("rootfs"));
        let want = Call::Fs {
            fstype: "overlay".into(),
            params: expected_overlay_params(s.root.path(), &base),
            target: base.join("rootfs"),
        };
        assert_eq!(s.kernel.calls(), [want]);
        assert!(base.join("upper").is_dir() && base.join("work").is_dir());
        assert!(!s.kernel.calls().iter().any(|c| matches!(c, Call::Fs { params, .. }
            if params.iter().any(|(k, _)| k == "userxattr"))));
        assert_eq!(s.snap.list().unwrap(), ["web"]);

        s.snap.remove("web").unwrap();
        assert!(!base.exists());
        assert_eq!(s.kernel.calls()[1..], [Call::Unmount(base.join("rootfs")), Call::Unmount(base.join("rootfs"))]);
        assert!(s.snap.list().unwrap().is_empty());
        s.snap.remove("web").unwrap();
    }

    #[test]
    fn ephemeral_snapshot_puts_upper_and_work_on_its_own_tmpfs() {
        let s = setup(false);
        let snap = s.snap.prepare("tmp1", &s.layers(&[7, 8, 9]), true).unwrap();
        let base = s.runtime.path().join("snaps/tmp1");
        assert_eq!(snap.rootfs, base.join("rootfs"));
        let calls = s.kernel.calls();
        assert_eq!(
            calls[0],
            Call::Fs {
                fstype: "tmpfs".into(),
                params: vec![("source".into(), "tmpfs".into()), ("mode".into(), "0700".into())],
                target: base.clone()
            }
        );
        assert_eq!(
            calls[1],
            Call::Fs {
                fstype: "overlay".into(),
                params: expected_overlay_params(s.root.path(), &base),
                target: base.join("rootfs")
            }
        );
        assert_eq!(s.snap.list().unwrap(), ["tmp1"]);
        s.snap.remove("tmp1").unwrap();
        let calls = s.kernel.calls();
        assert!(calls.contains(&Call::Unmount(base.join("rootfs"))) && calls.contains(&Call::Unmount(base.clone())));
        assert!(!base.exists());
    }

    #[test]
    fn without_lowerdir_plus_the_classic_option_string_is_used() {
        let s = setup(true);
        s.snap.prepare("old", &s.layers(&[7, 8, 9]), false).unwrap();
        let base = s.root.path().join("snapshots/old");
        let layer = |id: i64| s.root.path().join("layers").join(id.to_string()).display().to_string();
        let data = format!(
            "lowerdir={}:{}:{},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off",
            layer(9),
            layer(8),
            layer(7),
            base.join("upper").display(),
            base.join("work").display()
        );
        let calls = s.kernel.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[1], Call::Classic { fstype: "overlay".into(), data, target: base.join("rootfs") });
    }

    #[test]
    fn a_classic_option_string_over_a_page_is_refused_and_cleaned_up() {
        let s = setup(true);
        let ids: Vec<i64> = (1000..1400).collect();
        for id in &ids {
            fs::create_dir_all(s.lower(*id)).unwrap();
        }
        let err = s.snap.prepare("big", &s.layers(&ids), false).unwrap_err();
        assert!(matches!(err, SnapshotError::OptionsTooLong { .. }), "{err}");
        assert!(s.snap.list().unwrap().is_empty());
    }

    #[test]
    fn a_single_layer_and_a_layerless_image_get_a_lower() {
        let s = setup(false);
        s.snap.prepare("one", &s.layers(&[7]), false).unwrap();
        s.snap.prepare("none", &s.layers(&[]), false).unwrap();
        let calls = s.kernel.calls();
        let lowers = |c: &Call| match c {
            Call::Fs { params, .. } => {
                params.iter().filter(|(k, _)| k == "lowerdir+").map(|(_, v)| v.clone()).collect::<Vec<_>>()
            }
            _ => panic!("{c:?}"),
        };
        assert_eq!(lowers(&calls[0]), [s.lower(7).display().to_string()]);
        assert_eq!(lowers(&calls[1]), [s.root.path().join("snapshots/none/empty").display().to_string()]);
    }

    #[test]
    fn a_key_cannot_be_prepared_twice() {
        let s = setup(false);
        s.snap.prepare("dup", &s.layers(&[7]), false).unwrap();
        for ephemeral in [false, true] {
            let err = s.snap.prepare("dup", &s.layers(&[7]), ephemeral).unwrap_err();
            assert!(matches!(err, SnapshotError::AlreadyExists { .. }), "{err}");
        }
        assert!(s.root.path().join("snapshots/dup/upper").is_dir(), "a refused prepare removed the first");
    }
}
