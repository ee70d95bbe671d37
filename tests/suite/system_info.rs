//! `racker version` and `racker info`: what they say is checked against what the host's
//! own tools say (stat -f, uname, nproc, systemd-nspawn --version) and what the test put
//! into the store.

use std::process::Command;

use crate::common::{self, images, TempStore};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// A host tool's first line of output.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_owned()
}

/// The file system type `stat -f` names for `path`.
fn fs_type(path: &str) -> String {
    tool("stat", &["-f", "-c", "%T", path])
}

#[test]
fn version_names_the_package_version_and_platform() {
    let store = TempStore::new();
    let text = store.ok(&["version"]);
    assert!(text.contains(&format!("Version:       {}", env!("CARGO_PKG_VERSION"))), "racker version:\n{text}");
    // docker's (Go's) architecture names, as dpkg names them too.
    let arch = tool("dpkg", &["--print-architecture"]);
    assert!(text.contains(&format!("OS/Arch:       linux/{arch}")), "racker version:\n{text}");
    let v = json(&store.ok(&["version", "--format", "json"]));
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(v["Arch"], arch, "{v}");
}

#[test]
fn info_reports_the_store_and_the_host_as_their_own_tools_do() {
    let store = TempStore::new();
    let empty = json(&store.ok(&["info", "--format", "json"]));
    assert_eq!(empty["Images"], 0, "{empty}");
    assert_eq!(empty["Containers"], 0, "{empty}");
    let _dir = images::add_busybox(&store);
    let info = json(&store.ok(&["info", "--format", "json"]));
    assert_eq!(info["RootDir"], store.root().to_str().expect("utf-8"), "{info}");
    let driver = if fs_type(store.root().to_str().expect("utf-8")) == "btrfs" { "btrfs" } else { "overlay" };
    assert_eq!(info["Driver"], driver, "{info}");
    assert_eq!(info["Images"], 1, "busybox was imported (under two tags): {info}");
    assert_eq!(info["Volumes"], 0, "{info}");
    let cgroup = match fs_type("/sys/fs/cgroup").as_str() {
        "cgroup2fs" => "2",
        "tmpfs"
            if std::path::Path::new("/sys/fs/cgroup/unified").is_dir()
                && fs_type("/sys/fs/cgroup/unified") == "cgroup2fs" =>
        {
            "hybrid"
        }
        "tmpfs" => "1",
        other => panic!("/sys/fs/cgroup is {other}"),
    };
    assert_eq!(info["CgroupVersion"], cgroup, "{info}");
    let pid1 = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    assert_eq!(info["SystemdPid1"], pid1.trim() == "systemd", "{info}");
    // The path racker takes, and why (the systemd host's own test checks the other one).
    let path = if pid1.trim() == "systemd" { "machined" } else { "direct" };
    assert_eq!(info["Registration"], path, "{info}");
    let why = info["RegistrationReason"].as_str().expect("a reason");
    assert!(why.contains(pid1.trim()), "the reason names PID 1: {why}");
    assert_eq!(info["KernelVersion"], tool("uname", &["-r"]), "{info}");
    assert_eq!(info["NCPU"], tool("nproc", &[]).parse::<u64>().expect("nproc"), "{info}");
    assert_eq!(info["NspawnVersion"], tool("systemd-nspawn", &["--version"]), "{info}");
    assert_eq!(info["ServerVersion"], env!("CARGO_PKG_VERSION"), "{info}");
    assert!(info["MemTotal"].as_u64().is_some_and(|m| m > 0), "{info}");
    // The table says the same, and `system info` is `info`.
    let text = store.ok(&["system", "info"]);
    for line in [
        "Images: 1".to_owned(),
        format!("Storage Driver: {driver}"),
        format!("Racker Root Dir: {}", store.root().display()),
        format!("Cgroup Version: {cgroup}"),
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "no {line:?} in racker system info:\n{text}");
    }
}

#[test]
fn info_counts_containers_by_their_state() {
    common::require_root();
    let store = TempStore::new();
    let _dir = images::add_busybox(&store);
    store.ok(&["run", "--name", "ended", "bb", "true"]);
    store.ok(&["run", "-d", "--name", "sleeper", "bb", "sleep", "1000"]);
    let info = json(&store.ok(&["info", "--format", "json"]));
    let counts = ["Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped"].map(|k| info[k].clone());
    store.ok(&["rm", "-f", "ended", "sleeper"]);
    assert_eq!(counts, [2, 1, 0, 1].map(serde_json::Value::from), "{info}");
    store.assert_clean();
}
