//! Adding content: an [`Ingest`] stages blobs and unpacked layers in `ingest/<op>/`
//! and [`Ingest::commit`] publishes them together with the image's rows in one
//! transaction. Dropping an uncommitted ingest removes its staging directory, so a
//! failed operation leaves the store as it was.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, MediaType};
use rustix::fs::FlockOperation;

use super::metadata::{ImageRows, NewLayerRow};
use super::{blobs, io_err, Result, Store, StoreError, StoreLock};
use crate::digest::{Digest, HashingReader};
use crate::progress::{Progress, ProgressReader, Silent};
use crate::reference::Reference;
use crate::unpack::{self, Compression, UnpackOptions, UnpackStats};

/// A blob that is staged in this operation or already in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A blob as a manifest lists it.
impl From<&BlobInfo> for Descriptor {
    fn from(blob: &BlobInfo) -> Self {
        Descriptor::new(MediaType::from(blob.media_type.as_str()), blob.size, &blob.digest)
    }
}

/// A layer: its blob and its unpacked tree.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub blob: BlobInfo,
    pub diff_id: Digest,
    /// Whether the layer's bytes were read from the caller's stream (false: the store
    /// already had what it needed).
    pub fetched: bool,
}

/// What [`Ingest::commit`] records: the image's manifest and config blobs, its layers
/// in order (base first), and the names it gets.
#[derive(Clone, Debug)]
pub struct NewImage {
    pub manifest: BlobInfo,
    pub config: BlobInfo,
    pub layers: Vec<LayerInfo>,
    pub tags: Vec<Reference>,
    /// `repository@digest` names (for images from a registry).
    pub repo_digests: Vec<Reference>,
}

#[derive(Default)]
struct Staged {
    /// Blobs staged as `blobs/<hex>` in the operation's directory.
    blobs: BTreeMap<Digest, BlobInfo>,
    /// Layers unpacked into the operation's directory, by diff_id.
    layers: BTreeMap<Digest, (PathBuf, UnpackStats)>,
}

/// One adding operation in progress. Holds the store's lock shared, so that gc waits,
/// and its staging directory's lock exclusive, so that nobody adopts it while it lives.
pub struct Ingest<'s> {
    store: &'s Store,
    _lock: StoreLock,
    _dir_lock: File,
    dir: PathBuf,
    /// Verified blobs left by operations that died (a killed pull), by digest: used
    /// instead of downloading again.
    adoptable: Mutex<BTreeMap<Digest, PathBuf>>,
    staged: Mutex<Staged>,
    seq: AtomicU64,
    progress: Arc<dyn Progress>,
    unpack_options: UnpackOptions,
    /// The file objects this operation's unpacks stored: taken back at the end unless a
    /// committed layer links them.
    stored_objects: Mutex<Vec<String>>,
}

/// Copies everything read from `inner` to `out`. A failed write poisons it: the bytes
/// it had read are lost to the copy and to whoever hashes what it returns, so every
/// later read fails too, and the write error is kept as the cause (a tee that went on
/// would turn a full disk into a digest mismatch).
struct TeeReader<R, W> {
    inner: R,
    out: W,
    write_error: Option<io::Error>,
}

impl<R, W> TeeReader<R, W> {
    fn new(inner: R, out: W) -> Self {
        TeeReader { inner, out, write_error: None }
    }

    /// The write error that poisoned it, if any: the cause of whatever failed after.
    fn take_write_error(&mut self) -> Option<io::Error> {
        self.write_error.take()
    }
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.write_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let again = io::Error::new(e.kind(), e.to_string());
            self.write_error = Some(e);
            return Err(again);
        }
        Ok(n)
    }
}

