//! docker's common `racker run` flags on real systemd-nspawn containers of the busybox
//! image: capabilities, devices, a read-only root with tmpfs, /etc/hosts and DNS, labels,
//! cgroup limits, an init, and how `stop` ends a container. Every container is run
//! under a name and removed with `racker rm`, after which none of its cgroups is left;
//! every test ends with the store clean (no process, mount or snapshot).

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{self, images, require_root, TempStore};
use crate::common::{err, out};

fn store() -> (TempStore, tempfile::TempDir) {
    require_root();
    let store = TempStore::new();
    let dir = images::add_busybox(&store);
    (store, dir)
}

/// The cgroup directories recorded with container `name`.
fn cgroups_of(store: &TempStore, name: &str) -> Vec<PathBuf> {
    let spec: String = store
        .db()
        .query_row("SELECT spec FROM containers WHERE name = ?1", [name], |r| r.get(0))
        .expect("the container's record");
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("spec JSON");
    spec["cgroup"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str()).map(PathBuf::from).collect())
        .unwrap_or_default()
}

/// Removes container `name` and checks that none of its cgroups (`dirs`) is left.
fn remove(store: &TempStore, name: &str, dirs: &[PathBuf]) {
    assert!(!dirs.is_empty(), "container {name} has no cgroup of its own");
    store.ok(&["rm", "-f", name]);
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// `racker run --name N FLAGS... bb ARGS...`, then `rm N` with the cgroup check.
fn run(store: &TempStore, flags: &[&str], argv: &[&str]) -> Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("flags-{}", N.fetch_add(1, Ordering::Relaxed));
    let mut args = vec!["run", "--name", &name];
    args.extend_from_slice(flags);
    args.push("bb");
    args.extend_from_slice(argv);
    let o = store.run(&args);
    let dirs = cgroups_of(store, &name);
    remove(store, &name, &dirs);
    o
}

/// `CapEff` of the container's command.
fn effective_caps(store: &TempStore, flags: &[&str]) -> u64 {
    let o = run(store, flags, &["grep", "CapEff", "/proc/self/status"]);
    assert!(o.status.success(), "{}", err(&o));
    let hex = out(&o).split_whitespace().nth(1).expect("CapEff value").to_owned();
    u64::from_str_radix(&hex, 16).expect("hex")
}

