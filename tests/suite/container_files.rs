//! Files in and out of containers, on real systemd-nspawn containers: `racker cp` both
//! ways (running and stopped containers, owners, modes, symlinks, `/.`, tar streams, a
//! symlink in the container that points at `/` and must not lead to the host), named
//! volumes and `--mount`. Every test ends with the store's leak check.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use crate::common::{busybox_store, err, TempStore};

/// A host tree: `tree/a.txt`, `tree/sub/b.txt`, `tree/link -> a.txt`, `tree/owned`
/// (1234:5678, 0640).
fn host_tree(parent: &Path) -> std::path::PathBuf {
    let tree = parent.join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    std::fs::write(tree.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(tree.join("sub/b.txt"), "beta\n").expect("write");
    std::os::unix::fs::symlink("a.txt", tree.join("link")).expect("symlink");
    std::fs::write(tree.join("owned"), "mine\n").expect("write");
    std::os::unix::fs::chown(tree.join("owned"), Some(1234), Some(5678)).expect("chown");
    std::fs::set_permissions(tree.join("owned"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    tree
}

/// Nothing of the store is mounted (a stopped container holds no mount).
fn assert_no_mounts(store: &TempStore) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = store.root().display().to_string();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
}

fn exec(store: &TempStore, container: &str, script: &str) -> String {
    store.ok(&["exec", container, "sh", "-c", script])
}

#[test]
fn cp_round_trip_keeps_symlinks_and_with_a_owners_and_modes() {
    let (store, _dir) = busybox_store();
    let host = tempfile::tempdir().expect("tempdir");
    let tree = host_tree(host.path());
    store.ok(&["run", "-d", "--name", "box", "bb", "sleep", "600"]);

    // -a: owners kept; the existing /srv gets the tree under its own name.
    store.ok(&["cp", "-a", tree.to_str().expect("utf-8"), "box:/srv"]);
    let seen = exec(
        &store,
        "box",
        "cat /srv/tree/a.txt /srv/tree/sub/b.txt; readlink /srv/tree/link; stat -c '%u:%g %a' /srv/tree/owned",
    );
    assert_eq!(seen, "alpha\nbeta\na.txt\n1234:5678 640\n");
    // Without -a the container's root owns the copy (docker's rule).
    // (Not /tmp: systemd-nspawn mounts a tmpfs there, which cp does not see, as docker's.)
    store.ok(&["cp", tree.to_str().expect("utf-8"), "box:/root/plain"]);
    assert_eq!(exec(&store, "box", "stat -c '%u:%g %a' /root/plain/owned /root/plain"), "0:0 640\n0:0 755\n");

    // Back to the host, -a keeping owners; the symlink stays a symlink.
    let back = host.path().join("back");
    store.ok(&["cp", "-a", "box:/srv/tree", back.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(back.join("sub/b.txt")).expect("read"), "beta\n");
    assert_eq!(std::fs::read_link(back.join("link")).expect("a symlink"), Path::new("a.txt"));
    let meta = std::fs::metadata(back.join("owned")).expect("stat");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1234, 5678, 0o640));
    // -L copies what a symlink names.
    let followed = host.path().join("followed");
    store.ok(&["cp", "-L", "box:/srv/tree/link", followed.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(&followed).expect("a file"), "alpha\n");
    assert!(!std::fs::symlink_metadata(&followed).expect("stat").file_type().is_symlink());

    // `/.`: the directory's contents into an existing directory.
    let contents = host.path().join("contents");
    std::fs::create_dir(&contents).expect("mkdir");
    store.ok(&["cp", "box:/srv/tree/sub/.", contents.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(contents.join("b.txt")).expect("read"), "beta\n");
    assert!(!contents.join("sub").exists());

    // docker's errors: a missing parent, a missing source, a directory onto a file.
    let e = store.fails(&["cp", tree.to_str().expect("utf-8"), "box:/no/such/dir"]);
    assert!(e.contains("parent directory does not exist"), "{e}");
    let o = store.run(&["cp", "box:/nothing", host.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("no such file or directory"), "{}", err(&o));
    let e = store.fails(&["cp", tree.to_str().expect("utf-8"), "box:/srv/data.txt"]);
    assert!(e.contains("cannot copy a directory to a file"), "{e}");

    store.ok(&["rm", "-f", "box"]);
    store.assert_clean();
}

#[test]
fn cp_works_on_stopped_containers_and_tar_streams() {
    let (store, _dir) = busybox_store();
    let host = tempfile::tempdir().expect("tempdir");
    let tree = host_tree(host.path());
    store.ok(&["create", "--name", "later", "bb", "cat", "/srv/tree/a.txt", "/srv/note"]);
    store.ok(&["cp", tree.to_str().expect("utf-8"), "later:/srv/"]);
    let note = host.path().join("note");
    std::fs::write(&note, "noted\n").expect("write");
    store.ok(&["cp", note.to_str().expect("utf-8"), "later:/srv/note"]);
    assert_no_mounts(&store); // the stopped container's root was unmounted after each copy
    assert_eq!(store.ok(&["start", "-a", "later"]), "alpha\nnoted\n");

    // A tar stream out of the stopped container, and one into it.
    let tar = store.cmd().args(["cp", "later:/srv/tree", "-"]).output().expect("cp");
    assert!(tar.status.success(), "{}", err(&tar));
    let mut names: Vec<String> = tar::Archive::new(&tar.stdout[..])
        .entries()
        .expect("a tar")
        .map(|e| e.expect("entry").path().expect("path").display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["tree/", "tree/a.txt", "tree/link", "tree/owned", "tree/sub/", "tree/sub/b.txt"]);
    let mut child = store.cmd().args(["cp", "-", "later:/tmp"]).stdin(Stdio::piped()).spawn().expect("cp -");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &tar.stdout).expect("write");
    assert!(child.wait().expect("wait").success());
    let back = host.path().join("back");
    store.ok(&["cp", "later:/tmp/tree/sub/b.txt", back.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(&back).expect("read"), "beta\n");
    store.ok(&["rm", "later"]);
    store.assert_clean();
}

#[test]
fn cp_resolves_a_containers_symlinks_inside_its_root() {
    let (store, _dir) = busybox_store();
    let host = tempfile::tempdir().expect("tempdir");
    let file = host.path().join("x");
    std::fs::write(&file, "stays inside\n").expect("write");
    // A unique name, so that a file on the host's /tmp would be this test's.
    let name = format!("racker-escape-{}", std::process::id());
    let host_tmp = Path::new("/tmp").join(&name);
    let _ = std::fs::remove_file(&host_tmp);

    store.ok(&["run", "-d", "--name", "esc", "bb", "sh", "-c", "ln -s / /escape && exec sleep 600"]);
    crate::common::wait_until(30, "the symlink", || {
        store.run(&["exec", "esc", "test", "-L", "/escape"]).status.success()
    });
    // cp sees a running container's files as its processes do: its /tmp is nspawn's tmpfs.
    store.ok(&["cp", file.to_str().expect("utf-8"), &format!("esc:/escape/tmp/{name}")]);
    assert!(!host_tmp.exists(), "the copy reached the host's /tmp");
    assert_eq!(exec(&store, "esc", &format!("cat /tmp/{name}")), "stays inside\n");
    // Reading through it stays inside too: the container's /etc/os-release, not the host's.
    let out = host.path().join("os-release");
    store.ok(&["cp", "esc:/escape/etc/os-release", out.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "ID=busybox\nNAME=busybox\n");
    store.ok(&["rm", "-f", "esc"]);

    // Stopped, the same, into its /tmp; read back from the container.
    store.ok(&["run", "--name", "esc2", "bb", "ln", "-s", "/", "/escape"]);
    store.ok(&["cp", file.to_str().expect("utf-8"), &format!("esc2:/escape/tmp/{name}")]);
    assert!(!host_tmp.exists(), "the copy reached the host's /tmp");
    let back = host.path().join("back");
    store.ok(&["cp", &format!("esc2:/tmp/{name}"), back.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(&back).expect("read"), "stays inside\n");
    store.ok(&["rm", "esc2"]);
    store.assert_clean();
}

#[test]
fn a_named_volume_outlives_its_containers_and_goes_only_when_unused() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "--rm", "-v", "data:/data", "bb", "sh", "-c", "echo kept > /data/f"]);
    assert_eq!(store.ok(&["run", "--rm", "-v", "data:/data:ro", "bb", "cat", "/data/f"]), "kept\n");
    // A read-only root gets the mount point made first.
    assert_eq!(
        store.ok(&["run", "--rm", "--read-only", "-v", "data:/new/mount", "bb", "cat", "/new/mount/f"]),
        "kept\n"
    );
    // A new volume mounted where the image has files starts with them, owners and modes kept.
    let seeded = store.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=srv,target=/srv",
        "bb",
        "sh",
        "-c",
        "cat /srv/data.txt; stat -c '%a' /srv/not-executable",
    ]);
    assert_eq!(seeded, "from the image\n644\n");
    assert_eq!(store.ok(&["volume", "ls", "-q"]), "data\nsrv\n");
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["volume", "inspect", "data"])).expect("json");
    assert_eq!(inspect[0]["Name"], "data");
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!(inspect[0]["Scope"], "local");
    let mountpoint = inspect[0]["Mountpoint"].as_str().expect("Mountpoint");
    assert_eq!(std::fs::read_to_string(Path::new(mountpoint).join("f")).expect("read"), "kept\n");
    let mode = std::fs::metadata(Path::new(mountpoint).parent().expect("parent")).expect("stat").mode();
    assert_eq!(mode & 0o777, 0o700, "the volume's own directory is root's alone");
    // cp into a running container's volume writes into the volume, as in docker.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("g"), "copied\n").expect("write");
    store.ok(&["run", "-d", "--name", "vol-user", "-v", "data:/data", "bb", "sleep", "600"]);
    store.ok(&["cp", host.path().join("g").to_str().expect("utf-8"), "vol-user:/data/g"]);
    assert_eq!(std::fs::read_to_string(Path::new(mountpoint).join("g")).expect("read"), "copied\n");
    store.ok(&["rm", "-f", "vol-user"]);

    // In use by a stopped container: refused, with exit 1 and who uses it.
    store.ok(&["create", "--name", "user", "-v", "data:/data", "bb", "true"]);
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "user"])).expect("json");
    let mounts = &inspect[0]["HostConfig"]["Mounts"];
    assert_eq!(mounts[0]["Name"], "data", "{inspect}");
    assert_eq!(mounts[0]["Destination"], "/data", "{inspect}");
    assert_eq!(mounts.as_array().map(Vec::len), Some(1), "the volume's bind is not listed twice: {inspect}");
    let o = store.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("in use by container user"), "{}", err(&o));
    let o = store.run(&["volume", "rm", "-f", "data"]);
    assert_eq!(o.status.code(), Some(1), "-f does not remove a volume in use: {}", err(&o));
    let df = store.ok(&["system", "df", "-v"]);
    assert!(df.contains("Local Volumes"), "{df}");

    // prune removes what no container uses; the used one stays until its container goes.
    store.ok(&["volume", "create", "--label", "k=v", "spare"]);
    let pruned = store.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n"), "{pruned}");
    assert!(pruned.contains("spare\n") && pruned.contains("srv\n") && !pruned.contains("data\n"), "{pruned}");
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    store.ok(&["rm", "user"]);
    assert_eq!(store.ok(&["volume", "rm", "data"]), "data\n");
    assert_eq!(store.ok(&["volume", "ls", "-q"]), "");

    // Names are docker's; a random one without a name.
    let o = store.run(&["volume", "create", "../x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("invalid volume name"), "{}", err(&o));
    let o = store.run(&["run", "--rm", "-v", "a b:/x", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    let name = store.ok(&["volume", "create"]);
    assert_eq!(name.trim().len(), 64, "{name}");
    store.ok(&["volume", "rm", name.trim()]);
    store.assert_clean();
}

#[test]
fn mount_gives_a_tmpfs_and_a_read_only_bind() {
    let (store, _dir) = busybox_store();
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("f"), "from the host\n").expect("write");
    let bind = format!("type=bind,source={},target=/host,readonly", host.path().display());
    let script = "cat /host/f; touch /host/new 2>/dev/null && echo wrote || echo refused; \
                  grep ' /scratch ' /proc/mounts | cut -d' ' -f3; stat -c '%a' /scratch";
    let seen = store.ok(&[
        "run",
        "--rm",
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=700",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(seen, "from the host\nrefused\ntmpfs\n700\n");
    assert!(!host.path().join("new").exists());
    let o = store.run(&["run", "--rm", "--mount", "type=bind,target=/x", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("--mount"), "{}", err(&o));
    store.assert_clean();
}