impl<'s> Ingest<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Self> {
        let objects = crate::objects::enabled().then(|| store.root.join(crate::objects::DIR));
        let lock = loop {
            let lock = store.lock(FlockOperation::LockShared)?.ok_or_else(|| StoreError::Invalid {
                what: "store lock".into(),
                reason: "a blocking lock returned without being held".into(),
            })?;
            if objects.is_none() || store.objects_trusted()? {
                break lock;
            }
            drop(lock);
            store.check_objects()?;
        };
        // The directory becomes visible only once locked: others take an unlocked one
        // for the leftover of a dead operation (hidden names are never adopted).
        let name = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let hidden = store.root.join("ingest").join(format!(".{name}"));
        let dir = store.root.join("ingest").join(name);
        fs::create_dir_all(hidden.join("blobs")).map_err(io_err(&hidden))?;
        let dir_lock = File::open(&hidden).map_err(io_err(&hidden))?;
        rustix::fs::flock(&dir_lock, FlockOperation::LockExclusive).map_err(|e| io_err(&hidden)(e.into()))?;
        fs::rename(&hidden, &dir).map_err(io_err(&dir))?;
        let adoptable = adopt_stale(&store.root.join("ingest"), &dir)?;
        Ok(Ingest {
            store,
            _lock: lock,
            _dir_lock: dir_lock,
            dir,
            adoptable: Mutex::new(adoptable),
            staged: Mutex::default(),
            seq: AtomicU64::new(0),
            progress: Arc::new(Silent),
            // Images carry device nodes (a debootstrapped /dev); as root, docker keeps them too.
            // Their files go to the store's objects, each stored once.
            unpack_options: UnpackOptions { allow_devices: true, objects, ..UnpackOptions::default() },
            stored_objects: Mutex::default(),
        })
    }

    /// Reports downloads and unpacks to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Where this operation reports progress.
    pub fn progress(&self) -> &dyn Progress {
        &*self.progress
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scratch(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{}", self.seq.fetch_add(1, Ordering::Relaxed)))
    }

    /// The blob if this operation staged it, the store has it, or a dead operation
    /// left it verified (checked again before it is used).
    fn known_blob(&self, digest: &Digest, media_type: &str) -> Option<BlobInfo> {
        if let Some(info) = self.staged().blobs.get(digest) {
            return Some(info.clone());
        }
        if let Ok(meta) = fs::metadata(self.store.blob_path(digest)) {
            if self.store.blob_is_whole(digest).ok()? {
                return Some(BlobInfo { digest: digest.clone(), size: meta.len(), media_type: media_type.to_owned() });
            }
        }
        let leftover = self.adoptable.lock().unwrap_or_else(|p| p.into_inner()).remove(digest)?;
        let (found, size) = File::open(&leftover).and_then(|f| HashingReader::new(f).finish()).ok()?;
        if &found != digest {
            let _ = fs::remove_file(&leftover);
            return None;
        }
        tracing::info!(%digest, "reusing a blob an interrupted operation had verified");
        self.stage_blob(&leftover, digest, size, media_type).ok()
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
        let staged = self.dir.join("blobs").join(digest.hex());
        if staged.exists() {
            staged
        } else {
            self.store.blob_path(digest)
        }
    }

    fn have_layer(&self, diff_id: &Digest) -> Result<bool> {
        Ok(self.staged().layers.contains_key(diff_id) || self.store.db().layer_id(diff_id)?.is_some())
    }

    fn stage_blob(&self, tmp: &Path, digest: &Digest, size: u64, media_type: &str) -> Result<BlobInfo> {
        let target = self.dir.join("blobs").join(digest.hex());
        fs::rename(tmp, &target).map_err(io_err(&target))?;
        let info = BlobInfo { digest: digest.clone(), size, media_type: media_type.to_owned() };
        self.staged().blobs.insert(digest.clone(), info.clone());
        Ok(info)
    }

    /// Stages a small blob (manifest, config) from memory.
    pub fn put_blob_bytes(&self, bytes: &[u8], media_type: &str) -> Result<BlobInfo> {
        self.put_blob(&mut &bytes[..], Some(&Digest::of(bytes)), media_type)
    }

    /// Stages a blob from a stream, verifying it against `expected`. A blob the store
    /// already has is not read at all.
    pub fn put_blob(&self, reader: &mut dyn Read, expected: Option<&Digest>, media_type: &str) -> Result<BlobInfo> {
        if let Some(info) = expected.and_then(|d| self.known_blob(d, media_type)) {
            return Ok(info);
        }
        let tmp = self.scratch("blob");
        let what = format!("blob {}", expected.map(|d| d.to_string()).unwrap_or_default());
        let (digest, size) = blobs::write_verified(reader, &tmp, what.trim(), expected).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        self.stage_blob(&tmp, &digest, size, media_type)
    }

    /// Stages a layer blob and unpacks it, in one pass over the stream: the bytes are
    /// hashed, written to the staged blob and decompressed into the layer's tree at once.
    ///
    /// `media_type` None means "detect from the magic bytes" (rootfs tarballs); an xz
    /// tarball is then stored uncompressed, as OCI has no xz layers. Whatever the store
    /// already has is skipped: a present layer is not unpacked again, a present blob
    /// is not read from `reader`.
    pub fn put_layer(
        &self,
        reader: &mut dyn Read,
        expected_blob: Option<&Digest>,
        media_type: Option<&str>,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerInfo> {
        let label = expected_blob.map(|d| d.short().to_owned()).unwrap_or_else(|| "layer".to_owned());
        // Whatever the store holds, a layer of a type racker cannot unpack is refused.
        compression_of(media_type, &unpack_name(expected_blob))?;
        let present_layer = match expected_diff_id {
            Some(d) if self.have_layer(d)? => Some(d.clone()),
            _ => None,
        };
        let known_blob = match (expected_blob, media_type) {
            (Some(d), Some(mt)) => self.known_blob(d, mt),
            _ => None,
        };
        tracing::debug!(
            "layer {label}: {}",
            match (&present_layer, &known_blob) {
                (Some(_), Some(_)) => "present",
                (Some(_), None) => "unpacked already, storing its blob",
                (None, _) => "storing and unpacking",
            }
        );
        match (present_layer, known_blob) {
            (Some(diff_id), Some(blob)) => Ok(LayerInfo { blob, diff_id, fetched: false }),
            (Some(diff_id), None) => {
                let mt = media_type.unwrap_or_default();
                let blob =
                    self.put_blob(&mut ProgressReader::new(reader, &label, &*self.progress), expected_blob, mt)?;
                Ok(LayerInfo { blob, diff_id, fetched: true })
            }
            (None, Some(blob)) => {
                let path = self.blob_file(&blob.digest);
                let file = File::open(&path).map_err(io_err(&path))?;
                let compression = compression_of(media_type, &blob.digest)?;
                let layer =
                    self.unpack(BufReader::with_capacity(1 << 20, file), compression, &blob.digest.to_string())?;
                blobs::check(&format!("layer {} (uncompressed)", blob.digest), expected_diff_id, &layer.1.diff_id)?;
                let diff_id = layer.1.diff_id.clone();
                self.keep_layer(layer)?;
                Ok(LayerInfo { blob, diff_id, fetched: false })
            }
            (None, None) => self.put_new_layer(reader, expected_blob, media_type, expected_diff_id, &label),
        }
    }

    fn put_new_layer(
        &self,
        reader: &mut dyn Read,
        expected_blob: Option<&Digest>,
        media_type: Option<&str>,
        expected_diff_id: Option<&Digest>,
        label: &str,
    ) -> Result<LayerInfo> {
        let what = expected_blob.map(|d| format!("layer {d}")).unwrap_or_else(|| "layer".to_owned());
        let name = unpack_name(expected_blob);
        let tmp = self.scratch("blob");
        let file = File::options().write(true).create_new(true).open(&tmp).map_err(io_err(&tmp))?;
        let counted = ProgressReader::new(reader, label, &*self.progress);
        let mut input = BufReader::with_capacity(1 << 20, counted);
        let head = input.fill_buf().map_err(io_err(&tmp))?;
        let compression = match media_type {
            Some(mt) => compression_of(Some(mt), &name)?,
            None => Compression::sniff(head),
        };
        let result = (|| -> Result<(BlobInfo, (PathBuf, UnpackStats))> {
            if compression == Compression::Xz {
                // Store the decompressed tar: the tee sits after the decompressor.
                let decompressed = unpack::decompress(input, compression)
                    .map_err(|source| StoreError::Unpack { blob: name.clone(), source })?;
                let mut tee = TeeReader::new(decompressed, BufWriter::with_capacity(1 << 20, file));
                let layer = self.unpack_plain(&mut tee, &name).map_err(|e| match tee.take_write_error() {
                    Some(cause) => io_err(&tmp)(cause),
                    None => e,
                })?;
                io::copy(&mut tee, &mut io::sink()).map_err(io_err(&tmp))?;
                tee.out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
                let blob = BlobInfo {
                    digest: layer.1.diff_id.clone(),
                    size: layer.1.tar_size,
                    media_type: MediaType::ImageLayer.to_string(),
                };
                Ok((blob, layer))
            } else {
                let mut hashed = HashingReader::new(TeeReader::new(input, BufWriter::with_capacity(1 << 20, file)));
                // A broken stream ends the layer at once: reading on to tell corruption from a
                // wrong media type would let a hostile source fill the disk with what is
                // already refused. A failed staged copy (a full disk) is the cause, though.
                let layer =
                    self.unpack(BufReader::with_capacity(1 << 16, &mut hashed), compression, &name).map_err(|e| {
                        match hashed.get_mut().take_write_error() {
                            Some(cause) => io_err(&tmp)(cause),
                            None => e,
                        }
                    })?;
                let (digest, size, tee) = hashed.finish_into_inner().map_err(io_err(&tmp))?;
                tee.out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
                blobs::check(&what, expected_blob, &digest)?;
                let mt = media_type.map(str::to_owned).or_else(|| compression.oci_media_type().map(String::from));
                Ok((BlobInfo { digest, size, media_type: mt.unwrap_or_default() }, layer))
            }
        })();
        let (blob, layer) = result.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        blobs::check(&format!("{what} (uncompressed)"), expected_diff_id, &layer.1.diff_id)?;
        let blob = self.stage_blob(&tmp, &blob.digest, blob.size, &blob.media_type)?;
        let diff_id = layer.1.diff_id.clone();
        self.keep_layer(layer)?;
        Ok(LayerInfo { blob, diff_id, fetched: true })
    }

    fn unpack(&self, input: impl BufRead, compression: Compression, what: &str) -> Result<(PathBuf, UnpackStats)> {
        let tar = unpack::decompress(input, compression)
            .map_err(|source| StoreError::Unpack { blob: what.to_owned(), source })?;
        self.unpack_plain(tar, what)
    }

    /// Unpacks a decompressed tar into a new directory in the staging area.
    fn unpack_plain(&self, tar: impl Read, what: &str) -> Result<(PathBuf, UnpackStats)> {
        let dir = self.scratch("layer");
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        match unpack::apply_tar(tar, &dir, &self.unpack_options) {
            Ok(mut stats) => {
                let stored = std::mem::take(&mut stats.stored);
                self.stored_objects.lock().unwrap_or_else(|p| p.into_inner()).extend(stored);
                Ok((dir, stats))
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                match source {
                    // The store's file system is full: not the layer's fault; say where.
                    unpack::UnpackError::Io { entry, source, .. } if is_out_of_space(&source) => {
                        Err(StoreError::Io { path: dir.join(entry), source })
                    }
                    source => Err(StoreError::Unpack { blob: what.to_owned(), source }),
                }
            }
        }
    }

    fn keep_layer(&self, (dir, stats): (PathBuf, UnpackStats)) -> Result<()> {
        let mut staged = self.staged();
        if staged.layers.contains_key(&stats.diff_id) {
            drop(staged);
            return fs::remove_dir_all(&dir).map_err(io_err(&dir));
        }
        staged.layers.insert(stats.diff_id.clone(), (dir, stats));
        Ok(())
    }

    /// Publishes everything staged and records `image`, atomically. Returns the image id.
    pub fn commit(self, image: NewImage) -> Result<Digest> {
        crate::oci::check_layer_count(image.layers.len())
            .map_err(|reason| StoreError::Invalid { what: format!("image {}", image.config.digest), reason })?;
        let config_path = self.blob_file(&image.config.digest);
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(&config_path).map_err(io_err(&config_path))?).map_err(|e| {
                StoreError::Invalid { what: format!("image config {}", image.config.digest), reason: e.to_string() }
            })?;
        let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let id = image.config.digest.clone();

        let staged = std::mem::take(&mut *self.staged());
        // Nothing is synced here (on ext4 even one fsync flushes every dirty page of the
        // whole unpack): new rows carry the boot they were written in, and a later boot
        // checks them before trusting them, unless gc settled them (durability.rs).
        let boot = super::durability::boot_id();
        let rows = ImageRows {
            id: &id,
            image: &image,
            created: text("created"),
            architecture: text("architecture"),
            os: text("os"),
            new_blobs: staged.blobs.values().collect(),
            new_layers: staged.layers.values().map(|(_, stats)| stats).collect(),
            boot: &boot,
        };
        self.store.db().commit_image(&rows, |new_layers| self.place(&staged, new_layers))?;
        // The committed layers link their objects now. (A layer the store already had
        // from before objects is dropped with its new objects: gc collects those.)
        self.stored_objects.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(id)
    }

    /// Moves the staged blobs and the trees of `new_layers` to their names in the store,
    /// and syncs the directories that name them.
    fn place(&self, staged: &Staged, new_layers: &[NewLayerRow<'_>]) -> Result<()> {
        let root = &self.store.root;
        for digest in staged.blobs.keys() {
            blobs::publish(&self.dir.join("blobs").join(digest.hex()), root, digest)?;
        }
        for layer in new_layers {
            let Some((dir, _)) = staged.layers.get(layer.diff_id) else { continue };
            let target = self.store.layer_dir(layer.id);
            // A directory left at this id by a crashed commit is garbage: no row names it.
            if target.exists() {
                fs::remove_dir_all(&target).map_err(io_err(&target))?;
            }
            fs::rename(dir, &target).map_err(io_err(&target))?;
        }
        for d in [root.join("blobs").join(Digest::ALGORITHM), root.join("layers")] {
            File::open(&d).and_then(|f| f.sync_all()).map_err(io_err(&d))?;
        }
        Ok(())
    }
}

impl Drop for Ingest<'_> {
    /// Whatever was not committed (or was dropped at commit as a duplicate) goes, and
    /// after a failure the file objects only its layers linked.
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let stored = std::mem::take(self.stored_objects.get_mut().unwrap_or_else(|p| p.into_inner()));
        if let (Some(dir), false) = (&self.unpack_options.objects, stored.is_empty()) {
            if let Ok(objects) = crate::objects::Objects::open(dir) {
                stored.iter().for_each(|name| objects.forget(name, 1));
            }
        }
    }
}

