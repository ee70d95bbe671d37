//! The tar applier: walks a layer tar and creates each entry itself with `*at` system
//! calls, never through the tar crate's own unpack functions, which resolve paths by name
//! and follow symlinks planted by earlier entries.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use super::extensions::{ExtensionError, Extensions, ReadError};
use super::handoff;
use super::{UnpackError, UnpackOptions, UnpackStats, WhiteoutMode};
use crate::digest::HashingReader;
use crate::objects::{self, Linked, ObjectMeta, Objects};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Applies the decompressed tar stream `tar` to `dest` (an existing directory),
/// hashing the stream as it goes (the diff_id).
///
/// `dest` is meant to be an empty staging directory that nothing else writes to while the
/// layer is applied. On error, `dest` is left half-populated: the caller deletes it (the
/// store unpacks into `ingest/<op>/`, which is removed on failure). Refused entries never
/// write outside `dest`, whatever they contain.
///
/// Later entries win over earlier ones at the same path, as in docker: an existing
/// directory is kept (and its metadata updated) when the entry is a directory too, anything
/// else is removed first. Whiteouts are handled as [`UnpackOptions::whiteouts`] says; per
/// the OCI spec a whiteout never hides something this same layer created.
pub fn apply_tar<R: Read>(tar: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_err(".", "opening the destination directory", e))?;
    apply_tar_at(tar, root, opts, None)
}

