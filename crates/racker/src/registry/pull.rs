//! `racker pull`: manifest (through an index to the host's platform), config, then the
//! layers, concurrently, each streamed once through digest check, decompression and
//! unpacking into the store. What the store has is not fetched; a repeat pull of an
//! unchanged tag costs one manifest request.

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::blob_reader::BlobSource;
use super::endpoint::Session;
use super::limits::MAX_DOCUMENT_BYTES;
use super::{AuthFiles, RegistryError, Result};
use crate::digest::Digest;
use crate::oci::{media_type, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Ingest, LayerInfo, NewImage, Store, StoreError};
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
    tracing::info!("pulling {reference}");
    if &remote != reference {
        tracing::info!("registries.conf: pulling {reference} from {remote}");
    }
    let session = Session::open(&remote, opts.tls_verify, &opts.auth)?;
    let origin = Origin { session: &session, remote: &remote, name: reference.to_string() };
    let top_ref = session.endpoint.oci_reference(&remote, None);
    session.authenticate(&top_ref)?;

    let (top_bytes, top_digest) = fetch_named(&origin, &top_ref, reference.digest())?;
    tracing::debug!("{reference}: manifest {top_digest}");
    if let Some(pulled) = up_to_date(store, reference, &top_digest)? {
        tracing::info!("{reference}: up to date, image {}", pulled.id);
        return Ok(pulled);
    }

    let manifest = resolve_manifest(&origin, top_bytes, &top_digest, &opts.platform)?;
    // Everything below reads through the same bounded, retrying reader.
    let cancelled = AtomicBool::new(false);
    let source = BlobSource::new(&session, &manifest.reference, &cancelled);
    let (config_bytes, diff_ids) = fetch_config(&origin, &source, &manifest.parsed)?;

    let ingest = store.ingest()?.with_progress(progress.clone());
    let manifest_blob = ingest.put_blob_bytes(&manifest.bytes, &manifest.media_type)?;
    let config_blob = ingest.put_blob_bytes(&config_bytes, manifest.parsed.config().media_type().as_ref())?;
    tracing::debug!("{reference}: config {}, {} layers", manifest.parsed.config().digest(), diff_ids.len());
    let layers = fetch_layers(&origin, &source, &ingest, manifest.parsed.layers(), &diff_ids, opts.jobs, &*progress)?;

    let tags = if reference.tag().is_some() { vec![reference.clone()] } else { vec![] };
    let repo_digest = Reference::parse(&format!("{}@{top_digest}", reference.name()))
        .map_err(|e| RegistryError::Store(StoreError::Reference(e)))?;
    let id = ingest.commit(NewImage {
        manifest: manifest_blob,
        config: config_blob,
        layers,
        tags,
        repo_digests: vec![repo_digest],
    })?;
    tracing::info!("{reference}: pulled, image {id}");
    Ok(Pulled { id, digest: top_digest, outcome: PullOutcome::Downloaded })
}

/// Where a pull fetches from, and the name its messages give the image.
struct Origin<'a> {
    session: &'a Session,
    /// The reference after registries.conf's rewrites: what is fetched.
    remote: &'a Reference,
    /// The reference as asked for: what messages name.
    name: String,
}

impl Origin<'_> {
    fn registry(&self) -> &str {
        self.remote.registry()
    }

    fn bad_content(&self, err: StoreError) -> RegistryError {
        bad_content(self.registry(), err)
    }
}

/// The document the reference names (a manifest or an index) and its digest, which must
/// be the one the reference gives, if it gives one.
fn fetch_named(origin: &Origin, top_ref: &oci_client::Reference, wanted: Option<&Digest>) -> Result<(Vec<u8>, Digest)> {
    let bytes = origin.session.document(top_ref, &media_type::manifest_types(), &origin.name)?;
    let found = Digest::of(&bytes);
    match wanted {
        Some(wanted) if wanted != &found => Err(origin.bad_content(StoreError::DigestMismatch {
            what: format!("manifest of {}", origin.name),
            expected: wanted.clone(),
            found,
        })),
        _ => Ok((bytes, found)),
    }
}

/// The store already has the image `top_digest` names: the pull ends with one manifest
/// request, and (re)tags it if the reference's tag pointed elsewhere.
fn up_to_date(store: &Store, reference: &Reference, top_digest: &Digest) -> Result<Option<Pulled>> {
    let Ok(id) = store.resolve(&format!("{}@{top_digest}", reference.name())) else {
        return Ok(None);
    };
    let name = reference.to_string();
    let outcome = match reference.tag() {
        Some(_) if store.resolve(&name).ok().as_ref() != Some(&id) => {
            store.tag(&id.to_string(), &name)?;
            PullOutcome::Downloaded
        }
        _ => PullOutcome::UpToDate,
    };
    Ok(Some(Pulled { id, digest: top_digest.clone(), outcome }))
}

