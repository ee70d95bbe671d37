//! `racker pull`: manifest (through an index to the host's platform), config, then the
//! layers, concurrently, each streamed once through digest check, decompression and
//! unpacking into the store. What the store has is not fetched; a repeat pull of an
//! unchanged tag costs one manifest request.

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::blob_reader::BlobSource;
use super::endpoint::Session;
use super::limits::MAX_DOCUMENT_BYTES;
use super::{AuthFiles, RegistryError, Result};
use crate::digest::Digest;
use crate::oci::{media_type, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{LayerInfo, NewImage, Store, StoreError};
use crate::unpack::UnpackError;

pub struct PullOptions {
    pub platform: Platform,
    /// `Some(false)`: `--tls-verify=false`; None: decide per registry.
    pub tls_verify: Option<bool>,
    pub auth: AuthFiles,
    /// Layers downloaded at once (docker: 3).
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { platform: Platform::host(), tls_verify: None, auth: AuthFiles::from_env(), jobs: 3 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    Downloaded,
    UpToDate,
}

/// What a pull ended with: the image id, the digest the reference resolved to (an
/// index's, for multi-platform images, as docker reports it), and whether anything new came.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: Digest,
    pub digest: Digest,
    pub outcome: PullOutcome,
}

fn invalid(what: String, detail: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unsupported { what, detail: detail.to_string() }
}

/// A manifest or config is read whole into memory: one declared larger than racker
/// accepts is refused before a byte of it is fetched.
fn refuse_oversized(what: &str, declared: u64) -> Result<()> {
    if declared > MAX_DOCUMENT_BYTES {
        return Err(invalid(
            what.to_owned(),
            format!("declared {declared} bytes, more than the {} MiB racker accepts", MAX_DOCUMENT_BYTES >> 20),
        ));
    }
    Ok(())
}

/// A store error caused by what the registry sent (bytes that do not match their digest
/// or are not what their media type says) names the registry; others (disk full) not.
/// (A failed read, a cancelled pull among them, is the reader's own error.)
fn bad_content(registry: &str, err: StoreError) -> RegistryError {
    let from_registry = match &err {
        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => true,
        StoreError::Unpack { source, .. } => !matches!(source, UnpackError::Io { .. }),
        _ => false,
    };
    if from_registry {
        RegistryError::Content { registry: registry.to_owned(), source: err }
    } else {
        RegistryError::Store(err)
    }
}

/// Pulls `reference` into `store`.
/// A `[[registry]]` rewrite in registries.conf (`prefix` → `location`) changes where the
/// image is fetched from, not its name: the store records `reference`.
pub fn pull(store: &Store, reference: &Reference, opts: &PullOptions, progress: Arc<dyn Progress>) -> Result<Pulled> {
    let remote = super::config::rewrite(reference)?;
    if &remote != reference {
        tracing::info!("registries.conf: pulling {reference} from {remote}");
    }
    let registry = remote.registry().to_owned();
    let name = reference.to_string();
    let session = Session::open(&remote, opts.tls_verify, &opts.auth)?;
    let top_ref = session.endpoint.oci_reference(&remote, None);
    session.authenticate(&top_ref)?;
    let endpoint = &session.endpoint;

    let top_bytes = session.document(&top_ref, &media_type::manifest_types(), &name)?;
    let top_digest = Digest::of(&top_bytes);
    if let Some(wanted) = reference.digest() {
        if wanted != &top_digest {
            let mismatch = StoreError::DigestMismatch {
                what: format!("manifest of {name}"),
                expected: wanted.clone(),
                found: top_digest,
            };
            return Err(bad_content(&registry, mismatch));
        }
    }
    // Up to date: the store already has the image this digest names.
    if let Ok(id) = store.resolve(&format!("{}@{top_digest}", reference.name())) {
        let outcome = match reference.tag() {
            Some(_) if store.resolve(&name).ok().as_ref() != Some(&id) => {
                store.tag(&id.to_string(), &name)?;
                PullOutcome::Downloaded
            }
            _ => PullOutcome::UpToDate,
        };
        return Ok(Pulled { id, digest: top_digest, outcome });
    }

    let value: serde_json::Value =
        serde_json::from_slice(&top_bytes).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    crate::oci::reject_schema1(&value).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    let (manifest_bytes, manifest_ref) =
        if value.get("mediaType").and_then(|m| m.as_str()).is_some_and(media_type::is_index) {
            let index: ImageIndex =
                serde_json::from_value(value).map_err(|e| invalid(format!("index of {name}"), e))?;
            let chosen = opts.platform.select(&index).ok_or_else(|| {
                invalid(
                    name.clone(),
                    format!(
                        "no manifest for platform {} in the index (it has {}); choose one with --platform",
                        opts.platform,
                        Platform::offered(&index).join(", ")
                    ),
                )
            })?;
            let digest = chosen.digest().to_string();
            refuse_oversized(&format!("{name}: manifest {digest}"), chosen.size())?;
            let child = endpoint.oci_reference(&remote, Some(&digest));
            let bytes =
                session.document(&child, &media_type::manifest_types(), &format!("{name} (manifest {digest})"))?;
            let found = Digest::of(&bytes);
            if found.to_string() != digest {
                let expected = Digest::try_from(chosen.digest()).map_err(|e| invalid(format!("index of {name}"), e))?;
                return Err(bad_content(
                    &registry,
                    StoreError::DigestMismatch { what: format!("manifest {digest}"), expected, found },
                ));
            }
            (bytes.to_vec(), child)
        } else {
            (top_bytes.to_vec(), endpoint.oci_reference(&remote, Some(&top_digest.to_string())))
        };

    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    let manifest_type = manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| MediaType::ImageManifest.to_string())
    });
    let config_digest: Digest =
        Digest::try_from(manifest.config().digest()).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    // Everything below reads through the same bounded, retrying reader.
    let cancelled = AtomicBool::new(false);
    let source = BlobSource::new(&session, &manifest_ref, &cancelled);
    let config_size = manifest.config().size();
    refuse_oversized(&format!("{name}: config {config_digest}"), config_size)?;
    let mut config_bytes = Vec::new();
    let mut config_reader = source.reader(config_digest.to_string(), config_size);
    config_reader.read_to_end(&mut config_bytes).map_err(|e| {
        config_reader.failure.take().unwrap_or_else(|| RegistryError::Download {
            registry: registry.clone(),
            digest: config_digest.to_string(),
            detail: e.to_string(),
        })
    })?;
    let found = Digest::of(&config_bytes);
    if found != config_digest {
        let mismatch = StoreError::DigestMismatch {
            what: format!("config {config_digest}"),
            expected: config_digest.clone(),
            found,
        };
        return Err(bad_content(&registry, mismatch));
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("config {config_digest}"), e))?;
    let diff_ids =
        crate::oci::diff_ids(&config, manifest.layers().len()).map_err(|e| invalid(format!("image {name}"), e))?;

    let ingest = store.ingest()?.with_progress(progress.clone());
    let manifest_blob = ingest.put_blob_bytes(&manifest_bytes, &manifest_type)?;
    let config_blob = ingest.put_blob_bytes(&config_bytes, manifest.config().media_type().as_ref())?;

    // Layers: a few workers take the next layer in turn; the first failure cancels the rest.
    let layers = manifest.layers();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerInfo>>>> = Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, layers.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= layers.len() || cancelled.load(Ordering::Relaxed) {
                    break;
                }
                let layer = &layers[i];
                let digest = layer.digest().to_string();
                let label = digest.strip_prefix("sha256:").map(|h| &h[..12.min(h.len())]).unwrap_or(&digest).to_owned();
                progress.begin(&label, "Downloading", Some(layer.size()));
                let result = Digest::try_from(layer.digest())
                    .map_err(|e| invalid(format!("layer {digest}"), e))
                    .and_then(|expected| {
                        let mut reader = source.reader(digest.clone(), layer.size());
                        ingest
                            .put_layer(
                                &mut reader,
                                Some(&expected),
                                Some(layer.media_type().as_ref()),
                                Some(&diff_ids[i]),
                            )
                            .map_err(|e| reader.failure.take().unwrap_or_else(|| bad_content(&registry, e)))
                    });
                match &result {
                    Ok(info) => progress.end(&label, if info.fetched { "Pull complete" } else { "Already exists" }),
                    Err(_) => {
                        cancelled.store(true, Ordering::Relaxed);
                        progress.end(&label, "Failed");
                    }
                }
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
            });
        }
    });
    let mut infos = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        match result {
            Some(Ok(info)) => infos.push(info),
            // A layer never started because another failed first.
            None => {}
            Some(Err(e)) => {
                // Cancellation errors are consequences; report the cause.
                let is_cancel = matches!(e, RegistryError::Cancelled);
                if first_error.is_none() || (!is_cancel && first_error.as_ref().is_some_and(|(c, _)| *c)) {
                    first_error = Some((is_cancel, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }

    let tags = if reference.tag().is_some() { vec![reference.clone()] } else { vec![] };
    let repo_digest = Reference::parse(&format!("{}@{top_digest}", reference.name()))
        .map_err(|e| RegistryError::Store(StoreError::Reference(e)))?;
    let id = ingest.commit(NewImage {
        manifest: manifest_blob,
        config: config_blob,
        layers: infos,
        tags,
        repo_digests: vec![repo_digest],
    })?;
    Ok(Pulled { id, digest: top_digest, outcome: PullOutcome::Downloaded })
}
