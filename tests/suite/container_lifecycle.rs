//! The container lifecycle as docker users know it, on real systemd-nspawn containers:
//! docker's exit codes (flag errors, racker's and nspawn's failures, signals), `-u
//! user:group`, `--hostname` in boot mode, `create`, `start`, `restart`, `wait`,
//! `rename`, and stopped containers that hold no mount. Every test ends with the
//! store's leak check (no process, mount, cgroup or snapshot left).

use std::process::Stdio;

use crate::common::{self, busybox_store, TempStore};
use crate::common::{debian_store, err, out};

/// No cgroup of any container is left beside the tests' own.
fn assert_no_container_cgroups(ids: &[&str]) {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let path = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup2 line");
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let parent = dir.parent().expect("parent cgroup");
    for id in ids {
        let cgroup = parent.join(format!("racker-{}", &id[..32]));
        assert!(!cgroup.exists(), "cgroup left behind: {}", cgroup.display());
    }
}

#[test]
fn flag_errors_and_racker_failures_exit_125_help_exits_0() {
    let (store, _dir) = busybox_store();
    for args in [&["run", "--bogus", "bb", "true"][..], &["ps", "--bogus"], &["no-such-verb"], &["run"]] {
        let o = store.run(args);
        assert_eq!(o.status.code(), Some(125), "racker {args:?}: {}", err(&o));
    }
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let o = store.run(args);
        assert_eq!(o.status.code(), Some(0), "racker {args:?}: {}", err(&o));
        assert!(!out(&o).is_empty(), "racker {args:?} prints nothing");
    }
    let missing = store.run(&["run", "--rm", "localhost:1/nothing-here", "true"]);
    assert_eq!(missing.status.code(), Some(125), "{}", err(&missing));
    store.assert_clean();
}

