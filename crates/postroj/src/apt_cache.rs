//! The host's cache of what apt downloads, so that a probe does not fetch the package
//! lists and the dependencies' .debs again in every throw-away container.
//!
//! ```text
//! /var/cache/postroj/apt/               0700, root's alone (racker::private)
//! ├── lists/<image-id-hex>/
//! │   ├── refresh.lock                  flock: exclusive while refreshing (one refresh at a time)
//! │   ├── current -> gen-<rand>         the lists probes get: apt's /var/lib/apt/lists, read-only
//! │   ├── gen-<rand>/, gen-<rand>.lock  one complete set of lists; flock shared while a probe reads it
//! │   ├── gen-<rand>.derived/           what was computed from them (dependency resolutions), gone with them
//! │   ├── stamp                         when `current` was last refreshed (unix nanoseconds)
//! │   └── staging-<rand>/               a refresh in progress (apt-get update writes here)
//! └── archives/<release-key>/
//!     ├── pool/<sha256-hex>             verified .debs, named by their content
//!     ├── names/<apt-file-name>.deb     -> ../pool/<hex>: the hash recorded on first sight
//!     ├── verified                      when the last verify pass started (unix nanoseconds)
//!     └── work-<rand>/                  one probe's /var/cache/apt/archives (hard links)
//! ```
//!
//! Lists belong to one image (an image's sources.list decides what they hold); archives
//! are shared by the images of one release, since a .deb of a release is the same file
//! whichever image downloaded it. A refresh builds a whole new generation and switches
//! `current` to it by one rename, so a reader sees the old lists or the new ones, never a
//! mix; readers never wait for a refresh (they keep the generation they bound, which is
//! removed once nobody reads it), and a crash or full disk leaves at most a staging
//! directory that the next refresh removes.
//! Containers do not add to the shared pool: each probe gets a workspace of hard links,
//! and what apt downloaded there enters the pool only after its hash is checked. (A
//! write through a link does reach the pool; the next checkout's hash check finds it.)
//!
//! `postroj cache ls` and `prune` read and trim it ([`AptCache::image_lists`],
//! [`AptCache::releases`], [`AptCache::remove_lists`], [`Archives::prune`]): lists go
//! with their image, pool files when no probe has used them for a while (their ctime,
//! see [`Archives::last_used`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use racker::digest::{Digest, HashingReader};
use racker::private;
use racker::runtime::Bind;
use rustix::fs::FlockOperation;

/// Where the cache lives unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/cache/postroj/apt";
/// Where apt keeps its package lists inside the container.
pub const LISTS_IN_CONTAINER: &str = "/var/lib/apt/lists";
/// Beside a generation `gen-X`, `gen-X.derived/` holds what was computed from it.
const DERIVED_SUFFIX: &str = ".derived";
/// Where apt keeps downloaded .debs inside the container.
pub const ARCHIVES_IN_CONTAINER: &str = "/var/cache/apt/archives";

#[derive(Debug, thiserror::Error)]
pub enum AptCacheError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no package lists cached for image {image}; run once without --offline")]
    OfflineWithoutLists { image: String },
    #[error("invalid release key {0:?}: use letters, digits, '.', '_' and '-' only")]
    InvalidReleaseKey(String),
}

pub type Result<T> = std::result::Result<T, AptCacheError>;

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> AptCacheError {
    let path = path.into();
    move |source| AptCacheError::Io { path, source }
}

/// When a probe may use the cached lists as they are (`--refresh`, `--offline`, TTL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexPolicy {
    /// Refresh lists older than this (or missing).
    Ttl(Duration),
    /// Refresh now, unless another probe finished a refresh while this one waited.
    Refresh,
    /// Never refresh: use what is cached, however old, or fail saying what is missing.
    Offline,
}

/// The cache at one root directory.
#[derive(Clone, Debug)]
pub struct AptCache {
    root: PathBuf,
}

impl AptCache {
    /// Opens (creating, mode 0700) the cache at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("lists"), root.join("archives")] {
            private::dir(&dir).map_err(io_err(&dir))?;
        }
        private::tighten(&root, private::DIR_MODE).map_err(io_err(&root))?;
        Ok(AptCache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The package lists of one image.
    pub fn lists(&self, image: &Digest) -> Result<ImageLists> {
        let dir = self.root.join("lists").join(image.hex());
        private::dir(&dir).map_err(io_err(&dir))?;
        Ok(ImageLists { dir, image: image.clone() })
    }

    /// The downloaded archives shared by the images of one release.
    pub fn archives(&self, release: &ReleaseKey) -> Result<Archives> {
        let dir = self.root.join("archives").join(&release.0);
        for sub in ["pool", "names"] {
            let d = dir.join(sub);
            private::dir(&d).map_err(io_err(&d))?;
        }
        Ok(Archives { dir })
    }
}

/// Names the set of images whose .debs are interchangeable, e.g. `debian-bookworm-amd64`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseKey(String);

