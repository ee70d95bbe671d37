//! `racker run` and the container lifecycle on real systemd-nspawn containers: command
//! mode on a busybox image, boot mode on a Debian bookworm image with systemd. Every
//! test checks that teardown leaves no mount, no process and no snapshot behind.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::images;
use crate::common::{self, require_root, TempStore};
use crate::common::{debian_store, err, out};

/// A store with the busybox image as `bb` (config: `config`) plus `layers` extra layers.
fn busybox_store(config: serde_json::Value, layers: usize) -> (TempStore, tempfile::TempDir) {
    require_root();
    busybox_image_in(TempStore::new(), config, layers)
}

fn busybox_image_in(store: TempStore, config: serde_json::Value, layers: usize) -> (TempStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = vec![images::busybox_layer()];
    all.extend((0..layers).map(images::numbered_layer));
    let location = images::write_layout(dir.path(), &images::image(&all, config));
    store.ok(&["pull", "-q", &location]);
    let name = store.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(name.lines().next().expect("an image")).expect("json");
    let full = format!("{}:{}", row["Repository"].as_str().expect("repo"), row["Tag"].as_str().expect("tag"));
    store.ok(&["tag", &full, "bb"]);
    (store, dir)
}

#[test]
fn exit_codes_follow_docker() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    assert_eq!(store.run(&["run", "--rm", "bb", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(store.run(&["run", "--rm", "bb", "true"]).status.code(), Some(0));
    let missing = store.run(&["run", "--rm", "bb", "no-such-command"]);
    assert_eq!(missing.status.code(), Some(127), "{}", err(&missing));
    assert!(err(&missing).contains("no-such-command: executable file not found"), "{}", err(&missing));
    let not_exec = store.run(&["run", "--rm", "bb", "/srv/not-executable"]);
    assert_eq!(not_exec.status.code(), Some(126), "{}", err(&not_exec));
    let no_image = store.run(&["run", "--rm", "localhost:1/nothing-here", "true"]);
    assert_eq!(no_image.status.code(), Some(125), "{}", err(&no_image));
    store.assert_clean();
}

#[test]
fn stdin_is_piped_only_with_i() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let mut child = store
        .cmd()
        .args(["run", "-i", "--rm", "bb", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"hi\n").expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "hi\n"));
    // Without -i the command reads an empty stdin, as in docker.
    let o = store.cmd().args(["run", "--rm", "bb", "cat"]).stdin(Stdio::piped()).output().expect("run");
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), ""));
    store.assert_clean();
}

#[test]
fn image_config_env_workdir_user_entrypoint_apply() {
    let config = json!({
        "Env": ["PATH=/bin", "GREETING=hello", "KEEP=1"],
        "Entrypoint": ["/bin/echo", "ep"],
        "Cmd": ["default"],
        "WorkingDir": "/srv",
        "User": "app",
    });
    let (store, _dir) = busybox_store(config, 0);
    assert_eq!(store.ok(&["run", "--rm", "bb"]), "ep default\n", "Entrypoint + Cmd");
    assert_eq!(store.ok(&["run", "--rm", "bb", "given"]), "ep given\n", "a command replaces Cmd");
    let env_file = tempfile::NamedTempFile::new().expect("env file");
    std::fs::write(env_file.path(), "# comment\nFROM_FILE=yes\nGREETING=from-file\n").expect("write");
    let o = store.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "--env-file",
        env_file.path().to_str().expect("utf-8"),
        "-e",
        "GREETING=override",
        "bb",
        "-c",
        "echo $GREETING $KEEP $FROM_FILE; pwd; id -un",
    ]);
    assert_eq!(o, "override 1 yes\n/srv\napp\n");
    let o = store.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "bb",
        "-c",
        "pwd; id -u; id -g",
    ]);
    assert_eq!(o, "/tmp\n65534\n65534\n");
    let o = store.ok(&["run", "--rm", "--entrypoint", "/bin/sh", "-u", "4242", "bb", "-c", "id -u"]);
    assert_eq!(o, "4242\n", "a numeric user needs no passwd entry");
    let bad = store.run(&["run", "--rm", "-u", "ghost", "bb"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(err(&bad).contains("ghost"), "{}", err(&bad));
    store.assert_clean();
}

#[test]
fn volumes_hostname_and_network_none() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let rw = tempfile::tempdir().expect("rw");
    let ro = tempfile::tempdir().expect("ro");
    std::fs::write(ro.path().join("in.txt"), "host data\n").expect("write");
    let vol = |d: &tempfile::TempDir, dst: &str, opt: &str| format!("{}:{dst}{opt}", d.path().display());
    let o = store.run(&[
        "run", "--rm", "-v", &vol(&rw, "/out", ""), "-v", &vol(&ro, "/in", ":ro"), "bb", "sh", "-c",
        "cat /in/in.txt; echo written > /out/new.txt; echo x > /in/denied 2>/dev/null && echo WROTE-RO || echo ro-refused",
    ]);
    assert_eq!(out(&o), "host data\nro-refused\n", "{}", err(&o));
    assert_eq!(std::fs::read_to_string(rw.path().join("new.txt")).expect("written through the volume"), "written\n");
    assert!(!ro.path().join("denied").exists());
    assert_eq!(store.ok(&["run", "--rm", "--hostname", "box-1", "bb", "hostname"]), "box-1\n");
    assert_eq!(store.ok(&["run", "--rm", "--network", "none", "bb", "ls", "/sys/class/net"]), "lo\n");
    // A name is a named volume (docker's rule); a relative path is neither.
    let bad = store.run(&["run", "--rm", "-v", "./relative:/x", "bb", "true"]);
    assert!(!bad.status.success() && err(&bad).contains("absolute"), "{}", err(&bad));
    store.assert_clean();
}

