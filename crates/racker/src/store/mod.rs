//! The content-addressed image store: blobs by digest, layers unpacked once, and a
//! SQLite database that says what exists and what refers to what.
//!
//! ```text
//! $ROOT/
//! ├── store-version        format version (store-format.md)
//! ├── racker.db            metadata: images, tags, layers, blobs (WAL mode)
//! ├── lock                 flock: shared while adding, exclusive while collecting
//! ├── blobs/sha256/<hex>   verified, immutable blobs
//! ├── layers/<id>/         unpacked layers, overlayfs lowers
//! ├── ingest/<op>/         staging area of operations in progress
//! ├── containers/<id>/     console logs of kept and detached containers
//! └── volumes/<name>/_data named volumes' files
//! ```
//!
//! Directories are 0700 and files 0600: layers hold setuid binaries and device nodes,
//! the database and logs containers' environments (see [`crate::private`]).
//!
//! Adding goes through an [`Ingest`] (stage, then commit in one transaction);
//! removing is a metadata change; files go only in [`Store::gc`]. That split keeps a
//! failed or killed operation from ever leaving a half-written image visible.

mod blobs;
mod containers;
mod dedupe;
mod durability;
mod fsck;
mod gc;
mod ingest;
mod metadata;
mod missing;
mod save;
mod volumes;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::FlockOperation;

use crate::digest::Digest;
use crate::private;
use crate::reference::ReferenceError;
use crate::unpack::UnpackError;

pub use containers::{ContainerRecord, ContainerState, Leader};
pub use dedupe::DedupeReport;
pub use fsck::{FsckReport, Problem, Repair};
pub use gc::{DiskUsage, GcReport};
pub use ingest::{BlobInfo, Ingest, LayerInfo, NewImage};
pub use metadata::{ImageRecord, ImageSummary, LayerRecord, Removal};
pub use save::{save, ArchiveFormat, SaveImage};
pub use volumes::{is_valid_volume_name, VolumeRecord};

/// The on-disk format version this build reads and writes (store-format.md).
pub const FORMAT_VERSION: u32 = 1;
/// Default store root, as `/var/lib/docker` is docker's.
pub const DEFAULT_ROOT: &str = "/var/lib/racker";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("store database {path}: {source}")]
    Database { path: PathBuf, source: rusqlite::Error },
    #[error("store at {path} has format version {found}, this racker reads up to {FORMAT_VERSION}: upgrade racker")]
    NewerFormat { path: PathBuf, found: String },
    #[error("store database {path} has schema version {found}, this racker knows up to {known}: it was written by a newer racker; upgrade racker")]
    NewerSchema { path: PathBuf, found: usize, known: usize },
    #[error("{what} digest mismatch: expected {expected}, got {found}; the data is corrupt or was tampered with")]
    DigestMismatch { what: String, expected: Digest, found: Digest },
    #[error("{what} size mismatch: expected {expected} bytes, got {found}")]
    SizeMismatch { what: String, expected: u64, found: u64 },
    #[error("layer {blob}: {source}")]
    Unpack { blob: String, source: UnpackError },
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("{name} is ambiguous: it matches {count} images; give more of the id")]
    AmbiguousImage { name: String, count: usize },
    #[error("unable to delete {id} (must be forced): image is referenced by {tags} tags; untag them or use -f")]
    ImageInUse { id: String, tags: usize },
    #[error("unable to remove image {id}: container {container} uses it; remove the container first (racker rm {container})")]
    ImageUsedByContainer { id: String, container: String },
    #[error("No such container: {0}")]
    ContainerNotFound(String),
    #[error("the container name {name:?} is already in use by container {id}; remove that container or choose another --name")]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidContainerName { name: String },
    #[error("No such volume: {0}")]
    VolumeNotFound(String),
    #[error("invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters")]
    InvalidVolumeName { name: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// Where a blob lives in the store at `root`, for code that keeps only the root path
/// (a snapshotter outlives the [`Store`] it was opened from).
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    blobs::path(root, digest)
}

/// The directory of an unpacked layer in the store at `root`, by its `layers.id`.
pub fn layer_dir(root: &Path, id: i64) -> PathBuf {
    root.join("layers").join(id.to_string())
}

/// The store's directories, made at open.
const DIRS: [&str; 8] = ["", "blobs", "blobs/sha256", "layers", "objects", "ingest", "containers", "volumes"];
/// What else sits at the top of a store, tightened at open where it exists.
const OTHER_DIRS: [&str; 4] = ["snapshots", "btrfs", "btrfs/images", "btrfs/containers"];
const FILES: [&str; 8] = [
    "racker.db",
    "racker.db-wal",
    "racker.db-shm",
    "racker.db-journal",
    "lock",
    "store-version",
    "btrfs/lock",
    durability::UNSETTLED_OBJECTS,
];