impl ReleaseKey {
    pub fn new(key: &str) -> Result<Self> {
        let valid = !key.is_empty()
            && !key.starts_with('.')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(ReleaseKey(key.to_owned()))
        } else {
            Err(AptCacheError::InvalidReleaseKey(key.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A held flock, released on drop (the file is kept only to hold it).
#[derive(Debug)]
struct Lock(#[allow(dead_code)] File);

impl Lock {
    fn take(path: &Path, op: FlockOperation) -> Result<Lock> {
        let file = private::create_file(path, false).map_err(io_err(path))?;
        rustix::fs::flock(&file, op).map_err(|e| io_err(path)(e.into()))?;
        Ok(Lock(file))
    }
}

/// One image's package lists on the host.
#[derive(Clone, Debug)]
pub struct ImageLists {
    dir: PathBuf,
    image: Digest,
}

/// What [`ImageLists::prepare`] hands a probe: lists to read, or the duty to refresh them.
#[derive(Debug)]
pub enum ListsAccess {
    /// The lists are usable as they are; they stay on disk while this lives.
    Ready(ListsReader),
    /// The lists must be refreshed; other refreshes of the image wait until this is
    /// published or dropped (readers do not).
    Refresh(ListsRefresh),
}

impl ListsAccess {
    /// The lists' bind: read-only when reading, the writable staging directory while
    /// refreshing.
    pub fn bind(&self) -> Bind {
        match self {
            ListsAccess::Ready(reader) => reader.bind(),
            ListsAccess::Refresh(refresh) => refresh.bind(),
        }
    }
}

/// Everything a probe's container binds from the cache: its lists and its archives.
pub fn binds(lists: &ListsAccess, archives: &ArchiveWorkspace) -> Vec<Bind> {
    vec![lists.bind(), archives.bind()]
}

impl ImageLists {
    fn current(&self) -> PathBuf {
        self.dir.join("current")
    }
    fn stamp(&self) -> PathBuf {
        self.dir.join("stamp")
    }

    /// When the current lists were last refreshed; `None` if there are none.
    pub fn refreshed_at(&self) -> Result<Option<SystemTime>> {
        if self.current_generation()?.is_none() {
            return Ok(None);
        }
        match fs::read_to_string(self.stamp()) {
            // An unreadable stamp counts as very old: the lists are refreshed, not trusted.
            Ok(s) => Ok(Some(s.trim().parse::<u64>().map_or(UNIX_EPOCH, |ns| UNIX_EPOCH + Duration::from_nanos(ns)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(UNIX_EPOCH)),
            Err(e) => Err(io_err(self.stamp())(e)),
        }
    }

    /// Whether lists older than `ttl` (or missing) must be refreshed at `now`.
    pub fn needs_refresh(&self, ttl: Duration, now: SystemTime) -> Result<bool> {
        Ok(match self.refreshed_at()? {
            None => true,
            Some(at) => match now.duration_since(at) {
                Ok(age) => age >= ttl,
                // Stamped in the future (a clock set back): fresh.
                Err(_) => false,
            },
        })
    }

    /// The generation directory `current` points to, e.g. `gen-0123…`.
    fn current_generation(&self) -> Result<Option<String>> {
        match fs::read_link(self.current()) {
            Ok(target) => Ok(target.to_str().map(str::to_owned)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(self.current())(e)),
        }
    }

    /// Decides, under the policy, whether the caller reads the cached lists or refreshes
    /// them. Waits while another probe refreshes; if that refresh satisfies this one, it
    /// is not repeated.
    pub fn prepare(&self, policy: IndexPolicy) -> Result<ListsAccess> {
        let asked = SystemTime::now();
        let wanted = || -> Result<bool> {
            match policy {
                IndexPolicy::Offline => Ok(false),
                IndexPolicy::Ttl(ttl) => self.needs_refresh(ttl, SystemTime::now()),
                IndexPolicy::Refresh => Ok(match self.refreshed_at()? {
                    Some(at) => at < asked,
                    None => true,
                }),
            }
        };
        if !wanted()? {
            return match self.read()? {
                Some(reader) => Ok(ListsAccess::Ready(reader)),
                None => Err(AptCacheError::OfflineWithoutLists { image: self.image.to_string() }),
            };
        }
        let lock = Lock::take(&self.dir.join("refresh.lock"), FlockOperation::LockExclusive)?;
        if !wanted()? {
            if let Some(reader) = self.read()? {
                return Ok(ListsAccess::Ready(reader));
            }
        }
        self.remove_unused(&lock)?;
        let staging = self.dir.join(format!("staging-{:016x}", rand::random::<u64>()));
        apt_dir(&staging)?;
        let refresh = ListsRefresh { lists: self.clone(), staging, published: false, refresh_lock: lock };
        if let Some(generation) = self.current_generation()? {
            seed_from(&self.dir.join(generation), refresh.dir())?;
        }
        Ok(ListsAccess::Refresh(refresh))
    }

    /// Pins the current generation (a shared lock on its lock file) so that no refresh
    /// removes it while a probe has it bound. `None`: there are no lists.
    fn read(&self) -> Result<Option<ListsReader>> {
        loop {
            let Some(generation) = self.current_generation()? else { return Ok(None) };
            let lock_path = self.dir.join(format!("{generation}.lock"));
            let file = match File::open(&lock_path) {
                Ok(file) => file,
                // Swept after a newer generation replaced it: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(lock_path)(e)),
            };
            rustix::fs::flock(&file, FlockOperation::LockShared).map_err(|e| io_err(&lock_path)(e.into()))?;
            // Only generations that are not current are swept: still current once
            // locked, it stays on disk for as long as the lock is held.
            if self.current_generation()?.as_deref() == Some(generation.as_str()) {
                return Ok(Some(ListsReader { dir: self.dir.join(generation), _lock: Lock(file) }));
            }
        }
    }

    /// Removes staging directories of refreshes that died and generations nobody reads.
    /// Called with the refresh lock held, when no other refresh can be running.
    fn remove_unused(&self, _refresh_lock: &Lock) -> Result<()> {
        let current = self.current_generation()?;
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.starts_with("staging-") {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else if let Some(generation) = name.strip_suffix(DERIVED_SUFFIX) {
                // Derived from a generation that is gone (removed below, or by a crash).
                if !self.dir.join(generation).exists() {
                    remove_dir_if_present(&path)?;
                }
            } else if name.starts_with("gen-") && !name.ends_with(".lock") && Some(&name) != current.as_ref() {
                let lock_path = self.dir.join(format!("{name}.lock"));
                let unused = match File::open(&lock_path) {
                    Ok(file) => rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => return Err(io_err(lock_path)(e)),
                };
                if unused {
                    remove_dir_if_present(&self.dir.join(format!("{name}{DERIVED_SUFFIX}")))?;
                    fs::remove_dir_all(&path).map_err(io_err(&path))?;
                    remove_if_present(&lock_path)?;
                }
            }
        }
        Ok(())
    }
}

/// Copies the current lists into a new staging directory, so that `apt-get update` sends
/// If-Modified-Since and fetches only what changed. Copies, not hard links: whatever
/// writes a staged file in place must not change lists that probes are reading (on
/// btrfs and xfs the copy is a reflink).
fn seed_from(current: &Path, staging: &Path) -> Result<()> {
    for entry in fs::read_dir(current).map_err(io_err(current))? {
        let entry = entry.map_err(io_err(current))?;
        if entry.file_type().map_err(io_err(entry.path()))?.is_file() && entry.file_name() != "lock" {
            let to = staging.join(entry.file_name());
            fs::copy(entry.path(), &to).map_err(io_err(to))?;
        }
    }
    Ok(())
}

/// Cached lists a probe may read: one generation, kept on disk while this lives.
#[derive(Debug)]
pub struct ListsReader {
    dir: PathBuf,
    _lock: Lock,
}

impl ListsReader {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A directory for what is derived from these lists alone (dependency resolutions):
    /// it lives and goes with the generation, so nothing in it outlives a refresh.
    pub fn derived_dir(&self) -> Result<PathBuf> {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(DERIVED_SUFFIX);
        let dir = self.dir.with_file_name(name);
        private::dir(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// The lists as the probe's container sees them: read-only, at apt's place.
    pub fn bind(&self) -> Bind {
        Bind { source: self.dir.clone(), target: LISTS_IN_CONTAINER.into(), read_only: true }
    }
}

/// A refresh in progress: the caller runs `apt-get update` in a container with
/// [`bind`](Self::bind), then [`publish`](Self::publish)es. Dropped unpublished, the
/// staging directory is removed and the old lists stay current.
#[derive(Debug)]
pub struct ListsRefresh {
    lists: ImageLists,
    staging: PathBuf,
    /// Renamed into a generation: nothing left to clean up on drop.
    published: bool,
    refresh_lock: Lock,
}

impl ListsRefresh {
    /// Where the new lists are written.
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    /// The staging directory as the refreshing container sees it: writable, at apt's place.
    pub fn bind(&self) -> Bind {
        Bind { source: self.dir().to_path_buf(), target: LISTS_IN_CONTAINER.into(), read_only: false }
    }

    /// Makes the staged lists the current generation and stamps them fresh; returns
    /// them pinned for the caller's probe.
    pub fn publish(self) -> Result<ListsReader> {
        self.publish_at(SystemTime::now())
    }

    fn publish_at(mut self, now: SystemTime) -> Result<ListsReader> {
        let lists = self.lists.clone();
        let staging = self.staging.clone();
        // apt (re)sets the owner and mode of `auxfiles/` whenever it finds one, which
        // warns on read-only lists; it is scratch space for `apt-get changelog` and the
        // like, and a probe's apt does without it.
        match fs::remove_dir(staging.join("auxfiles")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && e.kind() != io::ErrorKind::DirectoryNotEmpty => {
                return Err(io_err(staging.join("auxfiles"))(e));
            }
            _ => {}
        }
        let generation = format!("gen-{:016x}", rand::random::<u64>());
        let lock_path = lists.dir.join(format!("{generation}.lock"));
        let lock = Lock::take(&lock_path, FlockOperation::LockShared)?;
        let dir = lists.dir.join(&generation);
        fs::rename(&staging, &dir).map_err(io_err(&dir))?;
        self.published = true;
        let link = lists.dir.join(format!(".current-{:016x}", rand::random::<u64>()));
        std::os::unix::fs::symlink(&generation, &link).map_err(io_err(&link))?;
        fs::rename(&link, lists.current()).map_err(io_err(lists.current()))?;
        // Stamped after the switch: a crash between leaves new lists that look old (one
        // needless refresh), never old lists that look fresh.
        let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        write_atomically(&lists.stamp(), format!("{nanos}\n").as_bytes())?;
        sync_dir(&lists.dir)?;
        lists.remove_unused(&self.refresh_lock)?;
        Ok(ListsReader { dir, _lock: lock })
    }
}

impl Drop for ListsRefresh {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Creates a directory apt is given in the container, with its `partial/`, mode 0755
/// as apt's own: apt downloads as the unprivileged `_apt` user, which must traverse it
/// (a 0700 one makes apt fall back to downloading as root, with a warning). Host users
/// stay out all the same: the cache's root is 0700.
fn apt_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for d in [dir.to_path_buf(), dir.join("partial")] {
        fs::DirBuilder::new().mode(0o755).create(&d).map_err(io_err(&d))?;
        private::tighten(&d, 0o755).map_err(io_err(&d))?;
    }
    Ok(())
}

/// Writes `path` whole or not at all: a temporary file beside it, synced, renamed over.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let written = private::create_file(&tmp, true).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// sha256 of a file's content.
fn hash_file(path: &Path) -> Result<Digest> {
    let file = File::open(path).map_err(io_err(path))?;
    HashingReader::new(file).finish().map(|(digest, _)| digest).map_err(io_err(path))
}

/// The downloaded .debs of one release.
#[derive(Clone, Debug)]
pub struct Archives {
    dir: PathBuf,
}

/// A cached .deb whose content no longer matches its hash; it was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// apt's file name, e.g. `lighttpd_1.4.69-1_amd64.deb`.
    pub name: String,
    pub expected: Digest,
    pub found: Digest,
}

/// What [`Archives::publish`] did with the .debs of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Entered the pool.
    pub added: Vec<String>,
    /// Not kept: their hash differs from the index's or from the one recorded before.
    pub rejected: Vec<Corrupt>,
}

impl Archives {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hash recorded for apt's file `name`, if any.
    fn recorded(&self, name: &str) -> Option<Digest> {
        let target = fs::read_link(self.dir.join("names").join(name)).ok()?;
        Digest::from_hex(target.file_name()?.to_str()?).ok()
    }

    /// Verifies the cached .debs written since the last pass (by mtime, which a write in
    /// place changes; downloads keep the server's old one) against their recorded
    /// hashes. Corrupted ones are removed (name and content) and returned, so that apt
    /// downloads them again. Cheap enough for every probe: unchanged files are not read.
    pub fn verify(&self) -> Result<Vec<Corrupt>> {
        let stamp = self.dir.join("verified");
        let since = match fs::read_to_string(&stamp) {
            Ok(s) => s.trim().parse::<u64>().map_or(UNIX_EPOCH, |ns| UNIX_EPOCH + Duration::from_nanos(ns)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => UNIX_EPOCH,
            Err(e) => return Err(io_err(stamp)(e)),
        };
        // File times come from a coarse clock (they may lag `now` by a tick): a margin.
        let since = since.checked_sub(Duration::from_secs(2)).unwrap_or(UNIX_EPOCH);
        let started = SystemTime::now();
        let corrupt = self.verify_since(since)?;
        let nanos = started.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        write_atomically(&stamp, format!("{nanos}\n").as_bytes())?;
        Ok(corrupt)
    }

    /// Verifies every cached .deb, however old (what [`verify`](Self::verify) skips:
    /// damage that left the mtime alone).
    pub fn verify_all(&self) -> Result<Vec<Corrupt>> {
        self.verify_since(UNIX_EPOCH)
    }

    fn verify_since(&self, since: SystemTime) -> Result<Vec<Corrupt>> {
        let names = self.dir.join("names");
        let mut corrupt = Vec::new();
        for entry in fs::read_dir(&names).map_err(io_err(&names))? {
            let entry = entry.map_err(io_err(&names))?;
            // Hidden names are a publish's temporary links, about to be renamed.
            let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')).map(str::to_owned) else {
                continue;
            };
            let Some(expected) = self.recorded(&name) else {
                remove_if_present(&entry.path())?;
                continue;
            };
            let blob = self.dir.join("pool").join(expected.hex());
            let modified = match fs::metadata(&blob).and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    remove_if_present(&entry.path())?;
                    continue;
                }
                Err(e) => return Err(io_err(blob)(e)),
            };
            if modified < since {
                continue;
            }
            let found = hash_file(&blob)?;
            if found != expected {
                remove_if_present(&blob)?;
                remove_if_present(&entry.path())?;
                corrupt.push(Corrupt { name, expected, found });
            }
        }
        Ok(corrupt)
    }

    /// A probe's own archives directory, holding (as hard links) every verified .deb of
    /// the release. Corrupted entries found on the way are removed and reported.
    pub fn checkout(&self) -> Result<(ArchiveWorkspace, Vec<Corrupt>)> {
        self.remove_dead_workspaces()?;
        let corrupt = self.verify()?;
        // Visible under its final name only once locked: an unlocked workspace is a dead one.
        let suffix = format!("{:016x}", rand::random::<u64>());
        let hidden = self.dir.join(format!(".work-{suffix}"));
        let dir = self.dir.join(format!("work-{suffix}"));
        apt_dir(&hidden)?;
        let lock = File::open(&hidden).map_err(io_err(&hidden))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive).map_err(|e| io_err(&hidden)(e.into()))?;
        fs::rename(&hidden, &dir).map_err(io_err(&dir))?;
        let workspace = ArchiveWorkspace { dir, _lock: lock };
        let names = self.dir.join("names");
        for entry in fs::read_dir(&names).map_err(io_err(&names))? {
            let entry = entry.map_err(io_err(&names))?;
            let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')).map(str::to_owned) else {
                continue;
            };
            let Some(digest) = self.recorded(&name) else { continue };
            let to = workspace.dir.join(&name);
            match fs::hard_link(self.dir.join("pool").join(digest.hex()), &to) {
                Ok(()) => {}
                // Removed by a concurrent verify: apt downloads it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(to)(e)),
            }
        }
        Ok((workspace, corrupt))
    }

    /// Workspaces of probes that died (nobody holds their lock).
    fn remove_dead_workspaces(&self) -> Result<()> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.starts_with("work-") {
                continue;
            }
            let Ok(handle) = File::open(&path) else { continue };
            if rustix::fs::flock(&handle, FlockOperation::NonBlockingLockExclusive).is_ok() {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Takes the .debs apt left in `workspace` into the pool: each is hashed and checked
    /// against `index` (hashes from apt's Packages files, see [`index_hashes`]) or else
    /// against the hash recorded when that file name was first seen. A mismatch is
    /// rejected, not kept.
    pub fn publish(&self, workspace: &ArchiveWorkspace, index: &HashMap<String, Digest>) -> Result<PublishReport> {
        let mut report = PublishReport::default();
        let mut entries: Vec<_> = fs::read_dir(&workspace.dir)
            .map_err(io_err(&workspace.dir))?
            .collect::<io::Result<_>>()
            .map_err(io_err(&workspace.dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let path = entry.path();
            if !name.ends_with(".deb") || !entry.file_type().map_err(io_err(&path))?.is_file() {
                continue;
            }
            let recorded = self.recorded(&name);
            // Still the pool's own file (the link checkout made): nothing new to take in.
            // A write through that link is the pool's corruption, which verify finds.
            if let Some(digest) = &recorded {
                if same_file(&path, &self.dir.join("pool").join(digest.hex())) {
                    continue;
                }
            }
            let found = hash_file(&path)?;
            if let Some(expected) = index.get(&name).or(recorded.as_ref()) {
                if *expected != found {
                    report.rejected.push(Corrupt { name, expected: expected.clone(), found });
                    continue;
                }
            }
            if recorded.as_ref() == Some(&found) && self.dir.join("pool").join(found.hex()).exists() {
                continue;
            }
            let blob = self.dir.join("pool").join(found.hex());
            if !blob.exists() {
                // Linked under a temporary name and renamed: the pool never holds a name
                // for content it does not have in full.
                let tmp = self.dir.join("pool").join(format!(".tmp-{:016x}", rand::random::<u64>()));
                fs::hard_link(&path, &tmp).map_err(io_err(&tmp))?;
                private::tighten(&tmp, private::FILE_MODE).map_err(io_err(&tmp))?;
                fs::rename(&tmp, &blob).map_err(io_err(&blob))?;
            }
            let link = self.dir.join("names").join(&name);
            let tmp = self.dir.join("names").join(format!(".tmp-{:016x}", rand::random::<u64>()));
            std::os::unix::fs::symlink(Path::new("../pool").join(found.hex()), &tmp).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &link).map_err(io_err(&link))?;
            report.added.push(name);
        }
        Ok(report)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Removes a directory tree that another entry's removal may already have taken.
fn remove_dir_if_present(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// One probe's `/var/cache/apt/archives`: removed when dropped.
#[derive(Debug)]
pub struct ArchiveWorkspace {
    dir: PathBuf,
    _lock: File,
}

impl ArchiveWorkspace {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The workspace as the probe's container sees it: writable, at apt's place.
    pub fn bind(&self) -> Bind {
        Bind { source: self.dir.clone(), target: ARCHIVES_IN_CONTAINER.into(), read_only: false }
    }
}

impl Drop for ArchiveWorkspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// apt's file name for a downloaded package: `name_version_arch.deb`, the epoch's colon
/// written `%3a` as apt does.
pub fn archive_file_name(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// The sha256 of every package the `*_Packages` files in `lists` describe, by apt's
/// archive file name: what a downloaded .deb must hash to.
pub fn index_hashes(lists: &Path) -> Result<HashMap<String, Digest>> {
    let mut hashes = HashMap::new();
    for entry in fs::read_dir(lists).map_err(io_err(lists))? {
        let path = entry.map_err(io_err(lists))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(compression) = name.split_once("_Packages").map(|(_, rest)| rest) else { continue };
        let file = File::open(&path).map_err(io_err(&path))?;
        // Images with `Acquire::GzipIndexes` keep their lists compressed; lz4 ones are
        // not read (their .debs get the hash recorded on first sight instead).
        let reader: Box<dyn io::Read> = match compression {
            "" => Box::new(file),
            ".gz" => Box::new(flate2::read::MultiGzDecoder::new(file)),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(file)),
            ".zst" => Box::new(zstd::Decoder::new(file).map_err(io_err(&path))?),
            _ => continue,
        };
        read_packages(BufReader::new(reader), &mut hashes).map_err(io_err(&path))?;
    }
    Ok(hashes)
}

/// One package's fields that name and verify its .deb.
#[derive(Default)]
struct Stanza {
    package: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    sha256: Option<String>,
}

fn read_packages(index: impl BufRead, hashes: &mut HashMap<String, Digest>) -> io::Result<()> {
    let mut stanza = Stanza::default();
    // A blank line ends a stanza; so does the end of the file.
    for line in index.lines().chain(std::iter::once(Ok(String::new()))) {
        let line = line?;
        if line.trim().is_empty() {
            if let Stanza { package: Some(p), version: Some(v), arch: Some(a), sha256: Some(h) } =
                std::mem::take(&mut stanza)
            {
                if let Ok(digest) = Digest::from_hex(&h) {
                    hashes.insert(archive_file_name(&p, &v, &a), digest);
                }
            }
            continue;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        let value = Some(value.trim().to_owned());
        match field {
            "Package" => stanza.package = value,
            "Version" => stanza.version = value,
            "Architecture" => stanza.arch = value,
            "SHA256" => stanza.sha256 = value,
            _ => {}
        }
    }
    Ok(())
}

// ---- Inventory and pruning, for `postroj cache ls` and `postroj cache prune` ----

/// One image's cached lists, as `postroj cache ls` shows them.
#[derive(Clone, Debug)]
pub struct ListsInfo {
    pub image: Digest,
    /// When the current lists were refreshed; `None`: no complete lists (yet).
    pub refreshed_at: Option<SystemTime>,
    /// Bytes of every file of the image's directory (all generations, any staging).
    pub size: u64,
}

/// One release's cached .debs, as `postroj cache ls` shows them.
#[derive(Clone, Debug)]
pub struct ArchivesInfo {
    pub release: String,
    /// Files in the pool (verified .debs, each content once).
    pub packages: usize,
    pub size: u64,
    /// The latest [`Archives::last_used`] of its pool files; `None` when the pool is empty.
    pub last_used: Option<SystemTime>,
}

/// Which pool files [`Archives::prune`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchivePrune {
    /// Every one.
    All,
    /// Those whose last use is before this time.
    UnusedSince(SystemTime),
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub files: usize,
    pub bytes: u64,
}

impl AptCache {
    /// The cache at `root` if it exists; `None` without creating it (listing a cache
    /// that was never used makes nothing).
    pub fn existing(root: impl Into<PathBuf>) -> Result<Option<Self>> {
        let root = root.into();
        match fs::symlink_metadata(&root) {
            Ok(_) => AptCache::open(root).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(root)(e)),
        }
    }

    /// Every image with a lists directory, sorted by image id.
    pub fn image_lists(&self) -> Result<Vec<ListsInfo>> {
        let mut found = Vec::new();
        for (name, dir) in subdirs(&self.root.join("lists"))? {
            let Ok(image) = Digest::from_hex(&name) else { continue };
            let lists = ImageLists { dir: dir.clone(), image: image.clone() };
            found.push(ListsInfo { image, refreshed_at: lists.refreshed_at()?, size: tree_size(&dir)? });
        }
        Ok(found)
    }

    /// Every release with an archives directory, sorted by name.
    pub fn releases(&self) -> Result<Vec<ArchivesInfo>> {
        let mut found = Vec::new();
        for (release, dir) in subdirs(&self.root.join("archives"))? {
            let archives = Archives { dir };
            let (mut packages, mut size, mut last_used) = (0, 0, None::<SystemTime>);
            for (_, meta) in archives.pool_files()? {
                packages += 1;
                size += meta.len();
                let used = Archives::last_used(&meta);
                last_used = Some(last_used.map_or(used, |l| l.max(used)));
            }
            found.push(ArchivesInfo { release, packages, size, last_used });
        }
        Ok(found)
    }

    /// Removes the lists of `image` (an image no longer in the store), unless a probe
    /// is refreshing or reading them: then they are kept and `false` is returned.
    pub fn remove_lists(&self, image: &Digest) -> Result<bool> {
        let dir = self.root.join("lists").join(image.hex());
        if !dir.is_dir() {
            return Ok(true);
        }
        // Held until the directory is gone: no refresh starts and no reader pins a
        // generation meanwhile (both wait on these locks, then find no lists).
        let mut held = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "refresh.lock" || (name.starts_with("gen-") && name.ends_with(".lock")) {
                let file = File::open(&path).map_err(io_err(&path))?;
                if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
                    return Ok(false);
                }
                held.push(file);
            }
        }
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(true)
    }

    /// Prunes the archives of every release ([`Archives::prune`]), by release name.
    pub fn prune_archives(&self, which: ArchivePrune) -> Result<Vec<(String, PruneReport)>> {
        let mut reports = Vec::new();
        for (release, dir) in subdirs(&self.root.join("archives"))? {
            reports.push((release, Archives { dir }.prune(which)?));
        }
        Ok(reports)
    }
}

impl Archives {
    /// When a pool file was last used: its inode change time. Each probe's checkout
    /// hard-links every pool file into its workspace and removes the link when done, and
    /// publish links new ones in; each changes the link count and so the ctime, which
    /// (unlike mtime, the server's time, or atime, often not kept) follows use.
    pub fn last_used(meta: &fs::Metadata) -> SystemTime {
        use std::os::unix::fs::MetadataExt;
        let secs = u64::try_from(meta.ctime()).unwrap_or(0);
        let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// The pool's files (not a publish's temporary names), with their metadata.
    fn pool_files(&self) -> Result<Vec<(PathBuf, fs::Metadata)>> {
        let pool = self.dir.join("pool");
        let entries = match fs::read_dir(&pool) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(pool)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&pool))?;
            if entry.file_name().to_str().is_none_or(|n| n.starts_with('.')) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Removed by a concurrent verify.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(entry.path())(e)),
            };
            if meta.is_file() {
                files.push((entry.path(), meta));
            }
        }
        Ok(files)
    }

