//! Snapshotters: an image's stored layers composed into a container's writable root file
//! system in milliseconds, and thrown away as fast.
//!
//! Two backends share one [`Snapshotter`] trait (and one conformance test suite). Like
//! containerd's snapshotters, they know layers, not images: [`ImageLayers::of`] resolves an
//! image in the store into the layer sources a backend composes, and the backend never
//! looks in the store's metadata itself.
//!
//! - [`OverlaySnapshotter`] stacks the store's unpacked layer directories as overlayfs
//!   lowers under a per-container upper directory. Nothing is copied: setup and teardown
//!   are a couple of mounts, whatever the image's size.
//! - [`BtrfsSnapshotter`] applies an image's layer tars once into a read-only subvolume and
//!   gives every container a writable btrfs snapshot of it (O(1), copy-on-write).
//!
//! [`open`] picks the backend from the store root's file system (btrfs there, overlay
//! elsewhere), unless a [`Driver`] is forced (`--storage-driver`).
//!
//! ```text
//! $ROOT/snapshots/<key>/            overlay, kept container
//! │   ├── upper/  work/             its writes, overlayfs bookkeeping
//! │   └── rootfs/                   the mount point: what the container sees
//! $ROOT/btrfs/images/<image hex>    btrfs: an image's layers applied, read-only subvolume
//! $ROOT/btrfs/containers/<key>      btrfs: a container's writable snapshot of it
//! $RUNTIME/<key>/                   overlay, ephemeral (--rm) container: a tmpfs holding
//!     ├── upper/  work/             its writes, gone with the tmpfs
//!     └── rootfs/                   the mount point
//! ```
//!
//! `$RUNTIME` is [`DEFAULT_RUNTIME_DIR`]`/<store>` (on the host's `/run` tmpfs, so a
//! reboot clears it; one directory per store) unless given to [`open_with`].

mod btrfs;
pub mod diff;
mod overlay;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::digest::Digest;
use crate::store::{ImageRecord, Store};
use crate::unpack::UnpackError;

pub use btrfs::BtrfsSnapshotter;
pub use overlay::{MountStep, Mounter, OverlaySnapshotter, SysMounter};

/// Where ephemeral overlay snapshots keep their tmpfs by default.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/racker/snapshots";

/// `statfs.f_type` of btrfs (linux/magic.h).
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// Which snapshotter backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Btrfs,
}

impl Driver {
    /// The driver [`open`] picks for a store at `root` when none is asked for: btrfs if
    /// the root is on btrfs, overlay otherwise (also when the root cannot be examined).
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    pub fn default_for(root: &Path) -> Driver {
        match rustix::fs::statfs(root) {
            Ok(s) if s.f_type as i64 == BTRFS_SUPER_MAGIC => Driver::Btrfs,
            _ => Driver::Overlay,
        }
    }
}

impl FromStr for Driver {
    type Err = SnapshotError;
    /// Parses a `--storage-driver` value: `overlay` (also `overlayfs`, `overlay2`) or `btrfs`.
    fn from_str(s: &str) -> Result<Driver> {
        match s {
            "overlay" | "overlayfs" | "overlay2" => Ok(Driver::Overlay),
            "btrfs" => Ok(Driver::Btrfs),
            _ => Err(SnapshotError::UnknownDriver { name: s.to_owned() }),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Overlay => "overlay",
            Driver::Btrfs => "btrfs",
        })
    }
}

/// A prepared container root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    /// The writable root file system, mounted (overlay) or a subvolume (btrfs), ready to use.
    pub rootfs: PathBuf,
    pub driver: Driver,
    pub ephemeral: bool,
}

/// One layer of an image, in both forms the store keeps it: each backend takes the one it
/// composes from (overlay the unpacked directory, btrfs the blob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSource {
    /// The layer unpacked, whiteouts in overlayfs notation: overlay stacks it as a lower.
    pub dir: PathBuf,
    /// The layer's blob as pulled: btrfs applies it.
    pub blob: PathBuf,
    pub blob_digest: Digest,
    /// How the blob is compressed.
    pub media_type: String,
    /// The digest of the uncompressed tar, checked as the blob is applied.
    pub diff_id: Digest,
}

/// The layers of image `id`, base first: everything a snapshotter needs to compose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    /// What the layers make up: the btrfs backend keeps the composed image under it (and
    /// [`Snapshotter::prune`] goes by it); errors name it.
    pub id: Digest,
    pub layers: Vec<LayerSource>,
}

