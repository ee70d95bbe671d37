//! `racker cp`: files between a container's root and the host (or a tar stream), with
//! docker's rules for trailing `/`, `/.` and existing destinations.
//!
//! Every copy is a tar stream: the source side walks its tree with `*at` calls (never
//! following a symlink below the top) and writes a tar; the destination side applies it
//! with the layer applier ([`crate::unpack::apply_tar_at`]), whose entries never leave
//! the directory they are applied to. Paths in the container are resolved with
//! `openat2(RESOLVE_IN_ROOT)`: a symlink in the container, even `/escape -> /`, resolves
//! inside the container's root, never to the host's. A running container's root is the
//! one its processes see (through its leader, with their mounts); a stopped one's is its
//! snapshot, mounted for the copy and unmounted after, so it still holds no mount.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::lifecycle::is_running;
use super::start::with_root;
use super::{Result, RuntimeError};
use crate::store::{ContainerRecord, Store};
use crate::unpack::{apply_tar_at, UnpackOptions, WhiteoutMode};

/// How `racker cp` copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's uid and gid (otherwise the receiving side's user owns
    /// what is copied: root in a container, the caller on the host).
    pub archive: bool,
    /// `-L`: follow a symlink that the source path names (below it, never).
    pub follow_link: bool,
}

/// Where the other side of a copy is.
pub enum HostSide<'a> {
    /// A path on the host (relative to the working directory, symlinks followed).
    Path(&'a Path),
    /// A tar stream: `-` on racker's command line.
    Stream,
}

/// Runs `f` on the root as the container sees it, as docker's cp does: a running
/// container's through its leader (`/proc/PID/root`: its volumes, binds and tmpfs mounts
/// included), a stopped one's snapshot ([`with_root`]).
fn with_container_view<T>(store: &Store, record: &ContainerRecord, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    match record.leader.filter(|_| is_running(record)) {
        Some(leader) => f(&PathBuf::from(format!("/proc/{}/root", leader.pid))),
        None => with_root(store, record, f),
    }
}

/// `racker cp CONTAINER:PATH DEST`: the container's `path` copied to `dest`, or as a
/// tar to `out` when `dest` is [`HostSide::Stream`].
pub fn copy_from_container(
    store: &Store,
    container: &str,
    path: &str,
    dest: HostSide<'_>,
    out: &mut dyn Write,
    opts: CopyOptions,
) -> Result<()> {
    with_container_view(store, &store.container(container)?, |rootfs| {
        let tree = Tree::container(rootfs)?;
        let source = Source::resolve(&tree, path, opts.follow_link)?;
        match dest {
            HostSide::Stream => {
                let name = source.base.clone();
                source.write_tar(out, &name)
            }
            HostSide::Path(dest) => {
                let owner =
                    (!opts.archive).then(|| (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()));
                let dest = dest.to_str().ok_or_else(|| invalid(dest.display(), "the path is not UTF-8".into()))?;
                transfer(source, &Tree::host(), dest, owner)
            }
        }
    })
}

/// `racker cp SRC CONTAINER:PATH`: `src` (or the tar read from `input` when `src` is
/// [`HostSide::Stream`]) copied to the container's `path`.
pub fn copy_to_container(
    store: &Store,
    src: HostSide<'_>,
    input: &mut dyn Read,
    container: &str,
    path: &str,
    opts: CopyOptions,
) -> Result<()> {
    // docker: files copied into a container belong to its root unless -a.
    let owner = (!opts.archive).then_some((0, 0));
    with_container_view(store, &store.container(container)?, |rootfs| {
        let tree = Tree::container(rootfs)?;
        match src {
            HostSide::Stream => {
                let dir = tree.open(path, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| match e {
                    Errno::NOTDIR => invalid(path, "the destination of a tar stream must be a directory".into()),
                    e => not_found(path, e),
                })?;
                apply(input, dir, owner, path)
            }
            HostSide::Path(src) => {
                let src = src.to_str().ok_or_else(|| invalid(src.display(), "the path is not UTF-8".into()))?;
                let source = Source::resolve(&Tree::host(), src, opts.follow_link)?;
                transfer(source, &tree, path, owner)
            }
        }
    })
}

fn invalid(what: impl std::fmt::Display, reason: String) -> RuntimeError {
    RuntimeError::Invalid { what: format!("path {what}"), reason }
}

fn not_found(path: &str, e: Errno) -> RuntimeError {
    match e {
        Errno::NOENT => invalid(path, "no such file or directory".into()),
        Errno::NOTDIR => invalid(path, "a parent is not a directory".into()),
        e => RuntimeError::Io { path: path.into(), source: e.into() },
    }
}

/// One side's file tree: a container's root (paths resolved inside it) or the host.
struct Tree {
    /// The container's root, `None` for the host.
    root: Option<OwnedFd>,
}