/// Takes the verified blobs of staging directories whose operation died (their lock is
/// free), moves them under `ours/adopted/`, and removes the rest of those directories.
fn adopt_stale(ingest_root: &Path, ours: &Path) -> Result<BTreeMap<Digest, PathBuf>> {
    let mut adopted = BTreeMap::new();
    let entries = fs::read_dir(ingest_root).map_err(io_err(ingest_root))?;
    for entry in entries.flatten() {
        let stale = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if stale == ours || hidden || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(handle) = File::open(&stale) else { continue };
        if rustix::fs::flock(&handle, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // alive
        }
        // Only files named by their digest were verified before they got that name.
        if let Ok(blobs) = fs::read_dir(stale.join("blobs")) {
            let target = ours.join("adopted");
            fs::create_dir_all(&target).map_err(io_err(&target))?;
            for blob in blobs.flatten() {
                let name = blob.file_name().to_string_lossy().into_owned();
                if let Ok(digest) = Digest::from_hex(&name) {
                    let to = target.join(&name);
                    if fs::rename(blob.path(), &to).is_ok() {
                        adopted.insert(digest, to);
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&stale);
    }
    Ok(adopted)
}

/// ENOSPC or EDQUOT: the store's file system has no room for what is written.
fn is_out_of_space(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::NOSPC | Errno::DQUOT))
}

/// How [`StoreError::Unpack`] (`layer {blob}: …`) names a layer: by its digest if known.
fn unpack_name(expected_blob: Option<&Digest>) -> String {
    expected_blob.map(|d| d.to_string()).unwrap_or_else(|| "(unnamed)".to_owned())
}

fn compression_of(media_type: Option<&str>, what: &dyn std::fmt::Display) -> Result<Compression> {
    match media_type {
        Some(mt) => {
            Compression::from_media_type(mt).map_err(|source| StoreError::Unpack { blob: what.to_string(), source })
        }
        None => Ok(Compression::None),
    }
}
