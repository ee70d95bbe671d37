//! Looking into containers as docker users do, on real systemd-nspawn containers:
//! `top` (the container's processes and nothing else), `stats`, `diff`, `export`,
//! `inspect` of containers (and `--type`), `container prune` and the `container`
//! group. Overlay and btrfs stores, command and boot mode; every test ends with the
//! store's leak check.

use std::collections::BTreeMap;
use std::process::{Child, Command};

use crate::common::{self, busybox_store, debian_store, err, out, TempStore};

/// A host process the test started, killed when the test ends (also when it fails).
struct HostProcess(Child);

impl HostProcess {
    /// A host `sleep` with an argument no other process has.
    fn sleep() -> (HostProcess, String) {
        let unique = format!("{}.{}", 100_000 + std::process::id(), rand_tail());
        let child = Command::new("sleep").arg(&unique).spawn().expect("starting a host sleep");
        (HostProcess(child), unique)
    }
}

fn rand_tail() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.subsec_nanos() % 1000 + 1)
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a racker that runs until it is stopped (`stats` streaming), when dropped.
struct KillOnDrop<'c>(&'c mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the named containers when dropped, so that a failed assertion leaves none
/// running (the leak check after it would report them, not the cause).
struct Containers<'s>(&'s TempStore, Vec<&'static str>);

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.run(&["rm", "-f", name]);
        }
    }
}

/// ps's output as rows of cells keyed by ps's own column titles; the last column
/// (the command) keeps its spaces.
fn ps_rows(text: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut lines = text.lines();
    let titles: Vec<String> = lines.next().expect("a header").split_whitespace().map(str::to_owned).collect();
    let rows = lines
        .map(|l| {
            let mut cells: Vec<String> = Vec::new();
            let mut rest = l.trim_start();
            for _ in 0..titles.len() - 1 {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                cells.push(rest[..end].to_owned());
                rest = rest[end..].trim_start();
            }
            cells.push(rest.to_owned());
            titles.iter().cloned().zip(cells).collect()
        })
        .collect();
    (titles, rows)
}

/// `top` lists the container's processes, each a row ps printed, and nothing of the
/// host: not a host `sleep` this test runs beside it.
fn top_sees_only_the_container(store: &TempStore) {
    let (_host, unique) = HostProcess::sleep();
    let _c = Containers(store, vec!["t"]);
    store.ok(&["run", "-d", "--name", "t", "bb", "sh", "-c", "sleep 1001 & exec sleep 1002"]);
    // Until both sleeps have started (the shell may still be forking when run returns).
    let both = "i=0; until [ \"$(ps -o args | grep -c '^sleep 100[12]$')\" = 2 ]; do \
                i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; done";
    store.ok(&["exec", "t", "sh", "-c", both]);
    let (titles, rows) = ps_rows(&store.ok(&["top", "t"]));
    assert_eq!(titles.first().map(String::as_str), Some("UID"), "ps -ef's header: {titles:?}");
    let commands: Vec<&str> = rows.iter().map(|r| r["CMD"].as_str()).collect();
    assert!(commands.contains(&"sleep 1001") && commands.contains(&"sleep 1002"), "{commands:?}");
    assert!(!commands.iter().any(|c| c.contains(&unique)), "a host process is listed: {commands:?}");
    assert!(!commands.iter().any(|c| c.contains("systemd-nspawn")), "nspawn is not the container's: {commands:?}");
    // Other ps options: the PID column found by its title (ps heads `args` COMMAND).
    let (titles, rows) = ps_rows(&store.ok(&["top", "t", "-o", "pid,args"]));
    assert_eq!(titles, ["PID", "COMMAND"]);
    let commands: Vec<&str> = rows.iter().map(|r| r["COMMAND"].as_str()).collect();
    assert!(commands.contains(&"sleep 1001"), "{commands:?}");
    for row in &rows {
        let pid: i32 = row["PID"].parse().expect("a pid");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "{row:?}");
    }
    let no_pid = store.run(&["top", "t", "-o", "args"]);
    assert_eq!(no_pid.status.code(), Some(1), "{}", err(&no_pid));
    // `container top` is `top`; a stopped container has no processes to show.
    assert!(store.ok(&["container", "top", "t"]).contains("sleep 1002"));
    store.ok(&["container", "stop", "-t", "1", "t"]);
    let stopped = store.run(&["top", "t"]);
    assert_eq!(stopped.status.code(), Some(1), "{}", err(&stopped));
    assert!(err(&stopped).contains("container t is not running"), "{}", err(&stopped));
    store.ok(&["container", "rm", "t"]);
}

