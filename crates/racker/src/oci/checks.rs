//! Checks on OCI and Docker v2 image documents that every source applies alike
//! (registries, OCI layouts, docker archives), returning the reason as text for the
//! caller's own error type.

use oci_spec::image::ImageConfiguration;

use crate::digest::Digest;

/// The most layers an image may have: overlayfs stacks at most 500 lower directories
/// (the kernel's `OVL_MAX_STACK`), so an image with more could be stored but never run.
/// The overlay snapshotter checks the same number before it mounts.
pub const MAX_LAYERS: usize = 500;

/// Refuses an image of more than [`MAX_LAYERS`] layers.
pub fn check_layer_count(layers: usize) -> Result<(), String> {
    if layers > MAX_LAYERS {
        return Err(format!(
            "the image has {layers} layers; at most {MAX_LAYERS} can be mounted (overlayfs's stack limit)"
        ));
    }
    Ok(())
}

/// Refuses Docker schema 1 manifests, which carry no config and no diff_ids.
pub fn reject_schema1(manifest: &serde_json::Value) -> Result<(), String> {
    if manifest.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(
            "Docker schema 1 manifests are not supported; push the image again with a current docker or skopeo".into(),
        );
    }
    Ok(())
}

/// The config's layer diff_ids, which must be one per layer of the manifest.
/// Checked before any layer is read, so that an image that could not be mounted is
/// refused before it is downloaded.
pub fn diff_ids(config: &ImageConfiguration, layers: usize) -> Result<Vec<Digest>, String> {
    check_layer_count(layers)?;
    let ids: Vec<Digest> =
        config.rootfs().diff_ids().iter().map(|d| d.parse().map_err(|e| format!("{e}"))).collect::<Result<_, _>>()?;
    if ids.len() != layers {
        return Err(format!("the manifest lists {layers} layers but the config {} diff_ids", ids.len()));
    }
    Ok(ids)
}
