//! Looking into a container's root filesystem from the host, resolving paths as the
//! container would (absolute symlinks stay inside the root): finding the command to
//! run (docker's 126 and 127) and the user to run it as.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::spec::MINIMAL_TARGET;

/// The outcome of looking a command up inside the container.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    NotExecutable(String),
    NotFound,
}

fn open_in_root(root: &OwnedFd, path: &str, flags: OFlags) -> Option<OwnedFd> {
    loop {
        match rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT) {
            Err(rustix::io::Errno::AGAIN) => continue,
            other => return other.ok(),
        }
    }
}

fn open_root(rootfs: &Path) -> Option<OwnedFd> {
    rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()
}

/// Opens the directory `path` as the container sees it (symlinks resolved inside
/// `rootfs`), for a process that enters the container to start in without a host path
/// that the container could point elsewhere.
pub(crate) fn open_dir(rootfs: &Path, path: &str) -> io::Result<OwnedFd> {
    let root = rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    loop {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::openat2(&root, path, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
            Err(rustix::io::Errno::AGAIN) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Looks `argv0` up as `execvp` would inside the container: as a path if it has a slash
/// (relative to `workdir`), else in each `PATH` entry.
pub fn find_executable(rootfs: &Path, argv0: &str, path_env: &str, workdir: &str) -> Lookup {
    let Some(root) = open_root(rootfs) else { return Lookup::NotFound };
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![if argv0.starts_with('/') {
            argv0.to_owned()
        } else {
            format!("{}/{argv0}", workdir.trim_end_matches('/'))
        }]
    } else {
        path_env.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{argv0}", d.trim_end_matches('/'))).collect()
    };
    let mut not_executable = None;
    for candidate in candidates {
        let Some(fd) = open_in_root(&root, &candidate, OFlags::PATH) else { continue };
        let Ok(stat) = rustix::fs::fstat(&fd) else { continue };
        let is_file = rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
        if is_file && stat.st_mode & 0o111 != 0 {
            return Lookup::Found(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    not_executable.map(Lookup::NotExecutable).unwrap_or(Lookup::NotFound)
}

/// Whether the image boots: it has systemd as its init.
pub fn has_systemd(rootfs: &Path) -> bool {
    let Some(root) = open_root(rootfs) else { return false };
    ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"].iter().any(|p| open_in_root(&root, p, OFlags::PATH).is_some())
}

/// Whether an image boots, read from its layers (top first) without composing them, for
/// `create`, which mounts nothing: the top-most layer that has one of systemd's paths
/// decides, and a whiteout there (a 0:0 character device) says no.
pub fn layers_have_systemd<'a>(layers_top_first: impl Iterator<Item = &'a Path> + Clone) -> bool {
    ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"].iter().any(|path| {
        layers_top_first
            .clone()
            .find_map(|layer| {
                let fd = open_in_root(&open_root(layer)?, path, OFlags::PATH)?;
                let stat = rustix::fs::fstat(&fd).ok()?;
                let whiteout = rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    == rustix::fs::FileType::CharacterDevice
                    && stat.st_rdev == 0;
                Some(!whiteout)
            })
            .unwrap_or(false)
    })
}

/// Reads a small file of the container's (`/etc/passwd`), if it exists.
pub fn read_file(rootfs: &Path, path: &str) -> Option<String> {
    let root = open_root(rootfs)?;
    let fd = open_in_root(&root, path, OFlags::RDONLY)?;
    let mut text = String::new();
    std::fs::File::from(fd).take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Resolves `user[:group]` (names or numbers) with the container's passwd and group
/// files, as docker does: a numeric uid needs no entry (its gid is then 0).
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_file(rootfs, "/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let (uid, mut gid) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => {
            (f[2].parse().map_err(|_| format!("bad uid in /etc/passwd for {user}"))?, f[3].parse().unwrap_or(0))
        }
        (None, Ok(uid)) => (uid, 0),
        (None, Err(_)) => {
            return Err(format!("unable to find user {user}: no matching entries in the container's /etc/passwd"))
        }
    };
    if let Some(group) = group {
        let groups = read_file(rootfs, "/etc/group").unwrap_or_default();
        gid = match groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == group || f[2] == group))
        {
            Some(f) => f[2].parse().map_err(|_| format!("bad gid in /etc/group for {group}"))?,
            None => group.parse().map_err(|_| {
                format!("unable to find group {group}: no matching entries in the container's /etc/group")
            })?,
        };
    }
    Ok((uid, gid))
}

/// The directory `path` of the container (made, 0755, where missing), opened with every
/// symlink resolved inside the root: an image's `etc -> /` cannot send a write to the host.
fn dir_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let mut made = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let parent = if made.is_empty() { "/".to_owned() } else { made.clone() };
        made = format!("{made}/{part}");
        if open_in_root(root, &made, OFlags::PATH | OFlags::DIRECTORY).is_none() {
            let dir = open_in_root(root, &parent, OFlags::PATH | OFlags::DIRECTORY).ok_or(io::ErrorKind::NotFound)?;
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    open_in_root(root, &made, OFlags::PATH | OFlags::DIRECTORY).ok_or_else(|| io::ErrorKind::NotADirectory.into())
}

/// Writes `contents` to the container's `dir/name` (never through a symlink).
pub fn write_file(rootfs: &Path, dir: &str, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    let root = open_root(rootfs).ok_or(io::ErrorKind::NotFound)?;
    let dir = dir_in_root(&root, dir)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(mode))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    std::fs::File::from(fd).write_all(contents)
}

