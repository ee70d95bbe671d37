//! The effect report: what installing a package did to the system, read for free from
//! the container's overlay upper directory, which holds exactly what the container wrote.
//!
//! ```text
//! State::take (upper listing + users) ─ install ─ State::take ──compare(+ image layers)──> Effects
//! ```
//!
//! Both states are taken in the running container, so the writes of its boot (journal,
//! machine id, …) are in both and cancel out; only the step between them remains. A path
//! new in the upper directory is *added* unless the image has it (then the step copied it
//! up and *changed* it); a whiteout is a *removal*. The package manager's bookkeeping
//! (its database, caches, logs) and the system's (user database backups, the linker
//! cache) are [`IGNORED`]: they change with every install and say nothing about the
//! package. The purge check of [`lifecycle`](crate::lifecycle) is built on the same diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use racker::runtime::{rootfs, Booted, RuntimeError};
use racker::snapshot::{Driver, SnapshotError};
use serde::{Deserialize, Serialize};

use crate::catalog::PackageManager;

/// Paths (and everything below them) whose changes are bookkeeping, not the package's
/// effect, as piuparts ignores them: package databases, caches, logs and the journal,
/// volatile directories, systemd's and D-Bus's own state (the machine id), the user
/// database (users and groups are reported as such) with its backups and lock, and the
/// linker cache.
pub const IGNORED: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/rpm",
    "/var/lib/dnf",
    "/var/lib/yum",
    "/var/lib/pacman",
    "/var/lib/ucf",
    "/var/lib/systemd",
    "/var/cache",
    "/var/log",
    "/var/tmp",
    "/tmp",
    "/run",
    "/var/run",
    "/etc/ld.so.cache",
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/.pwd.lock",
    "/etc/passwd",
    "/etc/passwd-",
    "/etc/group",
    "/etc/group-",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/subuid",
    "/etc/subuid-",
    "/etc/subgid",
    "/etc/subgid-",
    // The probe's own: a minimal boot masks these generators, the install unmasks them.
    "/etc/systemd/system-generators/systemd-sysv-generator",
    "/etc/systemd/system-generators/systemd-rc-local-generator",
];

/// Whether `path` (absolute, as in the container) is or lies below an [`IGNORED`] path.
pub fn is_ignored(path: &str) -> bool {
    IGNORED.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Why the effects could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EffectsError {
    #[error(
        "the store is on {driver}, whose snapshots keep no record of a container's writes apart from its \
         image: the effect report and the purge check need the overlay storage driver (a store on another \
         file system)"
    )]
    NoUpper { driver: Driver },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Runtime(RuntimeError),
}

impl From<RuntimeError> for EffectsError {
    fn from(e: RuntimeError) -> EffectsError {
        match e {
            RuntimeError::Snapshot(SnapshotError::NoUpper { driver, .. }) => EffectsError::NoUpper { driver },
            e => EffectsError::Runtime(e),
        }
    }
}

/// What kind of file a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// overlayfs's mark of a deletion: a character device 0/0.
    Whiteout,
    Other,
}

/// One path's metadata, as far as a diff compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    /// When the inode last changed (written, replaced, chmod): a file that a step
    /// rewrote keeps its size and, from a package, its mtime.
    ctime: (i64, i64),
    target: Option<PathBuf>,
    /// A directory that hides what the layers below it have there.
    opaque: bool,
}

impl Entry {
    /// `path`'s own entry (a link is not followed); None if it is gone.
    fn of(path: &Path) -> io::Result<Option<Entry>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() && meta.rdev() == 0 {
            Kind::Whiteout
        } else {
            Kind::Other
        };
        let target = if kind == Kind::Symlink { std::fs::read_link(path).ok() } else { None };
        let opaque = kind == Kind::Dir && is_opaque(path);
        Ok(Some(Entry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == Kind::File { meta.size() } else { 0 },
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            target,
            opaque,
        }))
    }

    /// Whether the step changed this path from `was` to `self`. A directory changes with
    /// every entry written into it (its times and size): only its mode, owner and
    /// opacity count. The change time counts where both are the upper directory's
    /// (`same_inode_space`); a copy up from the image always has a new one.
    fn differs_from(&self, was: &Entry, same_inode_space: bool) -> bool {
        if self.kind == Kind::Dir && was.kind == Kind::Dir {
            return (self.mode, self.uid, self.gid) != (was.mode, was.uid, was.gid) || (self.opaque && !was.opaque);
        }
        let plain =
            |e: &Entry| Entry { opaque: false, ctime: if same_inode_space { e.ctime } else { (0, 0) }, ..e.clone() };
        plain(self) != plain(was)
    }
}