#[test]
fn capabilities_follow_cap_add_cap_drop_and_privileged() {
    let (store, _dir) = store();
    const NET_ADMIN: u64 = 1 << 12;
    const NET_RAW: u64 = 1 << 13;
    let default = effective_caps(&store, &[]);
    assert_ne!(default & NET_RAW, 0, "nspawn keeps CAP_NET_RAW by default: {default:x}");
    assert_eq!(default & NET_ADMIN, 0, "nspawn drops CAP_NET_ADMIN by default: {default:x}");
    assert_eq!(effective_caps(&store, &["--cap-drop", "NET_RAW"]), default & !NET_RAW);
    assert_eq!(
        effective_caps(&store, &["--cap-drop", "cap_net_raw", "--cap-add", "CAP_NET_ADMIN"]),
        (default & !NET_RAW) | NET_ADMIN
    );
    assert_eq!(
        effective_caps(&store, &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]),
        NET_ADMIN,
        "docker's order: drop ALL, then add"
    );
    // Every capability racker itself may hand on (this host's bounding set).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd");
    let all = u64::from_str_radix(bounding.trim(), 16).expect("hex");
    assert_eq!(effective_caps(&store, &["--privileged"]), all, "--privileged has every capability");
    assert_eq!(effective_caps(&store, &["--cap-add", "ALL"]), all);
    let o = run(&store, &["--privileged"], &["grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(out(&o).split_whitespace().collect::<Vec<_>>(), ["Seccomp:", "0"], "no system call filter");
    store.assert_clean();
}

#[test]
fn a_read_only_root_refuses_writes_and_tmpfs_mounts_are_writable() {
    let (store, _dir) = store();
    let o = run(
        &store,
        &["--read-only", "--tmpfs", "/scratch", "--tmpfs", "/sized:size=1m,mode=700"],
        &["sh", "-c", "{ echo x > /srv/new; } 2>&1; echo y > /scratch/f && cat /scratch/f; grep -E ' /(scratch|sized) ' /proc/mounts | cut -d' ' -f2,3"],
    );
    let text = out(&o);
    assert!(text.contains("Read-only file system"), "a write to the root must fail with EROFS: {text}{}", err(&o));
    assert!(text.contains("y\n/scratch tmpfs\n/sized tmpfs\n"), "{text}{}", err(&o));
    // Without --read-only the same write works.
    let o = run(&store, &[], &["sh", "-c", "echo x > /srv/new && cat /srv/new"]);
    assert_eq!(out(&o), "x\n", "{}", err(&o));
    store.assert_clean();
}

#[test]
fn a_device_node_appears_with_its_cgroup_permissions() {
    let (store, _dir) = store();
    let o = run(
        &store,
        &["--device", "/dev/zero:/dev/extra-zero"],
        &["sh", "-c", "test -c /dev/extra-zero && head -c 3 /dev/extra-zero | od -An -tx1"],
    );
    assert_eq!(out(&o).trim(), "00 00 00", "{}", err(&o));
    let o = run(
        &store,
        &["--device", "/dev/full:/dev/readonly-full:r"],
        &["sh", "-c", "head -c 2 /dev/readonly-full | od -An -tx1; echo x > /dev/readonly-full || echo refused"],
    );
    assert!(out(&o).starts_with(" 00 00\n") && out(&o).ends_with("refused\n"), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("Operation not permitted"), "the devices cgroup refuses writes: {}", err(&o));
    store.assert_clean();
}

#[test]
fn add_host_and_dns_reach_hosts_and_resolv_conf() {
    let (store, _dir) = store();
    let o = run(
        &store,
        &[
            "--add-host",
            "db.internal:10.1.2.3",
            "--add-host",
            "v6:fd00::1",
            "--dns",
            "192.0.2.53",
            "--dns",
            "2001:db8::53",
        ],
        &["sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf"],
    );
    let text = out(&o);
    let (hosts, resolv) = text.split_once("---\n").expect("both files");
    assert!(hosts.contains("10.1.2.3\tdb.internal\n") && hosts.contains("fd00::1\tv6\n"), "{hosts}");
    assert!(hosts.contains("localhost"), "racker's /etc/hosts keeps localhost: {hosts}");
    assert_eq!(resolv, "nameserver 192.0.2.53\nnameserver 2001:db8::53\n");
    store.assert_clean();
}

#[test]
fn labels_and_stop_settings_show_in_inspect() {
    let (store, _dir) = store();
    store.ok(&[
        "run",
        "--name",
        "labelled",
        "--label",
        "app=web",
        "-l",
        "tier",
        "--stop-signal",
        "SIGUSR1",
        "--stop-timeout",
        "3",
        "bb",
        "true",
    ]);
    let dirs = cgroups_of(&store, "labelled");
    let json: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "labelled"])).expect("inspect JSON");
    let c = &json[0];
    assert_eq!(c["Name"], "/labelled");
    assert_eq!(c["Config"]["Labels"], serde_json::json!({"app": "web", "tier": ""}));
    assert_eq!((c["Config"]["StopSignal"].as_i64(), c["Config"]["StopTimeout"].as_i64()), (Some(10), Some(3)));
    remove(&store, "labelled", &dirs);
    store.assert_clean();
}

#[test]
fn a_process_allocating_past_memory_is_oom_killed_with_137() {
    let (store, _dir) = store();
    // busybox tail keeps a line in memory until it ends: 200 MiB without a newline.
    let o = run(&store, &["--memory", "32m"], &["sh", "-c", "head -c 200m /dev/zero | tail -n 1"]);
    assert_eq!(o.status.code(), Some(137), "{}{}", out(&o), err(&o));
    // As the command itself (PID 1 of the container).
    let o = run(&store, &["--memory", "32m", "--entrypoint", "/bin/sh"], &["-c", "exec tail -n 1 /dev/zero"]);
    assert_eq!(o.status.code(), Some(137), "{}{}", out(&o), err(&o));
    // Within the limit the same pipeline works.
    let o = run(&store, &["--memory", "64m"], &["sh", "-c", "head -c 1m /dev/zero | tail -n 1 | wc -c"]);
    assert_eq!((o.status.code(), out(&o).trim()), (Some(0), "1048576"), "{}", err(&o));
    store.assert_clean();
}

