//! `racker commit`: a stopped container's writes become one new layer on top of its
//! image's layers, as `docker commit` makes them.
//!
//! ```text
//! snapshots/<id>/upper ──diff::LayerStream (tar+gzip)──> Ingest::put_layer (hash, keep, unpack once)
//! base config + diff_id + history (+ changes, labels) ──> config blob ──> manifest ──> commit
//! ```
//!
//! The base image's layers are referenced, not copied: the new image's manifest lists
//! the same blobs and layer rows, so the store holds them once. Only the overlay
//! snapshotter keeps a container's writes apart from its image (its upper directory);
//! a btrfs container cannot be committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use oci_spec::image::MediaType;

use crate::digest::Digest;
use crate::oci::synthesize;
use crate::progress::{Progress, Silent};
use crate::reference::Reference;
use crate::snapshot::diff::{DiffError, LayerStream};
use crate::snapshot::{self, Driver, SnapshotError};
use crate::store::{LayerInfo, NewImage, Store, StoreError};

use super::lifecycle;

/// Why a container could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("container {container} is running: stop it first (racker stop {container}), then commit")]
    Running { container: String },
    #[error("container {container} uses the {driver} storage driver: commit needs the overlay storage driver (run the container with --storage-driver overlay)")]
    NeedsOverlay { container: String, driver: String },
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange { change: String, reason: String },
    #[error("container {container}: {source}")]
    Diff { container: String, source: DiffError },
    #[error("config of image {image}: {reason}")]
    BaseConfig { image: Digest, reason: String },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `racker commit`'s choices.
#[derive(Clone)]
pub struct CommitOptions {
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the config's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config (ENV, CMD, ENTRYPOINT,
    /// WORKDIR, USER, LABEL, EXPOSE).
    pub changes: Vec<String>,
    /// Labels added to the config (after `changes`).
    pub labels: BTreeMap<String, String>,
    /// The history entry's `created_by`; None: the container's command line.
    pub created_by: Option<String>,
    /// Names for the new image.
    pub tags: Vec<Reference>,
    pub progress: Arc<dyn Progress>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            message: None,
            author: None,
            changes: Vec::new(),
            labels: BTreeMap::new(),
            created_by: None,
            tags: Vec::new(),
            progress: Arc::new(Silent),
        }
    }
}

/// Commits the container `name` (name or id): its writes as a new top layer on its
/// image. Returns the new image's id. The container must not be running.
pub fn commit(store: &Store, name: &str, opts: &CommitOptions) -> Result<Digest, CommitError> {
    let record = store.container(name)?;
    if lifecycle::is_running(&record) {
        return Err(CommitError::Running { container: record.name });
    }
    let driver: Option<Driver> = record.snapshotter.parse().ok();
    if driver != Some(Driver::Overlay) {
        return Err(CommitError::NeedsOverlay { container: record.name, driver: record.snapshotter });
    }
    let upper = snapshot::open(store, driver)?.upper_dir(&record.id)?;
    let base = store.image(&record.image_id)?;
    let base_config = store.read_blob(&base.config_digest)?;
    let spec = super::spec_of(&record).unwrap_or_default();
    let mut config = new_config(&base_config, &base.config_digest, opts, &spec.command_line())?;

    let ingest = store.ingest()?.with_progress(opts.progress.clone());
    let label = format!("commit {}", &record.id[..12.min(record.id.len())]);
    opts.progress.begin(&label, "Committing", None);
    let image_has = |rel: &str| base.layers.iter().any(|l| store.layer_dir(l.layer_id).join(rel).exists());
    let skip = runtime_artifacts(&upper, image_has);
    let mut stream = LayerStream::gzip(upper, skip);
    let mut counted = crate::progress::ProgressReader::new(&mut stream, &label, &*opts.progress);
    let put = ingest.put_layer(&mut counted, None, Some(MediaType::ImageLayerGzip.as_ref()), None);
    // When both failed, the writer's error is the cause, unless it only saw the store stop
    // reading (a broken pipe): then the store's is.
    let diff = stream.finish().map_err(|source| CommitError::Diff { container: record.name.clone(), source });
    let layer = match (put, diff) {
        (Ok(layer), Ok(_)) => layer,
        (Err(e), Err(CommitError::Diff { source: DiffError::Output { source: io, .. }, .. }))
            if io.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Err(e.into())
        }
        (_, Err(e)) => return Err(e),
        (Err(e), Ok(_)) => return Err(e.into()),
    };
    opts.progress.end(&label, "Layer stored");

    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| CommitError::BaseConfig {
            image: base.config_digest.clone(),
            reason: "no rootfs.diff_ids".into(),
        })?
        .push(serde_json::Value::String(layer.diff_id.to_string()));
    let config_bytes = serde_json::to_vec(&config).expect("a JSON value always serialises");
    let config_blob = ingest.put_blob_bytes(&config_bytes, MediaType::ImageConfig.as_ref())?;

    let mut layers: Vec<LayerInfo> = base
        .layers
        .iter()
        .map(|l| LayerInfo {
            blob: crate::store::BlobInfo {
                digest: l.blob_digest.clone(),
                size: l.blob_size,
                media_type: l.media_type.clone(),
            },
            diff_id: l.diff_id.clone(),
            fetched: false,
        })
        .collect();
    layers.push(layer);
    let manifest = synthesize::manifest((&config_blob).into(), layers.iter().map(|l| (&l.blob).into()).collect());
    let manifest_blob = ingest.put_blob_bytes(&manifest, MediaType::ImageManifest.as_ref())?;
    Ok(ingest.commit(NewImage {
        manifest: manifest_blob,
        config: config_blob,
        layers,
        tags: opts.tags.clone(),
        repo_digests: vec![],
    })?)
}