/// [`apply_tar`] to the directory `root` (opened, not `O_PATH`), for a caller that
/// resolved it itself (inside a container's root). With `owner`, every entry gets that
/// uid and gid instead of the tar's (`racker cp` without `-a`).
pub fn apply_tar_at<R: Read>(
    tar: R,
    root: OwnedFd,
    opts: &UnpackOptions,
    owner: Option<(u32, u32)>,
) -> Result<UnpackStats, UnpackError> {
    let objects = match &opts.objects {
        Some(dir) => Some(Objects::open(dir).map_err(|e| UnpackError::Io {
            entry: ".".into(),
            action: "opening the object directory",
            source: e,
        })?),
        None => None,
    };
    let applier = Applier {
        root,
        opts,
        objects,
        stored: Vec::new(),
        owner,
        cache: None,
        added: HashSet::new(),
        dir_times: HashMap::new(),
        size: 0,
        files: 0,
        buf: vec![0; 128 * 1024],
    };
    // The stream is read (and hashed: the diff_id) here, and applied on a thread of its own.
    let mut tar = HashingReader::new(tar);
    let (pump, chunks) = handoff::channel();
    let (size, files, stored) = std::thread::scope(|s| {
        let applying = s.spawn(move || applier.apply_all(chunks));
        pump.run(&mut tar);
        applying.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let (diff_id, tar_size) = tar.finish().map_err(|e| corrupt("reading the end of the tar stream", e))?;
    Ok(UnpackStats { diff_id, tar_size, size, files, stored })
}

/// Why an archive path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsafe {
    Absolute,
    DotDot,
}

/// Splits an archive path into its components, dropping empty and `.` components (so a
/// leading `./` goes, and `.` or `./` is the root: no components). Absolute paths and
/// `..` components are refused, not skipped: a layer that has them is hostile or broken.
///
/// Works on the raw header bytes: the tar crate's `path()` would quietly strip a leading
/// `/`.
pub(crate) fn sanitize(raw: &[u8]) -> Result<Vec<&[u8]>, Unsafe> {
    if raw.first() == Some(&b'/') {
        return Err(Unsafe::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Unsafe::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The metadata an entry carries, PAX records applied.
struct Meta {
    mode: Mode,
    uid: Uid,
    gid: Gid,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn times(&self) -> Timestamps {
        Timestamps { last_access: self.mtime, last_modification: self.mtime }
    }
}

enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Node(FileType, u32, u32),
}

struct Applier<'o> {
    /// The destination directory, opened once; every path is resolved beneath it.
    root: OwnedFd,
    opts: &'o UnpackOptions,
    /// Where regular files are stored once (see [`crate::objects`]); None when the caller
    /// gave none or the file system has no hard links.
    objects: Option<Objects>,
    /// Objects this unpack stored: taken back if it fails.
    stored: Vec<String>,
    /// The owner every entry gets, whatever the tar says.
    owner: Option<(u32, u32)>,
    /// The last parent directory resolved (an `O_PATH` fd) and its archive path: tars
    /// list a directory's entries together, so this saves an `openat2` per entry. It
    /// cannot go stale: an entry only ever removes children of its own parent, never an
    /// ancestor of it.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Archive paths this layer created or named, and all their ancestors: what
    /// whiteouts and opaque markers must not remove (they apply to lower layers only).
    added: HashSet<Vec<u8>>,
    /// Directory mtimes, set at the end: creating children changes them.
    dir_times: HashMap<Vec<u8>, Timespec>,
    size: u64,
    files: u64,
    buf: Vec<u8>,
}

impl Applier<'_> {
    /// [`apply_entries`](Self::apply_entries); if that fails, the objects it stored are
    /// taken back (a full disk leaves none behind).
    /// Returns the bytes and entries made and the objects stored.
    fn apply_all(mut self, tar: impl Read) -> Result<(u64, u64, Vec<String>), UnpackError> {
        match self.apply_entries(tar) {
            Ok((size, files)) => Ok((size, files, self.stored)),
            Err(e) => {
                if let Some(objects) = &self.objects {
                    // Linked by the object's own name and this layer's, which goes.
                    self.stored.iter().for_each(|name| objects.forget(name, 2));
                }
                Err(e)
            }
        }
    }

    /// Applies every entry of `tar` and reads it to its end (the trailing zero blocks
    /// belong to the diff_id); returns the bytes and entries made.
    fn apply_entries(&mut self, tar: impl Read) -> Result<(u64, u64), UnpackError> {
        let mut archive = tar::Archive::new(tar);
        // Raw entries: extension headers are read here, by length (see `extensions`).
        let entries = archive.entries().map_err(|e| corrupt("reading the first entry", e))?.raw(true);
        let mut ext = Extensions::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt("reading the next entry", e))?;
            let etype = entry.header().entry_type();
            let size = entry.header().size().map_err(|e| corrupt("reading an entry's size", e))?;
            let read = match etype {
                EntryType::XHeader => ext.read_pax(&mut entry, size),
                EntryType::GNULongName => ext.read_gnu(&mut entry, size, false),
                EntryType::GNULongLink => ext.read_gnu(&mut entry, size, true),
                // Global records (e.g. git archive's comment) say nothing racker applies.
                EntryType::XGlobalHeader => Ok(()),
                _ => {
                    self.apply(&mut entry, &std::mem::take(&mut ext))?;
                    continue;
                }
            };
            read.map_err(|e| extension_err(&entry, e))?;
        }
        if !ext.is_empty() {
            return Err(corrupt("reading the end of the tar stream", io::Error::other(ExtensionError::Dangling)));
        }
        self.set_dir_times()?;
        io::copy(&mut archive.into_inner(), &mut io::sink())
            .map_err(|e| corrupt("reading the end of the tar stream", e))?;
        Ok((self.size, self.files))
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, ext: &Extensions) -> Result<(), UnpackError> {
        let raw = ext.path(&entry.header().path_bytes()).to_vec();
        let es = String::from_utf8_lossy(&raw).into_owned();
        let etype = entry.header().entry_type();
        let size = entry.header().size().map_err(|e| corrupt(&format!("header of {es:?}: size"), e))?;
        ext.check_size(size).map_err(|e| bad(&es, e.to_string()))?;
        let comps = sanitize(&raw).map_err(|u| UnpackError::UnsafePath {
            entry: es.clone(),
            reason: match u {
                Unsafe::Absolute => "absolute path in a layer",
                Unsafe::DotDot => "path has a `..` component",
            },
        })?;
        let mut meta = read_meta(entry, ext, &es)?;
        if let Some((uid, gid)) = self.owner {
            (meta.uid, meta.gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        }
        let kind = read_kind(entry, ext, etype, &es)?;

        let Some((&name, dir)) = comps.split_last() else {
            // `.` or `./`: metadata for the layer root.
            if !matches!(kind, Kind::Dir) {
                return Err(bad(&es, "the layer root can only be a directory".into()));
            }
            set_dir_meta(self.root.as_fd(), &meta, &es)?;
            self.dir_times.insert(Vec::new(), meta.mtime);
            return Ok(());
        };

        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX).filter(|_| self.opts.whiteouts != WhiteoutMode::Plain)
        {
            return if name == OPAQUE_MARKER {
                self.opaque(dir, &es)
            } else if name.starts_with(AUFS_META_PREFIX) {
                Ok(()) // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
            } else if matches!(hidden, b"" | b"." | b"..") {
                Err(UnpackError::UnsafePath { entry: es, reason: "whiteout of an invalid name" })
            } else {
                self.whiteout(dir, hidden, &es)
            };
        }

        if let Kind::Node(FileType::CharacterDevice | FileType::BlockDevice, ..) = kind {
            if !self.opts.allow_devices {
                return Err(UnpackError::DeviceNotAllowed { entry: es });
            }
        }
        let parent_key = join(dir);
        let parent = self
            .parent(dir, &parent_key, &es, true)?
            .ok_or_else(|| io_err(&es, "creating parent directories", Errno::NOENT))?;
        let result = self.create(entry, parent.as_fd(), name, join(&comps), kind, meta, &es);
        self.cache = Some((parent_key, parent));
        result
    }

    /// Resolves the directory `dir` (archive components) beneath the root, creating
    /// missing components (mode 0755, owned by us) if `create`; `Ok(None)` if it is
    /// missing and not `create`. A path through a symlink that leaves the root is refused.
    fn parent(&mut self, dir: &[&[u8]], key: &[u8], es: &str, create: bool) -> Result<Option<OwnedFd>, UnpackError> {
        if matches!(&self.cache, Some((k, _)) if k == key) {
            if let Some((_, fd)) = self.cache.take() {
                return Ok(Some(fd));
            }
        }
        match open_beneath(&self.root, key, OFlags::PATH) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(resolve_err(es, e)),
        }
        // Slow path: create what is missing, one component at a time.
        let mut cur = open_beneath(&self.root, b"", OFlags::PATH).map_err(|e| resolve_err(es, e))?;
        for (i, &c) in dir.iter().enumerate() {
            let prefix = join(&dir[..=i]);
            match open_beneath(&self.root, &prefix, OFlags::PATH) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(resolve_err(es, e)),
            }
            match rfs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    return Err(bad(es, format!("parent {:?} is a dangling symlink", String::from_utf8_lossy(&prefix))))
                }
                Err(e) => return Err(io_err(es, "creating a parent directory", e)),
            }
            // mkdirat's mode is subject to the umask.
            rfs::chmodat(&cur, c, Mode::from_raw_mode(0o755), AtFlags::empty())
                .map_err(|e| io_err(es, "setting the mode of a parent directory", e))?;
            self.files += 1;
            self.mark_added(prefix);
            cur = open_beneath(&cur, c, OFlags::PATH).map_err(|e| resolve_err(es, e))?;
        }
        Ok(Some(cur))
    }

    /// Creates one (non-whiteout) entry at `parent`/`name`.
    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &[u8],
        rel: Vec<u8>,
        kind: Kind,
        meta: Meta,
        es: &str,
    ) -> Result<(), UnpackError> {
        // A hardlink target is checked before anything is changed.
        let link_target = match &kind {
            Kind::Hardlink(target) => Some(self.hardlink_target(target, es)?),
            _ => None,
        };

        match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if is_dir && matches!(kind, Kind::Dir) {
                    let fd = open_dir(parent, name).map_err(|e| io_err(es, "opening directory", e))?;
                    return self.dir_meta(&fd, rel, &meta, es);
                }
                remove_all(parent, name).map_err(|e| io_err(es, "removing what the entry replaces", e))?;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(es, "inspecting the entry's path", e)),
        }

        match kind {
            Kind::File => {
                let mut file = File::from(create_file(parent, name).map_err(|e| io_err(es, "creating file", e))?);
                // An object's content is hashed as it is written: no second pass.
                let as_object = self.objects.is_some() && entry.size() >= objects::MIN_SIZE;
                let mut hasher = as_object.then(blake3::Hasher::new);
                self.write_contents(entry, &mut file, hasher.as_mut(), es)?;
                match hasher.map(|h| object_name(&h, &meta)) {
                    Some(object) if self.opts.reflink => {
                        // Before the metadata: a clone sets the file's times.
                        self.clone_object(&file, &object);
                        file_meta(file.as_fd(), &meta, es)?;
                    }
                    Some(object) => {
                        file_meta(file.as_fd(), &meta, es)?;
                        self.link_object(parent, name, object, es)?;
                    }
                    None => file_meta(file.as_fd(), &meta, es)?,
                }
            }
            Kind::Dir => {
                rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| io_err(es, "creating directory", e))?;
                self.files += 1;
                let fd = open_dir(parent, name).map_err(|e| io_err(es, "opening directory", e))?;
                return self.dir_meta(&fd, rel, &meta, es);
            }
            Kind::Symlink(target) => {
                // Stored verbatim: a symlink may point anywhere; only traversal is checked.
                rfs::symlinkat(&target, parent, name).map_err(|e| io_err(es, "creating symlink", e))?;
                self.special_meta(parent, name, &meta, false, es)?;
            }
            Kind::Hardlink(_) => {
                if let Some((tparent, tname)) = link_target {
                    rfs::linkat(&tparent, &tname, parent, name, AtFlags::empty())
                        .map_err(|e| io_err(es, "creating hardlink", e))?;
                }
            }
            Kind::Node(ft, major, minor) => {
                rfs::mknodat(parent, name, ft, Mode::from_raw_mode(0o600), rfs::makedev(major, minor))
                    .map_err(|e| io_err(es, "creating device node or fifo", e))?;
                self.special_meta(parent, name, &meta, true, es)?;
            }
        }
        self.files += 1;
        self.mark_added(rel);
        Ok(())
    }

    /// Writes the entry's contents to `file`, feeding `hasher` too.
    fn write_contents<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        mut hasher: Option<&mut blake3::Hasher>,
        es: &str,
    ) -> Result<(), UnpackError> {
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(&format!("reading the contents of {es:?}"), e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| UnpackError::Io {
                entry: es.into(),
                action: "writing file",
                source: e,
            })?;
            if let Some(hasher) = hasher.as_deref_mut() {
                hasher.update(&self.buf[..n]);
            }
            self.size += n as u64;
        }
    }

    /// Makes the complete file `parent`/`name` the object `object` (see [`Objects::link`]).
    fn link_object(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        object: String,
        es: &str,
    ) -> Result<(), UnpackError> {
        let objects = self.objects.as_ref().ok_or_else(|| bad(es, "no object directory".into()))?;
        match objects.link(parent, name, &object).map_err(|e| io_err(es, "linking its object", e))? {
            Linked::Stored => self.stored.push(object),
            Linked::Shared | Linked::Own => {}
            // No hard links here: every file in place from now on.
            Linked::Unsupported => self.objects = None,
        }
        Ok(())
    }

    /// Makes `file` share the extents of the object `object`, if the store has it and the
    /// file system can (else the file keeps the bytes just written).
    fn clone_object(&self, file: &File, object: &str) {
        if let Some(objects) = &self.objects {
            if let Some(source) = objects.open_object(object) {
                let _ = rfs::ioctl_ficlone(file, &source);
            }
        }
    }

    /// Owner, mode, xattrs of a directory now; its mtime at the end.
    fn dir_meta(&mut self, fd: &OwnedFd, rel: Vec<u8>, meta: &Meta, es: &str) -> Result<(), UnpackError> {
        set_dir_meta(fd.as_fd(), meta, es)?;
        self.dir_times.insert(rel.clone(), meta.mtime);
        self.mark_added(rel);
        Ok(())
    }

    /// Metadata of a symlink or node, which cannot be opened: by name, without following.
    fn special_meta(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
        es: &str,
    ) -> Result<(), UnpackError> {
        rfs::chownat(parent, name, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(es, "changing owner", e))?;
        if chmod {
            // Follows symlinks, but `name` is the node just created in our staging dir.
            rfs::chmodat(parent, name, meta.mode, AtFlags::empty()).map_err(|e| io_err(es, "changing mode", e))?;
        }
        if !meta.xattrs.is_empty() {
            // There is no lsetxattrat: go through the parent's /proc/self/fd entry.
            let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            path.extend_from_slice(name);
            for (k, v) in &meta.xattrs {
                rfs::lsetxattr(&path, k, v, XattrFlags::empty()).map_err(|e| io_err(es, "setting an xattr", e))?;
            }
        }
        rfs::utimensat(parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(es, "setting times", e))
    }

    /// Resolves a hardlink's target (an archive path) to its parent directory and name;
    /// refuses targets outside the root or missing from it.
    fn hardlink_target(&self, target: &[u8], es: &str) -> Result<(OwnedFd, Vec<u8>), UnpackError> {
        let refuse = |reason| UnpackError::HardlinkTarget {
            entry: es.into(),
            target: String::from_utf8_lossy(target).into_owned(),
            reason,
        };
        let comps = sanitize(target).map_err(|u| {
            refuse(match u {
                Unsafe::Absolute => "is an absolute path, outside the layer root",
                Unsafe::DotDot => "has a `..` component, leading outside the layer root",
            })
        })?;
        let Some((&tname, tdir)) = comps.split_last() else {
            return Err(refuse("is the layer root"));
        };
        let tparent = match open_beneath(&self.root, &join(tdir), OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::XDEV) => return Err(refuse("passes through a symlink out of the layer root")),
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(refuse("does not exist in the layer")),
            Err(e) => return Err(io_err(es, "resolving the hardlink target", e)),
        };
        match rfs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Err(refuse("is a directory")),
            Ok(_) => Ok((tparent, tname.to_vec())),
            Err(Errno::NOENT) => Err(refuse("does not exist in the layer")),
            Err(e) => Err(io_err(es, "inspecting the hardlink target", e)),
        }
    }

    /// `DIR/.wh.NAME`.
    fn whiteout(&mut self, dir: &[&[u8]], name: &[u8], es: &str) -> Result<(), UnpackError> {
        let key = join(dir);
        if self.added.contains(&child(&key, name)) {
            return Ok(()); // whiteouts hide lower layers only
        }
        let create = self.opts.whiteouts == WhiteoutMode::Overlay;
        let Some(parent) = self.parent(dir, &key, es, create)? else {
            return Ok(()); // Delete: nothing to delete
        };
        let result = self.whiteout_in(parent.as_fd(), name, es);
        self.cache = Some((key, parent));
        result
    }

    fn whiteout_in(&mut self, parent: BorrowedFd<'_>, name: &[u8], es: &str) -> Result<(), UnpackError> {
        match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => remove_all(parent, name).map_err(|e| io_err(es, "removing a whited-out path", e))?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(es, "inspecting a whited-out path", e)),
        }
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            rfs::mknodat(parent, name, FileType::CharacterDevice, Mode::empty(), rfs::makedev(0, 0))
                .map_err(|e| io_err(es, "creating a whiteout device", e))?;
            rfs::chownat(parent, name, Some(Uid::ROOT), Some(Gid::ROOT), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(es, "changing owner", e))?;
            rfs::chmodat(parent, name, Mode::empty(), AtFlags::empty()).map_err(|e| io_err(es, "changing mode", e))?;
            self.files += 1;
        }
        Ok(())
    }

    /// `DIR/.wh..wh..opq`.
    fn opaque(&mut self, dir: &[&[u8]], es: &str) -> Result<(), UnpackError> {
        let key = join(dir);
        let create = self.opts.whiteouts == WhiteoutMode::Overlay;
        let Some(parent) = self.parent(dir, &key, es, create)? else {
            return Ok(());
        };
        let result = open_dir(&parent, b".").map_err(|e| io_err(es, "opening the opaque directory", e)).and_then(
            |fd| match self.opts.whiteouts {
                WhiteoutMode::Overlay => rfs::fsetxattr(&fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| io_err(es, "setting trusted.overlay.opaque", e)),
                WhiteoutMode::Delete => {
                    self.prune(&fd, &key).map_err(|e| io_err(es, "removing lower contents of an opaque directory", e))
                }
                WhiteoutMode::Plain => Ok(()), // never reached: apply takes the name as a file
            },
        );
        self.cache = Some((key, parent));
        result
    }

    /// Removes everything below `dir` (archive path `key`) that this layer did not add.
    fn prune(&self, dir: &OwnedFd, key: &[u8]) -> rustix::io::Result<()> {
        for name in list_dir(dir)? {
            let rel = child(key, &name);
            if !self.added.contains(&rel) {
                remove_all(dir.as_fd(), &name)?;
                continue;
            }
            let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                self.prune(&open_dir(dir, &name)?, &rel)?;
            }
        }
        Ok(())
    }

    /// Records `rel` and its ancestors as part of this layer.
    fn mark_added(&mut self, mut rel: Vec<u8>) {
        loop {
            if !self.added.insert(rel.clone()) {
                return; // its ancestors are in already
            }
            match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => rel.truncate(i),
                None => return,
            }
        }
    }

    /// Sets the deferred directory mtimes, deepest first.
    fn set_dir_times(&mut self) -> Result<(), UnpackError> {
        let mut dirs: Vec<_> = self.dir_times.drain().collect();
        dirs.sort_by_key(|(p, _)| Reverse(if p.is_empty() { 0 } else { 1 + p.iter().filter(|&&b| b == b'/').count() }));
        for (path, mtime) in dirs {
            let es = String::from_utf8_lossy(&path);
            let es = if path.is_empty() { "." } else { &es };
            let times = Timestamps { last_access: mtime, last_modification: mtime };
            let fd = match open_beneath(&self.root, &path, OFlags::RDONLY | OFlags::NOFOLLOW) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => continue,
                Err(e) => return Err(io_err(es, "opening directory to set its times", e)),
            };
            rfs::futimens(&fd, &times).map_err(|e| io_err(es, "setting times", e))?;
        }
        Ok(())
    }
}

