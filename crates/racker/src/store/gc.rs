//! Garbage collection and disk usage. Images are the roots; gc deletes the rows that
//! no image reaches in one transaction, then every file that no row names. A gc that
//! crashes midway leaves only files without rows, which the next gc removes.

use std::fs;
use std::path::Path;

use rusqlite::Connection;
use rustix::fs::FlockOperation;

use super::{io_err, Result, Store, StoreError};

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

const UNREFERENCED_BLOBS: &str = "SELECT digest, size FROM blobs WHERE digest NOT IN (
    SELECT config_digest FROM images UNION SELECT manifest_digest FROM images UNION SELECT blob_digest FROM image_layers)";
const UNREFERENCED_LAYERS: &str =
    "SELECT id, diff_id, size FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)";

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

fn query_u64(conn: &Connection, sql: &str) -> rusqlite::Result<u64> {
    conn.query_row(sql, [], |r| r.get::<_, Option<u64>>(0)).map(|v| v.unwrap_or(0))
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
        let mut db = self.db();
        let path = self.root.join("racker.db");
        let dberr = |source| StoreError::Database { path: path.clone(), source };
        let tx = db.write()?;
        let (blobs, layers) = {
            let mut stmt = tx.prepare(UNREFERENCED_BLOBS).map_err(dberr)?;
            let blobs = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(dberr)?;
            let mut stmt = tx.prepare(UNREFERENCED_LAYERS).map_err(dberr)?;
            let layers = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(dberr)?;
            (blobs, layers)
        };
        for (digest, size) in &blobs {
            if !dry_run {
                tx.execute("DELETE FROM blobs WHERE digest = ?1", [digest]).map_err(dberr)?;
            }
            report.blobs.push(digest.clone());
            report.reclaimed_bytes += size;
        }
        for (id, diff_id, size) in &layers {
            if !dry_run {
                tx.execute("DELETE FROM layers WHERE id = ?1", [id]).map_err(dberr)?;
            }
            report.layers.push(diff_id.clone());
            report.reclaimed_bytes += size;
        }
        // Names of everything that stays, to find files no row names.
        let live_blobs: std::collections::HashSet<String> = {
            let mut stmt = tx.prepare("SELECT substr(digest, 8) FROM blobs").map_err(dberr)?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                .map_err(dberr)?;
            rows
        };
        let live_layers: std::collections::HashSet<String> = {
            let mut stmt = tx.prepare("SELECT CAST(id AS TEXT) FROM layers").map_err(dberr)?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                .map_err(dberr)?;
            rows
        };
        if !dry_run {
            tx.commit().map_err(dberr)?;
        } else {
            drop(tx);
        }
        drop(db);

        // Rows are gone; now the files. Known garbage is counted above, the rest here.
        let dropped_blobs: std::collections::HashSet<&str> =
            blobs.iter().map(|(d, _)| d.trim_start_matches("sha256:")).collect();
        let dropped_layers: std::collections::HashSet<String> =
            layers.iter().map(|(id, _, _)| id.to_string()).collect();
        let keep = |area: &str, name: &str| match area {
            "blobs/sha256" => live_blobs.contains(name) && !dropped_blobs.contains(name),
            "layers" => live_layers.contains(name) && !dropped_layers.contains(name),
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
        let db = self.db();
        let c = &db.conn;
        let q = || -> rusqlite::Result<DiskUsage> {
            let mut du = DiskUsage {
                images: query_u64(c, "SELECT COUNT(*) FROM images")?,
                images_size: query_u64(c, "SELECT SUM(size) FROM images")?,
                layers: query_u64(c, "SELECT COUNT(*) FROM layers")?,
                layers_size: query_u64(c, "SELECT SUM(size) FROM layers")?,
                blobs: query_u64(c, "SELECT COUNT(*) FROM blobs")?,
                blobs_size: query_u64(c, "SELECT SUM(size) FROM blobs")?,
                ..DiskUsage::default()
            };
            du.shared_size = query_u64(
                c,
                "SELECT SUM(size) FROM layers WHERE diff_id IN
                   (SELECT diff_id FROM image_layers GROUP BY diff_id HAVING COUNT(DISTINCT image_id) > 1)",
            )? + query_u64(
                c,
                "SELECT SUM(size) FROM blobs WHERE digest IN
                   (SELECT blob_digest FROM image_layers GROUP BY blob_digest HAVING COUNT(DISTINCT image_id) > 1)",
            )?;
            du.unused_blobs = query_u64(c, &format!("SELECT COUNT(*) FROM ({UNREFERENCED_BLOBS})"))?;
            du.unused_blobs_size = query_u64(c, &format!("SELECT SUM(size) FROM ({UNREFERENCED_BLOBS})"))?;
            du.unused_layers = query_u64(c, &format!("SELECT COUNT(*) FROM ({UNREFERENCED_LAYERS})"))?;
            du.unused_layers_size = query_u64(c, &format!("SELECT SUM(size) FROM ({UNREFERENCED_LAYERS})"))?;
            du.reclaimable_size = du.unused_blobs_size + du.unused_layers_size;
            // Logical: each image counted with all its layers and blobs; physical: stored once.
            let logical = du.images_size
                + query_u64(
                    c,
                    "SELECT SUM(b.size) FROM (SELECT DISTINCT image_id, blob_digest AS d FROM image_layers
                       UNION SELECT id, config_digest FROM images UNION SELECT id, manifest_digest FROM images) u
                     JOIN blobs b ON b.digest = u.d",
                )?;
            let physical = du.layers_size + du.blobs_size - du.reclaimable_size;
            du.dedupe_ratio = if physical == 0 { 1.0 } else { logical as f64 / physical as f64 };
            Ok(du)
        };
        let mut du = q().map_err(db.err())?;
        let objects = self.root.join(crate::objects::DIR);
        du.objects = crate::objects::sharing(&objects, TOP_SHARED).map_err(io_err(&objects))?;
        Ok(du)
    }
}
