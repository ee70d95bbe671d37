//! File objects: each regular file of an unpacked layer (of [`MIN_SIZE`] or more) is stored
//! once, as `objects/<2 hex>/<62 hex>` in the store, and every layer directory that holds
//! it is a hard link to that one inode, as ostree's bare repositories and composefs's
//! object stores do. Identical files across layers and images then take their space once
//! on disk and once in the page cache.
//!
//! An object's name is the blake3 of its content *and* of the metadata an inode carries
//! (mode, owner, mtime, xattrs): a shared inode never changes a file's metadata, so two
//! files share only where they are the same in everything `stat` and `getxattr` see.
//! Overlayfs copies a lower file up before the first write, so no container ever
//! modifies an object.
//!
//! The applier writes a file in its layer directory, hashing it as it writes, sets its
//! metadata, and then links it into `objects/` under its name, or, where that object
//! exists, replaces it by a link to the object. Nothing is ever half-linked: an object is
//! complete before it has its name, and a layer's name always has the whole content. An
//! object that only `objects/` holds (link count 1: its layers are gone, or an unpack
//! crashed) is garbage that `gc` removes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Files smaller than this are written as they are. Every file with data is an object:
/// the smallest takes a block of its own per copy (4 KiB on ext4 and tmpfs), and a Debian
/// root has thousands; an empty file has nothing to share.
pub const MIN_SIZE: u64 = 1;

/// The store's `objects/` directory.
pub const DIR: &str = "objects";

/// `RACKER_FILE_OBJECTS=off` unpacks new layers without objects, every file in place: for
/// benchmarks of the difference, and file systems where hard links are unwelcome.
pub const ENV: &str = "RACKER_FILE_OBJECTS";

/// Whether new layers get file objects (see [`ENV`]).
pub fn enabled() -> bool {
    std::env::var(ENV).map_or(true, |v| v != "off")
}

/// What an object's name is made of beside its content.
pub struct ObjectMeta<'a> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// An object's name: blake3 over a version tag, the content's blake3 and the metadata.
pub fn name(content: &blake3::Hash, meta: &ObjectMeta<'_>) -> String {
    let mut key = blake3::Hasher::new();
    key.update(b"racker-object-1\0");
    key.update(content.as_bytes());
    key.update(&meta.mode.to_le_bytes());
    key.update(&meta.uid.to_le_bytes());
    key.update(&meta.gid.to_le_bytes());
    key.update(&meta.mtime.0.to_le_bytes());
    key.update(&meta.mtime.1.to_le_bytes());
    let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> = meta.xattrs.iter().collect();
    xattrs.sort();
    for (k, v) in xattrs {
        key.update(&(k.len() as u64).to_le_bytes());
        key.update(k);
        key.update(&(v.len() as u64).to_le_bytes());
        key.update(v);
    }
    key.finalize().to_hex().to_string()
}

/// `<2 hex>/<62 hex>`: the object's path below `objects/`.
fn relative(name: &str) -> (&str, String) {
    let (fan, _) = name.split_at(2);
    (fan, format!("{fan}/{}", &name[2..]))
}

/// What [`Objects::link`] made of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// The file is the object now: new to the store.
    Stored,
    /// The file is a link to the object another layer stored.
    Shared,
    /// The file stays a file of its own: the object has as many links as allowed.
    Own,
    /// The file stays a file of its own: this file system has no hard links.
    Unsupported,
}

/// The store's object directory, opened.
#[derive(Debug)]
pub struct Objects {
    dir: OwnedFd,
}