#[test]
fn security_options_choose_the_system_call_filter_and_privileges() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let status = |opts: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["bb", "grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"]);
        store.ok(&args).split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(status(&[]), "NoNewPrivs: 0 Seccomp: 2", "nspawn's filter by default");
    assert_eq!(status(&["--security-opt", "seccomp=unconfined"]), "NoNewPrivs: 0 Seccomp: 0");
    assert_eq!(status(&["--security-opt", "no-new-privileges"]), "NoNewPrivs: 1 Seccomp: 2");
    let bad = store.fails(&["run", "--rm", "--security-opt", "apparmor=x", "bb", "true"]);
    assert!(bad.contains("seccomp=unconfined"), "{bad}");
    store.assert_clean();
}

#[test]
fn writes_do_not_leak_into_the_image() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let scan = |p: &std::path::Path| format!("{:?}", common::tree::scan(p).entries);
    let layers_before = scan(&store.root().join("layers"));
    store.ok(&["run", "--rm", "bb", "sh", "-c", "echo changed > /srv/data.txt; rm /bin/cat; echo new > /new-file"]);
    assert_eq!(
        store.ok(&["run", "--rm", "bb", "sh", "-c", "cat /srv/data.txt; ls /new-file 2>&1 || true"]).lines().next(),
        Some("from the image")
    );
    assert!(store.ok(&["run", "--rm", "bb", "sh", "-c", "test -e /bin/cat && echo present"]).contains("present"));
    assert_eq!(scan(&store.root().join("layers")), layers_before, "a container wrote into the store's layers");
    store.assert_clean();
}

#[test]
fn an_image_of_120_layers_runs() {
    let (store, _dir) = busybox_store(images::busybox_config(), 120);
    let o = store.ok(&["run", "--rm", "bb", "sh", "-c", "ls /layers | wc -l; cat /layers/119"]);
    assert_eq!(o, "120\nlayers/119");
    store.assert_clean();
}

#[test]
fn ten_parallel_runs_of_one_image_all_succeed() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let children: Vec<_> = (0..10)
        .map(|i| {
            store
                .cmd()
                .args(["run", "--rm", "bb", "sh", "-c", &format!("echo run-{i}; exit {i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(i as i32), "run {i}: {}", err(&o));
        assert_eq!(out(&o), format!("run-{i}\n"));
    }
    assert_eq!(store.ok(&["ps", "-aq"]), "", "--rm containers are gone");
    store.assert_clean();
}

#[test]
fn names_are_unique_and_kept_containers_keep_their_writes_until_rm() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    store.ok(&["run", "--name", "keeper", "bb", "sh", "-c", "echo kept > /srv/mine"]);
    let clash = store.run(&["run", "--name", "keeper", "bb", "true"]);
    assert_eq!(clash.status.code(), Some(125));
    assert!(err(&clash).contains("already in use"), "{}", err(&clash));
    let ps = store.ok(&["ps", "-a"]);
    assert!(ps.contains("keeper") && ps.contains("Exited (0)"), "{ps}");
    let snapshots = store.files("snapshots");
    assert_eq!(snapshots.len(), 1, "the kept container's snapshot stays: {snapshots:?}");
    store.ok(&["rm", "keeper"]);
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn a_store_of_the_previous_schema_is_migrated_with_its_containers() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    store.ok(&["run", "--name", "kept", "bb", "sh", "-c", "echo kept > /srv/mine"]);
    // Back to schema version 3, as the racker before pid_start left stores.
    store
        .db()
        .execute_batch(
            "ALTER TABLE containers DROP COLUMN restart_count; ALTER TABLE containers DROP COLUMN pid_start;
             DROP TABLE volumes; PRAGMA user_version = 3;",
        )
        .expect("downgrade");
    let ps = store.ok(&["ps", "-a"]);
    assert!(ps.contains("kept") && ps.contains("Exited (0)"), "{ps}");
    let version: i64 = store.db().query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert_eq!(version, 6);
    store.ok(&["run", "-d", "--name", "new", "bb", "sleep", "1000"]);
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("new") && ps.contains("Up") && !ps.contains("kept"), "{ps}");
    store.ok(&["rm", "-f", "new"]);
    assert_eq!(store.files("snapshots").len(), 1, "the kept container's snapshot stays");
    store.ok(&["rm", "kept"]);
    store.assert_clean();
}

#[test]
fn detached_containers_exec_logs_stop_kill_rm() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let id = store.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "bb",
        "sh",
        "-c",
        "echo started; trap 'echo got-term; exit 3' TERM; while :; do sleep 0.1; done",
    ]);
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id}");
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("svc") && ps.contains("Up"), "{ps}");
    let o = store.run(&["exec", "-e", "X=1", "svc", "sh", "-c", "echo in-$X; exit 4"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(4), "in-1\n"));
    assert_eq!(store.run(&["exec", "svc", "no-such"]).status.code(), Some(127));
    store.ok(&["stop", "svc"]);
    let logs = store.ok(&["logs", "svc"]);
    assert!(logs.contains("started") && logs.contains("got-term"), "SIGTERM reached the command: {logs}");
    assert!(store.ok(&["ps", "-a"]).contains("Exited (3)"));
    assert!(!store.run(&["exec", "svc", "true"]).status.success(), "exec into a stopped container fails");

    store.ok(&["run", "-d", "--rm", "--name", "victim", "bb", "sleep", "1000"]);
    let busy = store.run(&["rm", "victim"]);
    assert!(!busy.status.success() && err(&busy).contains("is running"), "{}", err(&busy));
    store.ok(&["kill", "victim"]);
    store.ok(&["rm", "-f", "svc"]);
    // A leader is known by its pid and start time, not by what it keeps in its environment.
    store.ok(&["run", "-d", "--name", "bare", "bb", "env", "-i", "sleep", "1000"]);
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("bare") && ps.contains("Up"), "{ps}");
    store.ok(&["rm", "-f", "bare"]);
    // The --rm container removes itself once killed; wait for its monitor to finish.
    common::wait_until(20, "the killed --rm container was not removed", || store.ok(&["ps", "-aq"]).is_empty());
    store.assert_clean();
}

