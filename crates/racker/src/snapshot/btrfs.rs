//! The btrfs snapshotter: an image's layer tars applied once, in order, into a read-only
//! subvolume; every container gets a writable snapshot of it, which btrfs makes in O(1)
//! and shares copy-on-write. Only the first container of an image pays for its size.
//!
//! ```text
//! $ROOT/btrfs/
//! ├── lock                          flock: shared while snapshotting, exclusive while
//! │                                 materialising an image or pruning
//! ├── images/<image hex>            read-only subvolume: the image's file system
//! ├── images/.building-<hex>-<pid>  being materialised; garbage once its builder is gone
//! └── containers/<key>              writable snapshot: one container's root file system
//! ```
//!
//! An image is built in a `.building-` subvolume, set read-only, synced, and only then
//! renamed to its hex: a present `images/<hex>` is always complete. Subvolumes are made
//! and destroyed with the btrfs ioctls directly (no `btrfs` command); destroying needs
//! CAP_SYS_ADMIN, not the `user_subvol_rm_allowed` mount option.
// unsafe: the btrfs ioctls (subvolume create, snapshot, delete, read-only flag).
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Getter, Opcode, Setter};

use super::{check_key, io_err, keys_in, Driver, ImageLayers, Result, Snapshot, SnapshotError, Snapshotter};
use crate::digest::Digest;
use crate::unpack::{self, Compression, UnpackOptions, WhiteoutMode};

/// `struct btrfs_ioctl_vol_args` (linux/btrfs.h): `__s64 fd; char name[BTRFS_PATH_NAME_MAX + 1]`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`: fd, transid, flags, a 32-byte union (size and
/// qgroup_inherit pointer, or `unused[4]`), then a union of `name[BTRFS_SUBVOL_NAME_MAX + 1]`
/// with devid/subvolid.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

const _: () = assert!(size_of::<VolArgs>() == 4096 && size_of::<VolArgsV2>() == 4096);

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const SUBVOL_CREATE: Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 14);
const SNAP_DESTROY: Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 15);
const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(BTRFS_IOCTL_MAGIC, 25);
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(BTRFS_IOCTL_MAGIC, 26);
const SNAP_DESTROY_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 63);
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
/// The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOL_ROOT_INO: u64 = 256;

const BUILDING: &str = ".building-";

fn btrfs_err(path: &Path, op: &'static str) -> impl FnOnce(Errno) -> SnapshotError {
    let path = path.to_owned();
    move |e| SnapshotError::Btrfs { path, op, source: e.into() }
}

fn open_dir(path: &Path) -> Result<rustix::fd::OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_err(path, "opening")(e.into()))
}

fn copy_name<const N: usize>(name: &str, path: &Path) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    if name.len() >= N || name.contains('/') || name.contains('\0') {
        return Err(SnapshotError::Btrfs { path: path.to_owned(), op: "name", source: io::Error::other("bad name") });
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

/// Creates an empty subvolume `parent/name`.
fn subvol_create(parent: &Path, name: &str) -> Result<()> {
    let path = parent.join(name);
    let args = VolArgs { fd: 0, name: copy_name(name, &path)? };
    let dir = open_dir(parent)?;
    // SAFETY: SUBVOL_CREATE reads a btrfs_ioctl_vol_args, which VolArgs is, byte for byte.
    unsafe { ioctl(&dir, Setter::<SUBVOL_CREATE, VolArgs>::new(args)) }.map_err(btrfs_err(&path, "subvolume create"))
}

/// Makes `parent/name` a writable snapshot of the subvolume `source`.
fn snapshot(source: &Path, parent: &Path, name: &str) -> Result<()> {
    let path = parent.join(name);
    let src = open_dir(source)?;
    let args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: copy_name(name, &path)?,
    };
    let dir = open_dir(parent)?;
    // SAFETY: SNAP_CREATE_V2 reads a btrfs_ioctl_vol_args_v2, which VolArgsV2 is; `src`
    // outlives the call.
    unsafe { ioctl(&dir, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(args)) }.map_err(btrfs_err(&path, "snapshot"))
}