/// Top-level directories systemd-nspawn (and racker, for `/usr`) create as mount points
/// when an image lacks them.
pub(super) const STUB_DIRS: [&str; 8] = ["dev", "proc", "sys", "run", "tmp", "var", "root", "usr"];
/// Files systemd-nspawn writes for every run: the host's resolver configuration, and a
/// mount point (or copy) for the host's time zone.
pub(super) const HOST_FILES: [&str; 2] = ["etc/resolv.conf", "etc/localtime"];

/// What the runtime, not the container's command, put into `upper`, as paths for
/// [`diff::write_layer`](crate::snapshot::diff::write_layer) to skip: docker keeps the
/// same things in an init layer that commit never sees. Empty stub directories the
/// image lacked, the host's files, and `etc` itself when nothing else of it changed.
/// A container that really edited `/etc/resolv.conf` loses that edit, as in docker.
fn runtime_artifacts(upper: &std::path::Path, image_has: impl Fn(&str) -> bool) -> std::collections::BTreeSet<String> {
    let empty_dir = |rel: &str| std::fs::read_dir(upper.join(rel)).is_ok_and(|mut d| d.next().is_none());
    let mut skip: std::collections::BTreeSet<String> =
        STUB_DIRS.iter().filter(|d| empty_dir(d) && !image_has(d)).map(|d| (*d).to_owned()).collect();
    skip.extend(HOST_FILES.iter().filter(|f| upper.join(f).symlink_metadata().is_ok()).map(|f| (*f).to_owned()));
    let etc_changed_otherwise = std::fs::read_dir(upper.join("etc"))
        .map(|entries| entries.flatten().any(|e| !skip.contains(&format!("etc/{}", e.file_name().to_string_lossy()))))
        .unwrap_or(true);
    if !etc_changed_otherwise && image_has("etc") {
        skip.insert("etc".to_owned());
    }
    skip
}

/// The new image's config: the base's, with a new creation time, the changes and labels
/// applied, and one more history entry. The new layer's diff_id is added by the caller.
fn new_config(
    base: &[u8],
    base_id: &Digest,
    opts: &CommitOptions,
    command_line: &str,
) -> Result<serde_json::Value, CommitError> {
    let invalid = |reason: String| CommitError::BaseConfig { image: base_id.clone(), reason };
    let mut config: serde_json::Value = serde_json::from_slice(base).map_err(|e| invalid(e.to_string()))?;
    if !config.is_object() {
        return Err(invalid("not a JSON object".into()));
    }
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    config["created"] = created.clone().into();
    if let Some(author) = &opts.author {
        config["author"] = author.clone().into();
    }
    if !config["config"].is_object() {
        config["config"] = serde_json::json!({});
    }
    for change in &opts.changes {
        apply_change(&mut config["config"], change)?;
    }
    if !opts.labels.is_empty() {
        let labels = object_at(&mut config["config"], "Labels");
        for (k, v) in &opts.labels {
            labels.insert(k.clone(), v.clone().into());
        }
    }
    if !config["rootfs"]["diff_ids"].is_array() {
        return Err(invalid("no rootfs.diff_ids".into()));
    }
    let mut entry = serde_json::json!({
        "created": created,
        "created_by": opts.created_by.clone().unwrap_or_else(|| command_line.to_owned()),
    });
    if let Some(author) = &opts.author {
        entry["author"] = author.clone().into();
    }
    if let Some(message) = &opts.message {
        entry["comment"] = message.clone().into();
    }
    match config.get_mut("history").and_then(|h| h.as_array_mut()) {
        Some(history) => history.push(entry),
        None => config["history"] = serde_json::json!([entry]),
    }
    Ok(config)
}

/// `section[key]` as an object, made one if it is missing or not an object.
fn object_at<'v>(section: &'v mut serde_json::Value, key: &str) -> &'v mut serde_json::Map<String, serde_json::Value> {
    if !section[key].is_object() {
        section[key] = serde_json::json!({});
    }
    section[key].as_object_mut().expect("made an object above")
}

