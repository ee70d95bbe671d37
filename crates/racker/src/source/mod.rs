//! Where images come from before they are in the store: OCI image layouts (a
//! directory, or a tar of one), `docker save` archives, and plain rootfs tarballs.
//! Every source ends in the same [`Ingest`](crate::store::Ingest) path.

mod archive;
mod docker_archive;
mod oci_layout;
mod rootfs;
mod transport;

use std::io;
use std::path::PathBuf;

pub use archive::{ArchiveFs, DirFs, LayoutFs};
pub use oci_layout::import_layout;
pub use rootfs::{import_rootfs, import_rootfs_stream, import_rootfs_with, History, ImportOptions, RootfsInput};
pub use transport::{Layout, LayoutFormat, Transport};

use crate::digest::Digest;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a docker save archive or an OCI archive (it has neither manifest.json nor index.json); for a plain root filesystem tarball use `racker import`")]
    UnknownArchive { path: PathBuf },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: no image matches {wanted}; the layout has: {available}")]
    NoMatch { what: String, wanted: String, available: String },
    #[error("{url}: download failed: {reason}")]
    Download { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// An image a source added: its id and the names this source gave it, which are not
/// all the names the image may have in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub id: Digest,
    pub names: Vec<crate::reference::Reference>,
}

pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> SourceError {
    SourceError::Invalid { what: what.into(), reason: reason.to_string() }
}

/// `racker load`: a `docker save` archive or an OCI archive, possibly compressed.
/// Returns the images loaded, with the names the archive gives them.
pub fn load_archive(
    store: &Store,
    path: &std::path::Path,
    progress: std::sync::Arc<dyn crate::progress::Progress>,
) -> Result<Vec<Imported>> {
    let fs = ArchiveFs::open(path, &store.root().join("ingest"))?;
    load_from(store, &fs, progress)
}

/// `racker load` from a stream (standard input): the archive is spooled to a temporary
/// file first, since a tar's members are read in any order.
pub fn load_archive_stream(
    store: &Store,
    reader: impl io::Read,
    origin: &std::path::Path,
    progress: std::sync::Arc<dyn crate::progress::Progress>,
) -> Result<Vec<Imported>> {
    let fs = ArchiveFs::read_from(reader, origin, &store.root().join("ingest"))?;
    load_from(store, &fs, progress)
}

fn load_from(
    store: &Store,
    fs: &ArchiveFs,
    progress: std::sync::Arc<dyn crate::progress::Progress>,
) -> Result<Vec<Imported>> {
    if fs.exists("manifest.json") {
        docker_archive::import(store, fs, progress)
    } else if fs.exists("index.json") {
        import_layout(store, fs, None, &[], progress)
    } else {
        Err(SourceError::UnknownArchive { path: fs.origin().to_owned() })
    }
}
