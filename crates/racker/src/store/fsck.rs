//! `racker system fsck`: everything the store holds is checked against the name it is
//! stored by, as `git fsck` and `ostree fsck` do: blobs against their sha256, file
//! objects against their blake3 name (content and inode metadata, see
//! [`crate::objects`]), layers for their directory and the objects they link. With
//! `repair`, damaged blobs and objects are removed and the layers that hold damaged
//! objects (or lost their directory) are rebuilt from their blobs; what cannot be rebuilt
//! is named with the way out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::{io_err, LayerRecord, Result, Store};
use crate::digest::{Digest, HashingReader};
use crate::objects;

/// What `fsck` checked and found.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FsckReport {
    pub blobs: u64,
    pub objects: u64,
    pub layers: u64,
    pub problems: Vec<Problem>,
}

/// One damaged thing.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Problem {
    /// `blob sha256:…`, `file object <name>`, `layer sha256:…` (its diff id).
    pub what: String,
    pub damage: String,
    /// The images it breaks.
    pub images: Vec<Digest>,
    /// What repair did, or why it could not; None when not asked to repair.
    pub repair: Option<Repair>,
}

#[derive(Debug, serde::Serialize)]
pub enum Repair {
    Repaired(String),
    Failed(String),
}

impl FsckReport {
    /// Whether damage remains: found, and not repaired.
    pub fn damaged(&self) -> bool {
        self.problems.iter().any(|p| !matches!(p.repair, Some(Repair::Repaired(_))))
    }
}

/// How many paths of a layer a problem names.
const PATHS_NAMED: usize = 3;

impl Store {
    /// Checks every blob, file object and layer the images use; with `repair`, removes
    /// what is damaged and rebuilds the layers it broke. Holds the store alone (as gc).
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let mut report = FsckReport::default();

        // Which images need which blob and layer.
        let mut blob_users: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let mut layers: BTreeMap<i64, (LayerRecord, Vec<Digest>)> = BTreeMap::new();
        for summary in self.images()? {
            let image = self.image(&summary.id)?;
            for digest in [&image.config_digest, &image.manifest_digest] {
                blob_users.entry(digest.clone()).or_default().push(summary.id.clone());
            }
            for layer in image.layers {
                blob_users.entry(layer.blob_digest.clone()).or_default().push(summary.id.clone());
                layers.entry(layer.layer_id).or_insert_with(|| (layer, Vec::new())).1.push(summary.id.clone());
            }
        }

        let damaged_blobs = self.check_blobs(&mut report, &blob_users, repair)?;

        let objects_dir = self.root.join(objects::DIR);
        let (checked, damaged_objects) = objects::verify(&objects_dir).map_err(io_err(&objects_dir))?;
        report.objects = checked;
        let damaged_inodes: HashSet<u64> = damaged_objects.iter().map(|o| o.ino).collect();
        for object in damaged_objects {
            let repaired = repair.then(|| match fs::remove_file(&object.path) {
                Ok(()) => Repair::Repaired("removed from objects/; the layers linking it are rebuilt".into()),
                Err(e) => Repair::Failed(format!("removing {}: {e}", object.path.display())),
            });
            report.problems.push(Problem {
                what: format!("file object {}", object.name),
                damage: object.reason,
                images: Vec::new(),
                repair: repaired,
            });
        }

        report.layers = layers.len() as u64;
        for (layer, images) in layers.into_values() {
            let dir = self.layer_dir(layer.layer_id);
            let damage = if !dir.is_dir() {
                "its directory is missing".to_owned()
            } else if damaged_inodes.is_empty() {
                continue;
            } else {
                let mut linked = Vec::new();
                links_to(&dir, &damaged_inodes, &mut linked).map_err(io_err(&dir))?;
                if linked.is_empty() {
                    continue;
                }
                let named: Vec<String> = linked.iter().take(PATHS_NAMED).map(|p| format!("/{}", p.display())).collect();
                let more = linked.len().saturating_sub(PATHS_NAMED);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                format!("its files {}{more} are damaged file objects", named.join(", "))
            };
            let repaired = repair.then(|| {
                if damaged_blobs.contains(&layer.blob_digest) || !self.blob_path(&layer.blob_digest).is_file() {
                    return Repair::Failed(format!(
                        "its blob {} is damaged or missing: remove the images using it (racker rmi), run racker gc, and pull them again",
                        layer.blob_digest
                    ));
                }
                match self.rebuild_layer(&layer, true) {
                    Ok(()) => Repair::Repaired(format!("rebuilt from blob {}", layer.blob_digest)),
                    Err(e) => Repair::Failed(format!("rebuilding it from its blob: {e}")),
                }
            });
            report.problems.push(Problem {
                what: format!("layer {}", layer.diff_id),
                damage,
                images,
                repair: repaired,
            });
        }
        Ok(report)
    }

    /// Re-hashes every blob file; returns the damaged ones (removed if `repair`: a pull
    /// fetches them again, as after an unclean reboot).
    fn check_blobs(
        &self,
        report: &mut FsckReport,
        users: &HashMap<Digest, Vec<Digest>>,
        repair: bool,
    ) -> Result<HashSet<Digest>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut damaged = HashSet::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Ok(digest) = format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>() else {
                continue; // not a blob: gc's to remove
            };
            report.blobs += 1;
            let path = entry.path();
            let found = match fs::File::open(&path).and_then(|f| HashingReader::new(f).finish()) {
                Ok((found, _)) if found == digest => continue,
                Ok((found, _)) => format!("its content hashes to {found}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => format!("unreadable: {e}"),
            };
            let repaired = repair.then(|| match fs::remove_file(&path) {
                Ok(()) => Repair::Repaired("removed; the next pull of an image using it fetches it again".into()),
                Err(e) => Repair::Failed(format!("removing {}: {e}", path.display())),
            });
            let images = users.get(&digest).cloned().unwrap_or_default();
            report.problems.push(Problem { what: format!("blob {digest}"), damage: found, images, repair: repaired });
            damaged.insert(digest);
        }
        Ok(damaged)
    }
}

/// The paths below `dir` (relative to it) of regular files whose inode is in `inodes`.
fn links_to(dir: &Path, inodes: &HashSet<u64>, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    fn walk(root: &Path, dir: &Path, inodes: &HashSet<u64>, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &entry.path(), inodes, found)?;
            } else if kind.is_file() {
                // Repair has unlinked the objects already: a layer file may be their last link.
                if inodes.contains(&entry.metadata()?.ino()) {
                    found.push(entry.path().strip_prefix(root).map(Path::to_path_buf).unwrap_or_default());
                }
            }
        }
        Ok(())
    }
    walk(dir, dir, inodes, found)
}
