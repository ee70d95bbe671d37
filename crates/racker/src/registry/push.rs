//! `racker push`: an image from the store to a registry, so that stores on several
//! machines can share images through any registry. Blobs the registry has are skipped.

use std::sync::Arc;

use futures_util::TryStreamExt;
use oci_client::RegistryOperation;

use super::endpoint::Session;
use super::{classify, AuthFiles, RegistryError, Result};
use crate::digest::Digest;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::Store;

pub struct PushOptions {
    pub tls_verify: Option<bool>,
    pub auth: AuthFiles,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { tls_verify: None, auth: AuthFiles::from_env() }
    }
}

/// Pushes the image `local` names to `target`; returns the manifest digest.
pub fn push(
    store: &Store,
    local: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    let id = store.resolve(local)?;
    let image = store.image(&id)?;
    let registry = target.registry().to_owned();
    let name = target.to_string();
    let session = Session::open(target, opts.tls_verify, &opts.auth)?;
    let client = session.oci_client(target, RegistryOperation::Push)?;
    let runtime = &session.runtime;
    let oci_ref = session.endpoint.oci_reference(target, None);
    let err = |e| classify(e, &registry, &name);

    let blobs =
        image.layers.iter().map(|l| (l.blob_digest.clone(), l.blob_size)).chain([(image.config_digest.clone(), 0)]);
    for (digest, size) in blobs {
        let label = digest.short().to_owned();
        let digest_text = digest.to_string();
        if runtime.block_on(client.blob_exists(&oci_ref, &digest_text)).map_err(err)? {
            progress.end(&label, "Layer already exists");
            continue;
        }
        progress.begin(&label, "Pushing", (size > 0).then_some(size));
        let path = store.blob_path(&digest);
        let upload = async {
            let file = tokio::fs::File::open(&path).await?;
            let len = file.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
                .map_err(oci_client::errors::OciDistributionError::IoError);
            client.push_blob_stream(&oci_ref, stream, &digest_text, Some(len)).await
        };
        runtime.block_on(upload).map_err(err)?;
        progress.end(&label, "Pushed");
    }
    let manifest = store.read_blob(&image.manifest_digest)?;
    let content_type =
        reqwest::header::HeaderValue::from_str(&image.manifest_media_type).map_err(|e| RegistryError::Unsupported {
            what: format!("media type {:?}", image.manifest_media_type),
            detail: e.to_string(),
        })?;
    runtime.block_on(client.push_manifest_raw(&oci_ref, manifest, content_type)).map_err(err)?;
    store.add_repo_digest(&target.name(), &image.manifest_digest, &id)?;
    Ok(image.manifest_digest)
}
