//! An overlay upper directory turned into an OCI layer tar: the inverse of what
//! [`unpack`](crate::unpack) does when it makes a layer directory, so that a committed
//! container's writes become a layer like any pulled one.
//!
//! | in the upper directory                      | in the tar                          |
//! |---------------------------------------------|-------------------------------------|
//! | `DIR/NAME`, a character device 0/0           | `DIR/.wh.NAME` (whiteout)           |
//! | xattr `trusted.overlay.opaque=y` on `DIR`    | `DIR/` then `DIR/.wh..wh..opq`      |
//! | a second name of one inode                   | a hard link to the first name       |
//! | other xattrs (`security.capability`, ...)    | PAX `SCHILY.xattr.NAME` records     |
//! | `trusted.overlay.*` bookkeeping              | dropped                             |
//!
//! The walk is depth first with each directory's entries sorted by name bytes, and
//! every header field comes from the file (owner, mode, mtime), never from the clock or
//! the host's user database: the same upper makes the same tar, so a repeated commit of
//! unchanged writes stores nothing new. Symbolic links are never followed; sockets are
//! left out, as docker does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use rustix::fs::{Mode, OFlags};

/// Why a layer could not be made of a directory. Each variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("writing the layer tar (at {path}): {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("the layer writer stopped unexpectedly")]
    WriterPanicked,
}

pub type Result<T, E = DiffError> = std::result::Result<T, E>;

/// What went into a layer tar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Writes the layer tar of `upper` to `out` (uncompressed) and returns what it holds.
/// `upper` itself is not an entry: an image's root directory comes from its base.
/// Paths in `skip` (relative, without a trailing slash) are left out with everything
/// below them: what the runtime wrote to run the container is not the container's change.
pub fn write_layer<W: Write>(upper: &Path, skip: &BTreeSet<String>, out: W) -> Result<(DiffStats, W)> {
    write(upper, skip, &HashSet::new(), out)
}

/// Writes the tar of the whole tree `root` (a container's root, `export`) to `out`. Files
/// whose inode number is in `objects` are the store's shared file objects (seen through
/// overlayfs): each of their names is written as a file of its own, not as a hard link to
/// another name that happens to share the object.
pub fn write_tree<W: Write>(root: &Path, objects: &HashSet<u64>, out: W) -> Result<(DiffStats, W)> {
    write(root, &BTreeSet::new(), objects, out)
}

fn write<W: Write>(upper: &Path, skip: &BTreeSet<String>, objects: &HashSet<u64>, out: W) -> Result<(DiffStats, W)> {
    let mut writer =
        Writer { builder: tar::Builder::new(out), links: HashMap::new(), stats: DiffStats::default(), skip, objects };
    writer.dir_entries(upper, "")?;
    let output_err = |source| DiffError::Output { path: upper.to_owned(), source };
    let out = writer.builder.into_inner().map_err(output_err)?;
    Ok((writer.stats, out))
}

struct Writer<'s, W: Write> {
    builder: tar::Builder<W>,
    skip: &'s BTreeSet<String>,
    /// Inode numbers of shared file objects: never written as hard links.
    objects: &'s HashSet<u64>,
    /// (device, inode) of files with several names → the first name written.
    links: HashMap<(u64, u64), String>,
    stats: DiffStats,
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> DiffError {
    let path = path.to_owned();
    move |source| DiffError::Io { path, action, source }
}