/// Makes the store's directories 0700 and its files 0600 (store-format.md, "Modes"):
/// creates what is missing, tightens what an older racker left 0755 or 0644. Only the
/// top of the store is looked at, not the tree below (a few dozen system calls on each
/// open): no other user can traverse the root, nor, should it be loosened again, the
/// directories that hold layers, snapshots and logs.
fn make_private(root: &Path) -> Result<()> {
    for dir in DIRS {
        private::dir(&root.join(dir)).map_err(io_err(root.join(dir)))?;
    }
    for dir in OTHER_DIRS {
        private::tighten(&root.join(dir), private::DIR_MODE).map_err(io_err(root.join(dir)))?;
    }
    for file in FILES {
        private::tighten(&root.join(file), private::FILE_MODE).map_err(io_err(root.join(file)))?;
    }
    Ok(())
}

/// An open store. Cheap to share between threads of one process; several processes
/// may open the same root at once.
pub struct Store {
    root: PathBuf,
    db: Mutex<metadata::Db>,
}

/// A held `flock` on the store's lock file, released on drop.
pub(crate) struct StoreLock(#[allow(dead_code)] File);

impl Store {
    /// Opens the store at `root`, creating it (and migrating its database) as needed.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        make_private(&root)?;
        let version_file = root.join("store-version");
        match fs::read_to_string(&version_file) {
            Ok(v) if v.trim() == FORMAT_VERSION.to_string() => {}
            Ok(v) => return Err(StoreError::NewerFormat { path: root, found: v.trim().to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = root.join(format!("store-version.{}", std::process::id()));
                private::create_file(&tmp, true)
                    .and_then(|mut f| f.write_all(format!("{FORMAT_VERSION}\n").as_bytes()))
                    .map_err(io_err(&tmp))?;
                fs::rename(&tmp, &version_file).map_err(io_err(&version_file))?;
            }
            Err(e) => return Err(io_err(version_file)(e)),
        }
        let db_path = root.join("racker.db");
        // SQLite gives its WAL and shared-memory files the database file's mode.
        private::create_file(&db_path, false).map_err(io_err(&db_path))?;
        let db = metadata::Db::open(&db_path)?;
        Ok(Store { root, db: Mutex::new(db) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// Reads a whole (small) blob, such as a manifest or config.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io_err(path))
    }

    /// The directory of an unpacked layer, by its `layers.id`.
    pub fn layer_dir(&self, id: i64) -> PathBuf {
        layer_dir(&self.root, id)
    }

    /// Starts adding content: blobs and layers are staged, then committed as one image.
    pub fn ingest(&self) -> Result<Ingest<'_>> {
        Ingest::begin(self)
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, metadata::Db> {
        // A panic while holding the lock leaves the connection itself intact.
        self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn lock(&self, op: FlockOperation) -> Result<Option<StoreLock>> {
        let path = self.root.join("lock");
        let file = private::create_file(&path, false).map_err(io_err(&path))?;
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(Some(StoreLock(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_err(path)(e.into())),
        }
    }

    /// All images with their tags, newest first.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        self.db().images()
    }

    /// Finds an image by name (`debian`, `debian:12`, `x@sha256:..`), full id or id prefix.
    pub fn resolve(&self, name_or_id: &str) -> Result<Digest> {
        self.db().resolve(name_or_id)
    }

    /// Everything the store knows of one image.
    pub fn image(&self, id: &Digest) -> Result<ImageRecord> {
        self.db().image(id)
    }

    /// Points `target` (a reference) at the image `source` names, as `docker tag` does.
    pub fn tag(&self, source: &str, target: &str) -> Result<Digest> {
        let target = crate::reference::Reference::parse(target)?;
        let tag = target.tag().ok_or_else(|| StoreError::Invalid {
            what: format!("tag {target}"),
            reason: "a tag target cannot be a digest".into(),
        })?;
        let mut db = self.db();
        let id = db.resolve(source)?;
        db.set_tag(&target.name(), tag, &id)?;
        Ok(id)
    }

    /// Records that `repository@digest` names the image `id` (after a push, as docker does).
    pub fn add_repo_digest(&self, repository: &str, digest: &Digest, id: &Digest) -> Result<()> {
        self.db().set_repo_digest(repository, digest, id)
    }

    /// Removes a name or an image, as `docker rmi` does: a tag is untagged, and the image
    /// goes with its last tag; an id removes the image, and with `force` all its tags.
    /// Files stay until [`Store::gc`].
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<Removal> {
        self.db().remove(name_or_id, force)
    }
}
