//! When blobs and unpacked layers become durable. Nothing is synced when an image is
//! committed: one syncfs of a large unpack costs seconds on a slow disk (containerd
//! makes it optional for that reason), and on ext4 even one fsync of a small file
//! flushes all of it. Instead every blob and layer row records the boot it was written
//! in (`unsynced_boot`). Within that boot the page cache serves it whole. In a later
//! boot it may lack what never reached the disk, so it is checked before it is trusted:
//! a blob is hashed again (and dropped if wrong, to be fetched again), a layer is
//! rebuilt from its blob. `gc` settles the current boot's rows with one syncfs.

use std::fs::{self, File};
use std::io::{self, BufReader, Write as _};
use std::path::Path;

use rustix::fs::FlockOperation;

use super::{io_err, ImageRecord, LayerRecord, Result, Store, StoreError};
use crate::digest::Digest;
use crate::objects;
use crate::unpack::{self, Compression, UnpackOptions};

/// This boot's id, as the kernel gives it (empty if unreadable: every row then looks
/// written in another boot, and is rebuilt rather than trusted).
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The file that names the boot whose new file objects no syncfs has covered yet.
pub(super) const UNSETTLED_OBJECTS: &str = "unsettled-objects";

impl Store {
    /// Makes the layers written in this boot durable (one syncfs) and records it.
    /// Returns how many layers were settled.
    pub fn settle(&self) -> Result<usize> {
        let root = File::open(&self.root).map_err(io_err(&self.root))?;
        rustix::fs::syncfs(&root).map_err(|e| io_err(&self.root)(e.into()))?;
        let db = self.db();
        let settled = db.mark_boot_synced(&boot_id())?;
        // Closing does not checkpoint (metadata.rs): fold the WAL into the database here.
        db.checkpoint()?;
        // Every file object is on the disk now (gc holds the store alone: none is being written).
        let marker = self.root.join(UNSETTLED_OBJECTS);
        match fs::remove_file(&marker) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&marker)(e)),
            _ => {}
        }
        Ok(settled)
    }

    /// Whether the blob file can be trusted: its row says it was written in this boot or
    /// settled; otherwise (an earlier boot, or no row after a crash) it is hashed again,
    /// and removed if its bytes no longer match its name.
    pub(crate) fn blob_is_whole(&self, digest: &Digest) -> Result<bool> {
        let boot = boot_id();
        let row = self.db().blob_unsynced_boot(digest)?;
        match row {
            Some(None) => return Ok(true),
            Some(Some(written)) if written == boot && !boot.is_empty() => return Ok(true),
            _ => {}
        }
        let path = self.blob_path(digest);
        let found =
            File::open(&path).and_then(|f| crate::digest::HashingReader::new(f).finish()).map_err(io_err(&path))?.0;
        if &found == digest {
            self.db().mark_blob_synced(digest)?;
            return Ok(true);
        }
        tracing::warn!(%digest, "a blob written before the last reboot lost data; it will be fetched again");
        fs::remove_file(&path).map_err(io_err(&path))?;
        Ok(false)
    }

    /// The image, with every layer it needs known to be whole: layers written in an
    /// earlier boot without being settled are rebuilt from their blobs first.
    pub fn ready_image(&self, id: &Digest) -> Result<ImageRecord> {
        let image = self.image(id)?;
        let boot = boot_id();
        let stale: Vec<_> = {
            let db = self.db();
            let mut stale = Vec::new();
            for layer in &image.layers {
                let written = db.layer_unsynced_boot(layer.layer_id)?;
                if written.is_some_and(|b| b != boot || boot.is_empty()) {
                    stale.push(layer.clone());
                }
            }
            stale
        };
        if stale.is_empty() {
            return Ok(image);
        }
        // Rare (the first use after an unclean reboot): hold the store alone.
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        for layer in stale {
            let still = self.db().layer_unsynced_boot(layer.layer_id)?;
            if !still.is_some_and(|b| b != boot || boot.is_empty()) {
                continue; // another process rebuilt it meanwhile
            }
            tracing::warn!(diff_id = %layer.diff_id, "rebuilding a layer written before the last reboot from its blob");
            // In place, not through the objects: what an unclean reboot left of them is
            // not trusted here.
            self.rebuild_layer(&layer, false)?;
            self.db().mark_layer_synced(layer.layer_id)?;
        }
        Ok(image)
    }

    /// Unpacks `layer` again from its blob (checked whole first) and puts it in place of
    /// its directory; with `objects`, its files link the store's file objects.
    pub(crate) fn rebuild_layer(&self, layer: &LayerRecord, objects: bool) -> Result<()> {
        let fresh = self.root.join("ingest").join(format!(".rebuild-{}-{}", layer.layer_id, std::process::id()));
        let _ = fs::remove_dir_all(&fresh);
        fs::create_dir_all(&fresh).map_err(io_err(&fresh))?;
        let scratch = RemoveUnlessKept(Some(&fresh));
        let blob = self.blob_path(&layer.blob_digest);
        let what = layer.blob_digest.to_string();
        if !self.blob_is_whole(&layer.blob_digest)? {
            return Err(StoreError::Invalid {
                what: format!("layer {what}"),
                reason: "its blob lost data in an unclean reboot; remove the image and pull it again".into(),
            });
        }
        let file = File::open(&blob).map_err(io_err(&blob))?;
        let compression = Compression::from_media_type(&layer.media_type)
            .map_err(|source| StoreError::Unpack { blob: what.clone(), source })?;
        let tar = unpack::decompress(BufReader::with_capacity(1 << 20, file), compression)
            .map_err(|source| StoreError::Unpack { blob: what.clone(), source })?;
        let options = UnpackOptions {
            allow_devices: true,
            objects: objects.then(|| self.root.join(crate::objects::DIR)),
            ..UnpackOptions::default()
        };
        let stats = unpack::apply_tar(tar, &fresh, &options)
            .map_err(|source| StoreError::Unpack { blob: what.clone(), source })?;
        super::blobs::check(&format!("layer {what} (uncompressed)"), Some(&layer.diff_id), &stats.diff_id)?;
        let dir = File::open(&fresh).map_err(io_err(&fresh))?;
        rustix::fs::syncfs(&dir).map_err(|e| io_err(&fresh)(e.into()))?;
        scratch.keep();
        let target = self.layer_dir(layer.layer_id);
        let old = self.root.join("ingest").join(format!(".old-{}-{}", layer.layer_id, std::process::id()));
        if target.exists() {
            fs::rename(&target, &old).map_err(io_err(&target))?;
        }
        fs::rename(&fresh, &target).map_err(io_err(&target))?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    }

    /// Whether layers unpacked now may link the file objects (call holding the shared
    /// lock). Objects outlive boots: one written in a boot that ended before gc's syncfs
    /// may have lost data that never reached the disk, so the first unpack after such a
    /// boot must [`check_objects`](Self::check_objects) first. Otherwise this boot is
    /// recorded (durably, before any object of it can be on the disk) for the next one.
    pub(crate) fn objects_trusted(&self) -> Result<bool> {
        let marker = self.root.join(UNSETTLED_OBJECTS);
        let boot = boot_id();
        match fs::read_to_string(&marker) {
            Ok(written) => Ok(!boot.is_empty() && written.trim() == boot),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Written in place: a crash that leaves it partial only makes the next
                // boot check the objects.
                let mut file = crate::private::create_file(&marker, true).map_err(io_err(&marker))?;
                file.write_all(boot.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err(&marker))?;
                File::open(&self.root).and_then(|d| d.sync_all()).map_err(io_err(&self.root))?;
                Ok(true)
            }
            Err(e) => Err(io_err(&marker)(e)),
        }
    }

    /// Re-hashes every file object after an unclean reboot (holding the store alone) and
    /// removes the damaged ones; the layers that linked them were written in that boot,
    /// so they are rebuilt from their blobs when next used ([`ready_image`](Self::ready_image)).
    pub(crate) fn check_objects(&self) -> Result<()> {
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let marker = self.root.join(UNSETTLED_OBJECTS);
        let boot = boot_id();
        if fs::read_to_string(&marker).is_ok_and(|written| !boot.is_empty() && written.trim() == boot) {
            return Ok(()); // another process checked them meanwhile
        }
        tracing::warn!("checking the file objects written before an unclean reboot");
        let dir = self.root.join(objects::DIR);
        let (_, damaged) = objects::verify(&dir).map_err(io_err(&dir))?;
        for object in damaged {
            tracing::warn!(object = %object.name, reason = %object.reason, "removing a damaged file object");
            fs::remove_file(&object.path).map_err(io_err(&object.path))?;
        }
        fs::remove_file(&marker).map_err(io_err(&marker))?;
        Ok(())
    }
}

/// A directory being built: deleted when dropped unless [`keep`](Self::keep) says it is
/// complete, so that every early return leaves no half-built tree behind.
struct RemoveUnlessKept<'a>(Option<&'a Path>);

impl RemoveUnlessKept<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveUnlessKept<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