impl Tree {
    fn container(rootfs: &Path) -> Result<Tree> {
        let root = rfs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| RuntimeError::Io { path: rootfs.into(), source: e.into() })?;
        Ok(Tree { root: Some(root) })
    }

    fn host() -> Tree {
        Tree { root: None }
    }

    /// Opens `path` of this tree; in a container every symlink (and `..`) resolves
    /// inside its root.
    fn open(&self, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let path = if path.is_empty() { "." } else { path };
        let Some(root) = &self.root else {
            return rfs::openat(rfs::CWD, path, flags | OFlags::CLOEXEC, Mode::empty());
        };
        loop {
            let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
            match rfs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
                Err(Errno::AGAIN) => continue,
                other => return other,
            }
        }
    }

    /// The name shown for `path` in messages.
    fn show(&self, path: &str) -> String {
        match self.root {
            Some(_) => format!("{}{path}", if path.starts_with('/') { "" } else { "/" }),
            None => path.to_owned(),
        }
    }
}

/// `path` split as docker reads it: `/.` at the end means the directory's contents, a
/// trailing `/` that it must be a directory; the rest is (parent, base name).
struct Parsed {
    /// The path without the trailing `/.` or `/`, `/` for the root.
    path: String,
    base: String,
    parent: String,
    contents_only: bool,
    must_be_dir: bool,
}

fn parse(path: &str) -> Parsed {
    let (path, contents_only) = match path.strip_suffix("/.") {
        Some(p) => (p, true),
        None => (path, path == "."),
    };
    let must_be_dir = path.ends_with('/');
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() && path.starts_with('/') { "/" } else { trimmed };
    let (parent, base) = match trimmed.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((parent, base)) => (parent, base),
        None => (".", trimmed),
    };
    Parsed {
        path: trimmed.to_owned(),
        base: base.to_owned(),
        parent: parent.to_owned(),
        // The root itself, or `.`, has no name of its own: its contents are copied.
        contents_only: contents_only || matches!(base, "" | "." | ".."),
        must_be_dir,
    }
}

/// The top of what is copied, opened (`O_PATH`) and looked at.
struct Source {
    fd: OwnedFd,
    kind: FileType,
    /// The name the top has in a tar written to a stream.
    base: String,
    contents_only: bool,
    shown: String,
}

impl Source {
    fn resolve(tree: &Tree, path: &str, follow: bool) -> Result<Source> {
        let p = parse(path);
        let shown = tree.show(path);
        // A directory's contents (`/.`) or a path that must be a directory follow a
        // final symlink; otherwise only -L does.
        let nofollow = if follow || p.contents_only || p.must_be_dir { OFlags::empty() } else { OFlags::NOFOLLOW };
        let fd = tree.open(&p.path, OFlags::PATH | nofollow).map_err(|e| match e {
            Errno::NOENT => invalid(&shown, "no such file or directory".into()),
            e => not_found(&shown, e),
        })?;
        let st = rfs::fstat(&fd).map_err(|e| RuntimeError::Io { path: shown.clone().into(), source: e.into() })?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if (p.contents_only || p.must_be_dir) && kind != FileType::Directory {
            return Err(invalid(&shown, "not a directory".into()));
        }
        Ok(Source { fd, kind, base: p.base, contents_only: p.contents_only, shown })
    }

    /// Writes the tree as a tar, its top named `name` (or, for a directory's contents,
    /// its entries at the top).
    fn write_tar(self, out: &mut dyn Write, name: &str) -> Result<()> {
        let mut builder = tar::Builder::new(out);
        let io = |e: io::Error| RuntimeError::Io { path: self.shown.clone().into(), source: e };
        if self.contents_only {
            let dir = rfs::openat(&self.fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io(e.into()))?;
            add_children(&mut builder, &dir, "").map_err(io)?;
        } else {
            // The top by its own fd: a reopen through /proc/self/fd is that very object.
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.fd));
            let fd = match self.kind {
                FileType::Symlink => None,
                FileType::Directory => Some(OFlags::RDONLY | OFlags::DIRECTORY),
                FileType::RegularFile => Some(OFlags::RDONLY),
                _ => None,
            }
            .map(|flags| rfs::open(&proc, flags | OFlags::CLOEXEC, Mode::empty()))
            .transpose()
            .map_err(|e| io(e.into()))?;
            add_entry(&mut builder, self.fd.as_fd(), "", fd, name).map_err(io)?;
        }
        builder.into_inner().map_err(io)?.flush().map_err(io)
    }
}

