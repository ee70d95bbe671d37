//! Layer unpacking: a (compressed) layer tar applied to a directory, safely.
//!
//! The store calls exactly this API: [`Compression::from_media_type`] picks the
//! decompressor from a descriptor, [`decompress`] checks the stream's magic bytes against
//! it, and [`apply_tar`] applies the tar to an empty staging directory, returning the
//! layer's `diff_id` and sizes in the same pass. The on-disk result is described in
//! `store-format.md`, section "Unpacked layers".
//!
//! Every file system operation goes through `*at` system calls relative to directory file
//! descriptors, and every directory an entry passes through is resolved with
//! `openat2(RESOLVE_BENEATH)`, so that no entry, symlink or hardlink in a hostile layer can
//! make the unpacker touch anything outside the destination directory.

mod apply;
mod compression;
mod extensions;
mod handoff;

use std::io;

use crate::digest::Digest;

pub use apply::{apply_tar, apply_tar_at};
pub use compression::{decompress, Compression};

/// What to do with OCI whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Convert them to overlayfs notation (a 0/0 character device, the
    /// `trusted.overlay.opaque` xattr), so the layer directory can be a `lowerdir`.
    /// The normal mode: each layer is applied to its own empty directory.
    Overlay,
    /// Apply them: delete what they name. For applying a layer in place on top of the
    /// materialised lower layers (e.g. a btrfs snapshot of the parent).
    Delete,
    /// Neither: `.wh.` names are ordinary files. For copying a tree that is not a
    /// layer (`racker cp`), where such a name is just a name.
    Plain,
}

/// How [`apply_tar`] treats a layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
    /// Whether character and block devices from the tar are created. FIFOs are always
    /// allowed, and so are the whiteout devices racker makes itself.
    pub allow_devices: bool,
    /// The store's `objects/`: regular files are stored there once and linked (see
    /// [`crate::objects`]); None writes every file in place.
    pub objects: Option<std::path::PathBuf>,
    /// With `objects`: each file is written in place and then cloned (`FICLONE`) from the
    /// identical object, where there is one, instead of linked to it: it shares the
    /// object's extents but not its inode. For trees whose files get written (btrfs image
    /// subvolumes, whose snapshots containers write to); stores no object itself.
    pub reflink: bool,
}

impl Default for UnpackOptions {
    /// Overlay whiteouts, no devices: the cautious choice.
    fn default() -> Self {
        UnpackOptions { whiteouts: WhiteoutMode::Overlay, allow_devices: false, objects: None, reflink: false }
    }
}

/// What [`apply_tar`] found and made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the whole decompressed tar stream, trailing zero blocks included.
    pub diff_id: Digest,
    /// Length of the decompressed tar stream in bytes.
    pub tar_size: u64,
    /// Sum of the sizes of the regular files created (hardlinks counted once).
    pub size: u64,
    /// Number of file system objects created (files, directories, links, nodes and
    /// whiteout devices; not directories that already existed).
    pub files: u64,
    /// The file objects this unpack stored (new to the store): a caller that does not
    /// keep the layer takes them back ([`crate::objects::Objects::forget`]).
    pub stored: Vec<String>,
}

/// Why a layer could not be unpacked. Every variant names what it is about, so that a
/// refused layer can be reported precisely.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type is not one of a layer tar this racker knows.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),

    /// The stream's magic bytes disagree with the compression the media type declares.
    #[error("layer declared as {expected} but its data is {found}")]
    CompressionMismatch { expected: Compression, found: Compression },

    /// An entry that would write outside the layer root: a `..` component, an absolute
    /// path, or a parent that resolves through a symlink out of the root.
    #[error("layer entry {entry:?}: {reason}")]
    UnsafePath { entry: String, reason: &'static str },

    /// A hardlink whose target is outside the layer root or missing from it.
    #[error("layer entry {entry:?}: hardlink target {target:?} {reason}")]
    HardlinkTarget { entry: String, target: String, reason: &'static str },

    /// A character or block device while [`UnpackOptions::allow_devices`] is false.
    #[error("layer entry {entry:?}: device nodes are not allowed in this layer")]
    DeviceNotAllowed { entry: String },

    /// An entry that is well-formed tar but cannot be applied (unsupported type,
    /// a parent that is not a directory, ...).
    #[error("layer entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },

    /// The tar stream could not be read: truncated, corrupt, or failed to decompress.
    #[error("corrupt layer tar ({context}): {source}")]
    Corrupt { context: String, source: io::Error },

    /// A file system operation failed while applying `entry` (`"."`: the root itself).
    #[error("layer entry {entry:?}: {action}: {source}")]
    Io { entry: String, action: &'static str, source: io::Error },
}