/// A new regular file at `parent`/`name`, for writing.
fn create_file(parent: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// The object name of content hashed by `hasher` with the entry's metadata.
fn object_name(hasher: &blake3::Hasher, meta: &Meta) -> String {
    objects::name(
        &hasher.finalize(),
        &ObjectMeta {
            mode: meta.mode.as_raw_mode(),
            uid: meta.uid.as_raw(),
            gid: meta.gid.as_raw(),
            mtime: (meta.mtime.tv_sec, meta.mtime.tv_nsec),
            xattrs: &meta.xattrs,
        },
    )
}

/// A regular file's owner, mode, xattrs and times. chown before chmod: chown clears
/// setuid/setgid; xattrs after chown too, which clears security.capability.
fn file_meta(file: BorrowedFd<'_>, meta: &Meta, es: &str) -> Result<(), UnpackError> {
    rfs::fchown(file, Some(meta.uid), Some(meta.gid)).map_err(|e| io_err(es, "changing owner", e))?;
    rfs::fchmod(file, meta.mode).map_err(|e| io_err(es, "changing mode", e))?;
    for (k, v) in &meta.xattrs {
        rfs::fsetxattr(file, k, v, XattrFlags::empty()).map_err(|e| io_err(es, "setting an xattr", e))?;
    }
    rfs::futimens(file, &meta.times()).map_err(|e| io_err(es, "setting times", e))
}

fn set_dir_meta(fd: BorrowedFd<'_>, meta: &Meta, es: &str) -> Result<(), UnpackError> {
    rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(|e| io_err(es, "changing owner", e))?;
    rfs::fchmod(fd, meta.mode).map_err(|e| io_err(es, "changing mode", e))?;
    for (k, v) in &meta.xattrs {
        rfs::fsetxattr(fd, k, v, XattrFlags::empty()).map_err(|e| io_err(es, "setting an xattr", e))?;
    }
    Ok(())
}

/// Reads mode, owner, mtime and xattrs from the header and its PAX records.
fn read_meta<R: Read>(entry: &tar::Entry<'_, R>, ext: &Extensions, es: &str) -> Result<Meta, UnpackError> {
    let field = |what: &str, e| corrupt(&format!("header of {es:?}: {what}"), e);
    let h = entry.header();
    let mode = h.mode().map_err(|e| field("mode", e))? & 0o7777;
    let mut uid = h.uid().map_err(|e| field("uid", e))?;
    let mut gid = h.gid().map_err(|e| field("gid", e))?;
    let secs = h.mtime().map_err(|e| field("mtime", e))?;
    let mut mtime = Timespec { tv_sec: i64::try_from(secs).unwrap_or(i64::MAX), tv_nsec: 0 };
    let mut xattrs = Vec::new();
    for (key, value) in ext.records() {
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
            // Only racker sets overlay attributes.
            if !name.starts_with(OVERLAY_XATTR_PREFIX) {
                xattrs.push((name.to_vec(), value.to_vec()));
            }
        } else if key == b"mtime" {
            if let Some(t) = parse_pax_time(value) {
                mtime = t;
            }
        } else if key == b"uid" {
            uid = parse_pax_int(value).ok_or_else(|| bad(es, "invalid PAX uid".into()))?;
        } else if key == b"gid" {
            gid = parse_pax_int(value).ok_or_else(|| bad(es, "invalid PAX gid".into()))?;
        }
    }
    let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| bad(es, format!("{what} {v} out of range")));
    Ok(Meta {
        mode: Mode::from_raw_mode(mode),
        uid: Uid::from_raw(id(uid, "uid")?),
        gid: Gid::from_raw(id(gid, "gid")?),
        mtime,
        xattrs,
    })
}