/// systemd's generators that have no work in a container (disks, swap, consoles,
/// hibernation, offline updates, kernel command-line options racker never passes).
const IDLE_GENERATORS: &[&str] = &[
    "systemd-cryptsetup-generator",
    "systemd-debug-generator",
    "systemd-fstab-generator",
    "systemd-getty-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-run-generator",
    "systemd-system-update-generator",
    "systemd-veritysetup-generator",
];

/// The generators that make units of SysV init scripts and `/etc/rc.local`. A minimal
/// boot masks them too (nothing it starts needs them); whoever then installs a package
/// that may bring such scripts removes these masks and reloads systemd.
pub const LEGACY_GENERATOR_MASKS: &[&str] = &[
    "/etc/systemd/system-generators/systemd-sysv-generator",
    "/etc/systemd/system-generators/systemd-rc-local-generator",
];

/// Prepares a minimal boot in the container's own writable layer (never the image):
/// [`MINIMAL_TARGET`] starts the journal and nothing else, and systemd's generators are
/// masked (see [`LEGACY_GENERATOR_MASKS`]). Units started later (`systemctl start`) still
/// pull in what they depend on.
pub fn prepare_minimal_boot(rootfs: &Path) -> io::Result<()> {
    let target = "# written by racker for a minimal boot; not part of the image\n\
                  [Unit]\nDescription=racker minimal boot: the journal only\n\
                  Wants=systemd-journald.socket systemd-journald.service\nAllowIsolate=yes\n";
    write_file(rootfs, "/etc/systemd/system", MINIMAL_TARGET, target.as_bytes(), 0o644)?;
    let root = open_root(rootfs).ok_or(io::ErrorKind::NotFound)?;
    let generators = dir_in_root(&root, "/etc/systemd/system-generators")?;
    let legacy = LEGACY_GENERATOR_MASKS.iter().filter_map(|p| p.rsplit('/').next());
    for name in IDLE_GENERATORS.iter().copied().chain(legacy) {
        match rustix::fs::symlinkat("/dev/null", &generators, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Makes the directory `path` in the container's root (with its parents), resolved
/// inside the root: a mount point nspawn could not make in a read-only root.
pub(crate) fn make_dir(rootfs: &Path, path: &str) -> io::Result<()> {
    let root = open_root(rootfs).ok_or(io::ErrorKind::NotFound)?;
    dir_in_root(&root, path).map(drop)
}

/// Removes `dir/name` in the container's root if it is a symlink, so that a file racker
/// writes there replaces the link instead of failing on it (`/etc/resolv.conf` is often
/// a link to a resolver's file).
pub(crate) fn unlink_symlink(rootfs: &Path, dir: &str, name: &str) -> io::Result<()> {
    let root = open_root(rootfs).ok_or(io::ErrorKind::NotFound)?;
    let dir = dir_in_root(&root, dir)?;
    match rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink => {
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()).map_err(io::Error::from)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_resolve_inside_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).expect("mkdir");
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).expect("symlink");
        std::fs::write(r.join("usr/bin/tool"), "#!/bin/sh\n").expect("write");
        std::fs::write(r.join("usr/bin/data"), "").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // An absolute symlink resolves inside the root, as in the container.
        std::os::unix::fs::symlink("/usr/bin/tool", r.join("usr/bin/alias")).expect("symlink");
        assert_eq!(find_executable(r, "tool", "/bin", "/"), Lookup::Found("/bin/tool".into()));
        assert_eq!(find_executable(r, "alias", "/usr/bin", "/"), Lookup::Found("/usr/bin/alias".into()));
        assert_eq!(find_executable(r, "data", "/bin", "/"), Lookup::NotExecutable("/bin/data".into()));
        assert_eq!(find_executable(r, "nope", "/bin:/usr/bin", "/"), Lookup::NotFound);
        assert_eq!(find_executable(r, "./tool", "/", "/usr/bin"), Lookup::Found("/usr/bin/./tool".into()));

        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:100::/home/app:/bin/sh\n")
            .expect("write");
        std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("write");
        assert_eq!(resolve_user(r, "app"), Ok((1000, 100)));
        assert_eq!(resolve_user(r, "1000:staff"), Ok((1000, 50)));
        assert_eq!(resolve_user(r, "4242"), Ok((4242, 0)));
        assert!(resolve_user(r, "ghost").is_err());
    }

    #[test]
    fn a_minimal_boot_writes_inside_the_root_even_through_absolute_symlinks() {
        let outside = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        // An image whose /etc points at a host path: the write must stay in the root.
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).expect("symlink");
        assert!(prepare_minimal_boot(root.path()).is_err(), "dangling inside the root: an error, not a host write");
        assert_eq!(std::fs::read_dir(outside.path()).expect("read_dir").count(), 0, "nothing written outside");
        let mirrored = root.path().join(outside.path().strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&mirrored).expect("mkdir");
        prepare_minimal_boot(root.path()).expect("prepare");
        assert_eq!(std::fs::read_dir(outside.path()).expect("read_dir").count(), 0, "nothing written outside");
        let inside = mirrored.join("systemd");
        let target = std::fs::read_to_string(inside.join("system").join(MINIMAL_TARGET)).expect("target written");
        assert!(target.contains("Wants=systemd-journald.socket systemd-journald.service"), "{target}");
        for name in ["systemd-getty-generator", "systemd-sysv-generator"] {
            let masked = std::fs::read_link(inside.join("system-generators").join(name)).expect("masked");
            assert_eq!(masked, Path::new("/dev/null"));
        }
        prepare_minimal_boot(root.path()).expect("a second time is fine");
    }
}