/// Appends the object `parent/name` (`fd`: it opened for reading, if a file or
/// directory), then a directory's children, as `path`.
fn add_entry(
    builder: &mut tar::Builder<&mut dyn Write>,
    parent: BorrowedFd<'_>,
    name: &str,
    fd: Option<OwnedFd>,
    path: &str,
) -> io::Result<()> {
    let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let mut header = tar::Header::new_gnu();
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_size(0);
    match kind {
        FileType::RegularFile => {
            let file = std::fs::File::from(fd.ok_or(io::ErrorKind::InvalidInput)?);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(st.st_size as u64);
            // A file that changes while it is read is cut or padded to its size then.
            let mut data = file.take(st.st_size as u64).chain(io::repeat(0)).take(st.st_size as u64);
            builder.append_data(&mut header, path, &mut data)
        }
        FileType::Directory => {
            header.set_entry_type(tar::EntryType::Directory);
            builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            add_children(builder, &fd.ok_or(io::ErrorKind::InvalidInput)?, path)
        }
        FileType::Symlink => {
            let target = rfs::readlinkat(parent, name, Vec::new())?;
            header.set_entry_type(tar::EntryType::Symlink);
            use std::os::unix::ffi::OsStrExt;
            builder.append_link(&mut header, path, Path::new(std::ffi::OsStr::from_bytes(target.as_bytes())))
        }
        FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
            header.set_entry_type(match kind {
                FileType::Fifo => tar::EntryType::Fifo,
                FileType::CharacterDevice => tar::EntryType::Char,
                _ => tar::EntryType::Block,
            });
            header.set_device_major(rfs::major(st.st_rdev))?;
            header.set_device_minor(rfs::minor(st.st_rdev))?;
            builder.append_data(&mut header, path, io::empty())
        }
        // Sockets are not copied, as with tar.
        _ => Ok(()),
    }
}

/// Appends the children of the directory `dir` (opened for reading) below `prefix`.
fn add_children(builder: &mut tar::Builder<&mut dyn Write>, dir: &OwnedFd, prefix: &str) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let st = rfs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let flags = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Some(OFlags::RDONLY | OFlags::DIRECTORY),
            FileType::RegularFile => Some(OFlags::RDONLY),
            _ => None,
        };
        let fd = flags
            .map(|f| rfs::openat(dir, name.as_str(), f | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()))
            .transpose()?;
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        add_entry(builder, dir.as_fd(), &name, fd, &path)?;
    }
    Ok(())
}

/// Copies `source` to `dest` of `tree` by docker's rules: into an existing directory
/// under its own name (or its contents, for `/.`), over an existing file, or as the
/// new `dest` whose parent must exist.
fn transfer(source: Source, tree: &Tree, dest: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let d = parse(dest);
    let shown = tree.show(dest);
    let src_dir = source.kind == FileType::Directory;
    let existing = tree.open(&d.path, OFlags::PATH);
    let (dir, name, dir_path) = match existing {
        Ok(fd) => {
            let st = rfs::fstat(&fd).map_err(|e| RuntimeError::Io { path: shown.clone().into(), source: e.into() })?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                // Into the directory: under the source's name, or its contents.
                let dir = tree.open(&d.path, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| not_found(&shown, e))?;
                let name = (!source.contents_only).then(|| source.base.clone());
                (dir, name, d.path.clone())
            } else if src_dir {
                return Err(invalid(&shown, "cannot copy a directory to a file".into()));
            } else if d.must_be_dir {
                return Err(invalid(&shown, "not a directory".into()));
            } else {
                let dir = tree.open(&d.parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| not_found(&shown, e))?;
                (dir, Some(d.base.clone()), d.parent.clone())
            }
        }
        Err(Errno::NOENT) if d.must_be_dir && !src_dir => {
            return Err(invalid(&shown, "the destination directory must exist".into()))
        }
        Err(Errno::NOENT) if d.contents_only => return Err(invalid(&shown, "no such directory".into())),
        Err(Errno::NOENT) => {
            // A new file or directory: its parent must exist (docker makes no parents).
            let dir = tree.open(&d.parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| match e {
                Errno::NOENT => invalid(&shown, "its parent directory does not exist".into()),
                e => not_found(&shown, e),
            })?;
            (dir, Some(d.base.clone()), d.parent.clone())
        }
        Err(e) => return Err(not_found(&shown, e)),
    };
    let Some(name) = name else {
        return pipe_through(source, "", dir, owner, &shown);
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(invalid(&shown, "cannot copy to this path".into()));
    }
    // What sits at the new name must be of the same kind: the applier would replace it.
    match rfs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && !src_dir {
                return Err(invalid(format!("{dir_path}/{name}"), "cannot overwrite a directory with a file".into()));
            }
            if !is_dir && src_dir {
                return Err(invalid(format!("{dir_path}/{name}"), "cannot overwrite a file with a directory".into()));
            }
        }
        Err(Errno::NOENT) => {}
        Err(e) => return Err(RuntimeError::Io { path: shown.into(), source: e.into() }),
    }
    pipe_through(source, &name, dir, owner, &shown)
}