impl Objects {
    /// Opens `dir` (`objects/` of a store), making it (mode 0700) if it is missing.
    pub fn open(dir: &Path) -> io::Result<Objects> {
        crate::private::dir(dir)?;
        let dir = rfs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Objects { dir })
    }

    /// Makes `name` in `parent`, a complete file (content and metadata in place), the
    /// object `object`: stored as it (one call, what a first pull does), or, where
    /// another layer stored it first, replaced by a link to that one (the link is made
    /// beside the fan-out directories, where no layer's name can be, and renamed over
    /// the file, so the name never lacks its content). Unpacks link their files so, and
    /// `racker system dedupe` the files of layers unpacked without objects.
    pub fn link(&self, parent: BorrowedFd<'_>, name: &[u8], object: &str) -> rustix::io::Result<Linked> {
        static SWAPS: AtomicU64 = AtomicU64::new(0);
        let (fan, path) = relative(object);
        loop {
            match rfs::linkat(parent, name, &self.dir, &path, AtFlags::empty()) {
                Ok(()) => return Ok(Linked::Stored),
                Err(Errno::NOENT) => match rfs::mkdirat(&self.dir, fan, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => continue,
                    Err(e) => return Err(e),
                },
                Err(Errno::EXIST) => {}
                // A file system without hard links: the file stays as it is.
                Err(Errno::PERM | Errno::OPNOTSUPP) => return Ok(Linked::Unsupported),
                Err(e) => return Err(e),
            }
            let swap = format!(".link-{}-{}", std::process::id(), SWAPS.fetch_add(1, Ordering::Relaxed));
            match rfs::linkat(&self.dir, &path, &self.dir, &swap, AtFlags::empty()) {
                Ok(()) => {}
                // Taken back meanwhile by the unpack that stored it (its layer was dropped).
                Err(Errno::NOENT) => continue,
                // As many links as the file system allows (65000 on ext4): stays its own.
                Err(Errno::MLINK) => return Ok(Linked::Own),
                Err(e) => return Err(e),
            }
            return match rfs::renameat(&self.dir, &swap, parent, name) {
                Ok(()) => Ok(Linked::Shared),
                Err(e) => {
                    let _ = rfs::unlinkat(&self.dir, &swap, AtFlags::empty());
                    Err(e)
                }
            };
        }
    }

    /// The object `object`, opened for reading, if the store has it.
    pub fn open_object(&self, object: &str) -> Option<OwnedFd> {
        let (_, path) = relative(object);
        rfs::openat(&self.dir, &path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()
    }

    /// Takes back an object that an unpack stored for a layer that is not kept, so that
    /// it goes now rather than with the next gc: unless it has more than `links` links
    /// (the object's own, and the dropped layer's if that is still there), that is,
    /// another layer linked it meanwhile. Best effort: gc removes what stays.
    pub fn forget(&self, object: &str, links: u64) {
        let (_, path) = relative(object);
        if rfs::statat(&self.dir, &path, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| st.st_nlink <= links) {
            let _ = rfs::unlinkat(&self.dir, &path, AtFlags::empty());
        }
    }
}

/// How much the objects share: files stored once and linked from layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sharing {
    /// Objects in the store.
    pub objects: u64,
    /// Their bytes, each counted once: what the disk holds.
    pub stored: u64,
    /// Their bytes counted once per layer file that links them: what the layers would
    /// take without objects.
    pub logical: u64,
    /// The objects most layer files share (bytes saved = size × (links − 1)), largest first.
    pub top: Vec<SharedObject>,
}

/// One object and how often layers link it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedObject {
    pub name: String,
    pub size: u64,
    /// Layer files linking it.
    pub links: u64,
}

/// The entries of `dir`, none if it does not exist (a store from before objects).
fn entries(dir: &Path) -> io::Result<impl Iterator<Item = io::Result<std::fs::DirEntry>>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries).into_iter().flatten()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None.into_iter().flatten()),
        Err(e) => Err(e),
    }
}

/// Every object below `dir` with its size and link count (the `objects/` entry included).
fn each(dir: &Path, mut f: impl FnMut(PathBuf, String, &std::fs::Metadata)) -> io::Result<()> {
    for fan in entries(dir)? {
        let fan = fan?;
        if !fan.file_type()?.is_dir() {
            continue; // not racker's
        }
        let prefix = fan.file_name().to_string_lossy().into_owned();
        for object in std::fs::read_dir(fan.path())? {
            let object = object?;
            let meta = object.metadata()?;
            f(object.path(), format!("{prefix}{}", object.file_name().to_string_lossy()), &meta);
        }
    }
    Ok(())
}

/// What the objects below `dir` share, with the `top` most shared.
pub fn sharing(dir: &Path, top: usize) -> io::Result<Sharing> {
    let mut sharing = Sharing::default();
    let mut all = Vec::new();
    each(dir, |_, name, meta| {
        let links = meta.nlink().saturating_sub(1);
        sharing.objects += 1;
        sharing.stored += meta.size();
        sharing.logical += meta.size() * links;
        all.push(SharedObject { name, size: meta.size(), links });
    })?;
    all.sort_by_key(|o| std::cmp::Reverse(o.size * o.links.saturating_sub(1)));
    sharing.top = all.into_iter().filter(|o| o.links > 1).take(top).collect();
    Ok(sharing)
}

/// The links [`Objects::link`] makes beside the fan-out directories and renames at once:
/// one that is still there was left by a killed unpack, and keeps its object alive.
/// Their names in `dir`, for gc (under its exclusive lock, none is in use).
pub fn swaps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in entries(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".link-") && !entry.file_type()?.is_dir() {
            found.push(PathBuf::from(entry.file_name()));
        }
    }
    Ok(found)
}

/// Objects below `dir` that no layer links any more (link count 1): their paths and
/// sizes. Only safe to remove while nothing can link them (gc's exclusive lock).
pub fn unlinked(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    each(dir, |path, _, meta| {
        if meta.nlink() <= 1 {
            found.push((path, meta.size()));
        }
    })?;
    Ok(found)
}

/// The inode numbers of the objects below `dir`: a walk of a container's root that meets
/// one of them met a shared object, not a hard link the image made (overlayfs shows a
/// lower file's own inode number, under its own device number).
pub fn inodes(dir: &Path) -> io::Result<std::collections::HashSet<u64>> {
    let mut found = std::collections::HashSet::new();
    each(dir, |_, _, meta| {
        found.insert(meta.ino());
    })?;
    Ok(found)
}