fn read_kind<R: Read>(
    entry: &tar::Entry<'_, R>,
    ext: &Extensions,
    etype: EntryType,
    es: &str,
) -> Result<Kind, UnpackError> {
    let link = || {
        ext.link(entry.header().link_name_bytes().as_deref())
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad(es, "link without a link name".into()))
    };
    let device = |ft| -> Result<Kind, UnpackError> {
        let h = entry.header();
        let major = h.device_major().map_err(|e| corrupt(&format!("header of {es:?}: device major"), e))?;
        let minor = h.device_minor().map_err(|e| corrupt(&format!("header of {es:?}: device minor"), e))?;
        Ok(Kind::Node(ft, major.unwrap_or(0), minor.unwrap_or(0)))
    };
    Ok(match etype {
        EntryType::Regular | EntryType::Continuous => Kind::File,
        EntryType::GNUSparse => {
            return Err(bad(es, "GNU sparse files are not supported (write the layer without --sparse)".into()))
        }
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink(link()?),
        EntryType::Link => Kind::Hardlink(link()?),
        EntryType::Char => device(FileType::CharacterDevice)?,
        EntryType::Block => device(FileType::BlockDevice)?,
        EntryType::Fifo => device(FileType::Fifo)?,
        other => return Err(bad(es, format!("unsupported tar entry type {:?}", other.as_byte() as char))),
    })
}