/// overlayfs's opaque mark (`trusted.overlay.opaque=y`) on a directory.
fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value[..]), Ok(1) if value[0] == b'y')
}

/// What a container had written at one moment: the listing of its upper directory, and
/// its user database.
#[derive(Clone, Debug, Default)]
pub struct State {
    files: BTreeMap<String, Entry>,
    passwd: String,
    group: String,
}

impl State {
    /// Takes the container's state now.
    pub fn take(container: &Booted) -> Result<State, EffectsError> {
        let upper = container.upper_dir()?;
        let mut files = BTreeMap::new();
        list(&upper, "", &mut files).map_err(|source| EffectsError::Io { path: upper.clone(), source })?;
        let read = |path| rootfs::read_file(container.rootfs(), path).unwrap_or_default();
        Ok(State { files, passwd: read("/etc/passwd"), group: read("/etc/group") })
    }
}

/// Lists `dir` (the upper directory at `prefix`) into `files`, depth first, without
/// descending into ignored paths. The container keeps running meanwhile: what vanishes
/// during the walk is simply not listed.
fn list(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Entry>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let path = format!("{prefix}/{}", name.to_string_lossy());
        if is_ignored(&path) {
            continue;
        }
        let Some(found) = Entry::of(&entry.path())? else { continue };
        let is_dir = found.kind == Kind::Dir;
        files.insert(path.clone(), found);
        if is_dir {
            list(&entry.path(), &path, files)?;
        }
    }
    Ok(())
}

/// The container's image as overlayfs stacks it: what tells a path the step changed
/// (the image has it) from one it added.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// Unpacked layers, top first.
    layers: Vec<PathBuf>,
}

impl Image {
    pub fn of(container: &Booted) -> Result<Image, EffectsError> {
        let mut layers = container.image_layer_dirs()?;
        layers.reverse();
        Ok(Image { layers })
    }

    /// `path`'s entry in the image, layer over layer as overlayfs shows it: the top
    /// layer that has it (or a whiteout for it, or an opaque directory or a non-directory
    /// above it) decides.
    fn lookup(&self, path: &str) -> Option<Entry> {
        let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
        'layers: for layer in &self.layers {
            let mut dir = layer.clone();
            for (i, name) in names.iter().enumerate() {
                let here = dir.join(name);
                match Entry::of(&here).ok().flatten() {
                    None if i > 0 && is_opaque(&dir) => return None,
                    None => continue 'layers,
                    Some(e) if e.kind == Kind::Whiteout => return None,
                    Some(e) if i + 1 == names.len() => return Some(e),
                    Some(e) if e.kind != Kind::Dir => return None,
                    Some(_) => dir = here,
                }
            }
        }
        None
    }
}

/// A file the step added or changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEffect {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Permission bits in octal (`0644`).
    pub mode: String,
    pub size: u64,
    /// A symbolic link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FileEffect {
    fn new(path: &str, entry: &Entry) -> FileEffect {
        FileEffect {
            path: path.to_owned(),
            kind: entry.kind,
            mode: format!("{:04o}", entry.mode),
            size: entry.size,
            target: entry.target.as_ref().map(|t| t.display().to_string()),
        }
    }
}

/// A user or group the step created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    /// The uid or gid.
    pub id: u32,
}

/// What one step did to the system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Which step: `install foo_1.0_all.deb`, `upgrade to foo_2.0_all.deb`.
    pub step: String,
    pub added: Vec<FileEffect>,
    pub changed: Vec<FileEffect>,
    pub removed: Vec<String>,
    /// New symbolic links in a `.wants`/`.requires` directory: `foo.service
    /// (multi-user.target.wants)`.
    pub units_enabled: Vec<String>,
    pub users_created: Vec<Account>,
    pub groups_created: Vec<Account>,
    /// The package's configuration files, as its package manager lists them.
    pub conffiles: Vec<String>,
}