impl<W: Write> Writer<'_, W> {
    /// Writes the entries below `dir` (whose tar name is `prefix`), sorted by name.
    fn dir_entries(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        for name in sorted_names(dir)? {
            let path = dir.join(&name);
            let name = name.to_string_lossy();
            if name.contains('\u{FFFD}') {
                // Tar names are bytes, but OCI tools treat them as UTF-8: refuse rather
                // than write a name that comes back different.
                let reason = io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8");
                return Err(io_err(&path, "naming")(reason));
            }
            let tar_name = format!("{prefix}{name}");
            if !self.skip.contains(&tar_name) {
                self.entry(&path, &tar_name, &name)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, tar_name: &str, name: &str) -> Result<()> {
        let meta = fs::symlink_metadata(path).map_err(io_err(path, "reading metadata"))?;
        let kind = meta.file_type();
        // A whiteout first: overlayfs may give every whiteout one shared inode.
        if is_whiteout(&meta) {
            let parent = &tar_name[..tar_name.len() - name.len()];
            let mut header = header_from(&meta, tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_size(0);
            self.append(path, &mut header, &format!("{parent}{WHITEOUT_PREFIX}{name}"), &[], io::empty())?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if kind.is_socket() {
            return Ok(());
        }
        let xattrs = read_xattrs(path)?;
        if kind.is_dir() {
            let dir_name = format!("{tar_name}/");
            let mut header = header_from(&meta, tar::EntryType::Directory);
            self.append(path, &mut header, &dir_name, &xattrs.kept, io::empty())?;
            if xattrs.opaque {
                let mut marker = header_from(&meta, tar::EntryType::Regular);
                marker.set_mode(0o600);
                marker.set_size(0);
                self.append(path, &mut marker, &format!("{dir_name}{OPAQUE_MARKER}"), &[], io::empty())?;
                self.stats.opaque_dirs += 1;
            }
            return self.dir_entries(path, &dir_name);
        }
        if meta.nlink() > 1 && !self.objects.contains(&meta.ino()) {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                let mut header = header_from(&meta, tar::EntryType::Link);
                header.set_size(0);
                let output_err = |source| DiffError::Output { path: path.to_owned(), source };
                self.pax(path, &xattrs.kept)?;
                self.builder.append_link(&mut header, tar_name, &first).map_err(output_err)?;
                self.stats.entries += 1;
                return Ok(());
            }
            self.links.insert(key, tar_name.to_owned());
        }
        if kind.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path, "reading the link"))?;
            let mut header = header_from(&meta, tar::EntryType::Symlink);
            header.set_size(0);
            self.pax(path, &xattrs.kept)?;
            let output_err = |source| DiffError::Output { path: path.to_owned(), source };
            self.builder.append_link(&mut header, tar_name, &target).map_err(output_err)?;
            self.stats.entries += 1;
            Ok(())
        } else if kind.is_file() {
            // O_NOFOLLOW: the name was a regular file a moment ago; never read through a
            // link that replaced it.
            let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_err(path, "opening")(e.into()))?;
            let file = File::from(fd);
            let mut header = header_from(&meta, tar::EntryType::Regular);
            header.set_size(meta.len());
            // A file that changes size while read would corrupt the tar: read exactly its size.
            let reader = Exact { inner: file.take(meta.len()), left: meta.len(), path };
            self.append(path, &mut header, tar_name, &xattrs.kept, reader)
        } else {
            let entry_type = if kind.is_fifo() {
                tar::EntryType::Fifo
            } else if kind.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut header = header_from(&meta, entry_type);
            header.set_size(0);
            // A FIFO has device numbers 0/0 (readers parse the fields for every special file).
            let rdev = if kind.is_fifo() { 0 } else { meta.rdev() };
            let output_err = |source| DiffError::Output { path: path.to_owned(), source };
            header.set_device_major(rustix::fs::major(rdev)).map_err(output_err)?;
            header.set_device_minor(rustix::fs::minor(rdev)).map_err(output_err)?;
            self.append(path, &mut header, tar_name, &xattrs.kept, io::empty())
        }
    }

    fn append(
        &mut self,
        path: &Path,
        header: &mut tar::Header,
        tar_name: &str,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> Result<()> {
        self.pax(path, xattrs)?;
        let output_err = |source| DiffError::Output { path: path.to_owned(), source };
        self.builder.append_data(header, tar_name, data).map_err(output_err)?;
        self.stats.entries += 1;
        Ok(())
    }

    /// A PAX extended header with the next entry's xattrs (`SCHILY.xattr.NAME`, the
    /// spelling GNU tar, docker and the unpacker use).
    fn pax(&mut self, path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for (name, value) in xattrs {
            records.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(records.len() as u64);
        let output_err = |source| DiffError::Output { path: path.to_owned(), source };
        header.set_path("PaxHeaders/xattrs").map_err(output_err)?;
        header.set_cksum();
        self.builder.append(&header, &records[..]).map_err(output_err)
    }
}

/// The names in `dir`, sorted by their bytes: the order of every walk here.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
        .map_err(io_err(dir, "listing"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err(dir, "listing"))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// What happened to one path of a container's root, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "A",
            ChangeKind::Changed => "C",
            ChangeKind::Deleted => "D",
        })
    }
}

/// One line of `racker diff`: `C /etc`, `A /etc/new`, `D /gone`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// Absolute in the container: `/etc/new`.
    pub path: String,
    pub kind: ChangeKind,
}

