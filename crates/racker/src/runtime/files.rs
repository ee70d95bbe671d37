//! A container's files as a whole: `diff` (what it changed of its image) and `export`
//! (its root as a tar). Both work on running and stopped containers; a stopped one's
//! root is mounted only for as long as `export` reads it, and `diff` needs no mount.

use std::io::Write;

use super::start::with_root;
use super::{Result, RuntimeError};
use crate::snapshot::diff::{self, Change, ChangeKind};
use crate::snapshot::{self, ImageLayers};
use crate::store::Store;

/// `racker diff`: what container `name` added, changed and deleted, sorted by path,
/// without what the runtime itself put there (see [`without_runtime_artifacts`]).
pub fn diff(store: &Store, name: &str) -> Result<Vec<Change>> {
    let record = store.container(name)?;
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    let image = store.ready_image(&record.image_id)?;
    let changes = snapshotter.changes(&record.id, &ImageLayers::of(store, &image))?;
    Ok(without_runtime_artifacts(changes))
}

/// Leaves out what nspawn and racker write for every run, as `commit` does (docker
/// keeps them in an init layer `diff` never shows): the host's resolver configuration
/// and time zone, the mount points made for an image that lacked them, and `/etc`
/// itself when nothing else of it changed.
fn without_runtime_artifacts(mut changes: Vec<Change>) -> Vec<Change> {
    changes.retain(|c| !super::commit::HOST_FILES.iter().any(|f| c.path.strip_prefix('/') == Some(f)));
    let has_below = |changes: &[Change], dir: &str| {
        let prefix = format!("{dir}/");
        changes.iter().any(|c| c.path.starts_with(&prefix))
    };
    let stubs: Vec<String> = super::commit::STUB_DIRS
        .iter()
        .map(|d| format!("/{d}"))
        .filter(|d| !has_below(&changes, d) && changes.iter().any(|c| &c.path == d && c.kind == ChangeKind::Added))
        .collect();
    let etc_alone = !has_below(&changes, "/etc");
    let runtimes =
        |c: &Change| stubs.contains(&c.path) || (etc_alone && c.path == "/etc" && c.kind == ChangeKind::Changed);
    changes.retain(|c| !runtimes(c));
    changes
}

/// `racker export`: writes the whole root of container `name` to `out` as an
/// uncompressed tar (owners, modes, symbolic and hard links, xattrs, device nodes;
/// sockets left out, as docker does). A stopped container's root is mounted for the
/// walk and unmounted after it.
pub fn export(store: &Store, name: &str, out: &mut dyn Write) -> Result<()> {
    let record = store.container(name)?;
    // A running container is frozen for the walk (as `pause` does, unless it is paused
    // already): the walk goes by path, so its processes must not swap a directory for a
    // symlink to the host's files in between, nor change what is being read.
    let cgroup = super::run::cgroup_of(&record);
    let freeze = cgroup.populated() && !cgroup.frozen();
    if freeze {
        cgroup.freeze(true, super::start::FREEZE_TIMEOUT).map_err(|e| RuntimeError::Left {
            name: record.name.clone(),
            what: format!("not frozen for the export: {e}"),
        })?;
    }
    let objects_dir = store.root().join(crate::objects::DIR);
    let objects =
        crate::objects::inodes(&objects_dir).map_err(|source| RuntimeError::Io { path: objects_dir, source })?;
    let written = with_root(store, &record, |rootfs| {
        diff::write_tree(rootfs, &objects, out)
            .map(drop)
            .map_err(|source| RuntimeError::Export { name: record.name.clone(), source })
    });
    if freeze {
        super::start::thaw(&record);
    }
    written
}

/// The bytes container `name` wrote (what its writes take on disk beyond its image):
/// for `container prune`'s total.
pub fn writes_size(store: &Store, name: &str) -> Result<u64> {
    let record = store.container(name)?;
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    if let Ok(upper) = snapshotter.upper_dir(&record.id) {
        return Ok(tree_size(&upper));
    }
    // btrfs: the files the container added or changed (the rest is shared with its image).
    let image = store.ready_image(&record.image_id)?;
    let root = snapshotter.mount(&record.id, &ImageLayers::of(store, &image))?;
    let changes = snapshotter.changes(&record.id, &ImageLayers::of(store, &image))?;
    Ok(changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Deleted)
        .filter_map(|c| std::fs::symlink_metadata(root.join(c.path.trim_start_matches('/'))).ok())
        .filter(|m| !m.is_dir())
        .map(|m| m.len())
        .sum())
}

/// Bytes of the files below `dir` (directories and unreadable entries count nothing).
fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, path: &str) -> Change {
        Change { path: path.into(), kind }
    }

    #[test]
    fn runtime_writes_are_left_out_and_real_changes_kept() {
        use ChangeKind::*;
        let only_runtime = vec![
            change(Changed, "/etc"),
            change(Added, "/etc/resolv.conf"),
            change(Added, "/proc"),
            change(Added, "/sys"),
        ];
        assert_eq!(without_runtime_artifacts(only_runtime), []);
        let real = vec![
            change(Changed, "/etc"),
            change(Added, "/etc/new"),
            change(Changed, "/etc/resolv.conf"),
            change(Added, "/tmp"),
            change(Added, "/tmp/x"),
            change(Deleted, "/gone"),
        ];
        assert_eq!(
            without_runtime_artifacts(real),
            [
                change(Changed, "/etc"),
                change(Added, "/etc/new"),
                change(Added, "/tmp"),
                change(Added, "/tmp/x"),
                change(Deleted, "/gone")
            ]
        );
    }
}