#[test]
fn signals_reach_a_foreground_command() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let mut child = store
        .cmd()
        .args([
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line, "ready\n");
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
        .expect("SIGTERM");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    assert_eq!(child.wait().expect("wait").code(), Some(5));
    assert_eq!(rest, "got-term\n");
    store.assert_clean();
}

#[test]
fn boot_mode_runs_commands_inside_a_booted_systemd() {
    let store = debian_store();
    // An image with systemd boots by default.
    let o = store.run(&["run", "--rm", "debian:bookworm-systemd", "systemctl", "is-active", "systemd-journald"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "active\n"), "{}", err(&o));
    let o = store.run(&[
        "run",
        "--rm",
        "-w",
        "/etc",
        "debian:bookworm-systemd",
        "sh",
        "-c",
        "pwd; cat /proc/1/comm; exit 6",
    ]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(6), "/etc\nsystemd\n"), "{}", err(&o));
    let mut child = store
        .cmd()
        .args(["run", "-i", "--rm", "-u", "nobody", "debian:bookworm-systemd", "sh", "-c", "id -un; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"through\n").expect("write");
    assert_eq!(out(&child.wait_with_output().expect("wait")), "nobody\nthrough\n");
    // --boot=false runs the command as PID 1 instead.
    assert_eq!(store.ok(&["run", "--rm", "--boot=false", "debian:bookworm-systemd", "cat", "/proc/1/comm"]), "cat\n");
    store.assert_clean();
}

#[test]
fn a_minimal_boot_starts_the_journal_and_what_is_asked_for() {
    let store = debian_store();
    let script = "systemctl is-active systemd-journald; systemctl is-active dbus.socket; \
                  systemctl start dbus.socket && systemctl is-active dbus.socket";
    let o = store.run(&["run", "--rm", "--boot-target", "minimal", "debian:bookworm-systemd", "sh", "-c", script]);
    assert_eq!(out(&o), "active\ninactive\nactive\n", "{}", err(&o));
    // The full boot starts the sockets a minimal one leaves out.
    let o = store.run(&["run", "--rm", "debian:bookworm-systemd", "systemctl", "is-active", "dbus.socket"]);
    assert_eq!(out(&o), "active\n", "{}", err(&o));
    // racker's target lives in the container's writes only, never in the image.
    let o = store.run(&["run", "--rm", "--boot=false", "debian:bookworm-systemd", "ls", "/etc/systemd/system"]);
    assert!(o.status.success() && !out(&o).contains("racker"), "{}", out(&o));
    let bad = store.fails(&["run", "--rm", "--boot-target", "a b", "debian:bookworm-systemd", "true"]);
    assert!(bad.contains("boot target") && bad.contains("minimal"), "{bad}");
    store.assert_clean();
}

#[test]
fn two_boots_of_one_image_at_once() {
    let store = debian_store();
    // Each boot leaves its machine id in a shared host directory, then holds until the
    // test lets it go: the test does so only once both markers are there and both
    // containers are up, so the two boots provably overlap.
    let shared = tempfile::tempdir().expect("a shared directory");
    let volume = format!("{}:/shared", shared.path().display());
    let script = "id=$(cat /etc/machine-id); echo \"$id\" > /shared/$1.tmp && mv /shared/$1.tmp /shared/$1; \
                  until [ -e /shared/go ]; do sleep 0.05; done; echo \"$id\"";
    let boot = |name: &str| {
        store
            .cmd()
            .args(["run", "--rm", "--name", name, "-v", &volume, "debian:bookworm-systemd", "sh", "-c", script, "sh"])
            .arg(name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn racker run")
    };
    let (mut a, mut b) = (boot("boot-a"), boot("boot-b"));
    let marker = |name: &str| std::fs::read_to_string(shared.path().join(name)).ok();
    common::wait_until(120, "the two boots were never up at the same time", || {
        for (name, child) in [("boot-a", &mut a), ("boot-b", &mut b)] {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr);
                panic!("{name} ended ({status}) before both boots were up: {stderr}");
            }
        }
        marker("boot-a").is_some() && marker("boot-b").is_some()
    });
    let ps = store.ok(&["ps", "--format", "json"]);
    let up: Vec<String> = ps
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|r| r["State"] == "running")
        .filter_map(|r| r["Names"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(up.len(), 2, "both containers are up while both wait: {ps}");
    std::fs::write(shared.path().join("go"), "").expect("letting the boots go");
    let (a, b) = (a.wait_with_output().expect("wait"), b.wait_with_output().expect("wait"));
    let (id_a, id_b) = (marker("boot-a").expect("marker"), marker("boot-b").expect("marker"));
    for (o, id) in [(&a, &id_a), (&b, &id_b)] {
        assert_eq!((o.status.code(), out(o).as_str()), (Some(0), id.as_str()), "{}", err(o));
        let hex = id.trim();
        assert!(hex.len() == 32 && hex.bytes().all(|c| c.is_ascii_hexdigit()), "a machine id: {id:?}");
    }
    assert_ne!(id_a, id_b, "each boot has its own machine id");
    store.assert_clean();
}

#[test]
fn a_detached_boot_is_a_machine_to_exec_into_and_stop() {
    let store = debian_store();
    store.ok(&["run", "-d", "--name", "vm1", "debian:bookworm-systemd"]);
    let o = store.run(&["exec", "vm1", "systemctl", "is-system-running", "--wait"]);
    assert!(matches!(out(&o).trim(), "running" | "degraded"), "{} {}", out(&o), err(&o));
    assert!(store.ok(&["logs", "vm1"]).contains("Startup finished"), "logs show the boot");
    store.ok(&["stop", "vm1"]);
    assert!(store.ok(&["ps", "-a"]).contains("Exited (0)"), "a clean poweroff");
    store.ok(&["rm", "vm1"]);
    store.assert_clean();
}

#[test]
fn each_booted_container_has_a_cgroup_of_its_own_that_goes_with_it() {
    let store = debian_store();
    // cgroup2 is mounted at /sys/fs/cgroup, or at /sys/fs/cgroup/unified on hybrid hosts.
    let cgroup2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|m| std::path::Path::new(m).join("cgroup.procs").exists())
        .expect("a cgroup2 mount");
    let mut dirs = Vec::new();
    for name in ["one", "two"] {
        store.ok(&["run", "-d", "--name", name, "--boot-target", "minimal", "debian:bookworm-systemd"]);
        let ps = store.ok(&["ps", "--no-trunc", "--format", "json"]);
        let row = ps
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .find(|r| r["Names"] == name)
            .expect("listed");
        let (id, pid) = (row["ID"].as_str().expect("id"), row["Pid"].as_i64().expect("pid"));
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the leader's cgroups");
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup2 line");
        let mine = format!("/racker-{}", &id[..32]);
        let at = path.find(&format!("{mine}/")).unwrap_or_else(|| panic!("{name}'s systemd runs in {path}"));
        dirs.push(std::path::PathBuf::from(format!("{cgroup2}{}", &path[..at + mine.len()])));
    }
    assert_ne!(dirs[0], dirs[1]);
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    assert_eq!(store.ok(&["exec", "two", "systemctl", "is-active", "systemd-journald"]), "active\n");
    store.ok(&["rm", "-f", "one", "two"]);
    assert!(dirs.iter().all(|d| !d.exists()), "the cgroups went with their containers: {dirs:?}");
    store.assert_clean();
}

