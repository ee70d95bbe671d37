//! TEMPORARY STUB so the store compiles; replaced by the real unpacker (branch `unpack`).
use std::io::{BufRead, Read};
use std::path::Path;

use crate::digest::{Digest, HashingReader};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    pub fn from_media_type(mt: &str) -> Result<Compression, UnpackError> {
        if mt.ends_with("gzip") {
            Ok(Compression::Gzip)
        } else if mt.ends_with("zstd") {
            Ok(Compression::Zstd)
        } else if mt.ends_with(".tar") {
            Ok(Compression::None)
        } else {
            Err(UnpackError::UnsupportedMediaType(mt.into()))
        }
    }
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }
    pub fn oci_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some("application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => Some("application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Zstd => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Xz => None,
        }
    }
}

pub fn decompress<'a, R: BufRead + 'a>(
    reader: R,
    expected: Compression,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Ok(match expected {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(reader)?),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new(reader)),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    Overlay,
    Delete,
}
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
    pub allow_devices: bool,
}
impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            allow_devices: true,
        }
    }
}
#[derive(Clone, Debug)]
pub struct UnpackStats {
    pub diff_id: Digest,
    pub tar_size: u64,
    pub size: u64,
    pub files: u64,
}

pub fn apply_tar<R: Read>(
    tar: R,
    dest: &Path,
    _opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let mut hr = HashingReader::new(tar);
    let mut a = tar::Archive::new(&mut hr);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    let mut files = 0;
    let mut size = 0;
    for e in a.entries()? {
        let mut e = e?;
        files += 1;
        size += e.header().size().unwrap_or(0);
        e.unpack_in(dest)?;
    }
    let (diff_id, tar_size) = hr.finish()?;
    Ok(UnpackStats {
        diff_id,
        tar_size,
        size,
        files,
    })
}
