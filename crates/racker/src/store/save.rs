//! `racker save`: images as a `docker save` archive or an OCI archive, streamed from
//! the store's blobs into a tar writer. Blobs shared by several images are written once,
//! and nothing bigger than a manifest is held in memory.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};

use super::{io_err, Result, Store, StoreError};
use crate::digest::Digest;
use crate::reference::{familiar_name, Reference};

/// `org.opencontainers.image.ref.name`, the name an OCI index gives a manifest.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What kind of archive `save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s: `manifest.json`, `repositories`, configs and layers by digest.
    Docker,
    /// An OCI image layout in a tar: `oci-layout`, `index.json`, `blobs/sha256/…`.
    Oci,
}

/// One image to save, and the names it carries in the archive (none when the user named
/// it by id, as docker leaves `RepoTags` empty then).
#[derive(Clone, Debug)]
pub struct SaveImage {
    pub id: Digest,
    pub names: Vec<Reference>,
}

/// Writes `images` to `out` as one archive. Returns the number of bytes of blobs written.
pub fn save(store: &Store, images: &[SaveImage], format: ArchiveFormat, out: impl Write) -> Result<u64> {
    let mut writer = TarWriter { tar: tar::Builder::new(out), written: HashSet::new(), bytes: 0 };
    writer.dir("blobs/")?;
    writer.dir("blobs/sha256/")?;
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index_entries = Vec::new();
    for image in images {
        let record = store.image(&image.id)?;
        writer.blob(store, &record.config_digest)?;
        for layer in &record.layers {
            writer.blob(store, &layer.blob_digest)?;
        }
        let tags: Vec<(String, String)> =
            image.names.iter().filter_map(|n| n.tag().map(|t| (familiar_name(&n.name()), t.to_owned()))).collect();
        match format {
            ArchiveFormat::Docker => {
                let repo_tags: Vec<String> = tags.iter().map(|(repo, tag)| format!("{repo}:{tag}")).collect();
                if let Some(top) = record.layers.last() {
                    for (repo, tag) in &tags {
                        repositories.entry(repo.clone()).or_default().insert(tag.clone(), top.blob_digest.hex().into());
                    }
                }
                docker_entries.push(serde_json::json!({
                    "Config": blob_name(&record.config_digest),
                    "RepoTags": repo_tags,
                    "Layers": record.layers.iter().map(|l| blob_name(&l.blob_digest)).collect::<Vec<_>>(),
                }));
            }
            ArchiveFormat::Oci => {
                let size = writer.blob(store, &record.manifest_digest)?;
                let entry = serde_json::json!({
                    "mediaType": record.manifest_media_type,
                    "digest": record.manifest_digest.to_string(),
                    "size": size,
                });
                for name in &image.names {
                    let mut named = entry.clone();
                    named["annotations"] = serde_json::json!({ REF_NAME: name.to_string() });
                    index_entries.push(named);
                }
                if image.names.is_empty() {
                    index_entries.push(entry);
                }
            }
        }
    }
    match format {
        ArchiveFormat::Docker => {
            writer.file("manifest.json", &serde_json::to_vec(&docker_entries).map_err(json_err)?)?;
            writer.file("repositories", &serde_json::to_vec(&repositories).map_err(json_err)?)?;
        }
        ArchiveFormat::Oci => {
            writer.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": index_entries,
            });
            writer.file("index.json", &serde_json::to_vec(&index).map_err(json_err)?)?;
        }
    }
    let bytes = writer.bytes;
    writer.tar.into_inner().and_then(|mut w| w.flush()).map_err(write_err)?;
    Ok(bytes)
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", Digest::ALGORITHM, digest.hex())
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Invalid { what: "archive index".into(), reason: e.to_string() }
}

/// A failure to write the archive: the destination's, not the store's.
fn write_err(source: io::Error) -> StoreError {
    StoreError::Io { path: "archive".into(), source }
}

struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
    written: HashSet<Digest>,
    bytes: u64,
}

impl<W: Write> TarWriter<W> {
    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.tar.append_data(&mut header, path, io::empty()).map_err(write_err)
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        self.tar.append_data(&mut header, path, bytes).map_err(write_err)
    }

    /// Streams a blob from the store, once per archive; returns its size.
    fn blob(&mut self, store: &Store, digest: &Digest) -> Result<u64> {
        let path = store.blob_path(digest);
        let file = File::open(&path).map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if !self.written.insert(digest.clone()) {
            return Ok(size);
        }
        let mut header = Self::header(tar::EntryType::Regular, size, 0o644);
        // A read error is the store's; append_data cannot tell them apart, so reads are checked.
        let mut reader = CheckedReader { inner: file, failed: None };
        let result = self.tar.append_data(&mut header, blob_name(digest), &mut reader);
        if let Some(source) = reader.failed {
            return Err(StoreError::Io { path, source });
        }
        result.map_err(write_err)?;
        self.bytes += size;
        Ok(size)
    }
}

/// Remembers a read error so that it is reported against the blob, not the archive.
struct CheckedReader {
    inner: File,
    failed: Option<io::Error>,
}

impl Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.failed = Some(e);
            copy
        })
    }
}