#[test]
fn top_lists_exactly_the_containers_processes() {
    let (store, _dir) = busybox_store();
    top_sees_only_the_container(&store);
    store.assert_clean();
}

#[test]
fn top_on_btrfs() {
    common::btrfs::with_busybox_store(top_sees_only_the_container);
}

/// `diff` of a container that added, changed and deleted files: docker's A/C/D lines,
/// sorted, the parents of changes as C; running or stopped, and no mount is left.
fn diff_shows_what_the_container_did(store: &TempStore) {
    let _c = Containers(store, vec!["d"]);
    store.ok(&["run", "-d", "--name", "d", "bb", "sleep", "1000"]);
    let script = "mkdir /srv/new; echo x > /srv/new/file; echo more >> /srv/data.txt; rm /srv/not-executable; \
                  rm /etc/os-release";
    store.ok(&["exec", "d", "sh", "-c", script]);
    let running = store.ok(&["diff", "d"]);
    let expected =
        "C /etc\nD /etc/os-release\nC /srv\nC /srv/data.txt\nA /srv/new\nA /srv/new/file\nD /srv/not-executable\n";
    assert_eq!(running, expected);
    store.ok(&["stop", "-t", "1", "d"]);
    assert_eq!(store.ok(&["container", "diff", "d"]), expected, "a stopped container's diff");
    assert_eq!(store.mounts(), Vec::<String>::new(), "diff left a mount");
    store.ok(&["rm", "d"]);
    // A container that changed nothing shows nothing (the runtime's own writes aside).
    store.ok(&["run", "--name", "quiet", "bb", "true"]);
    let _q = Containers(store, vec!["quiet"]);
    assert_eq!(store.ok(&["diff", "quiet"]), "");
    store.ok(&["rm", "quiet"]);
    let missing = store.run(&["diff", "no-such-container"]);
    assert_eq!(missing.status.code(), Some(1), "{}", err(&missing));
}

#[test]
fn diff_on_overlay() {
    let (store, _dir) = busybox_store();
    diff_shows_what_the_container_did(&store);
    store.assert_clean();
}

#[test]
fn diff_on_btrfs() {
    common::btrfs::with_busybox_store(diff_shows_what_the_container_did);
}

/// Entries of a tar: name → (type, uid, gid, link target).
fn tar_listing(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, u64, u64, Option<String>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .expect("a tar")
        .map(|e| {
            let e = e.expect("an entry");
            let h = e.header();
            let link = e.link_name().expect("link name").map(|l| l.display().to_string());
            let name = e.path().expect("a path").display().to_string();
            (name, (h.entry_type(), h.uid().expect("uid"), h.gid().expect("gid"), link))
        })
        .collect()
}