/// An object whose content or metadata no longer match its name: its bytes rotted on
/// the disk, or something wrote to or `chmod`ed a layer file (and so every layer's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damaged {
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub ino: u64,
    /// Why: the name its content and metadata have now, or what could not be read.
    pub reason: String,
}

/// Re-hashes every object below `dir` (content, mode, owner, mtime, xattrs) against its
/// name. Returns how many it checked and the damaged ones.
pub fn verify(dir: &Path) -> io::Result<(u64, Vec<Damaged>)> {
    let mut checked = 0;
    let mut damaged = Vec::new();
    each(dir, |path, name, meta| {
        checked += 1;
        let reason = match rehash(&path) {
            Ok(found) if found == name => return,
            Ok(found) => format!("its content or metadata now make it {found}"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return, // gc removed it meanwhile
            Err(e) => format!("unreadable: {e}"),
        };
        damaged.push(Damaged { name, path, ino: meta.ino(), reason });
    })?;
    Ok((checked, damaged))
}

/// The object name the file at `path` has by its content and metadata now.
pub fn rehash(path: &Path) -> io::Result<String> {
    let fd = rfs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    let xattrs = xattrs(fd.as_fd())?;
    let mut content = blake3::Hasher::new();
    content.update_reader(std::fs::File::from(fd))?;
    let meta = ObjectMeta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        xattrs: &xattrs,
    };
    Ok(name(&content.finalize(), &meta))
}

/// Every extended attribute of `fd`, as the applier set them.
fn xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; 1024];
    let len = loop {
        match rfs::flistxattr(fd, &mut list[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => list.resize(rfs::flistxattr_query(fd)?.max(list.len() * 2), 0),
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut found = Vec::new();
    for key in list[..len].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut value = vec![0u8; rfs::fgetxattr_query(fd, key)?];
        let n = rfs::fgetxattr(fd, key, &mut value[..])?;
        value.truncate(n);
        found.push((key.to_vec(), value));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn meta(mode: u32, xattrs: &[(Vec<u8>, Vec<u8>)]) -> ObjectMeta<'_> {
        ObjectMeta { mode, uid: 0, gid: 0, mtime: (1_700_000_000, 0), xattrs }
    }

    #[test]
    fn names_cover_content_and_every_bit_of_metadata_but_not_xattr_order() {
        let content = blake3::hash(b"data");
        let a = [(b"user.a".to_vec(), b"1".to_vec()), (b"user.b".to_vec(), b"2".to_vec())];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(name(&content, &meta(0o644, &a)), name(&content, &meta(0o644, &b)));
        assert_ne!(name(&content, &meta(0o644, &a)), name(&content, &meta(0o644, &[])));
        assert_ne!(name(&content, &meta(0o644, &[])), name(&content, &meta(0o4644, &[])));
        assert_ne!(name(&content, &meta(0o644, &[])), name(&blake3::hash(b"other"), &meta(0o644, &[])));
        let owned = ObjectMeta { uid: 1000, ..meta(0o644, &[]) };
        assert_ne!(name(&content, &meta(0o644, &[])), name(&content, &owned));
        assert_eq!(name(&content, &meta(0o644, &[])).len(), 64);
    }

    /// Writes `bytes` as `file` in `dir` and links it through `objects`.
    fn store(objects: &Objects, dir: &Path, file: &str, bytes: &[u8]) -> Linked {
        let mut f = std::fs::File::create(dir.join(file)).expect("create");
        f.write_all(bytes).expect("write");
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)).expect("mtime");
        let parent = rfs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("dir");
        let object = rehash(&dir.join(file)).expect("rehash");
        objects.link(parent.as_fd(), file.as_bytes(), &object).expect("link")
    }

    #[test]
    fn the_second_file_links_the_first_ones_object_and_sharing_counts_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let objects = Objects::open(&root.path().join(DIR)).expect("objects");
        assert_eq!(store(&objects, root.path(), "a", b"same"), Linked::Stored, "a new object");
        assert_eq!(store(&objects, root.path(), "b", b"same"), Linked::Shared, "linked to the existing one");
        assert_eq!(store(&objects, root.path(), "c", b"other"), Linked::Stored);
        let ino = |f: &str| std::fs::metadata(root.path().join(f)).expect("stat").ino();
        assert_eq!(ino("a"), ino("b"));
        assert_ne!(ino("a"), ino("c"));
        let shared = sharing(&root.path().join(DIR), 5).expect("sharing");
        assert_eq!((shared.objects, shared.stored, shared.logical), (2, 9, 13));
        assert_eq!(shared.top.len(), 1, "only the object two files link");
        std::fs::remove_file(root.path().join("c")).expect("rm");
        let unlinked = unlinked(&root.path().join(DIR)).expect("unlinked");
        assert_eq!(unlinked.iter().map(|(_, size)| *size).collect::<Vec<_>>(), [5], "the object of c only");
    }
}