#[test]
fn a_boot_that_never_becomes_ready_fails_with_the_console_tail() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    // busybox's init never reports READY=1 to nspawn.
    let o = store.run(&["run", "--rm", "--boot", "--boot-timeout", "2", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("did not boot within"), "{}", err(&o));
    store.assert_clean();
}

#[test]
fn runs_on_a_btrfs_store_with_subvolume_snapshots() {
    require_root();
    let fs = common::btrfs::BtrfsLoop::new();
    let _sweep = common::btrfs::MountSweep(vec![fs.path().to_owned()]);
    let (store, _dir) = busybox_image_in(TempStore::at(fs.path()), images::busybox_config(), 3);
    assert_eq!(store.run(&["run", "--rm", "bb", "sh", "-c", "ls /layers | wc -l; exit 3"]).status.code(), Some(3));
    store.ok(&["run", "--name", "kept", "bb", "sh", "-c", "echo mine > /srv/mine"]);
    let ps = store.ok(&["ps", "-a", "--format", "json"]);
    assert!(ps.contains("kept"), "{ps}");
    let driver: String =
        store.db().query_row("SELECT snapshotter FROM containers WHERE name = 'kept'", [], |r| r.get(0)).expect("row");
    assert_eq!(driver, "btrfs", "a store on btrfs uses subvolume snapshots");
    assert_eq!(store.files("btrfs/containers").len(), 1);
    let o = store.run(&["run", "--rm", "--storage-driver", "overlay", "bb", "true"]);
    assert!(o.status.success(), "overlay can still be chosen on btrfs: {}", err(&o));
    store.ok(&["rm", "kept"]);
    assert!(store.files("btrfs/containers").is_empty());
    // With no container left, gc drops the materialised image once the image is gone.
    let id = store.ok(&["images", "-q"]);
    store.ok(&["rmi", "-f", id.trim()]);
    store.ok(&["gc"]);
    assert!(store.files("btrfs/images").is_empty(), "{:?}", store.files("btrfs/images"));
    fs.assert_clean(&store);
}

