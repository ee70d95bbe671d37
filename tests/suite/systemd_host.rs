//! racker on a real systemd host (systemd as PID 1, machined on the system bus), booted
//! inside this machine (see common/systemd_host.rs): what machined and systemd see of
//! racker's containers, their limits, their scopes, and that nothing is left behind.

use std::time::Duration;

use crate::common::postroj::{build_web_package, probe_store};
use crate::common::systemd_host::SystemdHost;
use crate::common::{busybox_store, err, images, out, registry::Registry, TempStore};

/// Polls `done` (a question to the host: each costs a process or two) every 200 ms; on
/// timeout, fails with what the host's systemd and machined say.
fn wait_for(host: &SystemdHost, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} (waited {secs} s)\n{}", host.diagnose());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cgroup of unit `unit`, as its systemd names it (relative to each hierarchy).
fn cgroup_of(host: &SystemdHost, unit: &str) -> String {
    host.ok(&["systemctl", "show", "--value", "-p", "ControlGroup", unit]).trim().to_owned()
}

/// Every process in unit `unit`'s cgroup and the groups below it (nspawn puts the
/// payload in one), from the hierarchy systemd tracks units in: its own on a v1 or
/// hybrid host, the unified one on a cgroup v2 host.
fn unit_processes(host: &SystemdHost, unit: &str) -> Vec<String> {
    let group = cgroup_of(host, unit);
    let named = format!("/sys/fs/cgroup/systemd{group}");
    let dir = if host.exists(&named) { named } else { format!("/sys/fs/cgroup{group}") };
    let listed = host.ok(&["find", &dir, "-name", "cgroup.procs", "-exec", "cat", "{}", "+"]);
    listed.split_whitespace().map(str::to_owned).collect()
}

/// A limit as the kernel holds it for unit `unit`: cgroup v2's `v2` file where the
/// unified hierarchy has the controller, else the v1 controller's `v1` files, joined
/// as v2 writes them.
fn limit(host: &SystemdHost, unit: &str, v2: &str, (controller, v1): (&str, &[&str])) -> String {
    let group = cgroup_of(host, unit);
    let unified = host.read(&format!("/sys/fs/cgroup{group}/{v2}"));
    if !unified.is_empty() {
        return unified.trim().to_owned();
    }
    let files = v1.iter().map(|f| host.read(&format!("/sys/fs/cgroup/{controller}{group}/{f}")).trim().to_owned());
    files.collect::<Vec<_>>().join(" ")
}

/// The PID namespace of process `pid` of the host (as its /proc shows it).
fn pid_ns(host: &SystemdHost, pid: &str) -> String {
    host.ok(&["readlink", &format!("/proc/{pid}/ns/pid")]).trim().to_owned()
}

