//! Layer unpacking: a (compressed) layer tar applied to a directory, safely.
//!
//! INTERFACE CONTRACT (implemented by the unpack work; the store calls exactly this):
//!
//! ```ignore
//! pub enum Compression { None, Gzip, Zstd, Xz }
//! impl Compression {
//!     /// From an OCI/Docker layer media type; Err for a type that is not a layer tar.
//!     pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError>;
//!     /// From the first bytes of a stream (magic numbers).
//!     pub fn sniff(head: &[u8]) -> Compression;
//!     /// The OCI media type of a layer with this compression (Xz has none: Err).
//!     pub fn oci_media_type(self) -> Option<&'static str>;
//! }
//! /// Wraps `reader` in a streaming decompressor, after checking the magic against `expected`.
//! pub fn decompress<'a, R: BufRead + 'a>(reader: R, expected: Compression) -> Result<Box<dyn Read + 'a>, UnpackError>;
//!
//! pub enum WhiteoutMode { Overlay, Delete }
//! pub struct UnpackOptions { pub whiteouts: WhiteoutMode, pub allow_devices: bool }
//! pub struct UnpackStats { pub diff_id: Digest, pub tar_size: u64, pub size: u64, pub files: u64 }
//!
//! /// Applies the decompressed tar stream `tar` to `dest` (an existing directory),
//! /// hashing the stream as it goes (the diff_id).
//! pub fn apply_tar<R: Read>(tar: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError>;
//! ```