#[test]
fn run_pulls_a_missing_image_as_docker_does() {
    require_root();
    let registry = common::registry::Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    images::write_layout(dir.path(), &images::image(&[images::busybox_layer()], images::busybox_config()));
    registry.skopeo_copy_oci(dir.path(), "latest", "bb:1");
    let store = TempStore::new();
    let name = registry.name("bb:1");
    let o = store.run(&["run", "--rm", &name, "echo", "pulled"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "pulled\n"), "{}", err(&o));
    assert!(err(&o).contains("Unable to find image"), "{}", err(&o));
    assert!(store.ok(&["images"]).contains("bb"), "the pulled image stays in the store");
    store.assert_clean();
}

#[test]
fn a_layer_from_before_an_unclean_reboot_is_rebuilt_from_its_blob() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let (layer_id, written): (i64, Option<String>) = store
        .db()
        .query_row("SELECT id, unsynced_boot FROM layers", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("one layer");
    assert_eq!(written.as_deref(), Some(boot.trim()), "a new layer is marked as written in this boot, not yet durable");
    // FAULT INJECTION (a power loss cannot be caused here): the row claims an earlier
    // boot, and the file data that never reached the disk is gone.
    store.db().execute("UPDATE layers SET unsynced_boot = 'an-earlier-boot'", []).expect("update");
    let busybox = store.root().join("layers").join(layer_id.to_string()).join("bin/busybox");
    std::fs::write(&busybox, b"").expect("truncate");
    assert_eq!(store.ok(&["run", "--rm", "bb", "echo", "rebuilt"]), "rebuilt\n");
    assert!(std::fs::metadata(&busybox).expect("busybox").len() > 100_000, "the layer was rebuilt from its blob");
    let settled: Option<String> =
        store.db().query_row("SELECT unsynced_boot FROM layers", [], |r| r.get(0)).expect("row");
    assert_eq!(settled, None, "a rebuilt layer is durable");
    assert!(store.files("ingest").is_empty(), "{:?}", store.files("ingest"));

    // gc settles what this boot wrote, so it never needs rebuilding.
    store.db().execute("UPDATE layers SET unsynced_boot = ?1", [boot.trim()]).expect("update");
    store.ok(&["gc"]);
    let settled: Option<String> =
        store.db().query_row("SELECT unsynced_boot FROM layers", [], |r| r.get(0)).expect("row");
    assert_eq!(settled, None);
    store.assert_clean();
}