    /// Removes the pool files `which` selects, and the names that point to them. A
    /// probe that has one checked out keeps its link (and publishes it again); later
    /// probes download it again.
    pub fn prune(&self, which: ArchivePrune) -> Result<PruneReport> {
        let mut doomed = HashMap::new();
        for (path, meta) in self.pool_files()? {
            let unused = match which {
                ArchivePrune::All => true,
                ArchivePrune::UnusedSince(cutoff) => Archives::last_used(&meta) < cutoff,
            };
            if unused {
                doomed.insert(path.file_name().unwrap_or_default().to_owned(), (path, meta.len()));
            }
        }
        // Names first: a checkout never finds a name whose file was removed before it.
        let names = self.dir.join("names");
        if let Ok(entries) = fs::read_dir(&names) {
            for entry in entries {
                let entry = entry.map_err(io_err(&names))?;
                let target = fs::read_link(entry.path()).ok();
                if target.as_deref().and_then(Path::file_name).is_some_and(|hex| doomed.contains_key(hex)) {
                    remove_if_present(&entry.path())?;
                }
            }
        }
        let mut report = PruneReport::default();
        for (path, size) in doomed.into_values() {
            remove_if_present(&path)?;
            report.files += 1;
            report.bytes += size;
        }
        Ok(report)
    }
}