/// Applies one Dockerfile instruction (`ENV K=V`, `CMD ["a"]`, ...) to an image
/// config's `config` section, as `docker commit --change` does.
pub fn apply_change(section: &mut serde_json::Value, change: &str) -> Result<(), CommitError> {
    let bad = |reason: &str| CommitError::InvalidChange { change: change.to_owned(), reason: reason.to_owned() };
    let (instruction, args) = change.trim().split_once(char::is_whitespace).ok_or_else(|| bad("no arguments"))?;
    let args = args.trim();
    match instruction.to_ascii_uppercase().as_str() {
        "ENV" => {
            let pairs = if args.contains('=') {
                words(args).into_iter().map(|w| split_pair(&w).ok_or_else(|| bad("expected KEY=VALUE"))).collect()
            } else {
                // The old `ENV KEY VALUE` form: one variable, the rest is its value.
                let (k, v) = args.split_once(char::is_whitespace).ok_or_else(|| bad("expected KEY=VALUE"))?;
                Ok(vec![(k.to_owned(), v.trim().to_owned())])
            }?;
            if !section["Env"].is_array() {
                section["Env"] = serde_json::json!([]);
            }
            let env = section["Env"].as_array_mut().expect("made an array above");
            for (k, v) in pairs {
                env.retain(|e| e.as_str().and_then(|e| e.split_once('=')).is_none_or(|(key, _)| key != k));
                env.push(format!("{k}={v}").into());
            }
        }
        "LABEL" => {
            let pairs: Vec<(String, String)> = words(args)
                .iter()
                .map(|w| split_pair(w).ok_or_else(|| bad("expected KEY=VALUE")))
                .collect::<Result<_, _>>()?;
            let labels = object_at(section, "Labels");
            for (k, v) in pairs {
                labels.insert(k, v.into());
            }
        }
        "CMD" | "ENTRYPOINT" => {
            let argv: Vec<String> = if args.starts_with('[') {
                serde_json::from_str(args).map_err(|_| bad("expected a JSON array of strings"))?
            } else {
                vec!["/bin/sh".into(), "-c".into(), args.to_owned()]
            };
            let key = if instruction.eq_ignore_ascii_case("CMD") { "Cmd" } else { "Entrypoint" };
            section[key] = argv.into();
        }
        "WORKDIR" => section["WorkingDir"] = args.into(),
        "USER" => section["User"] = args.into(),
        "EXPOSE" => {
            for port in args.split_whitespace() {
                let port = if port.contains('/') { port.to_owned() } else { format!("{port}/tcp") };
                object_at(section, "ExposedPorts").insert(port, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let paths: Vec<String> = if args.starts_with('[') {
                serde_json::from_str(args).map_err(|_| bad("expected a JSON array of strings"))?
            } else {
                args.split_whitespace().map(str::to_owned).collect()
            };
            for path in paths {
                object_at(section, "Volumes").insert(path, serde_json::json!({}));
            }
        }
        "STOPSIGNAL" => section["StopSignal"] = args.into(),
        "ONBUILD" => {
            if !section["OnBuild"].is_array() {
                section["OnBuild"] = serde_json::json!([]);
            }
            section["OnBuild"].as_array_mut().expect("made an array above").push(args.into());
        }
        _ => {
            return Err(bad(
                "supported: ENV, LABEL, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, ONBUILD",
            ))
        }
    }
    Ok(())
}

/// Splits on whitespace outside double quotes, dropping the quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

fn split_pair(word: &str) -> Option<(String, String)> {
    let (k, v) = word.split_once('=')?;
    (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_edit_the_config_section() {
        let mut section = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]});
        for change in [
            "ENV A=2 B=\"two words\"",
            "ENV C plain value",
            "CMD [\"/bin/echo\", \"hi\"]",
            "ENTRYPOINT exec me",
            "WORKDIR /srv",
            "USER app",
            "LABEL org.example.a=1 b=\"x y\"",
            "EXPOSE 80 53/udp",
            "VOLUME /data /cache",
            "VOLUME [\"/logs\"]",
            "STOPSIGNAL SIGINT",
            "ONBUILD RUN make",
        ] {
            apply_change(&mut section, change).unwrap();
        }
        assert_eq!(
            section,
            json!({
                "Env": ["PATH=/bin", "A=2", "B=two words", "C=plain value"],
                "Cmd": ["/bin/echo", "hi"],
                "Entrypoint": ["/bin/sh", "-c", "exec me"],
                "WorkingDir": "/srv",
                "User": "app",
                "Labels": {"org.example.a": "1", "b": "x y"},
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Volumes": {"/data": {}, "/cache": {}, "/logs": {}},
                "StopSignal": "SIGINT",
                "OnBuild": ["RUN make"],
            })
        );
        for bad in ["RUN true", "CMD", "CMD [1]", "LABEL novalue"] {
            assert!(matches!(apply_change(&mut section, bad), Err(CommitError::InvalidChange { .. })), "{bad}");
        }
    }

    #[test]
    fn the_new_config_keeps_the_base_and_adds_history() {
        let base = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}]}"#;
        let opts = CommitOptions {
            message: Some("why".into()),
            author: Some("me".into()),
            labels: [("k".to_owned(), "v".to_owned())].into(),
            ..CommitOptions::default()
        };
        let config = new_config(base, &Digest::of(base), &opts, "sh -c work").unwrap();
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin"]));
        assert_eq!(config["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(config["author"], "me");
        assert_eq!(config["history"][1]["created_by"], "sh -c work");
        assert_eq!(config["history"][1]["comment"], "why");
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:aa"]));
    }
}