/// The image manifest a pull installs, as fetched and as parsed.
struct Manifest {
    bytes: Vec<u8>,
    parsed: ImageManifest,
    media_type: String,
    /// The manifest by digest: where its config and layers are fetched relative to.
    reference: oci_client::Reference,
}

/// The manifest `top_bytes` is, or, for an index, the manifest it lists for `platform`
/// (fetched and checked against the index's digest).
fn resolve_manifest(origin: &Origin, top_bytes: Vec<u8>, top_digest: &Digest, platform: &Platform) -> Result<Manifest> {
    let name = &origin.name;
    let endpoint = &origin.session.endpoint;
    let value: serde_json::Value =
        serde_json::from_slice(&top_bytes).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    crate::oci::reject_schema1(&value).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    let (bytes, reference) = if value.get("mediaType").and_then(|m| m.as_str()).is_some_and(media_type::is_index) {
        let index: ImageIndex = serde_json::from_value(value).map_err(|e| invalid(format!("index of {name}"), e))?;
        let chosen = platform.select(&index).ok_or_else(|| {
            invalid(
                name.clone(),
                format!(
                    "no manifest for platform {platform} in the index (it has {}); choose one with --platform",
                    Platform::offered(&index).join(", ")
                ),
            )
        })?;
        let digest = chosen.digest().to_string();
        refuse_oversized(&format!("{name}: manifest {digest}"), chosen.size())?;
        let child = endpoint.oci_reference(origin.remote, Some(&digest));
        let bytes =
            origin.session.document(&child, &media_type::manifest_types(), &format!("{name} (manifest {digest})"))?;
        let found = Digest::of(&bytes);
        if found.to_string() != digest {
            let expected = Digest::try_from(chosen.digest()).map_err(|e| invalid(format!("index of {name}"), e))?;
            return Err(origin.bad_content(StoreError::DigestMismatch {
                what: format!("manifest {digest}"),
                expected,
                found,
            }));
        }
        (bytes, child)
    } else {
        (top_bytes, endpoint.oci_reference(origin.remote, Some(&top_digest.to_string())))
    };

    let parsed: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    let media_type = parsed.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| MediaType::ImageManifest.to_string())
    });
    Ok(Manifest { bytes, parsed, media_type, reference })
}

/// Downloads and checks the config, and returns it with its layer diff_ids (one per
/// layer of `manifest`).
fn fetch_config(origin: &Origin, source: &BlobSource, manifest: &ImageManifest) -> Result<(Vec<u8>, Vec<Digest>)> {
    let name = &origin.name;
    let config_digest =
        Digest::try_from(manifest.config().digest()).map_err(|e| invalid(format!("manifest of {name}"), e))?;
    let config_size = manifest.config().size();
    refuse_oversized(&format!("{name}: config {config_digest}"), config_size)?;
    let mut config_bytes = Vec::new();
    let mut config_reader = source.reader(config_digest.to_string(), config_size);
    config_reader.read_to_end(&mut config_bytes).map_err(|e| {
        config_reader.failure.take().unwrap_or_else(|| RegistryError::Download {
            registry: origin.registry().to_owned(),
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
        return Err(origin.bad_content(mismatch));
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("config {config_digest}"), e))?;
    let diff_ids =
        crate::oci::diff_ids(&config, manifest.layers().len()).map_err(|e| invalid(format!("image {name}"), e))?;
    Ok((config_bytes, diff_ids))
}

/// Downloads the layers, `jobs` at once, each straight into the store; the first failure
/// cancels the rest, and is the error reported.
fn fetch_layers(
    origin: &Origin,
    source: &BlobSource,
    ingest: &Ingest<'_>,
    layers: &[oci_spec::image::Descriptor],
    diff_ids: &[Digest],
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Vec<LayerInfo>> {
    let results = crate::pool::run_ordered(layers, jobs, Some(source.cancelled), |i, layer| {
        let digest = layer.digest().to_string();
        let label = digest.strip_prefix("sha256:").map(|h| &h[..12.min(h.len())]).unwrap_or(&digest).to_owned();
        progress.begin(&label, "Downloading", Some(layer.size()));
        let result =
            Digest::try_from(layer.digest()).map_err(|e| invalid(format!("layer {digest}"), e)).and_then(|expected| {
                let mut reader = source.reader(digest.clone(), layer.size());
                ingest
                    .put_layer(&mut reader, Some(&expected), Some(layer.media_type().as_ref()), Some(&diff_ids[i]))
                    .map_err(|e| reader.failure.take().unwrap_or_else(|| origin.bad_content(e)))
            });
        match &result {
            Ok(info) => progress.end(&label, if info.fetched { "Pull complete" } else { "Already exists" }),
            Err(_) => {
                source.cancelled.store(true, Ordering::Relaxed);
                progress.end(&label, "Failed");
            }
        }
        result
    });
    let mut infos = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for result in results {
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
    match first_error {
        Some((_, e)) => Err(e),
        None => Ok(infos),
    }
}