/// Sets the read-only flag of the subvolume at `path`.
fn set_readonly(path: &Path) -> Result<()> {
    let fd = open_dir(path)?;
    // SAFETY: SUBVOL_GETFLAGS writes one u64.
    let flags = unsafe { ioctl(&fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }.map_err(btrfs_err(path, "get flags"))?;
    // SAFETY: SUBVOL_SETFLAGS reads one u64.
    unsafe { ioctl(&fd, Setter::<SUBVOL_SETFLAGS, u64>::new(flags | BTRFS_SUBVOL_RDONLY)) }
        .map_err(btrfs_err(path, "set read-only"))
}

/// Destroys the subvolume `parent/name`, and first any subvolumes nested in it (a
/// container may have made some; btrfs refuses to delete a subvolume that has them).
fn destroy(parent: &Path, name: &str) -> Result<()> {
    match destroy_one(parent, name) {
        Err(Errno::NOTEMPTY) => {
            destroy_nested(&parent.join(name))?;
            destroy_one(parent, name).map_err(btrfs_err(&parent.join(name), "subvolume delete"))
        }
        other => other.map_err(btrfs_err(&parent.join(name), "subvolume delete")),
    }
}

fn destroy_one(parent: &Path, name: &str) -> std::result::Result<(), Errno> {
    let dir = rustix::fs::open(parent, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let path = parent.join(name);
    let v2 = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: copy_name(name, &path).map_err(|_| Errno::NAMETOOLONG)?,
    };
    // SAFETY: SNAP_DESTROY_V2 reads a btrfs_ioctl_vol_args_v2, which VolArgsV2 is.
    match unsafe { ioctl(&dir, Setter::<SNAP_DESTROY_V2, VolArgsV2>::new(v2)) } {
        // Linux before 5.7 has only the first version.
        Err(Errno::NOTTY | Errno::OPNOTSUPP) => {
            let v1 = VolArgs { fd: 0, name: copy_name(name, &path).map_err(|_| Errno::NAMETOOLONG)? };
            // SAFETY: SNAP_DESTROY reads a btrfs_ioctl_vol_args, which VolArgs is.
            unsafe { ioctl(&dir, Setter::<SNAP_DESTROY, VolArgs>::new(v1)) }
        }
        other => other,
    }
}

fn destroy_nested(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err(dir, "listing"))? {
        let entry = entry.map_err(io_err(dir, "listing"))?;
        if !entry.file_type().map_err(io_err(entry.path(), "stat"))?.is_dir() {
            continue;
        }
        let meta = entry.metadata().map_err(io_err(entry.path(), "stat"))?;
        if meta.ino() == SUBVOL_ROOT_INO {
            destroy(dir, &entry.file_name().to_string_lossy())?;
        } else {
            destroy_nested(&entry.path())?;
        }
    }
    Ok(())
}

/// Deletes `parent/name` whatever it is: a subvolume (with nested ones), a plain tree, or nothing.
fn delete(parent: &Path, name: &str) -> Result<bool> {
    let path = parent.join(name);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&path, "stat")(e)),
        Ok(meta) if meta.is_dir() && meta.ino() == SUBVOL_ROOT_INO => destroy(parent, name).map(|()| true),
        Ok(_) => fs::remove_dir_all(&path).map(|()| true).map_err(io_err(&path, "deleting")),
    }
}

/// Btrfs snapshots of images, kept in the store at `root` (which must be on btrfs).
pub struct BtrfsSnapshotter {
    images: PathBuf,
    /// The store's file objects, whose extents image subvolumes share.
    objects: PathBuf,
    containers: PathBuf,
    lock: PathBuf,
}

struct Lock(#[allow(dead_code)] File);

impl BtrfsSnapshotter {
    pub fn new(store_root: &Path) -> Result<Self> {
        let base = store_root.join("btrfs");
        let (images, containers) = (base.join("images"), base.join("containers"));
        for dir in [&base, &images, &containers] {
            crate::private::dir(dir).map_err(io_err(dir, "creating"))?;
        }
        let objects = store_root.join(crate::objects::DIR);
        Ok(BtrfsSnapshotter { images, objects, containers, lock: base.join("lock") })
    }

    fn lock(&self, op: FlockOperation) -> Result<Lock> {
        let file = crate::private::create_file(&self.lock, false).map_err(io_err(&self.lock, "opening"))?;
        rustix::fs::flock(&file, op).map_err(|e| io_err(&self.lock, "flock")(e.into()))?;
        Ok(Lock(file))
    }

    /// The read-only subvolume of `image`, made first if need be. Call with the lock held
    /// exclusively.
    fn materialise(&self, image: &ImageLayers) -> Result<PathBuf> {
        let id = &image.id;
        let path = self.images.join(id.hex());
        if path.exists() {
            return Ok(path);
        }
        let tmp_name = format!("{BUILDING}{}-{}", id.hex(), std::process::id());
        let tmp = self.images.join(&tmp_name);
        delete(&self.images, &tmp_name)?; // a dead build of an earlier process with our pid
        subvol_create(&self.images, &tmp_name)?;
        let built = self.apply_layers(image, &tmp).and_then(|()| {
            set_readonly(&tmp)?;
            let fd = open_dir(&tmp)?;
            rustix::fs::syncfs(&fd).map_err(|e| io_err(&tmp, "syncfs")(e.into()))?;
            fs::rename(&tmp, &path).map_err(io_err(&tmp, "renaming into place"))
        });
        if let Err(e) = built {
            if let Err(cleanup) = delete(&self.images, &tmp_name) {
                tracing::warn!("removing the half-built image {}: {cleanup}", tmp.display());
            }
            return Err(e);
        }
        Ok(path)
    }

    /// Applies the image's layer blobs, base first, deleting what whiteouts name.
    fn apply_layers(&self, image: &ImageLayers, dest: &Path) -> Result<()> {
        // The files share their extents with the store's identical file objects.
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Delete,
            allow_devices: true,
            objects: Some(self.objects.clone()),
            reflink: true,
        };
        for layer in &image.layers {
            let layer_err =
                |source| SnapshotError::Layer { image: image.id.clone(), blob: layer.blob_digest.clone(), source };
            let path = &layer.blob;
            let file = File::open(path).map_err(io_err(path, "opening the layer blob"))?;
            let compression = Compression::from_media_type(&layer.media_type).map_err(layer_err)?;
            let tar = unpack::decompress(BufReader::with_capacity(1 << 20, file), compression).map_err(layer_err)?;
            let stats = unpack::apply_tar(tar, dest, &opts).map_err(layer_err)?;
            if stats.diff_id != layer.diff_id {
                return Err(SnapshotError::DiffIdMismatch {
                    image: image.id.clone(),
                    blob: layer.blob_digest.clone(),
                    expected: layer.diff_id.clone(),
                    found: stats.diff_id,
                });
            }
        }
        Ok(())
    }
}