#[test]
fn an_nspawn_start_failure_is_rackers_125_not_the_commands_status() {
    let (store, _dir) = busybox_store();
    // A host file bound over a directory: nspawn refuses to start the container. (A
    // missing bind source is refused before nspawn: see conventions.rs.)
    let o = store.run(&["run", "--rm", "-v", "/etc/hostname:/bin", "bb", "sh", "-c", "exit 1"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("before the container started"), "{}", err(&o));
    // The command's own 1 stays 1.
    assert_eq!(store.run(&["run", "--rm", "bb", "sh", "-c", "exit 1"]).status.code(), Some(1));
    store.assert_clean();
}

#[test]
fn a_killed_container_exits_137_in_run_ps_and_wait() {
    let (store, _dir) = busybox_store();
    let id = store.ok(&["run", "-d", "--name", "victim", "bb", "sleep", "1000"]);
    store.ok(&["kill", "victim"]);
    assert_eq!(store.ok(&["wait", "victim"]), "137\n");
    let ps = store.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    store.ok(&["rm", "victim"]);

    // A foreground run killed from elsewhere.
    let mut child = store
        .cmd()
        .args(["run", "--name", "fg", "bb", "sh", "-c", "echo up; exec sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
        .expect("read");
    assert_eq!(line, "up\n");
    store.ok(&["kill", "fg"]);
    assert_eq!(child.wait().expect("wait").code(), Some(137));
    assert_eq!(store.ok(&["wait", "fg"]), "137\n");
    store.ok(&["rm", "fg"]);
    store.assert_clean();
    assert_no_container_cgroups(&[id.trim()]);
}

#[test]
fn user_and_group_resolve_as_in_docker() {
    let (store, _dir) = busybox_store();
    let id = |user: &str| store.ok(&["run", "--rm", "-u", user, "bb", "sh", "-c", "id -u; id -g"]);
    assert_eq!(id("1000:1000"), "1000\n1000\n");
    assert_eq!(id("app:nogroup"), "1000\n65534\n");
    assert_eq!(id("0:65534"), "0\n65534\n");
    assert_eq!(id("4242:4343"), "4242\n4343\n", "numeric ids need no entry");
    assert_eq!(id("nobody"), "65534\n65534\n");
    let bad = store.run(&["run", "--rm", "-u", "app:ghosts", "bb", "true"]);
    assert_eq!(bad.status.code(), Some(125), "{}", err(&bad));
    assert!(err(&bad).contains("ghosts"), "{}", err(&bad));
    // Nothing of the user's lookup is left in a kept container's writes.
    store.ok(&["run", "--name", "kept", "-u", "1000:1000", "bb", "true"]);
    let upper = store.root().join("snapshots").join(store.ok(&["ps", "-aq", "--no-trunc"]).trim()).join("upper");
    assert!(
        !upper.join("usr/bin/getent").exists()
            || std::fs::metadata(upper.join("usr/bin/getent")).expect("stub").len() == 0
    );
    store.ok(&["rm", "kept"]);
    store.assert_clean();
}

/// create, start -a, start + wait, restart, rename, on one snapshot: the writes of every
/// start survive into the next, and a stopped container holds no mount.
fn lifecycle_keeps_writes_and_holds_no_mount_when_stopped(store: &TempStore) {
    let script = "echo run >> /srv/count; wc -l < /srv/count; exit 3";
    let id = store.ok(&["create", "--name", "c1", "bb", "sh", "-c", script]);
    assert_eq!(id.trim().len(), 64, "create prints the id: {id}");
    assert!(store.ok(&["ps", "-a"]).contains("Created"), "{}", store.ok(&["ps", "-a"]));
    assert_eq!(store.mounts(), Vec::<String>::new(), "a created container holds a mount");
    let o = store.run(&["start", "-a", "c1"]);
    assert_eq!((o.status.code(), out(&o).trim()), (Some(3), "1"), "{}", err(&o));
    assert_eq!(store.mounts(), Vec::<String>::new(), "an exited container holds a mount");
    assert_eq!(store.ok(&["start", "c1"]), "c1\n");
    assert_eq!(store.ok(&["wait", "c1"]), "3\n");
    assert_eq!(store.mounts(), Vec::<String>::new());
    store.ok(&["rename", "c1", "c2"]);
    assert!(store.run(&["start", "c1"]).status.code() == Some(1), "the old name is gone");
    assert_eq!(store.ok(&["restart", "c2"]), "c2\n");
    assert_eq!(store.ok(&["wait", "c2"]), "3\n");
    assert_eq!(store.ok(&["logs", "c2"]), "2\n3\n", "the writes of each start survive into the next");
    let ps = store.ok(&["ps", "-a"]);
    // Names are the last column (an id's hex may contain "c1" too).
    let names: Vec<&str> = ps.lines().skip(1).filter_map(|l| l.split_whitespace().last()).collect();
    assert!(names == ["c2"] && ps.contains("Exited (3)"), "{ps}");
    let o = store.run(&["rename", "c2", "bad/name"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(store.mounts(), Vec::<String>::new());
    // A detached long runner, restarted while it runs, still keeps its writes.
    store.ok(&["run", "-d", "--name", "svc", "bb", "sh", "-c", "echo x >> /srv/n; exec sleep 1000"]);
    store.ok(&["restart", "-t", "1", "svc"]);
    // `restart` returns once the command runs, maybe before its first write: wait (bounded).
    let count =
        "i=0; while [ $(wc -l < /srv/n) -lt 2 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; wc -l < /srv/n";
    assert_eq!(store.ok(&["exec", "svc", "sh", "-c", count]).trim(), "2");
    store.ok(&["kill", "svc"]);
    assert_eq!(store.ok(&["wait", "svc"]), "137\n");
    assert_eq!(store.mounts(), Vec::<String>::new());
    store.ok(&["rm", "c2", "svc"]);
}

#[test]
fn create_start_wait_restart_rename_on_overlay() {
    let (store, _dir) = busybox_store();
    lifecycle_keeps_writes_and_holds_no_mount_when_stopped(&store);
    store.assert_clean();
}

#[test]
fn create_start_wait_restart_rename_on_btrfs() {
    common::btrfs::with_busybox_store(lifecycle_keeps_writes_and_holds_no_mount_when_stopped);
}

#[test]
fn wait_prints_each_exit_code() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-d", "--name", "zero", "bb", "true"]);
    store.ok(&["run", "-d", "--name", "three", "bb", "sh", "-c", "exit 3"]);
    assert_eq!(store.ok(&["wait", "zero", "three"]), "0\n3\n");
    let o = store.run(&["wait", "nothing-here"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    store.ok(&["rm", "zero", "three"]);
    store.assert_clean();
}

#[test]
fn hostname_takes_effect_in_boot_mode() {
    let store = debian_store();
    let o = store.run(&[
        "run",
        "--rm",
        "--boot-target",
        "minimal",
        "--hostname",
        "booted-1",
        "debian:bookworm-systemd",
        "hostname",
    ]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "booted-1\n"), "{}", err(&o));
    store.assert_clean();
}

/// `create` mounts nothing: it reads from the image's layers whether the image boots, and
/// leaves what only the root can tell to the first start, as docker does: a user the
/// image lacks fails `start` (125), not `create`, and the container stays to be removed.
#[test]
fn create_reads_the_layers_and_the_first_start_prepares_the_root() {
    let store = debian_store();
    let image = "debian:bookworm-systemd";
    store.ok(&["create", "--name", "booted", "--boot-target", "minimal", image, "cat", "/proc/1/comm"]);
    assert_eq!(store.mounts(), Vec::<String>::new(), "a created container holds a mount");
    let o = store.run(&["start", "-a", "booted"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "systemd\n"), "booted: {}", err(&o));
    store.ok(&["create", "--name", "nouser", "--boot=false", "-u", "nosuchuser", image, "true"]);
    let o = store.run(&["start", "-a", "nouser"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("--user nosuchuser"), "{}", err(&o));
    assert!(store.ok(&["ps", "-a"]).contains("Created"), "{}", store.ok(&["ps", "-a"]));
    assert_eq!(store.mounts(), Vec::<String>::new(), "a failed start leaves a mount");
    store.ok(&["rm", "booted", "nouser"]);
    store.assert_clean();
}

/// `pause` freezes the container's cgroup, `ps` says so, `unpause` thaws it; a paused
/// container stops and goes as any other.
#[test]
fn pause_freezes_the_container_and_unpause_thaws_it() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-d", "--name", "p", "bb", "sh", "-c", "while :; do echo t >> /srv/ticks; sleep 0.05; done"]);
    store.ok(&["pause", "p"]);
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    let json = store.ok(&["ps", "--format", "json"]);
    assert!(json.contains("\"State\":\"paused\""), "{json}");
    // The kernel's word that every process of the container is frozen (no timing).
    let spec: String =
        store.db().query_row("SELECT spec FROM containers WHERE name = 'p'", [], |r| r.get(0)).expect("a record");
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("json");
    let events = |frozen: &str| {
        spec["cgroup"].as_array().expect("cgroup dirs").iter().filter_map(|d| d.as_str()).any(|d| {
            std::fs::read_to_string(std::path::Path::new(d).join("cgroup.events"))
                .is_ok_and(|e| e.lines().any(|l| l == format!("frozen {frozen}")))
        })
    };
    assert!(events("1"), "the container's cgroup is not frozen");
    store.ok(&["unpause", "p"]);
    assert!(events("0"), "the container's cgroup is still frozen");
    assert!(!store.ok(&["ps"]).contains("(Paused)"));
    let again = store.run(&["unpause", "p"]);
    assert_eq!(again.status.code(), Some(1), "{}", err(&again));
    // A paused container stops (killed after the timeout) and is removed as any other.
    store.ok(&["pause", "p"]);
    store.ok(&["stop", "-t", "1", "p"]);
    assert!(store.ok(&["ps", "-a"]).contains("Exited (137)"));
    let o = store.run(&["pause", "p"]);
    assert_eq!(o.status.code(), Some(1), "pausing a stopped container: {}", err(&o));
    store.ok(&["rm", "p"]);
    store.assert_clean();
}

/// `generate systemd` writes a unit whose ExecStart runs the container attached (its
/// status is the service's) and whose ExecStop stops it.
#[test]
fn generate_systemd_writes_a_unit_that_starts_the_container() {
    let (store, _dir) = busybox_store();
    store.ok(&["create", "--name", "svc", "bb", "sh", "-c", "echo served; exit 4"]);
    let unit = store.ok(&["generate", "systemd", "svc"]);
    assert!(unit.contains("[Service]") && unit.contains("WantedBy=multi-user.target"), "{unit}");
    let exec = |key: &str| -> Vec<String> {
        let line = unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {unit}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    let start = exec("ExecStart=");
    assert!(start.ends_with(&["start".to_owned(), "-a".to_owned(), "svc".to_owned()]), "{start:?}");
    assert!(exec("ExecStop=").ends_with(&["svc".to_owned()]));
    // What systemd would run.
    let o = std::process::Command::new(&start[0]).args(&start[1..]).output().expect("ExecStart");
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(4), "served\n"), "{}", err(&o));
    let stop = exec("ExecStop=");
    let o = std::process::Command::new(&stop[0]).args(&stop[1..]).output().expect("ExecStop");
    assert!(o.status.success(), "{}", err(&o));
    let missing = store.run(&["generate", "systemd", "nothing-here"]);
    assert_eq!(missing.status.code(), Some(1), "{}", err(&missing));
    store.ok(&["rm", "svc"]);
    store.assert_clean();
}
