//! Comparison of two directory trees as a container sees them: which paths exist and,
//! per path, file type, permission bits (07777), owner, group, symlink target, regular
//! file contents, device numbers, modification time (not of directories), extended
//! attributes and which paths are hardlinks of each other.
//!
//! Used to check racker's composed root (an overlay mount of the image's layer
//! directories) against what `umoci unpack` makes of the same image. Deliberately not
//! compared:
//! - the root directory itself: umoci creates `BUNDLE/rootfs` with its own metadata, an
//!   overlay mount point shows the top layer's;
//! - directory mtimes: a layer that adds `d/f` without a `d/` header makes an applier
//!   create `d` "now" (racker in its layer directory, umoci in its tree), and creating
//!   entries later changes a directory's mtime; neither is image content;
//! - link counts, inode numbers, sizes of directories, atime/ctime.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// d, f, l, c, b, p, s
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// sha256 of a regular file's contents, and its size.
    pub content: Option<(String, u64)>,
    /// Device numbers of character and block devices.
    pub rdev: Option<(u32, u32)>,
    /// mtime in seconds, not for directories (see the module doc).
    pub mtime: Option<i64>,
    /// Extended attributes except `trusted.overlay.*` and `security.selinux`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if let Some(t) = &self.target {
            write!(f, " -> {}", t.display())?;
        }
        if let Some((sha, size)) = &self.content {
            write!(f, " {size}B sha256:{}", &sha[..12])?;
        }
        if let Some((ma, mi)) = self.rdev {
            write!(f, " dev {ma}:{mi}")?;
        }
        if let Some(m) = self.mtime {
            write!(f, " mtime {m}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={}", hex::encode(v))?;
        }
        Ok(())
    }
}

/// A scanned tree: entries by path relative to the root, and the hardlink groups
/// (sets of two or more non-directory paths sharing one inode).
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
    pub hardlinks: BTreeSet<Vec<PathBuf>>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return out,
        Err(e) => panic!("listing xattrs of {}: {e}", path.display()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name == "security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value)
            .unwrap_or_else(|e| panic!("reading xattr {name} of {}: {e}", path.display()));
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

/// Scans everything below `root` (not `root` itself), without following symlinks.
pub fn scan(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name() {
        let e = e.unwrap_or_else(|err| panic!("walking {}: {err}", root.display()));
        let rel = e.path().strip_prefix(root).expect("below the root").to_path_buf();
        let md = e.path().symlink_metadata().unwrap_or_else(|err| panic!("lstat {}: {err}", e.path().display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let content = (kind == 'f').then(|| {
            let bytes = std::fs::read(e.path()).unwrap_or_else(|err| panic!("reading {}: {err}", e.path().display()));
            (hex::encode(Sha256::digest(&bytes)), md.len())
        });
        let target = (kind == 'l').then(|| {
            std::fs::read_link(e.path()).unwrap_or_else(|err| panic!("readlink {}: {err}", e.path().display()))
        });
        let rdev = matches!(kind, 'c' | 'b').then(|| {
            let dev = md.rdev();
            (rustix::fs::major(dev), rustix::fs::minor(dev))
        });
        if kind != 'd' && md.nlink() > 1 {
            inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
        }
        entries.insert(
            rel,
            Entry {
                kind,
                // A symlink's mode means nothing on Linux (always 0777).
                mode: if kind == 'l' { 0o777 } else { md.mode() & 0o7777 },
                uid: md.uid(),
                gid: md.gid(),
                target,
                content,
                rdev,
                mtime: (kind != 'd').then(|| md.mtime()),
                xattrs: xattrs(e.path()),
            },
        );
    }
    let hardlinks = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|mut paths| {
            paths.sort();
            paths
        })
        .collect();
    Tree { entries, hardlinks }
}

/// The differences between the trees below `ours` and `reference`, one line each
/// (empty when they are the same).
pub fn diff(ours: &Path, reference: &Path) -> Vec<String> {
    let a = scan(ours);
    let b = scan(reference);
    let mut out = Vec::new();
    for (path, ea) in &a.entries {
        match b.entries.get(path) {
            None => out.push(format!("only in ours: {} ({ea:?})", path.display())),
            Some(eb) if eb != ea => {
                out.push(format!("differs: {}\n    ours:      {ea:?}\n    reference: {eb:?}", path.display()))
            }
            Some(_) => {}
        }
    }
    for (path, eb) in &b.entries {
        if !a.entries.contains_key(path) {
            out.push(format!("only in reference: {} ({eb:?})", path.display()));
        }
    }
    if a.hardlinks != b.hardlinks {
        out.push(format!(
            "hardlink groups differ:\n    ours:      {:?}\n    reference: {:?}",
            a.hardlinks, b.hardlinks
        ));
    }
    out
}

/// Panics with every difference when the trees below `ours` and `reference` differ.
pub fn assert_same_tree(ours: &Path, reference: &Path) {
    let differences = diff(ours, reference);
    assert!(
        differences.is_empty(),
        "{} differs from {} in {} places:\n{}",
        ours.display(),
        reference.display(),
        differences.len(),
        differences.join("\n")
    );
    assert!(!scan(ours).entries.is_empty(), "both trees are empty: {}", ours.display());
}
