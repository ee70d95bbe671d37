//! Layer compression: from media types, from magic bytes, and streaming decompressors.

use std::fmt;
use std::io::{BufRead, Read};

use oci_spec::image::MediaType;

use super::UnpackError;
use crate::oci::media_type::{DOCKER_FOREIGN_LAYER_GZIP, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR};

/// How a layer tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// Only for rootfs tarballs (`racker import`); no layer media type uses it.
    Xz,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

impl Compression {
    /// From an OCI/Docker layer media type; Err for a type that is not a layer tar.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        Ok(match MediaType::from(media_type) {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
            MediaType::Other(docker) => match docker.as_str() {
                DOCKER_LAYER_TAR => Compression::None,
                DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => Compression::Gzip,
                _ => return Err(UnpackError::UnsupportedMediaType(docker)),
            },
            _ => return Err(UnpackError::UnsupportedMediaType(media_type.to_owned())),
        })
    }

    /// From the first bytes of a stream (magic numbers). Anything unrecognised is
    /// taken for a plain tar, which has no magic at offset 0.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer with this compression (Xz has none).
    pub fn oci_media_type(self) -> Option<MediaType> {
        match self {
            Compression::None => Some(MediaType::ImageLayer),
            Compression::Gzip => Some(MediaType::ImageLayerGzip),
            Compression::Zstd => Some(MediaType::ImageLayerZstd),
            Compression::Xz => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "an uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        })
    }
}

/// Wraps `reader` in a streaming decompressor, after checking the magic against `expected`.
///
/// The magic is peeked with `fill_buf`, so nothing is consumed. A plain-tar media type
/// whose data is gzip or zstd is accepted and decompressed accordingly: registries and
/// old dockers label compressed layers `...diff.tar` in practice. Any other disagreement
/// is a [`UnpackError::CompressionMismatch`]. Only the bytes the first `fill_buf` returns
/// are examined; every buffered reader returns at least the 6 bytes needed.
pub fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
    expected: Compression,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let head = reader
        .fill_buf()
        .map_err(|source| UnpackError::Corrupt { context: "reading the first bytes of the layer".into(), source })?;
    let found = Compression::sniff(head);
    let actual = match (expected, found) {
        (e, f) if e == f => e,
        (Compression::None, f @ (Compression::Gzip | Compression::Zstd)) => f,
        (expected, found) => return Err(UnpackError::CompressionMismatch { expected, found }),
    };
    Ok(match actual {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(reader)
                .map_err(|source| UnpackError::Corrupt { context: "starting the zstd decoder".into(), source })?,
        ),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar", None),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            ("application/vnd.docker.image.rootfs.diff.tar", None),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Gzip),
        ];
        for (mt, c) in cases {
            assert_eq!(Compression::from_media_type(mt).unwrap(), c, "{mt}");
        }
        for bad in ["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+bzip2", ""] {
            assert!(matches!(
                Compression::from_media_type(bad),
                Err(UnpackError::UnsupportedMediaType(m)) if m == bad
            ));
        }
        for c in [None, Gzip, Zstd] {
            assert_eq!(Compression::from_media_type(c.oci_media_type().unwrap().as_ref()).unwrap(), c);
        }
        assert_eq!(Xz.oci_media_type(), Option::None);
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"\xfd7zXZ\0\0"), Compression::Xz);
        assert_eq!(Compression::sniff(b"etc/\0\0\0"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
        assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(mut r: Box<dyn Read + '_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn decompresses_and_checks_magic() {
        let plain = b"not really a tar".to_vec();
        let gz = gzip(&plain);
        let zst = zstd::encode_all(&plain[..], 3).unwrap();

        assert_eq!(read_all(decompress(&gz[..], Compression::Gzip).unwrap()), plain);
        assert_eq!(read_all(decompress(&zst[..], Compression::Zstd).unwrap()), plain);
        assert_eq!(read_all(decompress(&plain[..], Compression::None).unwrap()), plain);
        // Mislabelled plain tar: sniffed.
        assert_eq!(read_all(decompress(&gz[..], Compression::None).unwrap()), plain);
        assert_eq!(read_all(decompress(&zst[..], Compression::None).unwrap()), plain);

        let err = decompress(&zst[..], Compression::Gzip).err().unwrap();
        assert!(matches!(
            err,
            UnpackError::CompressionMismatch { expected: Compression::Gzip, found: Compression::Zstd }
        ));
        assert_eq!(err.to_string(), "layer declared as gzip but its data is zstd");
        let err = decompress(&plain[..], Compression::Zstd).err().unwrap();
        assert!(matches!(
            err,
            UnpackError::CompressionMismatch { expected: Compression::Zstd, found: Compression::None }
        ));
    }
}