#[test]
fn a_killed_foreground_run_leaves_only_what_gc_removes() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    // The command runs until the test lets it end: no race between its end and racker's.
    let control = tempfile::tempdir().expect("a control directory");
    let volume = format!("{}:/control", control.path().display());
    let script = "touch /control/started; until [ -e /control/end ]; do sleep 0.05; done";
    let mut child = store
        .cmd()
        .args(["run", "--rm", "--name", "orphan", "-v", &volume, "bb", "sh", "-c", script])
        .spawn()
        .expect("spawn");
    common::wait_until(20, "the container never showed as running", || {
        control.path().join("started").exists() && store.ok(&["ps"]).contains("orphan")
    });
    // racker dies without cleaning up; its container runs on and ends by itself.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(store.ok(&["ps"]).contains("orphan"), "the orphaned container runs on: {}", store.ok(&["ps", "-a"]));
    std::fs::write(control.path().join("end"), "").expect("letting the command end");
    common::wait_until(20, "the orphaned container never ended", || !store.ok(&["ps"]).contains("orphan"));
    assert!(store.ok(&["ps", "-a"]).contains("Exited (unknown)"), "ps -a shows the stale container");
    let gc = store.ok(&["gc"]);
    assert!(gc.contains("Deleted container orphan"), "{gc}");
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn t_gives_the_command_a_terminal() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let racker = format!(
        "{} --root {} run -it --rm bb sh -c 'test -t 0 && test -t 1 && echo on-a-tty; exit 4'",
        env!("CARGO_BIN_EXE_racker"),
        store.root().display()
    );
    // script(1) gives racker a real pseudo-terminal, as an interactive user has.
    let o = Command::new("script").args(["-qec", &racker, "/dev/null"]).stdin(Stdio::null()).output().expect("script");
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(out(&o).contains("on-a-tty"), "{}", out(&o));
    store.assert_clean();
}

/// An overlayfs to put a store on, as a container's or a live system's root is; unmounted
/// on drop (declare it before the store, which must go first).
struct OverlayRoot {
    dirs: tempfile::TempDir,
}

impl OverlayRoot {
    fn new() -> OverlayRoot {
        let dirs = tempfile::tempdir().expect("tempdir");
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(dirs.path().join(d)).expect("mkdir");
        }
        let p = |d: &str| dirs.path().join(d).display().to_string();
        let options = format!("lowerdir={},upperdir={},workdir={}", p("lower"), p("upper"), p("work"));
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options, &p("merged")])
            .status()
            .expect("mount");
        assert!(status.success(), "mounting an overlayfs for the store");
        OverlayRoot { dirs }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dirs.path().join("merged")
    }
}

impl Drop for OverlayRoot {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn a_store_on_overlayfs_refuses_kept_containers_with_the_fix_and_runs_rm_ones() {
    require_root();
    let overlay = OverlayRoot::new();
    let (store, _dir) = busybox_image_in(TempStore::at(&overlay.path()), images::busybox_config(), 0);
    let o = store.run(&["run", "--rm", "bb", "echo", "ephemeral"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "ephemeral\n"), "{}", err(&o));
    for args in [&["run", "--name", "kept", "bb", "true"][..], &["run", "-d", "bb", "sleep", "100"]] {
        let o = store.run(args);
        let e = err(&o);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(e.contains("is on overlayfs") && e.contains("--root") && e.contains("btrfs"), "{e}");
    }
    assert_eq!(store.ok(&["ps", "-aq"]), "", "a refused container leaves no record");
    store.assert_clean();
}

// What is left of a container whose systemd-nspawn, owner or racker was killed. These
// tests kill only processes of their own container, found by pid through the store and
// /proc: other tests run containers on this machine at the same time.

/// SIGKILLs one process.
fn sigkill(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");
}

/// The process is gone (reaped, or a zombie: it runs nothing and holds nothing).
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_or(true, |s| s.lines().any(|l| l.starts_with("State:") && l.contains("Z")))
}

/// A field of `/proc/PID/status`.
fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// The parent of a process, while it runs.
fn parent(pid: i32) -> Option<i32> {
    status_field(pid, "PPid:").and_then(|p| p.parse().ok())
}

/// Whether process `pid` is a systemd-nspawn of container `id` (by the `--uuid` racker
/// gives it; nspawn's forks carry the same command line).
fn is_nspawn_of(pid: i32, id: &str) -> bool {
    let uuid = format!("--uuid={}", &id[..32]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first().is_some_and(|a| a.ends_with(b"systemd-nspawn")) && args.contains(&uuid.as_bytes())
}

/// The systemd-nspawn of this store's container `id` (the one whose parent is racker,
/// not one of its own forks) and its child, the container's leader, once it has started.
fn nspawn_and_leader(id: &str) -> Option<(i32, i32)> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if !is_nspawn_of(pid, id) || is_nspawn_of(parent(pid)?, id) {
            return None;
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        let leader = children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .find(|c| status_field(*c, "NSpid:").is_some_and(|ns| ns.split_whitespace().last() == Some("1")))?;
        Some((pid, leader))
    })
}

/// Where a container this test starts gets its cgroup: `racker-<id>` beside this process's
/// own cgroup (racker runs in it too), in cgroup2 and in v1 `name=systemd` where mounted.
fn cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let path_of = |controllers: &str| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            (parts.next()? == controllers).then(|| parts.next()).flatten().map(|p| p.trim_end_matches('/'))
        })
    };
    let mounted = |m: &str| std::path::Path::new(m).join("cgroup.procs").exists();
    let mut dirs = Vec::new();
    if let (Some(path), Some(mount)) =
        (path_of(""), ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].into_iter().find(|m| mounted(m)))
    {
        dirs.push(format!("{mount}{path}"));
    }
    if let (Some(path), true) = (path_of("name=systemd"), mounted("/sys/fs/cgroup/systemd")) {
        dirs.push(format!("/sys/fs/cgroup/systemd{path}"));
    }
    dirs.into_iter().map(|d| std::path::PathBuf::from(format!("{d}/racker-{}", &id[..32]))).collect()
}

