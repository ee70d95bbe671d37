//! Garbage collection and disk usage. Images are the roots; gc deletes the rows that
//! no image reaches in one transaction, then every file that no row names. A gc that
//! crashes midway leaves only files without rows, which the next gc removes.

use std::fs;
use std::path::Path;

use rustix::fs::FlockOperation;

use super::{io_err, Result, Store};

/// What a gc removed (or, in a dry run, would remove).
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs: Vec<String>,
    pub layers: Vec<String>,
    /// Files and directories no row names: leftovers of crashed operations.
    pub leftovers: Vec<String>,
    /// File objects no layer links any more (see [`crate::objects`]).
    pub objects: u64,
    pub reclaimed_bytes: u64,
}

/// `racker system df`: what the store holds and how much sharing saves.
#[derive(Debug, Default, serde::Serialize)]
pub struct DiskUsage {
    pub images: u64,
    /// Sum of every image's own size (unpacked layers), as if nothing were shared.
    pub images_size: u64,
    pub layers: u64,
    /// Unpacked layers on disk, each counted once.
    pub layers_size: u64,
    pub blobs: u64,
    pub blobs_size: u64,
    /// Bytes of layers and blobs that more than one image uses, counted once.
    pub shared_size: u64,
    /// Bytes of layers and blobs that no image uses (what gc would reclaim).
    pub reclaimable_size: u64,
    /// Layers no image uses, and their bytes (part of `reclaimable_size`).
    pub unused_layers: u64,
    pub unused_layers_size: u64,
    /// Blobs no image uses, and their bytes (the rest of `reclaimable_size`).
    pub unused_blobs: u64,
    pub unused_blobs_size: u64,
    /// Logical bytes (every image's layers and blobs) per physical byte stored.
    pub dedupe_ratio: f64,
    /// Files stored once across layers (see [`crate::objects`]): read from `objects/`.
    pub objects: crate::objects::Sharing,
}

/// How many of the most shared file objects `system df` names.
const TOP_SHARED: usize = 10;

/// Apparent size of a file or tree, for reporting what leftovers held.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    fs::read_dir(path).map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
}

fn remove_path(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(io_err(path))
}

impl Store {
    /// Removes everything no image references, waiting for operations in progress.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        if !dry_run {
            self.settle()?;
        }
        self.sweep(dry_run)
    }

    /// Like [`gc`](Self::gc), but returns None at once if another operation holds the store.
    pub fn try_gc(&self) -> Result<Option<GcReport>> {
        match self.lock(FlockOperation::NonBlockingLockExclusive)? {
            Some(_lock) => self.sweep(false).map(Some),
            None => Ok(None),
        }
    }

    fn sweep(&self, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        let rows = self.db().sweep(!dry_run)?;
        for blob in &rows.blobs {
            report.blobs.push(blob.digest.clone());
            report.reclaimed_bytes += blob.size;
        }
        for layer in &rows.layers {
            report.layers.push(layer.diff_id.clone());
            report.reclaimed_bytes += layer.size;
        }

        // Rows are gone; now the files. Known garbage is counted above, the rest here.
        let dropped_blobs: std::collections::HashSet<&str> =
            rows.blobs.iter().map(|b| b.digest.trim_start_matches("sha256:")).collect();
        let dropped_layers: std::collections::HashSet<String> = rows.layers.iter().map(|l| l.id.to_string()).collect();
        let keep = |area: &str, name: &str| match area {
            "blobs/sha256" => rows.live_blobs.contains(name) && !dropped_blobs.contains(name),
            "layers" => rows.live_layers.contains(name) && !dropped_layers.contains(name),
            _ => false,
        };
        for area in ["blobs/sha256", "layers", "ingest"] {
            let dir = self.root.join(area);
            let entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep(area, &name) {
                    continue;
                }
                let known =
                    dropped_blobs.contains(name.as_str()) || (area == "layers" && dropped_layers.contains(&name));
                if !known {
                    report.reclaimed_bytes += tree_size(&entry.path());
                    report.leftovers.push(format!("{area}/{name}"));
                }
                if !dry_run {
                    remove_path(&entry.path())?;
                }
            }
        }
        // Last, with the layers gone: objects that only objects/ still links. (A dry run
        // counts those unlinked now, not those the layers above would set free.)
        let objects = self.root.join(crate::objects::DIR);
        for swap in crate::objects::swaps(&objects).map_err(io_err(&objects))? {
            report.leftovers.push(format!("{}/{}", crate::objects::DIR, swap.display()));
            if !dry_run {
                remove_path(&objects.join(swap))?;
            }
        }
        for (path, size) in crate::objects::unlinked(&objects).map_err(io_err(&objects))? {
            report.objects += 1;
            report.reclaimed_bytes += size;
            if !dry_run {
                remove_path(&path)?;
            }
        }
        Ok(report)
    }

    /// Sizes of what the store holds, from the database.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let mut du = self.db().disk_usage()?;
        let objects = self.root.join(crate::objects::DIR);
        du.objects = crate::objects::sharing(&objects, TOP_SHARED).map_err(io_err(&objects))?;
        Ok(du)
    }
}