/// The effects of what happened between `before` and `after`, both taken from one
/// container of `image` (conffiles are the caller's to add).
pub fn compare(step: &str, before: &State, after: &State, image: &Image) -> Effects {
    let mut fx = Effects { step: step.to_owned(), ..Effects::default() };
    for (path, now) in &after.files {
        let was = before.files.get(path);
        match was {
            Some(was) if was == now => {}
            _ if now.kind == Kind::Whiteout => {
                if was.is_none_or(|w| w.kind != Kind::Whiteout) {
                    fx.removed.push(path.clone());
                }
            }
            Some(was) if was.kind == Kind::Whiteout => fx.added.push(FileEffect::new(path, now)),
            Some(was) => {
                if now.differs_from(was, true) {
                    fx.changed.push(FileEffect::new(path, now));
                }
            }
            None => match image.lookup(path) {
                Some(old) if now.differs_from(&old, false) => fx.changed.push(FileEffect::new(path, now)),
                Some(_) => {}
                None => fx.added.push(FileEffect::new(path, now)),
            },
        }
    }
    // Written before the step (not in the image, or its deletion would be a whiteout).
    for (path, was) in &before.files {
        if was.kind != Kind::Whiteout && !after.files.contains_key(path) {
            fx.removed.push(path.clone());
        }
    }
    fx.removed.sort();
    fx.units_enabled = fx.added.iter().filter_map(enabled_unit).collect();
    fx.users_created = created(&before.passwd, &after.passwd, 2);
    fx.groups_created = created(&before.group, &after.group, 2);
    fx
}

/// `foo.service (multi-user.target.wants)` for a new link that enables a unit.
fn enabled_unit(file: &FileEffect) -> Option<String> {
    if file.kind != Kind::Symlink {
        return None;
    }
    let rest = ["/etc/systemd/system/", "/etc/systemd/user/"].iter().find_map(|d| file.path.strip_prefix(d))?;
    let (dir, unit) = rest.rsplit_once('/')?;
    let dir = dir.rsplit('/').next().unwrap_or(dir);
    [".wants", ".requires", ".upholds"].iter().any(|s| dir.ends_with(s)).then(|| format!("{unit} ({dir})"))
}

/// Entries of a passwd or group file (`name:x:ID:…`, the id in field `id_field`) in
/// `after` whose name `before` lacks.
fn created(before: &str, after: &str, id_field: usize) -> Vec<Account> {
    let names = |text: &str| -> BTreeSet<String> {
        text.lines().filter_map(|l| l.split(':').next()).filter(|n| !n.is_empty()).map(str::to_owned).collect()
    };
    let old = names(before);
    after
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let name = *fields.first()?;
            let id = fields.get(id_field)?.parse().ok()?;
            (!name.is_empty() && !old.contains(name)).then(|| Account { name: name.to_owned(), id })
        })
        .collect()
}

/// A shell script that prints the configuration files of the installed package `$1`,
/// one a line; None where the package manager does not tell (pacman).
pub fn conffiles_script(manager: PackageManager) -> Option<&'static str> {
    match manager {
        PackageManager::Apt => Some("dpkg-query -W -f='${Conffiles}\\n' \"$1\""),
        PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper => Some("rpm -qc \"$1\""),
        PackageManager::Pacman => None,
    }
}