impl BtrfsSnapshotter {
    /// Container `key`'s subvolume, if it exists.
    fn mount_point(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        let rootfs = self.containers.join(key);
        if rootfs.symlink_metadata().is_err() {
            return Err(SnapshotError::NotFound { key: key.to_owned() });
        }
        Ok(rootfs)
    }
}

impl Snapshotter for BtrfsSnapshotter {
    fn driver(&self) -> Driver {
        Driver::Btrfs
    }

    /// `ephemeral` changes nothing: the snapshot is deleted at teardown either way.
    fn prepare(&self, key: &str, image: &ImageLayers, ephemeral: bool) -> Result<Snapshot> {
        check_key(key)?;
        let rootfs = self.containers.join(key);
        if rootfs.symlink_metadata().is_ok() {
            return Err(SnapshotError::AlreadyExists { key: key.to_owned(), path: rootfs });
        }
        let source = self.images.join(image.id.hex());
        // Shared: prune (exclusive) cannot delete the image between the check and the snapshot.
        let mut _lock = self.lock(FlockOperation::LockShared)?;
        if !source.exists() {
            drop(_lock);
            _lock = self.lock(FlockOperation::LockExclusive)?;
            self.materialise(image)?;
        }
        match snapshot(&source, &self.containers, key) {
            Err(SnapshotError::Btrfs { source: e, .. }) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(SnapshotError::AlreadyExists { key: key.to_owned(), path: rootfs })
            }
            Err(e) => Err(e),
            Ok(()) => {
                tracing::debug!("btrfs snapshot of image {} at {}", image.id, rootfs.display());
                Ok(Snapshot { key: key.to_owned(), rootfs, driver: Driver::Btrfs, ephemeral })
            }
        }
    }

    fn remove(&self, key: &str) -> Result<()> {
        check_key(key)?;
        delete(&self.containers, key).map(drop)
    }

    /// A subvolume is no mount: a stopped container holds nothing.
    fn unmount(&self, key: &str) -> Result<()> {
        self.mount_point(key).map(drop)
    }

    fn mount(&self, key: &str, _image: &ImageLayers) -> Result<PathBuf> {
        self.mount_point(key)
    }

    /// The snapshot against its image's subvolume, which it was made from: a walk of
    /// both (`btrfs subvolume find-new` would name changed files but not deletions).
    fn changes(&self, key: &str, image: &ImageLayers) -> Result<Vec<super::diff::Change>> {
        let tree = self.mount_point(key)?;
        let base = self.images.join(image.id.hex());
        if base.symlink_metadata().is_err() {
            return Err(SnapshotError::NotFound { key: format!("image {}", image.id) });
        }
        Ok(super::diff::tree_changes(&base, &tree)?)
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut keys = keys_in(&self.containers)?;
        keys.sort();
        Ok(keys)
    }

    /// A btrfs snapshot keeps no separate record of its writes.
    fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Err(SnapshotError::NoUpper { key: key.to_owned(), driver: Driver::Btrfs })
    }

    fn prune(&self, live_images: &[Digest]) -> Result<Vec<Digest>> {
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let mut pruned = Vec::new();
        for entry in fs::read_dir(&self.images).map_err(io_err(&self.images, "listing"))? {
            let name = entry.map_err(io_err(&self.images, "listing"))?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(BUILDING) {
                // Builds hold the lock exclusively: under it, any build is a dead one.
                delete(&self.images, name)?;
            } else if let Ok(id) = Digest::from_hex(name) {
                if !live_images.contains(&id) {
                    delete(&self.images, name)?;
                    pruned.push(id);
                }
            }
        }
        pruned.sort();
        Ok(pruned)
    }
}