/// Nothing of container `id` is left: none of `pids` runs, and its cgroup is gone.
fn assert_ended(id: &str, pids: &[i32]) {
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(gone(*pid), "process {pid} of the container still runs: {}", String::from_utf8_lossy(&cmdline));
    }
    let left: Vec<_> = cgroup_dirs(id).into_iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// Starts detached container `name` and returns its id, nspawn, leader and monitor.
fn start_detached(store: &TempStore, args: &[&str]) -> (String, i32, i32, i32) {
    let id = store.ok(&[&["run", "-d"], args].concat()).trim().to_owned();
    let (nspawn, leader) = nspawn_and_leader(&id).expect("a running container");
    (id, nspawn, leader, parent(nspawn).expect("nspawn's parent"))
}

#[test]
fn a_detached_container_ends_with_its_killed_nspawn() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    for (name, remove) in [("kept", false), ("removed", true)] {
        let rm: &[&str] = if remove { &["--rm"] } else { &[] };
        let (id, nspawn, leader, monitor) =
            start_detached(&store, &[rm, &["--name", name, "bb", "sh", "-c", "sleep 1000 & exec sleep 1001"]].concat());
        sigkill(nspawn);
        common::wait_until(30, "the monitor never finished", || gone(monitor));
        assert!(gone(leader), "{name}: the command outlived its nspawn, and ps says {}", store.ok(&["ps", "-a"]));
        if remove {
            assert!(!store.ok(&["ps", "-a"]).contains(name), "the --rm container was removed");
        } else {
            assert!(store.ok(&["ps", "-a"]).contains("Exited (137)"), "{}", store.ok(&["ps", "-a"]));
            store.ok(&["rm", name]);
        }
        assert_ended(&id, &[nspawn, leader]);
    }
    store.assert_clean();
}

#[test]
fn an_orphaned_container_is_up_until_rm_f_ends_it() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let (id, nspawn, leader, monitor) =
        start_detached(&store, &["--rm", "--name", "orphan", "bb", "sh", "-c", "sleep 1000 & exec sleep 1001"]);
    // Its owner and nspawn die; the container's processes run on under the host's init.
    sigkill(monitor);
    sigkill(nspawn);
    common::wait_until(10, "nspawn did not die", || gone(nspawn) && gone(monitor));
    // Found by its cgroup, named by its id, as every container's.
    let cgroups = std::fs::read_to_string(format!("/proc/{leader}/cgroup")).expect("the leader's cgroups");
    assert!(cgroups.contains(&format!("/racker-{}/", &id[..32])), "the command runs in {cgroups}");
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("orphan") && ps.contains("Up"), "a container whose processes run is up: {ps}");
    let refused = store.run(&["rm", "orphan"]);
    assert_eq!(refused.status.code(), Some(1), "rm without -f removed a running container");
    assert_eq!(err(&refused), "Error: container orphan is running: stop it first or use -f\n", "one clear line");
    assert!(!gone(leader), "rm without -f ended the container");
    store.ok(&["rm", "-f", "orphan"]);
    assert_ended(&id, &[leader]);
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn gc_ends_a_boot_whose_racker_and_nspawn_were_killed_before_ready() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    // busybox's init never reports READY=1: racker waits until it is killed.
    let mut cli = store
        .cmd()
        .args(["run", "-d", "--rm", "--boot", "--boot-timeout", "600", "--name", "hang", "bb"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn racker");
    let mut started = None;
    common::wait_until(30, "the boot never started", || {
        if let Ok(Some(status)) = cli.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut cli.stderr.take().expect("stderr"), &mut stderr).expect("read");
            panic!("racker run -d ended ({status}) while the boot hangs: {stderr}");
        }
        let id: Option<String> =
            store.db().query_row("SELECT id FROM containers WHERE name = 'hang'", [], |r| r.get(0)).ok();
        started = id.and_then(|id| Some((nspawn_and_leader(&id)?, id)));
        started.is_some()
    });
    let ((nspawn, leader), id) = started.expect("started");
    let monitor = parent(nspawn).expect("nspawn's parent");
    sigkill(cli.id() as i32);
    cli.wait().expect("reap racker");
    sigkill(monitor);
    sigkill(nspawn);
    common::wait_until(10, "nspawn did not die", || gone(nspawn) && gone(monitor));
    assert!(!store.ok(&["ps", "-a"]).contains("Exited"), "its init runs: {}", store.ok(&["ps", "-a"]));
    let notify = std::path::Path::new("/run/racker").join(format!("{id}.notify"));
    assert!(notify.exists(), "the killed racker left its notify socket");
    let gc = store.run(&["gc"]);
    assert!(out(&gc).contains("Deleted container hang"), "{}{}", out(&gc), err(&gc));
    assert!(!notify.exists(), "gc left the dead racker's notify socket");
    assert_ended(&id, &[leader]);
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn gc_ends_a_container_whose_stop_monitor_and_nspawn_were_killed_in_teardown() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    let script = "trap 'echo stopping; sleep 1000' TERM; echo up; while :; do sleep 0.1; done";
    let (id, nspawn, leader, monitor) = start_detached(&store, &["--rm", "--name", "slow", "bb", "sh", "-c", script]);
    common::wait_until(10, "the command never started", || store.ok(&["logs", "slow"]).contains("up"));
    // `racker stop` waits for the trap, which takes its time; all three die meanwhile.
    let mut stop = store.cmd().args(["stop", "-t", "600", "slow"]).stdout(Stdio::null()).spawn().expect("spawn stop");
    common::wait_until(10, "the container never got SIGTERM", || store.ok(&["logs", "slow"]).contains("stopping"));
    sigkill(stop.id() as i32);
    stop.wait().expect("reap racker stop");
    sigkill(monitor);
    sigkill(nspawn);
    common::wait_until(10, "nspawn did not die", || gone(nspawn) && gone(monitor));
    let gc = store.ok(&["gc"]);
    assert!(gc.contains("slow"), "{gc}");
    assert_ended(&id, &[leader]);
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn rm_f_ends_a_detached_boot_whose_monitor_and_nspawn_were_killed() {
    let store = debian_store();
    let (id, nspawn, leader, monitor) =
        start_detached(&store, &["--name", "vm", "--boot-target", "minimal", "debian:bookworm-systemd"]);
    sigkill(monitor);
    sigkill(nspawn);
    common::wait_until(10, "nspawn did not die", || gone(nspawn) && gone(monitor));
    assert!(store.ok(&["ps"]).contains("Up"), "its systemd runs: {}", store.ok(&["ps", "-a"]));
    assert!(!store.run(&["rm", "vm"]).status.success(), "rm without -f removed a running container");
    store.ok(&["rm", "-f", "vm"]);
    assert_ended(&id, &[leader]);
    store.assert_clean();
}