/// The changes an overlay upper directory records against its lower layers
/// (`lowers`, top first, in overlayfs notation): a whiteout is a deletion, an entry
/// the lowers have is a change, any other an addition; an opaque directory hides (so
/// deletes) what the lowers have below it. Sorted by path, parents of a change
/// included (they are in the upper directory anyway).
pub fn upper_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    upper_walk(upper, "", lowers, false, &mut out)?;
    out.sort();
    Ok(out)
}

/// `hiding`: a directory above is opaque, so the lowers show nothing of this one.
fn upper_walk(dir: &Path, rel: &str, lowers: &[PathBuf], hiding: bool, out: &mut Vec<Change>) -> Result<()> {
    for name in live_names(dir)? {
        let path = dir.join(&name);
        let child = format!("{rel}/{}", name.to_string_lossy());
        let Some(meta) = live_metadata(&path)? else { continue };
        if is_whiteout(&meta) {
            out.push(Change { path: child, kind: ChangeKind::Deleted });
            continue;
        }
        let existed = in_lowers(lowers, &child);
        let kind = if existed { ChangeKind::Changed } else { ChangeKind::Added };
        out.push(Change { path: child.clone(), kind });
        if meta.is_dir() {
            let opaque = hiding || read_xattrs(&path)?.opaque;
            if opaque && existed {
                // Nothing of the lowers shows through: what they have here is gone,
                // unless the upper made it again.
                for hidden in lower_names(lowers, &child) {
                    if fs::symlink_metadata(path.join(&hidden)).is_err() {
                        out.push(Change { path: format!("{child}/{hidden}"), kind: ChangeKind::Deleted });
                    }
                }
            }
            upper_walk(&path, &child, lowers, opaque, out)?;
        }
    }
    Ok(())
}

/// Whether the topmost lower that has `rel` (absolute) has it as more than a whiteout.
fn in_lowers(lowers: &[PathBuf], rel: &str) -> bool {
    let rel = rel.trim_start_matches('/');
    lowers.iter().find_map(|lower| fs::symlink_metadata(lower.join(rel)).ok()).is_some_and(|m| !is_whiteout(&m))
}

/// The names the lowers show in directory `rel`.
fn lower_names(lowers: &[PathBuf], rel: &str) -> BTreeSet<String> {
    let rel = rel.trim_start_matches('/');
    let mut names = BTreeSet::new();
    for lower in lowers {
        let Ok(names_here) = sorted_names(&lower.join(rel)) else { continue };
        names.extend(names_here.into_iter().map(|n| n.to_string_lossy().into_owned()));
    }
    names.retain(|n| in_lowers(lowers, &format!("{rel}/{n}")));
    names
}

/// The changes of the tree `tree` against `base`, the tree it was a copy of (a btrfs
/// snapshot against its image's subvolume): entries only `tree` has are added (with
/// everything below them), entries only `base` has deleted, entries whose type, mode,
/// owner, size, device or modification time differ changed, and so are the parents of
/// every change, as docker reports them. Sorted by path.
pub fn tree_changes(base: &Path, tree: &Path) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    compare(Some(base), tree, "", &mut out)?;
    let parents: BTreeSet<String> = out
        .iter()
        .flat_map(|c| {
            let mut ancestors = Vec::new();
            let mut path = c.path.as_str();
            while let Some((parent, _)) = path.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                ancestors.push(parent.to_owned());
                path = parent;
            }
            ancestors
        })
        .collect();
    let listed: BTreeSet<String> = out.iter().map(|c| c.path.clone()).collect();
    out.extend(parents.difference(&listed).map(|p| Change { path: p.clone(), kind: ChangeKind::Changed }));
    out.sort();
    Ok(out)
}

fn compare(base: Option<&Path>, dir: &Path, rel: &str, out: &mut Vec<Change>) -> Result<()> {
    let names = live_names(dir)?;
    if let Some(base) = base {
        let present: BTreeSet<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        for gone in sorted_names(base)?.iter().filter(|n| !present.contains(n.as_bytes())) {
            out.push(Change { path: format!("{rel}/{}", gone.to_string_lossy()), kind: ChangeKind::Deleted });
        }
    }
    for name in names {
        let path = dir.join(&name);
        let child = format!("{rel}/{}", name.to_string_lossy());
        let Some(meta) = live_metadata(&path)? else { continue };
        let was = base.map(|b| b.join(&name)).and_then(|p| fs::symlink_metadata(&p).ok().map(|m| (p, m)));
        match was {
            None => {
                out.push(Change { path: child.clone(), kind: ChangeKind::Added });
                if meta.is_dir() {
                    compare(None, &path, &child, out)?;
                }
            }
            Some((base_path, old)) => {
                if differs(&old, &meta) {
                    out.push(Change { path: child.clone(), kind: ChangeKind::Changed });
                }
                if meta.is_dir() {
                    compare(old.is_dir().then_some(base_path.as_path()), &path, &child, out)?;
                }
            }
        }
    }
    Ok(())
}

