//! What systemd-nspawn needs from racker to give a container docker's identity: the
//! user of `-u USER[:GROUP]` in command mode, and the host name of `--hostname` in boot
//! mode. Both are files racker writes beside the container (in its runtime directory)
//! and binds read-only into it for one start, so the image and the container's writes
//! stay untouched.
//!
//! - nspawn resolves `--user` only by running the container's `/usr/bin/getent passwd
//!   USER` (and `initgroups`), which knows no `uid:gid` and no group override; racker
//!   resolves the user from the image's `/etc/passwd` and `/etc/group` as docker does
//!   and binds a getent that answers with exactly that.
//! - A booted systemd sets its host name from `/etc/hostname`, over nspawn's
//!   `--hostname`; racker binds a file with the asked-for name there.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::spec::{Bind, RunSpec};
use super::{rootfs, Result, RuntimeError};

/// The files of container `id` in the runtime directory `runtime` that racker binds in.
pub(super) fn files(runtime: &Path, id: &str) -> [PathBuf; 2] {
    [runtime.join(format!("{id}.getent")), runtime.join(format!("{id}.hostname"))]
}

/// Writes what `spec` needs bound into the container and returns the binds.
pub(super) fn binds(spec: &RunSpec, root: &Path, runtime: &Path, id: &str) -> Result<Vec<Bind>> {
    let [getent, hostname] = files(runtime, id);
    let mut binds = Vec::new();
    if let (Some(user), false) = (&spec.user, spec.boot) {
        // The shim is a shell script: an image without a shell keeps nspawn's own lookup.
        if rootfs::read_file(root, "/bin/sh").is_some() || root.join("bin/sh").symlink_metadata().is_ok() {
            let script = getent_script(root, user)
                .map_err(|reason| RuntimeError::Invalid { what: format!("--user {user}"), reason })?;
            write(&getent, script.as_bytes(), 0o755)?;
            binds.push(Bind { source: getent, target: "/usr/bin/getent".into(), read_only: true });
        }
    }
    if let (Some(name), true) = (&spec.hostname, spec.boot) {
        write(&hostname, format!("{name}\n").as_bytes(), 0o644)?;
        binds.push(Bind { source: hostname, target: "/etc/hostname".into(), read_only: true });
    }
    Ok(binds)
}

/// Removes what [`binds`] wrote (the container is gone, or stopped).
pub(super) fn remove(runtime: &Path, id: &str) {
    for file in files(runtime, id) {
        let _ = std::fs::remove_file(file);
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| RuntimeError::Io { path: path.to_owned(), source };
    let mut file = crate::private::create_file(path, true).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)
}

/// The user `spec` (`name|uid[:group|gid]`) as docker resolves it in the image: uid and
/// primary gid (the group given, else the passwd entry's, else 0), the supplementary
/// groups whose member list names the user, and the home directory (`/` without an
/// entry).
struct User {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: String,
}

fn resolve(root: &Path, spec: &str) -> std::result::Result<User, String> {
    let (uid, gid) = rootfs::resolve_user(root, spec)?;
    let user = spec.split_once(':').map_or(spec, |(u, _)| u);
    let passwd = rootfs::read_file(root, "/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid) && (f[0] == user || f[2] == user));
    let (name, home) = match &entry {
        Some(f) => (f[0].to_owned(), f[5].to_owned()),
        None => (uid.to_string(), "/".to_owned()),
    };
    let mut groups = vec![gid];
    if entry.is_some() {
        for line in rootfs::read_file(root, "/etc/group").unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(User { name, uid, gid, groups, home })
}

/// A getent for nspawn that answers `passwd` and `initgroups` with the resolved user,
/// whatever key it is asked for (nspawn asks with the `--user` string as given).
fn getent_script(root: &Path, spec: &str) -> std::result::Result<String, String> {
    let user = resolve(root, spec)?;
    let safe = |s: &str| !s.is_empty() && !s.contains(|c: char| c == '\'' || c == ':' || c.is_control());
    if !safe(&user.name) || !safe(&user.home) {
        return Err(format!("the image's passwd entry for {spec} has an unusable name or home directory"));
    }
    let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
    Ok(format!(
        "#!/bin/sh\n# written by racker for systemd-nspawn --user; bound in for one start, not part of the image\n\
         case \"$1\" in\n  passwd) echo '{name}:x:{uid}:{gid}::{home}:/bin/sh' ;;\n  initgroups) echo '{name} {groups}' ;;\n  *) exit 2 ;;\nesac\n",
        name = user.name,
        uid = user.uid,
        gid = user.gid,
        home = user.home,
        groups = groups.join(" "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("etc");
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(root.path().join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\n").expect("group");
        root
    }

    #[test]
    fn users_resolve_as_docker_resolves_them() {
        let root = image();
        let u = resolve(root.path(), "app").expect("app");
        assert_eq!((u.uid, u.gid, u.groups, u.home.as_str()), (1000, 1000, vec![1000, 50], "/home/app"));
        let u = resolve(root.path(), "1000:staff").expect("1000:staff");
        assert_eq!((u.name.as_str(), u.uid, u.gid), ("app", 1000, 50));
        let u = resolve(root.path(), "4242:4343").expect("numeric");
        assert_eq!((u.name.as_str(), u.uid, u.gid, u.groups, u.home.as_str()), ("4242", 4242, 4343, vec![4343], "/"));
        assert!(resolve(root.path(), "ghost").is_err());
        assert!(resolve(root.path(), "app:ghosts").is_err());
        let script = getent_script(root.path(), "0:0").expect("script");
        assert!(script.contains("echo 'root:x:0:0::/root:/bin/sh'"), "{script}");
    }
}
