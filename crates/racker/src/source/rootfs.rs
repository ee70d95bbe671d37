//! `racker import`: a plain root filesystem tarball (a file, a URL or standard input;
//! plain, gzip, xz or zstd) becomes a one-layer image, as with `docker import`.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::MediaType;

use super::{Result, SourceError};
use crate::digest::Digest;
use crate::oci::{synthesize, Platform};
use crate::progress::{Progress, ProgressReader};
use crate::reference::Reference;
use crate::store::{NewImage, Store};

/// Where a rootfs tarball comes from.
#[derive(Clone, Debug)]
pub enum RootfsInput {
    File(PathBuf),
    Url(String),
    Stdin,
}

impl RootfsInput {
    /// `-` is standard input, `http(s)://` a URL, anything else a file.
    pub fn parse(arg: &str) -> RootfsInput {
        if arg == "-" {
            RootfsInput::Stdin
        } else if arg.starts_with("http://") || arg.starts_with("https://") {
            RootfsInput::Url(arg.to_owned())
        } else {
            RootfsInput::File(PathBuf::from(arg))
        }
    }

    fn describe(&self) -> String {
        match self {
            RootfsInput::File(p) => p.display().to_string(),
            RootfsInput::Url(u) => u.clone(),
            RootfsInput::Stdin => "-".into(),
        }
    }

    fn open(&self) -> Result<(Box<dyn Read>, Option<u64>)> {
        match self {
            RootfsInput::File(path) => {
                let file = File::open(path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
                let meta = file.metadata().map_err(|source| SourceError::Io { path: path.clone(), source })?;
                if meta.is_dir() {
                    return Err(SourceError::Invalid {
                        what: path.display().to_string(),
                        reason: "is a directory; give a tarball (tar -C DIR -c . | racker import - NAME)".into(),
                    });
                }
                let len = Some(meta.len());
                Ok((Box::new(file), len))
            }
            RootfsInput::Stdin => Ok((Box::new(io::stdin()), None)),
            RootfsInput::Url(url) => {
                let download = |reason: String| SourceError::Download { url: url.clone(), reason };
                let response = crate::http::blocking_client_for(url)
                    .map_err(download)?
                    .get(url)
                    .send()
                    .map_err(|e| download(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(download(format!("server answered {}", response.status())));
                }
                let len = response.content_length();
                Ok((Box::new(response), len))
            }
        }
    }
}

/// Imports a rootfs tarball as a one-layer image named `names` (none: untagged).
pub fn import_rootfs(
    store: &Store,
    input: &RootfsInput,
    names: Vec<Reference>,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    import_rootfs_with(store, input, names, &ImportOptions::default(), progress)
}

/// What `racker import` sets beside the file system: `--change`'s run configuration
/// (the config's `config` section) and `--message`.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub run_config: Option<serde_json::Value>,
    pub message: Option<String>,
}

/// [`import_rootfs`] with a run configuration and a message.
pub fn import_rootfs_with(
    store: &Store,
    input: &RootfsInput,
    names: Vec<Reference>,
    options: &ImportOptions,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    let source = input.describe();
    let (reader, len) = input.open()?;
    progress.begin("import", "Importing", len);
    let mut reader = ProgressReader::new(reader, "import", &*progress);
    let history = History { created_by: "racker import".into(), comment: format!("Imported from {source}") };
    let id = import_stream(store, &mut reader, &history, options, names, progress.clone())?;
    progress.end("import", &format!("Imported {}", id.short()));
    Ok(id)
}

/// The history entry of an imported root filesystem.
#[derive(Clone, Debug)]
pub struct History {
    pub created_by: String,
    pub comment: String,
}

/// Imports a rootfs tar stream (plain or compressed) as a one-layer image for the host's
/// platform. Nothing is committed unless `reader` ends cleanly: a producer that fails
/// should make its reader fail, and the store stays as it was.
pub fn import_rootfs_stream(
    store: &Store,
    reader: &mut dyn Read,
    history: &History,
    names: Vec<Reference>,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    import_stream(store, reader, history, &ImportOptions::default(), names, progress)
}

fn import_stream(
    store: &Store,
    reader: &mut dyn Read,
    history: &History,
    options: &ImportOptions,
    names: Vec<Reference>,
    progress: Arc<dyn Progress>,
) -> Result<Digest> {
    let ingest = store.ingest()?.with_progress(progress);
    let layer = ingest.put_layer(reader, None, None, None)?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let config_bytes = synthesize::rootfs_config_with(
        &Platform::host(),
        &layer.diff_id,
        &created,
        &history.created_by,
        &history.comment,
        options.run_config.as_ref().unwrap_or(&serde_json::json!({})),
        options.message.as_deref(),
    );
    let config_blob = ingest.put_blob_bytes(&config_bytes, MediaType::ImageConfig.as_ref())?;
    let manifest = synthesize::manifest((&config_blob).into(), vec![(&layer.blob).into()]);
    let manifest_blob = ingest.put_blob_bytes(&manifest, MediaType::ImageManifest.as_ref())?;
    Ok(ingest.commit(NewImage {
        manifest: manifest_blob,
        config: config_blob,
        layers: vec![layer],
        tags: names,
        repo_digests: vec![],
    })?)
}