/// A host process that is killed and reaped when dropped, also when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rm_names_what_it_could_not_remove_and_keeps_the_record() {
    let (store, _dir) = busybox_store(images::busybox_config(), 0);
    // A stopped container holds no mount: hold a running one's.
    store.ok(&["run", "-d", "--name", "kept", "bb", "sleep", "1000"]);
    let spec: String =
        store.db().query_row("SELECT spec FROM containers WHERE name = 'kept'", [], |r| r.get(0)).expect("a record");
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("json");
    let rootfs = spec["rootfs"].as_str().expect("a root file system");
    // A host process working in the container's root keeps its mount busy.
    let holder = KillOnDrop(Command::new("sleep").arg("1000").current_dir(rootfs).spawn().expect("spawn sleep"));
    let refused = store.run(&["rm", "-f", "kept"]);
    assert_eq!(refused.status.code(), Some(1), "rm succeeded with its snapshot still mounted");
    let e = err(&refused);
    assert!(e.lines().count() == 1 && e.contains("kept") && e.contains("snapshot") && e.contains("busy"), "{e}");
    assert!(store.ok(&["ps", "-a"]).contains("kept"), "the record stays while its snapshot does");
    drop(holder);
    store.ok(&["rm", "kept"]);
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

/// README: `racker logs vm` shows a booted container's console and journal. A line sent
/// to the journal inside (systemd-cat: never to the console) is in `racker logs`, and in
/// no console log of the store: it came from the journal.
#[test]
fn logs_of_a_booted_container_show_its_journal() {
    let store = debian_store();
    store.ok(&["run", "-d", "--name", "vm", "debian:bookworm-systemd"]);
    let mark = format!("racker-logs-test-{:016x}", rand::random::<u64>());
    let o = store.run(&["exec", "vm", "sh", "-c", &format!("echo {mark} | systemd-cat -t racker-test")]);
    assert!(o.status.success(), "{}", err(&o));
    // journald takes the line in when it gets to it: wait for it to be readable.
    common::wait_until(30, "the journal line never showed in racker logs", || {
        store.ok(&["logs", "vm"]).lines().any(|l| l.contains("racker-test") && l.contains(&mark))
    });
    let logs = store.ok(&["logs", "vm"]);
    assert!(logs.contains("Startup finished"), "the boot is shown too: {logs}");
    let consoles: Vec<String> = walkdir::WalkDir::new(store.root().join("containers"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).expect("reading a console log")).into_owned())
        .collect();
    assert!(!consoles.is_empty(), "a detached container's console is logged in the store");
    assert!(consoles.iter().all(|c| !c.contains(&mark)), "the line reached the console, not only the journal");
    store.ok(&["stop", "vm"]);
    store.ok(&["rm", "vm"]);
    store.assert_clean();
}