#[test]
fn pids_limit_refuses_forks() {
    let (store, _dir) = store();
    let o = run(
        &store,
        &["--pids-limit", "8"],
        &["sh", "-c", "i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done; echo forked"],
    );
    assert!(err(&o).contains("can't fork"), "forks past the limit fail: {}{}", out(&o), err(&o));
    let o = run(
        &store,
        &["--pids-limit", "-1"],
        &["sh", "-c", "i=0; while [ $i -lt 20 ]; do true & i=$((i+1)); done; wait; echo forked"],
    );
    assert_eq!(out(&o), "forked\n", "no limit: {}", err(&o));
    store.assert_clean();
}

#[test]
fn cpus_and_memory_are_written_to_the_containers_cgroup() {
    let (store, _dir) = store();
    store.ok(&[
        "run",
        "-d",
        "--name",
        "limited",
        "--cpus",
        "0.5",
        "-m",
        "64m",
        "--pids-limit",
        "100",
        "bb",
        "sleep",
        "1000",
    ]);
    let dirs = cgroups_of(&store, "limited");
    let read =
        |file: &str| dirs.iter().find_map(|d| std::fs::read_to_string(d.join(file)).ok()).map(|s| s.trim().to_owned());
    match read("cpu.max") {
        Some(max) => assert_eq!(max, "50000 100000"),
        None => assert_eq!(
            (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")),
            (Some("50000".into()), Some("100000".into()))
        ),
    }
    let memory = read("memory.max").or_else(|| read("memory.limit_in_bytes"));
    assert_eq!(memory.as_deref(), Some("67108864"));
    assert_eq!(read("pids.max").as_deref(), Some("100"));
    remove(&store, "limited", &dirs);
    store.assert_clean();
}

#[test]
fn init_is_pid_1_and_reaps_orphans() {
    let (store, _dir) = store();
    // An orphan's parent becomes PID 1; only an init that reaps makes it vanish. The orphan
    // notes its PID, and the container waits (bounded) for that PID to leave /proc: without
    // a reaper it stays, a zombie.
    let script = "tr '\\0' ' ' < /proc/1/cmdline; echo; (sh -c 'echo $$ > /tmp/orphan' &); \
                  i=0; while [ ! -s /tmp/orphan ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; \
                  p=$(cat /tmp/orphan); \
                  i=0; while [ -e /proc/$p ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; \
                  if [ -e /proc/$p ]; then grep '^State' /proc/$p/status; else echo reaped; fi";
    let o = run(&store, &["--init"], &["sh", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("/dev/init -- sh -c")), "PID 1 is the init: {text}");
    assert_eq!(lines.next().map(str::trim), Some("reaped"), "the orphan is reaped: {text}");
    // The command's exit status is the container's.
    assert_eq!(run(&store, &["--init"], &["sh", "-c", "exit 9"]).status.code(), Some(9));
    store.assert_clean();
}

#[test]
fn stop_uses_the_containers_stop_signal_and_timeout() {
    let (store, _dir) = store();
    store.ok(&[
        "run", "-d", "--name", "usr1", "--stop-signal", "USR1", "--init", "bb", "sh", "-c",
        "trap 'echo got-usr1; exit 3' USR1; trap 'echo got-term; exit 4' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    let dirs = cgroups_of(&store, "usr1");
    // The trap is set once the command says so; a signal before it would just kill it.
    common::wait_until(30, "the command did not start", || store.ok(&["logs", "usr1"]).contains("started"));
    store.ok(&["stop", "usr1"]);
    let logs = store.ok(&["logs", "usr1"]);
    assert!(logs.contains("got-usr1") && !logs.contains("got-term"), "{logs}");
    assert!(store.ok(&["ps", "-a"]).contains("Exited (3)"));
    remove(&store, "usr1", &dirs);
    // A command that ignores the signal is killed once its --stop-timeout has passed.
    store.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "--init",
        "bb",
        "sh",
        "-c",
        "trap '' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    let dirs = cgroups_of(&store, "stubborn");
    common::wait_until(30, "the command did not start", || store.ok(&["logs", "stubborn"]).contains("started"));
    store.ok(&["stop", "stubborn"]);
    let ps = store.ok(&["ps", "-a", "--format", "json"]);
    assert!(ps.contains("\"State\":\"exited\""), "{ps}");
    remove(&store, "stubborn", &dirs);
    store.assert_clean();
}

#[test]
fn bad_values_exit_125_naming_the_flag_and_make_nothing() {
    let (store, _dir) = store();
    for (flags, named) in [
        (&["--memory", "lots"][..], "--memory"),
        (&["--memory", "64x"], "--memory"),
        (&["--memory", "1m"], "--memory"),
        (&["--cpus", "half"], "--cpus"),
        (&["--cpus", "0"], "--cpus"),
        (&["--pids-limit", "many"], "--pids-limit"),
        (&["--cap-add", "FLY"], "--cap-add"),
        (&["--cap-drop", "CAP_"], "--cap-drop"),
        (&["--device", "/no/such/device"], "--device"),
        (&["--device", "/etc/passwd"], "--device"),
        (&["--device", "/dev/null:/dev/n:rwx"], "--device"),
        (&["--tmpfs", "relative"], "--tmpfs"),
        (&["--label", "=v"], "--label"),
        (&["--add-host", "db"], "--add-host"),
        (&["--add-host", "db:not-an-ip"], "--add-host"),
        (&["--dns", "dns.example"], "--dns"),
        (&["--stop-signal", "SIGNOPE"], "--stop-signal"),
        (&["--stop-timeout", "soon"], "--stop-timeout"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["bb", "true"]);
        let o = store.run(&args);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {}", err(&o));
        let message = err(&o);
        assert_eq!(message.lines().count(), 1, "{flags:?}: one line: {message}");
        assert!(message.starts_with("Error: invalid") && message.contains(named), "{flags:?}: {message}");
    }
    let o = store.run(&["run", "--rm", "--init", "--boot", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("--init"), "{}", err(&o));
    assert_eq!(store.ok(&["ps", "-aq"]), "", "nothing was made");
    store.assert_clean();
}

#[test]
fn boot_mode_takes_the_flags_for_the_booted_system_and_its_command() {
    require_root();
    let store = TempStore::new();
    let tarball = images::debian_rootfs_tarball();
    store.ok(&["import", "-q", tarball.to_str().expect("utf-8"), "debian:bookworm-systemd"]);
    let run_booted = |flags: &[&str], script: &str| {
        let mut args = vec!["run", "--name", "booted", "--boot-target", "minimal"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["debian:bookworm-systemd", "sh", "-c", script]);
        let o = store.run(&args);
        let dirs = cgroups_of(&store, "booted");
        remove(&store, "booted", &dirs);
        o
    };
    let o = run_booted(
        &["--cap-drop", "NET_RAW", "--add-host", "db:10.9.9.9", "--memory", "256m"],
        "grep CapBnd /proc/1/status; grep db /etc/hosts",
    );
    let text = out(&o);
    let bounding = text.split_whitespace().nth(1).and_then(|h| u64::from_str_radix(h, 16).ok()).expect("CapBnd");
    assert_eq!(bounding & (1 << 13), 0, "systemd runs without CAP_NET_RAW: {text}");
    assert!(text.contains("10.9.9.9\tdb"), "{text}{}", err(&o));
    // The command entered into the booted system is bound by the limit too.
    let o = run_booted(&["--memory", "64m"], "head -c 300m /dev/zero | tail -n 1");
    assert_eq!(o.status.code(), Some(137), "{}{}", out(&o), err(&o));
    store.assert_clean();
}