impl ImageLayers {
    /// Where `store` keeps `image`'s layers: the one place that turns an image record into
    /// what a snapshotter composes.
    pub fn of(store: &Store, image: &ImageRecord) -> ImageLayers {
        let layers = image
            .layers
            .iter()
            .map(|layer| LayerSource {
                dir: store.layer_dir(layer.layer_id),
                blob: store.blob_path(&layer.blob_digest),
                blob_digest: layer.blob_digest.clone(),
                media_type: layer.media_type.clone(),
                diff_id: layer.diff_id.clone(),
            })
            .collect();
        ImageLayers { id: image.summary.id.clone(), layers }
    }
}

/// Composes images into container root file systems. Every method is safe to call from
/// several threads and processes at once for different keys.
pub trait Snapshotter: Send + Sync {
    fn driver(&self) -> Driver;

    /// Makes a writable root for container `key` from `image`'s layers. `ephemeral` (`--rm`)
    /// lets the backend keep the writes somewhere that vanishes at teardown or reboot.
    /// Fails with [`SnapshotError::AlreadyExists`] if `key` has a snapshot.
    fn prepare(&self, key: &str, image: &ImageLayers, ephemeral: bool) -> Result<Snapshot>;

    /// Makes a kept snapshot for container `key` as [`prepare`](Self::prepare) does, but
    /// leaves it as [`unmount`](Self::unmount) would (`racker create`: nothing needs the
    /// root before `start` mounts it); returns where [`mount`](Self::mount) puts the root.
    fn create(&self, key: &str, image: &ImageLayers) -> Result<Snapshot> {
        let snapshot = self.prepare(key, image, false)?;
        if let Err(e) = self.unmount(key) {
            if let Err(cleanup) = self.remove(key) {
                tracing::warn!("cleaning up the failed snapshot {key}: {cleanup}");
            }
            return Err(e);
        }
        Ok(snapshot)
    }

    /// Tears the snapshot of `key` down completely: unmounted, its writes deleted. A missing
    /// snapshot is not an error, so a half-made one (after a crash) can always be removed.
    fn remove(&self, key: &str) -> Result<()>;

    /// Keys of the snapshots on disk, sorted (also the stale ones a crash left behind).
    fn list(&self) -> Result<Vec<String>>;

    /// The directory that holds exactly what container `key` wrote, in overlayfs notation
    /// (whiteouts, opaque directories): what `commit` turns into a layer ([`diff`]).
    /// Only overlay snapshots have one; a btrfs snapshot is a whole copy of its image
    /// ([`SnapshotError::NoUpper`]).
    fn upper_dir(&self, key: &str) -> Result<PathBuf>;

    /// Releases what holds container `key`'s root while the container is stopped: its
    /// writes stay, nothing of it stays mounted (overlay: the overlay mount goes, upper
    /// and work directories stay; btrfs: nothing to do, a subvolume is no mount).
    /// Unmounting an unmounted snapshot is fine; a missing one is
    /// [`SnapshotError::NotFound`]. Callers end the container's processes first.
    fn unmount(&self, key: &str) -> Result<()>;

    /// Makes container `key`'s root usable again after [`unmount`](Self::unmount), with
    /// the same writes, at the same path, and returns that path. `image` must be the
    /// layers the snapshot was prepared from. Mounting a mounted snapshot returns its
    /// root as it is, so every user of a stopped container's root (start, cp, export,
    /// diff) simply mounts first and unmounts when done.
    fn mount(&self, key: &str, image: &ImageLayers) -> Result<PathBuf>;

    /// What container `key` changed of `image`'s files (`racker diff`), sorted by path:
    /// overlay reads its upper directory, btrfs compares the snapshot with its image's
    /// subvolume. Needs no mount.
    fn changes(&self, key: &str, image: &ImageLayers) -> Result<Vec<diff::Change>>;

    /// Deletes what the backend keeps per image for images not in `live_images` (and any
    /// half-built leftovers); returns the images whose data went. For `racker gc`.
    fn prune(&self, live_images: &[Digest]) -> Result<Vec<Digest>>;
}