/// [`sorted_names`] of a directory a running container may be changing: one it
/// removed meanwhile has no entries.
fn live_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    match sorted_names(dir) {
        Err(DiffError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        names => names,
    }
}

/// The metadata of an entry a running container may have removed meanwhile (None).
fn live_metadata(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "reading metadata")(e)),
    }
}

/// Whether an entry changed between two trees, by what docker's naive differ looks at
/// (a directory's size says nothing).
fn differs(old: &fs::Metadata, new: &fs::Metadata) -> bool {
    old.mode() != new.mode()
        || old.uid() != new.uid()
        || old.gid() != new.gid()
        || old.rdev() != new.rdev()
        || (!new.is_dir() && old.size() != new.size())
        || old.mtime() != new.mtime()
        || old.mtime_nsec() != new.mtime_nsec()
        || old.ino() != new.ino()
}

/// `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A GNU header (long names, large ids) with the file's owner, mode and mtime.
fn header_from(meta: &fs::Metadata, entry_type: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_size(0);
    header
}

struct Xattrs {
    /// Everything but overlayfs's own attributes, sorted by name.
    kept: Vec<(String, Vec<u8>)>,
    opaque: bool,
}

/// The extended attributes of `path` itself (never of a link's target).
fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let mut list = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let needed =
                    rustix::fs::llistxattr_query(path).map_err(|e| io_err(path, "listing xattrs")(e.into()))?;
                list.resize(needed.max(list.len() * 2), 0);
            }
            // File systems without xattr support have none to keep.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Xattrs { kept: Vec::new(), opaque: false }),
            Err(e) => return Err(io_err(path, "listing xattrs")(e.into())),
        }
    };
    let mut names: Vec<&[u8]> = list[..len].split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
    names.sort();
    let mut kept = Vec::new();
    let mut opaque = false;
    for name in names {
        let name_str = String::from_utf8_lossy(name).into_owned();
        let value = get_xattr(path, &name_str)?;
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            opaque |= name_str == OPAQUE_XATTR && value == b"y";
            continue;
        }
        kept.push((name_str, value));
    }
    Ok(Xattrs { kept, opaque })
}

fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>> {
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(value);
            }
            Err(rustix::io::Errno::RANGE) => {
                let needed =
                    rustix::fs::lgetxattr_query(path, name).map_err(|e| io_err(path, "reading an xattr")(e.into()))?;
                value.resize(needed.max(value.len() * 2), 0);
            }
            Err(e) => return Err(io_err(path, "reading an xattr")(e.into())),
        }
    }
}

/// Reads exactly `left` bytes: a file that shrank while read is an error, not a
/// short tar entry.
struct Exact<'p, R> {
    inner: R,
    left: u64,
    path: &'p Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was read", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A gzip-compressed layer tar of an upper directory, made on a thread of its own and
/// read as a stream, so that the store hashes, keeps and unpacks it in one pass while
/// it is written (no temporary file of the whole layer).
pub struct LayerStream {
    chunks: Receiver<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<Result<DiffStats>>>,
}

impl LayerStream {
    /// Starts writing the layer of `upper`, without the paths in `skip`.
    pub fn gzip(upper: PathBuf, skip: BTreeSet<String>) -> LayerStream {
        let (sender, chunks) = std::sync::mpsc::sync_channel(16);
        let writer = std::thread::spawn(move || {
            let out = ChunkWriter { sender, buffer: Vec::with_capacity(CHUNK) };
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            let (stats, gz) = write_layer(&upper, &skip, gz)?;
            let output_err = |source| DiffError::Output { path: upper.clone(), source };
            let mut out = gz.finish().map_err(output_err)?;
            out.flush().map_err(output_err)?;
            Ok(stats)
        });
        LayerStream { chunks, current: io::Cursor::new(Vec::new()), writer: Some(writer) }
    }

