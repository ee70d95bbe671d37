//! The documents racker writes itself, for images that came without them: a manifest
//! for a config and layers (docker save archives, rootfs imports, commits) and the
//! config of an imported root filesystem.
//!
//! Their bytes are their digests, which the store records: keys are written in sorted
//! order (serde_json's map), as they always have been, so the same inputs give the same
//! manifest digest from one racker version to the next.

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};

use super::Platform;
use crate::digest::Digest;

/// A JSON document in its canonical bytes: sorted keys, no whitespace.
fn canonical(document: &impl serde::Serialize) -> Vec<u8> {
    let value = serde_json::to_value(document).expect("an OCI document always serialises");
    serde_json::to_vec(&value).expect("a JSON value always serialises")
}

/// An OCI image manifest (schema 2) for `config` and `layers`, bottom layer first.
pub fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> Vec<u8> {
    let manifest: ImageManifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("a manifest with its schema version, config and layers is complete");
    canonical(&manifest)
}

/// The config of a one-layer image made from a root filesystem for `platform`, with one
/// history entry; `created` is an RFC 3339 time.
pub fn rootfs_config(platform: &Platform, diff_id: &Digest, created: &str, created_by: &str, comment: &str) -> Vec<u8> {
    rootfs_config_with(platform, diff_id, created, created_by, comment, &serde_json::json!({}), None)
}

/// [`rootfs_config`] with a run configuration (`racker import --change`) and a message
/// (`--message`), which docker keeps as the image's `comment` as well as the history's.
pub fn rootfs_config_with(
    platform: &Platform,
    diff_id: &Digest,
    created: &str,
    created_by: &str,
    comment: &str,
    run_config: &serde_json::Value,
    message: Option<&str>,
) -> Vec<u8> {
    let mut config = serde_json::json!({
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": run_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": created, "created_by": created_by, "comment": message.unwrap_or(comment) }],
    });
    if let Some(message) = message {
        config["comment"] = message.into();
    }
    if let Some(variant) = &platform.variant {
        config["variant"] = serde_json::Value::String(variant.clone());
    }
    canonical(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_keep_their_bytes() {
        let config = Digest::of(b"config");
        let layer = Digest::of(b"layer");
        let bytes = manifest(
            Descriptor::new(MediaType::ImageConfig, 6, &config),
            vec![Descriptor::new(MediaType::Other("application/x-unknown".into()), 5, &layer)],
        );
        // What racker wrote before the manifest was built from oci-spec's types.
        let expected = format!(
            r#"{{"config":{{"digest":"{config}","mediaType":"application/vnd.oci.image.config.v1+json","size":6}},"layers":[{{"digest":"{layer}","mediaType":"application/x-unknown","size":5}}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }
}