/// Streams `source`'s tar (top named `name`) into the directory `dir` through a socket
/// pair: a thread writes, this one applies.
fn pipe_through(source: Source, name: &str, dir: OwnedFd, owner: Option<(u32, u32)>, shown: &str) -> Result<()> {
    // A socket pair as the pipe (std's io::pipe is newer than racker's minimum Rust).
    let (reader, writer) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| RuntimeError::Io { path: "socketpair".into(), source: e })?;
    let name = name.to_owned();
    let writing = std::thread::spawn(move || {
        let mut writer = writer;
        source.write_tar(&mut writer, &name)
    });
    let applied = apply(reader, dir, owner, shown);
    let written = writing.join().unwrap_or_else(|_| Err(invalid(shown, "the copying thread panicked".into())));
    match (applied, written) {
        // The writer's broken pipe only says that applying failed first.
        (Err(e), Err(RuntimeError::Io { source, .. })) if source.kind() == io::ErrorKind::BrokenPipe => Err(e),
        (applied, written) => written.and(applied),
    }
}

/// Applies the tar `input` to the directory `dir`.
fn apply(input: impl Read, dir: OwnedFd, owner: Option<(u32, u32)>, shown: &str) -> Result<()> {
    let opts = UnpackOptions { whiteouts: WhiteoutMode::Plain, allow_devices: false, objects: None, reflink: false };
    apply_tar_at(input, dir, &opts, owner)
        .map(drop)
        .map_err(|e| RuntimeError::Invalid { what: format!("copy to {shown}"), reason: e.to_string() })
}

/// Copies what the container's directory `path` holds (owners, modes and times kept),
/// and the directory's own owner and mode, into the host directory `dest`: a new
/// volume gets what the image has where it is mounted, as in docker. Nothing to do if
/// the container has no directory there.
pub(super) fn seed_from_container(rootfs: &Path, path: &str, dest: &Path) -> Result<()> {
    let tree = Tree::container(rootfs)?;
    let fd = match tree.open(path, OFlags::PATH | OFlags::DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(not_found(path, e)),
    };
    let io = |e: Errno| RuntimeError::Io { path: dest.into(), source: e.into() };
    let st = rfs::fstat(&fd).map_err(io)?;
    let dir = rfs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(io)?;
    rfs::fchown(&dir, Some(rfs::Uid::from_raw(st.st_uid)), Some(rfs::Gid::from_raw(st.st_gid))).map_err(io)?;
    rfs::fchmod(&dir, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(io)?;
    let source =
        Source { fd, kind: FileType::Directory, base: String::new(), contents_only: true, shown: tree.show(path) };
    pipe_through(source, "", dir, None, &dest.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_as_docker_reads_them() {
        let p = parse("/srv/dir/.");
        assert_eq!((p.path.as_str(), p.base.as_str(), p.parent.as_str()), ("/srv/dir", "dir", "/srv"));
        assert!(p.contents_only);
        let p = parse("tmp/x/");
        assert_eq!((p.path.as_str(), p.base.as_str(), p.parent.as_str()), ("tmp/x", "x", "tmp"));
        assert!(p.must_be_dir && !p.contents_only);
        let p = parse("/x");
        assert_eq!((p.base.as_str(), p.parent.as_str()), ("x", "/"));
        let p = parse("/");
        assert_eq!(p.path, "/");
        assert!(p.contents_only);
        let p = parse("file");
        assert_eq!((p.base.as_str(), p.parent.as_str()), ("file", "."));
    }

    #[test]
    fn a_container_path_never_resolves_outside_its_root() {
        let host = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("tmp")).expect("mkdir");
        std::os::unix::fs::symlink("/", root.path().join("escape")).expect("symlink");
        std::os::unix::fs::symlink(host.path(), root.path().join("away")).expect("symlink");
        let tree = Tree::container(root.path()).expect("open");
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("x"), "inside").expect("write");
        let source =
            Source::resolve(&Tree::host(), src.path().join("x").to_str().expect("utf-8"), false).expect("source");
        transfer(source, &tree, "/escape/tmp/x", Some((0, 0))).expect("copy");
        assert_eq!(std::fs::read_to_string(root.path().join("tmp/x")).expect("landed inside"), "inside");
        let source =
            Source::resolve(&Tree::host(), src.path().join("x").to_str().expect("utf-8"), false).expect("source");
        assert!(transfer(source, &tree, "/away/y", None).is_err(), "the host's directory is not the container's");
        assert_eq!(std::fs::read_dir(host.path()).expect("list").count(), 0, "nothing written on the host");
    }
}
