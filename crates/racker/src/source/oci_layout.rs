//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/...`), in a directory
//! (`racker pull oci:DIR[:REF]`) or in an archive (`racker load`).

use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{invalid, Imported, LayoutFs, Result, SourceError};
use crate::digest::Digest;
use crate::oci::{media_type, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Ingest, NewImage, Store};

pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", Digest::ALGORITHM, digest.hex())
}

fn descriptor_digest(desc: &Descriptor) -> Result<Digest> {
    Digest::try_from(desc.digest()).map_err(|e| invalid(format!("descriptor {}", desc.digest()), e))
}

/// Reads a blob named by a descriptor and checks its digest and size.
fn read_verified(fs: &dyn LayoutFs, desc: &Descriptor) -> Result<(Digest, Vec<u8>)> {
    let digest = descriptor_digest(desc)?;
    let bytes = fs.read_all(&blob_path(&digest))?;
    let found = Digest::of(&bytes);
    if found != digest {
        return Err(crate::store::StoreError::DigestMismatch {
            what: format!("blob {}", blob_path(&digest)),
            expected: digest,
            found,
        }
        .into());
    }
    if bytes.len() as u64 != desc.size() {
        return Err(crate::store::StoreError::SizeMismatch {
            what: format!("blob {digest}"),
            expected: desc.size(),
            found: bytes.len() as u64,
        }
        .into());
    }
    Ok((digest, bytes))
}

/// Imports the images of a layout's `index.json`: the one whose ref name is `wanted`,
/// or all of them. Images without a full name in their annotations get `default_names`.
pub fn import_layout(
    store: &Store,
    fs: &dyn LayoutFs,
    wanted: Option<&str>,
    default_names: &[Reference],
    progress: Arc<dyn Progress>,
) -> Result<Vec<Imported>> {
    let what = fs.origin().join("index.json").display().to_string();
    let index: ImageIndex = serde_json::from_slice(&fs.read_all("index.json")?).map_err(|e| invalid(&what, e))?;
    let annotation = |d: &Descriptor, key: &str| d.annotations().as_ref().and_then(|a| a.get(key)).cloned();
    let chosen: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match wanted {
            None => true,
            Some(w) => {
                annotation(d, REF_NAME).as_deref() == Some(w) || annotation(d, CONTAINERD_NAME).as_deref() == Some(w)
            }
        })
        .collect();
    if chosen.is_empty() {
        let available: Vec<String> = index.manifests().iter().filter_map(|d| annotation(d, REF_NAME)).collect();
        return Err(SourceError::NoMatch {
            what: fs.origin().display().to_string(),
            wanted: wanted.unwrap_or("an image").to_owned(),
            available: if available.is_empty() { "no named images".into() } else { available.join(", ") },
        });
    }
    let mut ids = Vec::new();
    for desc in chosen {
        let mut names: Vec<Reference> = [annotation(desc, CONTAINERD_NAME), annotation(desc, REF_NAME)]
            .into_iter()
            .flatten()
            .filter(|n| n.contains('/'))
            .filter_map(|n| Reference::parse(&n).ok())
            .collect();
        if names.is_empty() {
            names = default_names.to_vec();
        }
        // `load` gives no default: a ref name alone (`foo:1`, `latest`) is named as podman
        // names it, `localhost/foo:1`, `localhost/latest:latest`.
        if names.is_empty() {
            if let Some(name) = annotation(desc, REF_NAME) {
                names.push(Reference::parse_local(&name).map_err(|e| invalid(&what, e))?);
            }
        }
        let manifest = resolve_platform(fs, desc, &Platform::host())?;
        let ingest = store.ingest()?.with_progress(progress.clone());
        let image = import_manifest(&ingest, fs, &manifest, names.clone())?;
        ids.push(Imported { id: ingest.commit(image)?, names });
    }
    Ok(ids)
}

/// Follows an image index down to the manifest for `platform`.
fn resolve_platform(fs: &dyn LayoutFs, desc: &Descriptor, platform: &Platform) -> Result<Descriptor> {
    if !media_type::is_index(desc.media_type().as_ref()) {
        return Ok(desc.clone());
    }
    let (digest, bytes) = read_verified(fs, desc)?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index {digest}"), e))?;
    match platform.select(&index) {
        Some(m) => resolve_platform(fs, m, platform),
        None => Err(SourceError::NoMatch {
            what: format!("index {digest}"),
            wanted: format!("platform {platform}"),
            available: Platform::offered(&index).join(", "),
        }),
    }
}

/// Stages one image (manifest, config, layers) from a layout; the caller commits.
pub(crate) fn import_manifest(
    ingest: &Ingest<'_>,
    fs: &dyn LayoutFs,
    desc: &Descriptor,
    tags: Vec<Reference>,
) -> Result<NewImage> {
    let (digest, bytes) = read_verified(fs, desc)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest {digest}"), e))?;
    crate::oci::reject_schema1(&value).map_err(|e| invalid(format!("manifest {digest}"), e))?;
    let manifest: ImageManifest =
        serde_json::from_value(value).map_err(|e| invalid(format!("manifest {digest}"), e))?;
    let manifest_type = manifest.media_type().as_ref().unwrap_or(desc.media_type()).to_string();
    let manifest_blob = ingest.put_blob_bytes(&bytes, &manifest_type)?;

    let (config_digest, config_bytes) = read_verified(fs, manifest.config())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("config {config_digest}"), e))?;
    let config_blob = ingest.put_blob_bytes(&config_bytes, manifest.config().media_type().as_ref())?;
    let diff_ids = crate::oci::diff_ids(&config, manifest.layers().len())
        .map_err(|e| invalid(format!("image {config_digest}"), e))?;
    let mut layers = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        let blob_digest = descriptor_digest(layer)?;
        let path = blob_path(&blob_digest);
        let mut reader = fs.open(&path).map_err(|source| SourceError::Io { path: fs.origin().join(&path), source })?;
        ingest.progress().begin(blob_digest.short(), "Loading", Some(layer.size()));
        let info =
            ingest.put_layer(&mut reader, Some(&blob_digest), Some(layer.media_type().as_ref()), Some(diff_id))?;
        ingest.progress().end(blob_digest.short(), if info.fetched { "Loaded" } else { "Already exists" });
        if info.blob.size != layer.size() {
            return Err(crate::store::StoreError::SizeMismatch {
                what: format!("layer {blob_digest}"),
                expected: layer.size(),
                found: info.blob.size,
            }
            .into());
        }
        layers.push(info);
    }
    Ok(NewImage { manifest: manifest_blob, config: config_blob, layers, tags, repo_digests: vec![] })
}