    /// Waits for the writer and returns what it wrote, or why it stopped. A reader that
    /// stopped early makes the writer fail with a broken pipe.
    pub fn finish(mut self) -> Result<DiffStats> {
        drop(std::mem::replace(&mut self.chunks, std::sync::mpsc::sync_channel(0).1));
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            _ => Err(DiffError::WriterPanicked),
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = io::Cursor::new(chunk),
                // The writer is done (or failed: `finish` says why): end of stream.
                Err(_) => return Ok(0),
            }
        }
    }
}

const CHUNK: usize = 256 * 1024;

struct ChunkWriter {
    sender: SyncSender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender.send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer's reader stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for (key, value) in [("a", &b"b"[..]), ("SCHILY.xattr.user.x", &[0u8; 95][..]), ("k", &[7u8; 1000][..])] {
            let record = pax_record(key, value);
            let len: usize = String::from_utf8_lossy(&record).split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, record.len(), "{key}");
        }
    }

    fn names(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn a_plain_tree_is_written_sorted_with_links_and_the_same_every_time() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("b/sub")).unwrap();
        fs::write(d.join("b/sub/f"), "data").unwrap();
        fs::write(d.join("a"), "x").unwrap();
        fs::hard_link(d.join("a"), d.join("c")).unwrap();
        symlink("../a", d.join("b/link")).unwrap();
        let (stats, tar) = write_layer(d, &BTreeSet::new(), Vec::new()).unwrap();
        assert_eq!(
            names(&tar),
            [
                ("a".to_owned(), tar::EntryType::Regular),
                ("b/".to_owned(), tar::EntryType::Directory),
                ("b/link".to_owned(), tar::EntryType::Symlink),
                ("b/sub/".to_owned(), tar::EntryType::Directory),
                ("b/sub/f".to_owned(), tar::EntryType::Regular),
                ("c".to_owned(), tar::EntryType::Link),
            ]
        );
        assert_eq!(stats.entries, 6);
        assert_eq!(write_layer(d, &BTreeSet::new(), Vec::new()).unwrap().1, tar, "deterministic");
        let skip = BTreeSet::from(["b".to_owned(), "c".to_owned()]);
        assert_eq!(names(&write_layer(d, &skip, Vec::new()).unwrap().1), [("a".to_owned(), tar::EntryType::Regular)]);
    }

    #[test]
    fn an_upper_directory_reads_as_added_changed_and_deleted() {
        assert!(rustix::process::geteuid().is_root(), "this test needs root (whiteouts, trusted xattrs)");
        let (lower, upper) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (l, u) = (lower.path(), upper.path());
        for dir in ["etc", "opaque"] {
            fs::create_dir(l.join(dir)).unwrap();
            fs::create_dir(u.join(dir)).unwrap();
        }
        for file in ["etc/passwd", "etc/gone", "opaque/hidden", "opaque/again"] {
            fs::write(l.join(file), "lower").unwrap();
        }
        fs::write(u.join("etc/passwd"), "changed").unwrap();
        fs::write(u.join("etc/new"), "added").unwrap();
        let whiteout = rustix::fs::FileType::CharacterDevice;
        rustix::fs::mknodat(rustix::fs::CWD, u.join("etc/gone"), whiteout, Mode::from_raw_mode(0), 0).unwrap();
        rustix::fs::setxattr(u.join("opaque"), OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).unwrap();
        fs::write(u.join("opaque/again"), "made again").unwrap();
        let lines: Vec<String> =
            upper_changes(u, &[l.to_owned()]).unwrap().iter().map(|c| format!("{} {}", c.kind, c.path)).collect();
        assert_eq!(
            lines,
            [
                "C /etc",
                "D /etc/gone",
                "A /etc/new",
                "C /etc/passwd",
                "C /opaque",
                "C /opaque/again",
                "D /opaque/hidden"
            ]
        );
    }

    #[test]
    fn the_stream_yields_the_gzip_of_the_tar() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![b'z'; 3 * CHUNK]).unwrap();
        let mut stream = LayerStream::gzip(dir.path().to_owned(), BTreeSet::new());
        let mut gz = Vec::new();
        stream.read_to_end(&mut gz).unwrap();
        stream.finish().unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(tar, write_layer(dir.path(), &BTreeSet::new(), Vec::new()).unwrap().1);
    }
}
