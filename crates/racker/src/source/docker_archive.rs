//! `docker save` archives: `manifest.json` lists each image's config file, its
//! `RepoTags` and its layer tars (uncompressed before docker 25, OCI blobs after).

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, MediaType};

use super::{invalid, Imported, LayoutFs, Result, SourceError};
use crate::digest::Digest;
use crate::oci::synthesize;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{NewImage, Store, StoreError};
use crate::unpack::Compression;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a member's file name promises: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(path: &str) -> Option<Digest> {
    let name = path.rsplit('/').next()?;
    Digest::from_hex(name.strip_suffix(".json").unwrap_or(name)).ok()
}

pub(crate) fn import(store: &Store, fs: &dyn LayoutFs, progress: Arc<dyn Progress>) -> Result<Vec<Imported>> {
    let what = fs.origin().join("manifest.json").display().to_string();
    let entries: Vec<Entry> = serde_json::from_slice(&fs.read_all("manifest.json")?).map_err(|e| invalid(&what, e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let config_bytes = fs.read_all(&entry.config)?;
        let config_digest = Digest::of(&config_bytes);
        if let Some(named) = digest_in_name(&entry.config) {
            if named != config_digest {
                return Err(StoreError::DigestMismatch {
                    what: format!("config {}", entry.config),
                    expected: named,
                    found: config_digest,
                }
                .into());
            }
        }
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("config {}", entry.config), e))?;
        let diff_ids = crate::oci::diff_ids(&config, entry.layers.len())
            .map_err(|e| invalid(format!("{what}: {}", entry.config), e))?;
        let tags = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map_err(|e| invalid(&what, e)))
            .collect::<Result<Vec<_>>>()?;

        let ingest = store.ingest()?.with_progress(progress.clone());
        let config_blob = ingest.put_blob_bytes(&config_bytes, MediaType::ImageConfig.as_ref())?;
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let ioerr = |source| SourceError::Io { path: fs.origin().join(path), source };
            let mut reader = BufReader::with_capacity(1 << 20, fs.open(path).map_err(ioerr)?);
            let compression = Compression::sniff(reader.fill_buf().map_err(ioerr)?);
            // An uncompressed layer's blob digest is its diff_id; otherwise the name may say it.
            let expected_blob =
                if compression == Compression::None { Some(diff_id.clone()) } else { digest_in_name(path) };
            let label = diff_id.short();
            ingest.progress().begin(label, "Loading", None);
            let media_type = compression.oci_media_type();
            let media_type = media_type.as_ref().map(MediaType::as_ref);
            let info = ingest.put_layer(&mut reader, expected_blob.as_ref(), media_type, Some(diff_id))?;
            ingest.progress().end(label, if info.fetched { "Loaded" } else { "Already exists" });
            layers.push(info);
        }
        let manifest = synthesize::manifest((&config_blob).into(), layers.iter().map(|l| (&l.blob).into()).collect());
        let manifest_blob = ingest.put_blob_bytes(&manifest, MediaType::ImageManifest.as_ref())?;
        let id = ingest.commit(NewImage {
            manifest: manifest_blob,
            config: config_blob,
            layers,
            tags: tags.clone(),
            repo_digests: vec![],
        })?;
        ids.push(Imported { id, names: tags });
    }
    Ok(ids)
}