/// A PAX time: decimal seconds with an optional fraction, e.g. `1700000000.5`.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nsec: i64 = digits.parse().ok()?;
    let mut secs = secs;
    if s.starts_with('-') && nsec > 0 {
        secs -= 1;
        nsec = 1_000_000_000 - nsec;
    }
    Some(Timespec { tv_sec: secs, tv_nsec: nsec })
}

fn parse_pax_int(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `openat2` beneath `dir`, no magic links, following symlinks that stay inside:
/// EXDEV when the path leaves `dir`. Retries EAGAIN, which the kernel returns when a
/// concurrent rename makes it unsure of the result.
fn open_beneath(dir: impl AsFd, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let mut tries = 0;
    loop {
        match rfs::openat2(
            &dir,
            path,
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) if tries < 32 => tries += 1,
            r => return r,
        }
    }
}

/// Opens the directory `name` in `parent` for reading, not following a symlink.
fn open_dir(parent: impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

fn list_dir(dir: &OwnedFd) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` in `parent`, recursively if it is a directory; never follows symlinks.
fn remove_all(parent: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rfs::unlinkat(parent, name, AtFlags::empty());
    }
    let dir = open_dir(parent, name)?;
    for child in list_dir(&dir)? {
        remove_all(dir.as_fd(), &child)?;
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn resolve_err(es: &str, e: Errno) -> UnpackError {
    match e {
        Errno::XDEV => {
            UnpackError::UnsafePath { entry: es.into(), reason: "path passes through a symlink out of the layer root" }
        }
        Errno::NOTDIR => bad(es, "a parent of the entry is not a directory".into()),
        e => io_err(es, "resolving the parent directory", e),
    }
}

fn io_err(es: &str, action: &'static str, e: Errno) -> UnpackError {
    UnpackError::Io { entry: es.into(), action, source: e.into() }
}

fn bad(es: &str, reason: String) -> UnpackError {
    UnpackError::BadEntry { entry: es.into(), reason }
}

fn extension_err<R: Read>(entry: &tar::Entry<'_, R>, e: ReadError) -> UnpackError {
    let context = format!("extension header {:?}", String::from_utf8_lossy(&entry.header().path_bytes()));
    match e {
        ReadError::Io(e) => corrupt(&context, e),
        ReadError::Refused(e) => corrupt(&context, io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

fn corrupt(context: &str, source: io::Error) -> UnpackError {
    UnpackError::Corrupt { context: context.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn s(p: &str) -> Result<Vec<String>, Unsafe> {
        sanitize(p.as_bytes()).map(|v| v.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect())
    }

    #[test]
    fn sanitising() {
        assert_eq!(s("./etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(s("etc/").unwrap(), ["etc"]);
        assert_eq!(s("a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(s("..foo/.wh...").unwrap(), ["..foo", ".wh..."]);
        for root in [".", "./", "", ".//."] {
            assert!(s(root).unwrap().is_empty(), "{root:?}");
        }
        for abs in ["/etc/passwd", "//x", "/"] {
            assert_eq!(s(abs), Err(Unsafe::Absolute), "{abs:?}");
        }
        for dd in ["..", "../x", "a/../b", "a/..", "./../x", "a/b/../../.."] {
            assert_eq!(s(dd), Err(Unsafe::DotDot), "{dd:?}");
        }
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 250_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_pax_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }

    /// A tar of directories (path ends in `/`) and small files, owned by the caller so
    /// that the test runs unprivileged.
    fn tar(paths: &[&str]) -> Vec<u8> {
        let uid = rustix::process::getuid().as_raw() as u64;
        let gid = rustix::process::getgid().as_raw() as u64;
        let mut b = tar::Builder::new(Vec::new());
        for p in paths {
            let mut h = tar::Header::new_gnu();
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(1_000_000);
            if p.ends_with('/') {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            } else {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(p.len() as u64);
                b.append_data(&mut h, p, p.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn tree(root: &Path) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let mut names: Vec<_> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            for n in names {
                let p: PathBuf = dir.join(&n);
                let rel = format!("{prefix}{n}");
                if p.symlink_metadata().unwrap().is_dir() {
                    out.push(format!("{rel}/"));
                    walk(&p, &format!("{rel}/"), out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, "", &mut out);
        out
    }

    #[test]
    fn delete_mode_applies_whiteouts_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            UnpackOptions { whiteouts: WhiteoutMode::Delete, allow_devices: false, objects: None, reflink: false };
        let lower = tar(&[
            "a/",
            "a/keep",
            "a/gone",
            "b/",
            "b/x",
            "b/sub/",
            "b/sub/y",
            "c/",
            "c/old",
            "c/sub/",
            "c/sub/old",
            "f",
            "g/",
            "g/h",
        ]);
        apply_tar(&lower[..], dir.path(), &opts).unwrap();
        let upper = tar(&[
            "a/.wh.gone",
            ".wh.f",
            ".wh.g",
            "b/",
            "b/.wh..wh..opq",
            "b/new",
            // The opaque marker after this layer's own entries: they stay, even inside
            // a lower directory this layer names (c/sub).
            "c/sub/new",
            "c/new",
            "c/.wh..wh..opq",
            "d/.wh.nothing",
            // A whiteout never hides what its own layer created.
            "e/x",
            "e/.wh.x",
            "b/.wh..wh.plnk",
        ]);
        let stats = apply_tar(&upper[..], dir.path(), &opts).unwrap();
        assert_eq!(
            tree(dir.path()),
            ["a/", "a/keep", "b/", "b/new", "c/", "c/new", "c/sub/", "c/sub/new", "e/", "e/x"]
        );
        assert_eq!(stats.tar_size, upper.len() as u64);
        assert_eq!(stats.diff_id, crate::digest::Digest::of(&upper));
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UnpackOptions::default();
        // A file replaced by a directory, a directory by a file.
        let t = tar(&["x", "x/", "x/y", "d/", "d/z", "d"]);
        let stats = apply_tar(&t[..], dir.path(), &opts).unwrap();
        assert_eq!(tree(dir.path()), ["d", "x/", "x/y"]);
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), b"d");
        // Every regular file created counts, replaced ones too: x, x/y, d/z, d.
        assert_eq!(stats.size, 1 + 3 + 3 + 1);
    }
}