/// The paths in the output of [`conffiles_script`] (dpkg adds each file's hash, and
/// `obsolete` to those the package no longer has; rpm says `(contains no files)`).
pub fn parse_conffiles(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

impl Effects {
    /// One line: `3 files added, 1 changed, 0 removed; 1 unit enabled; 1 user created, 1 group created; 1 conffile`.
    pub fn summary(&self) -> String {
        format!(
            "{} added, {} changed, {} removed; {} enabled; {} created, {} created; {}",
            plural(self.added.len(), "file"),
            self.changed.len(),
            self.removed.len(),
            plural(self.units_enabled.len(), "unit"),
            plural(self.users_created.len(), "user"),
            plural(self.groups_created.len(), "group"),
            plural(self.conffiles.len(), "conffile"),
        )
    }

    /// Every effect, one a line under its heading, for people (the table's effects part,
    /// JUnit's `system-out`).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let file_line = |f: &FileEffect| match &f.target {
            Some(target) => format!("{} -> {target}", f.path),
            None if f.kind == Kind::File => format!("{} ({} bytes, {})", f.path, f.size, f.mode),
            None => format!("{} ({}, {})", f.path, kind_word(f.kind), f.mode),
        };
        let mut section = |heading: &str, lines: Vec<String>| {
            let _ = writeln!(out, "{heading} ({}):", lines.len());
            for line in lines {
                let _ = writeln!(out, "    {line}");
            }
        };
        section("files added", self.added.iter().map(file_line).collect());
        section("files changed", self.changed.iter().map(file_line).collect());
        section("files removed", self.removed.clone());
        section("units enabled", self.units_enabled.clone());
        let account = |a: &Account| format!("{} ({})", a.name, a.id);
        section("users created", self.users_created.iter().map(account).collect());
        section("groups created", self.groups_created.iter().map(account).collect());
        section("conffiles", self.conffiles.clone());
        out
    }
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symbolic link",
        Kind::Whiteout => "deleted",
        Kind::Other => "special file",
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, rel: &str, contents: &str) {
        let path = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    fn whiteout(root: &Path, rel: &str) {
        let path = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .expect("mknod (root)");
    }

    fn state(upper: &Path, passwd: &str, group: &str) -> State {
        let mut files = BTreeMap::new();
        list(upper, "", &mut files).expect("listing");
        State { files, passwd: passwd.into(), group: group.into() }
    }

    #[test]
    fn ignored_paths_cover_what_lies_below_them_only() {
        assert!(is_ignored("/var/lib/dpkg") && is_ignored("/var/lib/dpkg/info/foo.list"));
        assert!(is_ignored("/etc/passwd-") && is_ignored("/etc/ld.so.cache"));
        assert!(!is_ignored("/var/lib/dpkgx") && !is_ignored("/etc/passwdx") && !is_ignored("/etc/foo.conf"));
    }

    #[test]
    fn a_diff_tells_added_changed_and_removed_and_ignores_bookkeeping_and_boot_writes() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root for whiteouts");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        write(&lower, "/etc/shells", "/bin/sh\n");
        write(&lower, "/etc/old.conf", "old\n");
        write(&lower, "/usr/share/doc/base/README", "base\n");
        std::fs::create_dir_all(upper.join("etc")).expect("mkdir");
        write(&upper, "/etc/hostname", "boot\n"); // the boot's: in both states
        write(&upper, "/usr/share/fx/version", "1.0\n"); // an older version's
        let version_time = std::fs::metadata(upper.join("usr/share/fx/version")).and_then(|m| m.modified());
        write(&upper, "/var/lib/made-at-boot", "x\n"); // the boot's, gone by the install
        let before = state(&upper, "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");

        // Replaced by a file of the same size and time, as an upgrade does: the inode changed.
        std::thread::sleep(std::time::Duration::from_millis(50));
        write(&upper, "/usr/share/fx/version.new", "2.0\n");
        let times = std::fs::FileTimes::new().set_modified(version_time.expect("mtime"));
        std::fs::File::options()
            .write(true)
            .open(upper.join("usr/share/fx/version.new"))
            .and_then(|f| f.set_times(times))
            .expect("utime");
        std::fs::rename(upper.join("usr/share/fx/version.new"), upper.join("usr/share/fx/version")).expect("rename");
        write(&upper, "/etc/shells", "/bin/sh\n/bin/fx\n"); // copied up and changed
        write(&upper, "/usr/share/doc/base/README", "base\n"); // rewritten, same size...
        let readme = upper.join("usr/share/doc/base/README");
        let lower_meta = std::fs::metadata(lower.join("usr/share/doc/base/README")).expect("stat");
        // ...and its image's time: a copy-up without a change.
        let times = std::fs::FileTimes::new().set_modified(lower_meta.modified().expect("mtime"));
        std::fs::File::options().write(true).open(&readme).expect("open").set_times(times).expect("utime");
        write(&upper, "/etc/fx.conf", "fx\n");
        write(&upper, "/usr/lib/fx/fx", "binary");
        symlink("/usr/lib/systemd/system/fx.service", dir.path().join("link")).expect("symlink");
        std::fs::create_dir_all(upper.join("etc/systemd/system/multi-user.target.wants")).expect("mkdir");
        std::fs::rename(dir.path().join("link"), upper.join("etc/systemd/system/multi-user.target.wants/fx.service"))
            .expect("rename");
        whiteout(&upper, "/etc/old.conf");
        std::fs::remove_file(upper.join("var/lib/made-at-boot")).expect("rm");
        write(&upper, "/var/lib/dpkg/info/fx.list", "bookkeeping\n");
        let after = state(
            &upper,
            "root:x:0:0::/root:/bin/sh\nfx:x:999:998::/var/lib/fx:/usr/sbin/nologin\n",
            "root:x:0:\nfx:x:998:\n",
        );
        let image = Image { layers: vec![lower.clone()] };
        let fx = compare("install fx_1.0_all.deb", &before, &after, &image);
        let paths = |files: &[FileEffect]| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(&fx.added),
            [
                "/etc/fx.conf",
                "/etc/systemd",
                "/etc/systemd/system",
                "/etc/systemd/system/multi-user.target.wants",
                "/etc/systemd/system/multi-user.target.wants/fx.service",
                "/usr/lib",
                "/usr/lib/fx",
                "/usr/lib/fx/fx",
            ]
        );
        assert_eq!(paths(&fx.changed), ["/etc/shells", "/usr/share/fx/version"]);
        assert_eq!(fx.removed, ["/etc/old.conf", "/var/lib/made-at-boot"]);
        assert_eq!(fx.units_enabled, ["fx.service (multi-user.target.wants)"]);
        assert_eq!(fx.users_created, [Account { name: "fx".into(), id: 999 }]);
        assert_eq!(fx.groups_created, [Account { name: "fx".into(), id: 998 }]);
        let text = fx.render_text();
        assert!(text.contains("files added (8):\n    /etc/fx.conf (3 bytes, 0644)"), "{text}");
        assert!(text.contains("-> /usr/lib/systemd/system/fx.service"), "{text}");
        assert!(
            fx.summary().starts_with("8 files added, 2 changed, 2 removed; 1 unit enabled; 1 user"),
            "{}",
            fx.summary()
        );
    }

    #[test]
    fn the_image_is_looked_up_layer_over_layer() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root for whiteouts");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, top) = (dir.path().join("base"), dir.path().join("top"));
        write(&base, "/a/kept", "1");
        write(&base, "/a/deleted", "1");
        write(&base, "/b/hidden", "1");
        write(&base, "/c/under-a-file", "1");
        whiteout(&top, "/a/deleted");
        std::fs::create_dir_all(top.join("b")).expect("mkdir");
        rustix::fs::lsetxattr(top.join("b"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .expect("opaque (root)");
        write(&top, "/c", "now a file");
        let image = Image { layers: vec![top, base] };
        assert!(image.lookup("/a/kept").is_some());
        assert!(image.lookup("/a/deleted").is_none());
        assert!(image.lookup("/b/hidden").is_none());
        assert!(image.lookup("/c/under-a-file").is_none());
        assert_eq!(image.lookup("/c").map(|e| e.kind), Some(Kind::File));
        assert!(image.lookup("/nothing").is_none());
    }

    #[test]
    fn a_store_on_btrfs_says_that_effects_need_overlay() {
        let e = EffectsError::from(RuntimeError::Snapshot(SnapshotError::NoUpper {
            key: "0123".into(),
            driver: Driver::Btrfs,
        }));
        let text = e.to_string();
        assert!(text.contains("btrfs") && text.contains("need the overlay storage driver"), "{text}");
        assert!(!text.contains("commit"), "not the commit command's words: {text}");
    }

    #[test]
    fn conffiles_are_the_paths_of_dpkg_and_rpm_output() {
        let dpkg = " /etc/fx.conf 5d41402abc4b2a76b9719d911017c592\n /etc/old.conf 0123 obsolete\n\n";
        assert_eq!(parse_conffiles(dpkg), ["/etc/fx.conf", "/etc/old.conf"]);
        assert!(parse_conffiles("(contains no files)\n").is_empty());
        assert_eq!(parse_conffiles("/etc/fx.conf\n"), ["/etc/fx.conf"]);
    }
}