/// `export` of a stopped container: its whole root, owners and links kept, to a file
/// only its owner reads, or to a pipe; nothing stays mounted.
fn export_round_trip(store: &TempStore) {
    let _c = Containers(store, vec!["e"]);
    let script = "echo data > /srv/mine; chown 1234:5678 /srv/mine; ln -s mine /srv/link";
    store.ok(&["run", "--name", "e", "bb", "sh", "-c", script]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("e.tar");
    store.ok(&["export", "-o", file.to_str().expect("utf-8"), "e"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("the tar").permissions().mode() & 0o777, 0o600);
    let listing = tar_listing(&std::fs::read(&file).expect("the tar"));
    assert_eq!(listing["srv/mine"], (tar::EntryType::Regular, 1234, 5678, None), "{listing:?}");
    assert_eq!(listing["srv/link"].0, tar::EntryType::Symlink);
    assert_eq!(listing["srv/link"].3.as_deref(), Some("mine"));
    assert!(listing.contains_key("bin/busybox") && listing.contains_key("srv/data.txt"), "the image's files too");
    assert_eq!(store.mounts(), Vec::<String>::new(), "export left a mount");
    // To standard output (a pipe): the same entries.
    let piped = store.run(&["container", "export", "e"]);
    assert!(piped.status.success(), "{}", err(&piped));
    assert_eq!(tar_listing(&piped.stdout).keys().collect::<Vec<_>>(), listing.keys().collect::<Vec<_>>());
    assert_eq!(store.mounts(), Vec::<String>::new(), "export left a mount");
    // Standard output on a terminal: docker's refusal, and nothing written.
    let flags = rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY;
    let master = rustix::pty::openpt(flags | rustix::pty::OpenptFlags::CLOEXEC).expect("posix_openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).expect("opening the slave");
    let on_terminal = store.cmd().args(["export", "e"]).stdout(slave).output().expect("racker export");
    assert_eq!(on_terminal.status.code(), Some(1), "{}", err(&on_terminal));
    assert!(err(&on_terminal).contains("cowardly refusing to save to a terminal"), "{}", err(&on_terminal));
    // A name that is no container costs an existing file nothing.
    let o = store.run(&["export", "-o", file.to_str().expect("utf-8"), "no-such-container"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(tar_listing(&std::fs::read(&file).expect("the tar is still there")).len(), listing.len());
    store.ok(&["rm", "e"]);
    // A running container is exported whole (frozen for the walk) and runs on, not paused.
    let _r = Containers(store, vec!["live"]);
    store.ok(&["run", "-d", "--name", "live", "bb", "sh", "-c", "echo up > /srv/live; exec sleep 1000"]);
    let o = store.run(&["export", "live"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(tar_listing(&o.stdout).contains_key("bin/busybox"));
    let ps = store.ok(&["ps"]);
    assert!(ps.contains("live") && !ps.contains("Paused"), "{ps}");
    store.ok(&["rm", "-f", "live"]);
}

#[test]
fn export_on_overlay() {
    let (store, _dir) = busybox_store();
    export_round_trip(&store);
    store.assert_clean();
}

#[test]
fn export_on_btrfs() {
    common::btrfs::with_busybox_store(export_round_trip);
}

/// Bytes of a docker size (`64MiB`, `1.5kB`).
fn bytes_of(size: &str) -> f64 {
    let split = size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other:?} of {size:?}"),
    };
    number.parse::<f64>().expect("a number") * scale
}

#[test]
fn stats_reports_the_containers_use() {
    let (store, _dir) = busybox_store();
    let _c = Containers(&store, vec!["s", "free", "iso"]);
    store.ok(&["run", "-d", "--name", "s", "--memory", "64m", "bb", "sh", "-c", "sleep 1001 & exec sleep 1002"]);
    store.ok(&["run", "-d", "--name", "free", "bb", "sleep", "1000"]);
    let json = store.ok(&["stats", "--no-stream", "--format", "json", "s"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect("one json line");
    assert_eq!(row["Name"], "s");
    let pids: u64 = row["PIDs"].as_str().expect("PIDs").parse().expect("a number");
    assert!(pids >= 2, "{row}");
    let (used, limit) = row["MemUsage"].as_str().expect("MemUsage").split_once(" / ").expect("USED / LIMIT");
    assert!(bytes_of(used) > 0.0, "{row}");
    assert_eq!(limit, "64MiB", "{row}");
    assert!(row["CPUPerc"].as_str().expect("CPU").ends_with('%'), "{row}");
    assert_eq!(row["NetIO"], "--", "on the host's network: {row}");
    // A network of its own (loopback only) counts its own bytes.
    store.ok(&["run", "-d", "--name", "iso", "--network", "none", "bb", "sleep", "1000"]);
    let iso: serde_json::Value =
        serde_json::from_str(store.ok(&["stats", "--no-stream", "--format", "json", "iso"]).trim()).expect("json");
    assert_eq!(iso["NetIO"], "0B / 0B", "{iso}");
    store.ok(&["rm", "-f", "iso"]);
    // Without names: every running container, in docker's table.
    let table = store.ok(&["stats", "--no-stream"]);
    let mut lines = table.lines();
    assert!(lines.next().expect("header").starts_with("CONTAINER ID   NAME"), "{table}");
    let names: Vec<&str> = lines.filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(names.len(), 2, "{table}");
    assert!(names.contains(&"s") && names.contains(&"free"), "{table}");
    // Streaming: a new table every second until it is ended.
    let mut streaming = store
        .cmd()
        .args(["stats", "--format", "json", "s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("racker stats");
    let ended = KillOnDrop(&mut streaming);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(ended.0.stdout.take().expect("stdout")));
    for _ in 0..2 {
        let line = lines.next().expect("a sample").expect("a line");
        let row: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(row["Name"], "s", "{line}");
    }
    store.ok(&["stop", "-t", "1", "free"]);
    // A stopped container is a row of zeros, as in docker.
    let stopped = store.ok(&["stats", "--no-stream", "--format", "json", "free"]);
    let row: serde_json::Value = serde_json::from_str(stopped.trim()).expect("json");
    assert_eq!(
        (&row["PIDs"], &row["MemUsage"], &row["CPUPerc"]),
        (&"0".into(), &"0B / 0B".into(), &"0.00%".into()),
        "{row}"
    );
    store.ok(&["rm", "-f", "s", "free"]);
    store.assert_clean();
}

#[test]
fn container_prune_removes_only_stopped_containers() {
    let (store, _dir) = busybox_store();
    let _c = Containers(&store, vec!["alive", "gone", "kept"]);
    store.ok(&["run", "-d", "--name", "alive", "bb", "sleep", "1000"]);
    let gone = store.ok(&["run", "-d", "--name", "gone", "bb", "sh", "-c", "echo bytes > /srv/written"]);
    store.ok(&["run", "--name", "kept", "--label", "keep=yes", "bb", "true"]);
    assert_eq!(store.ok(&["wait", "gone"]), "0\n");
    let o = store.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    let mut lines = o.lines();
    assert_eq!(lines.next(), Some("Deleted Containers:"), "{o}");
    assert_eq!(lines.next(), Some(gone.trim()), "{o}");
    assert!(o.lines().last().is_some_and(|l| l.starts_with("Total reclaimed space: ")), "{o}");
    let names = store.ok(&["container", "ls", "-a", "--format", "json"]);
    assert!(names.contains("\"alive\"") && names.contains("\"kept\"") && !names.contains("\"gone\""), "{names}");
    // Without filters every stopped one goes, and a running one stays.
    let o = store.ok(&["container", "prune", "--force"]);
    assert!(o.starts_with("Deleted Containers:\n"), "{o}");
    assert_eq!(store.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(store.ok(&["container", "prune", "-f"]), "Total reclaimed space: 0B\n");
    let bad = store.run(&["container", "prune", "-f", "--filter", "colour=red"]);
    assert_eq!(bad.status.code(), Some(1), "{}", err(&bad));
    store.ok(&["rm", "-f", "alive"]);
    store.assert_clean();
}

#[test]
fn inspect_finds_containers_first_and_type_restricts_it() {
    let (store, _dir) = busybox_store();
    let _c = Containers(&store, vec!["both"]);
    store.ok(&["tag", "bb", "both"]);
    let id = store.ok(&["run", "-d", "--name", "both", "--memory", "32m", "-e", "K=v", "bb", "sleep", "1000"]);
    let parse = |text: String| -> serde_json::Value { serde_json::from_str(&text).expect("json") };
    let c = parse(store.ok(&["inspect", "both"]));
    assert_eq!(c[0]["Id"], id.trim(), "a name both have is the container's: {c}");
    assert_eq!(c[0]["Name"], "/both");
    assert_eq!(c[0]["State"]["Status"], "running");
    assert_eq!(c[0]["State"]["Running"], true);
    assert!(c[0]["State"]["Pid"].as_i64().is_some_and(|p| p > 1), "{c}");
    assert_eq!(c[0]["Config"]["Cmd"], serde_json::json!(["sleep", "1000"]));
    assert!(c[0]["Config"]["Env"].as_array().expect("Env").contains(&serde_json::json!("K=v")), "{c}");
    assert_eq!(c[0]["HostConfig"]["Memory"], 32 * 1024 * 1024);
    assert_eq!(c[0]["GraphDriver"]["Name"], "overlay");
    let upper = c[0]["GraphDriver"]["Data"]["UpperDir"].as_str().expect("UpperDir");
    assert!(std::path::Path::new(upper).is_dir(), "{c}");
    let i = parse(store.ok(&["inspect", "--type", "image", "both"]));
    assert!(i[0]["RepoTags"].as_array().expect("an image").iter().any(|t| t == "both:latest"), "{i}");
    assert_eq!(parse(store.ok(&["container", "inspect", "both"]))[0]["Id"], id.trim());
    assert_eq!(parse(store.ok(&["inspect", "--type", "container", "both"]))[0]["Id"], id.trim());
    // An image is no container; a name nothing has fails after the rest is printed.
    let o = store.run(&["container", "inspect", "bb"]);
    assert_eq!((o.status.code(), out(&o).trim()), (Some(1), "[]"), "{}", err(&o));
    assert!(err(&o).contains("No such container: bb"), "{}", err(&o));
    let o = store.run(&["inspect", "bb", "nothing"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(parse(out(&o)).as_array().map(Vec::len), Some(1));
    store.ok(&["stop", "-t", "1", "both"]);
    let c = parse(store.ok(&["inspect", "both"]));
    assert_eq!((c[0]["State"]["Status"].as_str(), c[0]["State"]["Running"].as_bool()), (Some("exited"), Some(false)));
    assert_eq!(c[0]["State"]["Pid"], 0);
    store.ok(&["rm", "both"]);
    store.assert_clean();
}

/// A booted Debian: `top` shows its systemd and journal, `diff` what a command did in it.
#[test]
fn top_and_diff_of_a_booted_container() {
    let store = debian_store();
    let (_host, unique) = HostProcess::sleep();
    let _c = Containers(&store, vec!["deb"]);
    store.ok(&["run", "-d", "--name", "deb", "--boot-target", "minimal", "debian:bookworm-systemd"]);
    let (_, rows) = ps_rows(&store.ok(&["top", "deb"]));
    let commands: Vec<&str> = rows.iter().map(|r| r["CMD"].as_str()).collect();
    assert!(commands.iter().any(|c| c.contains("systemd-journald")), "{commands:?}");
    assert!(!commands.iter().any(|c| c.contains(&unique) || c.contains("systemd-nspawn")), "{commands:?}");
    let o = store.run(&["exec", "deb", "sh", "-c", "echo x > /root/new; rm /etc/issue.net; echo y >> /etc/motd"]);
    assert!(o.status.success(), "{}", err(&o));
    let diff = store.ok(&["diff", "deb"]);
    for line in ["C /etc", "D /etc/issue.net", "C /etc/motd", "C /root", "A /root/new"] {
        assert!(diff.lines().any(|l| l == line), "{line:?} missing in:\n{diff}");
    }
    store.ok(&["rm", "-f", "deb"]);
    store.assert_clean();
}