/// Subdirectories of `dir` (absent: none) by name, sorted.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if entry.file_type().map_err(io_err(entry.path()))?.is_dir() {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Bytes of the regular files below `path`; what vanishes while counted is not counted.
fn tree_size(path: &Path) -> Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.len() } else { 0 });
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut total = 0;
    for entry in entries {
        total += tree_size(&entry.map_err(io_err(path))?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    fn image() -> Digest {
        Digest::of(b"image")
    }

    /// Stands in for `apt-get update` in a container: writes a list and publishes.
    fn refresh(access: ListsAccess, content: &str) -> ListsReader {
        let ListsAccess::Refresh(refresh) = access else { panic!("expected a refresh") };
        fs::write(refresh.dir().join("deb_dists_bookworm_main_binary-amd64_Packages"), content).unwrap();
        fs::create_dir(refresh.dir().join("auxfiles")).unwrap();
        refresh.publish().unwrap()
    }

    #[test]
    fn ttl_expiry_asks_for_a_refresh_and_fresh_lists_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path().join("apt")).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(lists.needs_refresh(hour, SystemTime::now()).unwrap());
        let reader = refresh(lists.prepare(IndexPolicy::Ttl(hour)).unwrap(), "v1");
        assert_eq!(reader.bind().target, LISTS_IN_CONTAINER);
        assert!(reader.bind().read_only);
        assert!(!reader.dir().join("auxfiles").exists(), "apt would warn about it on read-only lists");
        drop(reader);
        assert!(!lists.needs_refresh(hour, SystemTime::now()).unwrap());
        assert!(lists.needs_refresh(hour, SystemTime::now() + 2 * hour).unwrap());
        assert!(matches!(lists.prepare(IndexPolicy::Ttl(hour)).unwrap(), ListsAccess::Ready(_)));
        // Lists refreshed two hours ago are past a one-hour TTL.
        let ListsAccess::Refresh(r) = lists.prepare(IndexPolicy::Refresh).unwrap() else { panic!() };
        drop(r.publish_at(SystemTime::now() - 2 * hour).unwrap());
        let ListsAccess::Refresh(r) = lists.prepare(IndexPolicy::Ttl(hour)).unwrap() else { panic!() };
        // The refresh starts from a copy of the current lists, and nothing is left behind.
        assert_eq!(fs::read_to_string(r.dir().join("deb_dists_bookworm_main_binary-amd64_Packages")).unwrap(), "v1");
        let reader = r.publish().unwrap();
        let names: Vec<_> = fs::read_dir(&lists.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        // refresh.lock, current, stamp, and one generation with its lock: the old one is gone.
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(fs::metadata(tmp.path().join("apt")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(reader.dir().join("partial")).unwrap().permissions().mode() & 0o777, 0o755);
        drop(reader);
    }

    #[test]
    fn what_is_derived_from_lists_goes_with_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let first = refresh(lists.prepare(IndexPolicy::Refresh).unwrap(), "v1");
        let derived = first.derived_dir().unwrap();
        fs::write(derived.join("resolution"), "install hello amd64 2.10-3\n").unwrap();
        drop(first);
        for round in ["v2", "v3"] {
            let reader = refresh(lists.prepare(IndexPolicy::Refresh).unwrap(), round);
            assert!(!derived.exists(), "a refresh removes what the old lists gave");
            assert_eq!(reader.derived_dir().unwrap(), PathBuf::from(format!("{}.derived", reader.dir().display())));
        }
    }

    #[test]
    fn offline_reads_stale_lists_and_fails_clearly_without_any() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let err = lists.prepare(IndexPolicy::Offline).unwrap_err();
        assert!(matches!(err, AptCacheError::OfflineWithoutLists { .. }));
        assert!(err.to_string().contains("run once without --offline"), "{err}");
        // An abandoned refresh leaves the cache cold.
        drop(lists.prepare(IndexPolicy::Refresh).unwrap());
        assert!(lists.prepare(IndexPolicy::Offline).is_err());
        let ListsAccess::Refresh(r) = lists.prepare(IndexPolicy::Refresh).unwrap() else { panic!() };
        drop(r.publish_at(UNIX_EPOCH + Duration::from_secs(1)).unwrap());
        let ListsAccess::Ready(reader) = lists.prepare(IndexPolicy::Offline).unwrap() else {
            panic!("offline refreshed")
        };
        assert!(reader.dir().is_dir());
    }

    #[test]
    fn a_reader_keeps_its_lists_through_a_refresh_and_they_go_once_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let old = refresh(lists.prepare(IndexPolicy::Refresh).unwrap(), "v1");
        // The refresh neither waits for the reader nor takes its lists away.
        let new = refresh(lists.prepare(IndexPolicy::Refresh).unwrap(), "v2");
        let list = "deb_dists_bookworm_main_binary-amd64_Packages";
        assert_eq!(fs::read_to_string(old.dir().join(list)).unwrap(), "v1");
        assert_eq!(fs::read_to_string(new.dir().join(list)).unwrap(), "v2");
        let old_dir = old.dir().to_path_buf();
        drop(old);
        let ListsAccess::Refresh(r) = lists.prepare(IndexPolicy::Refresh).unwrap() else { panic!() };
        assert!(!old_dir.exists(), "an unread generation is swept by the next refresh");
        assert!(new.dir().exists(), "a generation being read is kept");
        drop(r);
        let ListsAccess::Ready(again) = lists.prepare(IndexPolicy::Offline).unwrap() else { panic!() };
        assert_eq!(again.dir(), new.dir());
    }

    #[test]
    fn concurrent_refreshes_of_one_image_happen_once() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let refreshes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (lists, refreshes, start) = (lists.clone(), refreshes.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    match lists.prepare(IndexPolicy::Ttl(Duration::from_secs(3600))).unwrap() {
                        ListsAccess::Refresh(r) => {
                            refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // Slow enough that the other thread arrives while this one holds the lock.
                            std::thread::sleep(Duration::from_millis(200));
                            fs::write(r.dir().join("x_Packages"), "v").unwrap();
                            r.publish().unwrap()
                        }
                        ListsAccess::Ready(reader) => reader,
                    }
                })
            })
            .collect();
        for t in threads {
            let reader = t.join().unwrap();
            assert_eq!(fs::read_to_string(reader.dir().join("x_Packages")).unwrap(), "v");
        }
        assert_eq!(refreshes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn archives_are_verified_against_the_index_and_corruption_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let archives = cache.archives(&ReleaseKey::new("debian-bookworm-amd64").unwrap()).unwrap();
        assert!(ReleaseKey::new("../x").is_err());

        // A dead probe's workspace (unlocked) is swept; apt downloads into the first probe's.
        fs::create_dir(archives.dir().join("work-dead")).unwrap();
        let (ws, corrupt) = archives.checkout().unwrap();
        assert!(!archives.dir().join("work-dead").exists());
        assert!(corrupt.is_empty());
        let lists = cache.lists(&image()).unwrap();
        let access = lists.prepare(IndexPolicy::Refresh).unwrap();
        let bound = binds(&access, &ws);
        assert_eq!(
            bound.iter().map(|b| (b.target.as_str(), b.read_only)).collect::<Vec<_>>(),
            [(LISTS_IN_CONTAINER, false), (ARCHIVES_IN_CONTAINER, false)]
        );
        assert_eq!(bound[1].source, ws.dir());
        drop(access);
        let good = archive_file_name("lighttpd", "1.4.69-1", "amd64");
        let epoch = archive_file_name("libx", "1:2.0", "amd64");
        assert_eq!(epoch, "libx_1%3a2.0_amd64.deb");
        fs::write(ws.dir().join(&good), b"lighttpd deb").unwrap();
        fs::write(ws.dir().join(&epoch), b"libx deb").unwrap();
        let bad = archive_file_name("broken", "1", "amd64");
        fs::write(ws.dir().join(&bad), b"truncated").unwrap();
        let lists = tmp.path().join("lists-src");
        fs::create_dir(&lists).unwrap();
        fs::write(
            lists.join("deb_dists_bookworm_main_binary-amd64_Packages"),
            format!(
                "Package: lighttpd\nVersion: 1.4.69-1\nArchitecture: amd64\nSHA256: {}\n\n\
                 Package: broken\nVersion: 1\nArchitecture: amd64\nSHA256: {}\n",
                Digest::of(b"lighttpd deb").hex(),
                Digest::of(b"the whole file").hex()
            ),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"Package: libx\nVersion: 1:2.0\nArchitecture: amd64\nSHA256: ").unwrap();
        gz.write_all(Digest::of(b"libx deb").hex().as_bytes()).unwrap();
        fs::write(lists.join("deb_dists_bookworm_contrib_binary-amd64_Packages.gz"), gz.finish().unwrap()).unwrap();
        fs::write(lists.join("deb_dists_bookworm_InRelease"), "not an index").unwrap();
        let index = index_hashes(&lists).unwrap();
        assert_eq!(index.len(), 3, "{index:?}");
        assert_eq!(index[&epoch], Digest::of(b"libx deb"));
        let report = archives.publish(&ws, &index).unwrap();
        assert_eq!(report.added, vec![epoch.clone(), good.clone()]);
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].name, bad);
        let ws_dir = ws.dir().to_path_buf();
        drop(ws);
        assert!(!ws_dir.exists());

        // A second probe gets both; the recorded hash refuses a changed file of the same name.
        let (ws, _) = archives.checkout().unwrap();
        assert_eq!(fs::read(ws.dir().join(&good)).unwrap(), b"lighttpd deb");
        let (other, _) = archives.checkout().unwrap();
        assert!(archives.publish(&other, &HashMap::new()).unwrap() == PublishReport::default());
        drop(other);
        assert!(ws.dir().exists(), "a live workspace is not swept by another checkout");
        fs::remove_file(ws.dir().join(&epoch)).unwrap();
        fs::write(ws.dir().join(&epoch), b"other content").unwrap();
        let report = archives.publish(&ws, &HashMap::new()).unwrap();
        assert_eq!(report.rejected.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), vec![epoch.clone()]);
        drop(ws);

        // Corruption in the pool (a write through a hard link) is found, removed, reported.
        fs::write(ws_path_of(&archives, &good), b"lighttpd deX").unwrap();
        let (ws, corrupt) = archives.checkout().unwrap();
        assert_eq!(corrupt.len(), 1);
        assert_eq!(corrupt[0].name, good);
        assert_eq!(corrupt[0].expected, Digest::of(b"lighttpd deb"));
        assert!(!ws.dir().join(&good).exists());
        assert!(ws.dir().join(&epoch).exists());
        assert!(archives.verify().unwrap().is_empty());

        // Damage that keeps the old mtime is skipped by the cheap pass, found by the full one.
        let blob = ws_path_of(&archives, &epoch);
        let mtime = fs::metadata(&blob).unwrap().modified().unwrap();
        fs::write(&blob, b"libx deX").unwrap();
        File::options().write(true).open(&blob).unwrap().set_modified(mtime - Duration::from_secs(3600)).unwrap();
        assert!(archives.verify().unwrap().is_empty());
        assert_eq!(archives.verify_all().unwrap().iter().map(|c| c.name.clone()).collect::<Vec<_>>(), vec![epoch]);
    }

    #[test]
    fn inventory_shows_lists_and_archives_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(AptCache::existing(tmp.path().join("apt")).unwrap().is_none());
        assert!(!tmp.path().join("apt").exists(), "listing a cache that was never used makes nothing");
        let cache = AptCache::open(tmp.path().join("apt")).unwrap();
        drop(refresh(cache.lists(&image()).unwrap().prepare(IndexPolicy::Refresh).unwrap(), "0123456789"));
        cache.lists(&Digest::of(b"never refreshed")).unwrap();
        fs::create_dir(tmp.path().join("apt/lists/not-an-image")).unwrap();
        let archives = cache.archives(&ReleaseKey::new("debian-bookworm-amd64").unwrap()).unwrap();
        let (ws, _) = archives.checkout().unwrap();
        fs::write(ws.dir().join(archive_file_name("a", "1", "all")), b"aaaa").unwrap();
        fs::write(ws.dir().join(archive_file_name("b", "1", "all")), b"bbbbbb").unwrap();
        archives.publish(&ws, &HashMap::new()).unwrap();
        drop(ws);

        let lists = cache.image_lists().unwrap();
        // The list and the stamp.
        let stamp = fs::metadata(tmp.path().join("apt/lists").join(image().hex()).join("stamp")).unwrap().len();
        let mut expected = vec![(image(), true, 10 + stamp), (Digest::of(b"never refreshed"), false, 0)];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let found: Vec<_> = lists.iter().map(|l| (l.image.clone(), l.refreshed_at.is_some(), l.size)).collect();
        assert_eq!(found, expected);
        let releases = cache.releases().unwrap();
        assert_eq!(releases.len(), 1);
        assert_eq!(
            (releases[0].release.as_str(), releases[0].packages, releases[0].size),
            ("debian-bookworm-amd64", 2, 10)
        );
        assert!(releases[0].last_used.is_some_and(|t| t <= SystemTime::now()));
    }

    #[test]
    fn lists_are_removed_only_when_nobody_uses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let lists = cache.lists(&image()).unwrap();
        let reader = refresh(lists.prepare(IndexPolicy::Refresh).unwrap(), "v1");
        assert!(!cache.remove_lists(&image()).unwrap(), "a probe reads them");
        assert!(reader.dir().exists());
        drop(reader);
        let refreshing = lists.prepare(IndexPolicy::Refresh).unwrap();
        assert!(!cache.remove_lists(&image()).unwrap(), "a probe refreshes them");
        drop(refreshing);
        assert!(cache.remove_lists(&image()).unwrap());
        assert!(cache.image_lists().unwrap().is_empty());
        assert!(cache.remove_lists(&image()).unwrap(), "absent lists are removed already");
    }

    #[test]
    fn prune_removes_pool_files_unused_since_the_cutoff_and_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = AptCache::open(tmp.path()).unwrap();
        let archives = cache.archives(&ReleaseKey::new("r").unwrap()).unwrap();
        let (ws, _) = archives.checkout().unwrap();
        fs::write(ws.dir().join("old_1_all.deb"), b"old").unwrap();
        fs::write(ws.dir().join("new_1_all.deb"), b"new!").unwrap();
        archives.publish(&ws, &HashMap::new()).unwrap();
        drop(ws);
        // The file clock is coarse (a few ms): events well apart.
        let pause = || std::thread::sleep(Duration::from_millis(50));
        pause();
        let cutoff = SystemTime::now();
        pause();
        // A use of "new" alone, as a checkout's link and its removal are.
        let link = tmp.path().join("elsewhere");
        fs::hard_link(ws_path_of(&archives, "new_1_all.deb"), &link).unwrap();
        fs::remove_file(&link).unwrap();
        let report = archives.prune(ArchivePrune::UnusedSince(cutoff)).unwrap();
        assert_eq!(report, PruneReport { files: 1, bytes: 3 });
        assert!(archives.recorded("old_1_all.deb").is_none(), "the name goes with its file");
        assert!(ws_path_of(&archives, "new_1_all.deb").exists());

        // A checkout uses every file.
        pause();
        let cutoff = SystemTime::now();
        pause();
        let (ws, _) = archives.checkout().unwrap();
        assert_eq!(archives.prune(ArchivePrune::UnusedSince(cutoff)).unwrap(), PruneReport::default());

        // All goes; a probe holding a file keeps its link and publishes it again.
        assert_eq!(archives.prune(ArchivePrune::All).unwrap(), PruneReport { files: 1, bytes: 4 });
        assert_eq!(cache.releases().unwrap()[0].packages, 0);
        assert_eq!(fs::read(ws.dir().join("new_1_all.deb")).unwrap(), b"new!");
        assert_eq!(archives.publish(&ws, &HashMap::new()).unwrap().added, ["new_1_all.deb"]);
        assert_eq!(
            cache.prune_archives(ArchivePrune::All).unwrap(),
            [("r".to_owned(), PruneReport { files: 1, bytes: 4 })]
        );
    }

    fn ws_path_of(archives: &Archives, name: &str) -> PathBuf {
        archives.dir().join("pool").join(archives.recorded(name).unwrap().hex())
    }
}