#[test]
fn a_detached_container_is_a_machine_in_a_scope_of_its_own() {
    let (store, _layout) = busybox_store();
    let host = SystemdHost::boot(&store);
    let id = host.racker_ok(&store, &["run", "-d", "--name", "web", "bb", "sh", "-c", "echo hello; exec sleep 1000"]);
    let id = id.trim();
    // machined's and systemd's view.
    assert!(host.machines().contains(&"web".to_owned()), "machinectl list: {:?}", host.machines());
    assert!(host.units("machine-*").contains(&"machine-web.scope".to_owned()), "{:?}", host.units("machine-*"));
    let status = host.ok(&["machinectl", "show", "web", "-p", "Class", "-p", "Service", "-p", "State"]);
    assert!(status.contains("Class=container") && status.contains("Service=systemd-nspawn"), "{status}");
    // The scope holds exactly the container's processes: its leader and what runs under it.
    let leader = host.racker_ok(&store, &["inspect", "-f", "{{.State.Pid}}", "web"]).trim().to_owned();
    let procs = unit_processes(&host, "machine-web.scope");
    assert!(procs.contains(&leader), "the leader {leader} is in the machine's scope: {procs:?}");
    let ns = pid_ns(&host, &leader);
    for pid in &procs {
        assert_eq!(pid_ns(&host, pid), ns, "process {pid} of the machine's scope is not the container's");
    }
    let info = host.racker_ok(&store, &["info"]);
    assert!(info.lines().any(|l| l.starts_with("Registration: machined (systemd is PID 1")), "{info}");
    // The docker verbs, as everywhere.
    assert!(host.racker_ok(&store, &["ps"]).contains("web"));
    assert_eq!(host.racker_ok(&store, &["exec", "web", "cat", "/srv/data.txt"]), "from the image\n");
    assert_eq!(host.racker_ok(&store, &["logs", "web"]), "hello\n");
    host.racker_ok(&store, &["stop", "-t", "1", "web"]);
    assert!(!host.machines().contains(&"web".to_owned()), "a stopped container is no machine");
    let ps = host.racker_ok(&store, &["ps", "-a", "--format", "{{.ID}} {{.Status}}"]);
    assert!(ps.starts_with(&id[..12]) && ps.contains("Exited"), "{ps}");
    host.racker_ok(&store, &["rm", "web"]);
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn limits_are_the_machine_scopes_own() {
    let (store, _layout) = busybox_store();
    let host = SystemdHost::boot_with_controllers(&store);
    host.racker_ok(
        &store,
        &[
            "run",
            "-d",
            "--name",
            "lim",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--cpus",
            "0.5",
            "bb",
            "sleep",
            "1000",
        ],
    );
    let scope = "machine-lim.scope";
    assert_eq!(limit(&host, scope, "memory.max", ("memory", &["memory.limit_in_bytes"])), "67108864");
    assert_eq!(limit(&host, scope, "pids.max", ("pids", &["pids.max"])), "50");
    let cpu = limit(&host, scope, "cpu.max", ("cpu", &["cpu.cfs_quota_us", "cpu.cfs_period_us"]));
    assert_eq!(cpu, "50000 100000", "half a CPU: 50 ms of every 100 ms");
    // The processes are the ones limited: the leader is in the scope.
    let leader = host.racker_ok(&store, &["inspect", "-f", "{{.State.Pid}}", "lim"]).trim().to_owned();
    assert!(unit_processes(&host, scope).contains(&leader));
    // systemd's own record of them, as `systemctl show` tells an administrator.
    let shown = host.ok(&["systemctl", "show", "-p", "MemoryMax", "-p", "TasksMax", "machine-lim.scope"]);
    assert!(shown.contains("MemoryMax=67108864") && shown.contains("TasksMax=50"), "{shown}");
    host.racker_ok(&store, &["rm", "-f", "lim"]);
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn machinectl_terminate_is_seen_as_stopped() {
    let (store, _layout) = busybox_store();
    let host = SystemdHost::boot(&store);
    host.racker_ok(&store, &["run", "-d", "--name", "term", "bb", "sleep", "1000"]);
    host.ok(&["machinectl", "terminate", "term"]);
    wait_for(&host, 60, "racker ps never saw the terminated container stop", || {
        host.racker_ok(&store, &["ps", "-a", "--format", "{{.Names}} {{.State}}"]).contains("term exited")
    });
    assert!(!host.machines().contains(&"term".to_owned()));
    host.racker_ok(&store, &["rm", "term"]);
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn a_detached_container_outlives_the_service_that_started_it() {
    let (store, _layout) = busybox_store();
    let host = SystemdHost::boot(&store);
    // A unit that runs `racker run -d` ends when racker returns; systemd then stops what
    // is left in the unit's cgroup. The container must not be in it.
    let argv = store.argv(env!("CARGO_BIN_EXE_racker"), &["run", "-d", "--name", "kept", "bb", "sleep", "1000"]);
    let o = host.service(&argv).output().expect("systemd-run");
    assert!(o.status.success(), "racker run -d as a service: {}{}", err(&o), out(&o));
    std::thread::sleep(Duration::from_secs(1));
    let ps = host.racker_ok(&store, &["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps, "kept running\n", "the container runs on after its service ended");
    assert!(host.machines().contains(&"kept".to_owned()));
    // Its owner (racker's monitor) is in a scope of its own, as podman's conmon is.
    let scopes = host.units("racker-*");
    assert_eq!(scopes.len(), 1, "one scope for the monitor: {scopes:?}");
    host.racker_ok(&store, &["rm", "-f", "kept"]);
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn killed_racker_and_nspawn_leave_nothing_rm_f_does_not_end() {
    let (store, _layout) = busybox_store();
    let host = SystemdHost::boot(&store);
    // A foreground run whose racker is SIGKILLed: its container runs on, registered.
    let mut child = host
        .scope(&store.argv(env!("CARGO_BIN_EXE_racker"), &["run", "--name", "fg", "bb", "sleep", "1000"]))
        .spawn()
        .expect("racker run in the host");
    wait_for(&host, 60, "the container never registered", || host.machines().contains(&"fg".to_owned()));
    let racker =
        host.ok(&["pgrep", "-o", "-f", "-x", &format!(".*racker --root {} run --name fg.*", store.root().display())]);
    host.ok(&["kill", "-KILL", racker.trim()]);
    let _ = child.wait();
    assert!(host.machines().contains(&"fg".to_owned()), "the container outlives its killed racker");
    // Then its nspawn: the machine's processes stay in the machine's scope.
    let nspawn = host.ok(&["pgrep", "-o", "-x", "systemd-nspawn"]);
    host.ok(&["kill", "-KILL", nspawn.trim()]);
    host.racker_ok(&store, &["rm", "-f", "fg"]);
    wait_for(&host, 30, "the killed container's machine stayed registered", || host.machines().is_empty());
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn a_booted_container_and_a_pull_from_the_hosts_registry() {
    let store = TempStore::new();
    let tarball = images::debian_rootfs_tarball();
    let registry = Registry::start();
    let layout = tempfile::tempdir().expect("tempdir");
    images::write_layout(layout.path(), &images::image(&[images::busybox_layer()], images::busybox_config()));
    registry.skopeo_copy_oci(layout.path(), "latest", "lib/bb:1");
    let host = SystemdHost::boot(&store);
    // The registry listens on this machine's loopback, which the host shares.
    host.racker_ok(&store, &["pull", "-q", &registry.name("lib/bb:1")]);
    assert_eq!(
        host.racker_ok(&store, &["run", "--rm", &registry.name("lib/bb:1"), "cat", "/etc/os-release"]),
        "ID=busybox\nNAME=busybox\n"
    );
    // The tarball is this machine's; the store is the same on both sides.
    store.ok(&["import", "-q", tarball.to_str().expect("utf-8"), "debian:bookworm-systemd"]);
    host.racker_ok(&store, &["run", "-d", "--boot", "--name", "booted", "debian:bookworm-systemd"]);
    assert!(host.machines().contains(&"booted".to_owned()));
    let state = host.ok(&["machinectl", "show", "booted", "-p", "State", "--value"]);
    assert_eq!(state.trim(), "running", "machined sees the booted container");
    // `degraded` exits 1: the state is the answer.
    let inside = out(&host.racker(&store, &["exec", "booted", "systemctl", "is-system-running", "--wait"]));
    assert!(matches!(inside.trim(), "running" | "degraded"), "{inside}");
    // The host's tools reach into it by its machine name.
    let journal = host.ok(&["journalctl", "-M", "booted", "--no-pager", "-o", "cat", "-n", "200"]);
    assert!(journal.contains("Startup finished"), "journalctl -M shows the container's journal: {journal}");
    let status = out(&host.command(&["systemctl", "-M", "booted", "is-system-running"]).output().expect("systemctl"));
    assert!(matches!(status.trim(), "running" | "degraded"), "systemctl -M: {status}");
    host.racker_ok(&store, &["rm", "-f", "booted"]);
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}

#[test]
fn pkgprobe_in_the_host_registers_its_throwaway_container_and_leaves_nothing() {
    /// The port the probed package's web server listens on (the containers share this
    /// machine's network; other tests use other ports).
    const PORT: u16 = 18475;
    let store = probe_store();
    let deb = build_web_package(store.private_dir(), PORT);
    let host = SystemdHost::boot(&store);
    let args = [
        "pkgprobe",
        "--image=debian-bookworm",
        &format!("--package={}", deb.display()),
        "--check-unit=racker-probe-web",
        &format!("--check-network=http://localhost:{PORT}/"),
        "--format=json",
    ];
    let o = host.scope(&store.argv(env!("CARGO_BIN_EXE_postroj"), &args)).output().expect("postroj in the host");
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let cases = report["suites"][0]["cases"].as_array().expect("cases").clone();
    assert!(cases.iter().all(|c| c["result"] == "passed"), "{cases:#?}");
    assert_eq!(cases.len(), 5, "boot, install, unit, network, teardown: {cases:#?}");
    // machined knew the probe's container while it ran, and forgot it after.
    let machined = host.ok(&["journalctl", "--no-pager", "-o", "cat", "-u", "systemd-machined.service"]);
    assert!(machined.contains("New machine racker-"), "the probe's container registered: {machined}");
    host.assert_clean(&store);
    drop(host);
    store.assert_clean();
}
