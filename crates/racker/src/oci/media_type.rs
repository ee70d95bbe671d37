//! Media types racker reads and writes. The OCI ones are oci-spec's
//! [`MediaType`]; the Docker v2 types, which oci-spec does not name, are here, once.

use oci_spec::image::MediaType;

/// A Docker v2 schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list: the Docker family's image index.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker layer, an uncompressed tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// A Docker layer, a gzipped tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// A Docker layer fetched from elsewhere than the registry (Windows base layers), gzipped.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Manifests and indexes of both families: what a pull asks a registry for, the OCI
/// manifest first (the type assumed for a manifest that names none).
pub fn manifest_types() -> [MediaType; 4] {
    [
        MediaType::ImageManifest,
        MediaType::ImageIndex,
        MediaType::Other(DOCKER_MANIFEST.to_owned()),
        MediaType::Other(DOCKER_MANIFEST_LIST.to_owned()),
    ]
}

/// Whether a document of this type lists manifests per platform (an OCI index or a
/// Docker manifest list) rather than being one image's manifest.
pub fn is_index(media_type: &str) -> bool {
    matches!(MediaType::from(media_type), MediaType::ImageIndex) || media_type == DOCKER_MANIFEST_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_of_both_families_are_recognised() {
        assert!(is_index("application/vnd.oci.image.index.v1+json"));
        assert!(is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index("application/vnd.oci.image.manifest.v1+json"));
        assert!(!is_index(DOCKER_MANIFEST));
        assert!(!is_index(""));
    }
}