/// Why a snapshot could not be made or removed. Each variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unknown storage driver {name:?}: expected overlay or btrfs")]
    UnknownDriver { name: String },
    #[error("invalid container key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("no snapshot for {key:?}: the container's writes are gone (it was removed, or ran with --rm)")]
    NotFound { key: String },
    #[error("the {driver} snapshot of {key:?} has no upper directory: commit needs the overlay storage driver (run the container with --storage-driver overlay)")]
    NoUpper { key: String, driver: Driver },
    #[error("a snapshot for {key:?} already exists at {path}")]
    AlreadyExists { key: String, path: PathBuf },
    #[error("the store root {root} is not on btrfs (file system magic {magic:#x}): use --storage-driver overlay, or put the store on a btrfs file system")]
    NotBtrfs { root: PathBuf, magic: i64 },
    #[error("{dir} is on overlayfs, which cannot hold a container's writable layer: put the store (--root) on another file system (tmpfs, ext4, xfs, or btrfs), or run the container with --rm")]
    UpperOnOverlay { dir: PathBuf },
    #[error("comparing the container's files: {0}")]
    Changes(#[from] diff::DiffError),
    #[error("{path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("mounting {fstype} on {target}: {step}: {source}")]
    Mount { target: PathBuf, fstype: &'static str, step: MountStep, source: io::Error },
    #[error("overlay mount options for {target} are {len} bytes, over the kernel's limit of {limit}, and this kernel has no lowerdir+")]
    OptionsTooLong { target: PathBuf, len: usize, limit: usize },
    #[error("image {image} has {layers} layers; overlayfs mounts at most {limit}")]
    TooManyLayers { image: Digest, layers: usize, limit: usize },
    #[error("cannot pass {path} in a classic overlay mount option string: it contains {ch:?}")]
    UnsafeMountPath { path: PathBuf, ch: char },
    #[error("unmounting {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
    #[error("btrfs {op} {path}: {source}")]
    Btrfs { path: PathBuf, op: &'static str, source: io::Error },
    #[error("image {image}: layer {blob}: {source}")]
    Layer { image: Digest, blob: Digest, source: UnpackError },
    #[error("image {image}: layer {blob} unpacks to {found}, the image says {expected}")]
    DiffIdMismatch { image: Digest, blob: Digest, expected: Digest, found: Digest },
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.into();
    move |source| SnapshotError::Io { path, action, source }
}

/// Opens the snapshotter for `store`: `driver`, or else btrfs if the store root is on
/// btrfs and overlay otherwise. Ephemeral overlay snapshots go to [`DEFAULT_RUNTIME_DIR`]`/<store>`,
/// one directory per store (the first 12 hex of the sha256 of its canonical root path).
pub fn open(store: &Store, driver: Option<Driver>) -> Result<Box<dyn Snapshotter>> {
    // Each store has its own area: `list` (and so gc) must never see another store's
    // live containers.
    let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_owned());
    let id = Digest::of(root.as_os_str().as_encoded_bytes());
    // An older racker made these 0755 (new ones are made 0700 with the store's area).
    let area = Path::new(DEFAULT_RUNTIME_DIR);
    for dir in [area.parent().unwrap_or(area), area] {
        crate::private::tighten(dir, crate::private::DIR_MODE).map_err(io_err(dir, "chmod"))?;
    }
    open_with(store, driver, &area.join(id.short()))
}

/// [`open`] with ephemeral overlay snapshots under `runtime_dir` (tests use a temporary one).
pub fn open_with(store: &Store, driver: Option<Driver>, runtime_dir: &Path) -> Result<Box<dyn Snapshotter>> {
    let root = store.root();
    let magic = rustix::fs::statfs(root).map_err(|e| io_err(root, "statfs")(e.into()))?.f_type as i64;
    let on_btrfs = magic == BTRFS_SUPER_MAGIC;
    Ok(match driver {
        Some(Driver::Btrfs) if !on_btrfs => return Err(SnapshotError::NotBtrfs { root: root.to_owned(), magic }),
        Some(Driver::Btrfs) => Box::new(BtrfsSnapshotter::new(root)?),
        None if on_btrfs => Box::new(BtrfsSnapshotter::new(root)?),
        Some(Driver::Overlay) | None => Box::new(OverlaySnapshotter::new(root, runtime_dir, Box::new(SysMounter))?),
    })
}

/// Keys become directory names: one plain path component, as container names are.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = |reason| Err(SnapshotError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() || key.len() > 128 {
        return bad("it must be 1 to 128 characters long");
    }
    if !key.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Names of the entries of `dir` that are valid keys (none if `dir` does not exist).
pub(crate) fn keys_in(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, "listing")(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err(dir, "listing"))?.file_name();
        if let Some(name) = name.to_str().filter(|n| check_key(n).is_ok()) {
            keys.push(name.to_owned());
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_parse_from_flag_values() {
        assert_eq!("overlay".parse::<Driver>().unwrap(), Driver::Overlay);
        assert_eq!("overlay2".parse::<Driver>().unwrap(), Driver::Overlay);
        assert_eq!("btrfs".parse::<Driver>().unwrap(), Driver::Btrfs);
        assert!(matches!("zfs".parse::<Driver>(), Err(SnapshotError::UnknownDriver { .. })));
    }

    #[test]
    fn keys_are_single_safe_path_components() {
        for ok in ["web", "a.b-c_1", "0"] {
            check_key(ok).unwrap();
        }
        for bad in ["", "..", ".hidden", "a/b", "-x", "a b", &"x".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
