//! Shared test support: a throw-away store, the racker binary, fixtures, guards.
// unsafe: pre_exec, to run racker with umask 000.
#![allow(unsafe_code)]
#![allow(dead_code)]

pub mod btrfs;
pub mod diskfull;
pub mod hostile;
pub mod images;
pub mod locks;
pub mod postroj;
pub mod registry;
pub mod slurm;
pub mod systemd_host;
pub mod tree;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Held by tests whose containers serve on the host's port 80 (a web server from the
/// mirror, as users probe it): containers share the host's network.
pub static HOST_PORT_80: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A command's standard output, as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store holding the Debian bookworm + systemd image (`debian:bookworm-systemd`).
pub fn debian_store() -> TempStore {
    require_root();
    let store = TempStore::new();
    let tarball = images::debian_rootfs_tarball();
    store.ok(&["import", "-q", tarball.to_str().expect("utf-8"), "debian:bookworm-systemd"]);
    store
}

/// A store with the busybox image as `bb` (its layout lives as long as the directory).
pub fn busybox_store() -> (TempStore, tempfile::TempDir) {
    require_root();
    let store = TempStore::new();
    let dir = images::add_busybox(&store);
    (store, dir)
}

/// Privileged tests run as root (CI does); elsewhere they fail loudly instead of skipping.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (mounts, device nodes, ownership); run the suite as root as CI does"
    );
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// A store in a temporary directory, removed on drop. Every racker it runs gets
/// `REGISTRY_AUTH_FILE` pointing into a second temporary directory, so that no test ever
/// reads or writes the host's registry credentials.
pub struct TempStore {
    dir: tempfile::TempDir,
    /// `dir`, or the store directory racker made in it ([`TempStore::created_by_racker`]).
    root: PathBuf,
    /// Run every racker with umask 000 (racker's own modes must protect the store).
    no_umask: bool,
    auth: tempfile::TempDir,
    /// When it was made, in clock ticks after boot: what started later may be its doing.
    since: u64,
}

/// Clock ticks after boot (USER_HZ, 100 per second), as `/proc/PID/stat` counts start times.
fn ticks_now() -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    let seconds: f64 = uptime.split(' ').next().and_then(|s| s.parse().ok()).expect("uptime seconds");
    (seconds * 100.0) as u64
}

/// Processes that are PID 1 of a PID namespace of their own but whose parent is no
/// systemd-nspawn, started since `since`, with a file system of the store at `root`
/// mounted (its layers or snapshot): container leaders of this store whose nspawn was
/// killed under them. They would run forever. Other tests' containers, which may be
/// orphaned on purpose for a moment, are not this store's.
pub fn orphaned_container_inits(since: u64, root: &Path) -> Vec<(i32, String)> {
    // By the store directory's name: a btrfs snapshot's mount shows its path within the
    // file system, not on the host.
    let store = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(format!("/proc/{pid}/status")),
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
        ) else {
            continue;
        };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
        let nspid: Vec<&str> = field("NSpid:").split_whitespace().collect();
        let start: u64 = stat
            .rsplit(')')
            .next()
            .and_then(|f| f.split_whitespace().nth(19))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // A zombie runs nothing: it waits for a parent (PID 1 here, which reaps lazily) to reap it.
        let zombie = field("State:").starts_with('Z');
        if nspid.len() < 2 || nspid.last() != Some(&"1") || start < since || zombie {
            continue;
        }
        let parent = std::fs::read_to_string(format!("/proc/{}/comm", field("PPid:"))).unwrap_or_default();
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if parent.trim() != "systemd-nspawn" && mounts.contains(&store) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// The guard's half: a test that failed half way may leave containers and mounts; they
/// are removed as a user would (`racker rm -f`), then whatever is still mounted under the
/// store is detached, so that the temporary directory can go.
impl Drop for TempStore {
    fn drop(&mut self) {
        if let Ok(ps) = self.cmd().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
                let _ = self.cmd().args(["rm", "-f", id]).output();
            }
        }
        let root = self.root().display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&format!("{root}/")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = rustix::mount::unmount(mount, rustix::mount::UnmountFlags::DETACH);
        }
        for (pid, _) in orphaned_container_inits(self.since, self.root()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl TempStore {
    /// A new, initialised (empty) store.
    pub fn new() -> TempStore {
        TempStore::at(&std::env::temp_dir())
    }

    /// A new, initialised (empty) store in a temporary directory below `parent` (for a
    /// store on a particular file system, such as a loop-mounted btrfs).
    pub fn at(parent: &Path) -> TempStore {
        let dir =
            tempfile::Builder::new().prefix("racker-test-").tempdir_in(parent).expect("creating a temporary store");
        TempStore::init(dir.path().to_owned(), dir, false)
    }

    /// A store whose root racker makes itself, as it makes /var/lib/racker, in a directory
    /// every user may traverse, as /var/lib is; every racker runs with umask 000. Only
    /// racker's own modes protect it, not the test's temporary directory.
    pub fn created_by_racker() -> TempStore {
        TempStore::created_by_racker_in(&std::env::temp_dir())
    }

    /// [`TempStore::created_by_racker`] below `parent` (a particular file system).
    pub fn created_by_racker_in(parent: &Path) -> TempStore {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            tempfile::Builder::new().prefix("racker-test-").tempdir_in(parent).expect("creating a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        TempStore::init(dir.path().join("store"), dir, true)
    }

    fn init(root: PathBuf, dir: tempfile::TempDir, no_umask: bool) -> TempStore {
        let store = TempStore {
            since: ticks_now(),
            dir,
            root,
            no_umask,
            auth: tempfile::Builder::new()
                .prefix("racker-test-auth-")
                .tempdir()
                .expect("creating a temporary credentials directory"),
        };
        store.ok(&["images", "-q"]);
        store
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The credentials file every racker of this store uses (it may not exist).
    pub fn auth_file(&self) -> PathBuf {
        self.auth.path().join("auth.json")
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_racker"));
        cmd.arg("--root").arg(self.root());
        cmd.env("REGISTRY_AUTH_FILE", self.auth_file());
        if self.no_umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    rustix::process::umask(rustix::fs::Mode::empty());
                    Ok(())
                });
            }
        }
        cmd
    }

    /// The command line that runs `program` (racker or postroj) on this store with
    /// `args` and the environment [`Self::cmd`] gives it: for running it elsewhere (a
    /// systemd host, a service).
    pub fn argv(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "env".to_owned(),
            format!("REGISTRY_AUTH_FILE={}", self.auth_file().display()),
            format!("POSTROJ_APT_CACHE={}", self.apt_cache().display()),
            program.to_owned(),
            "--root".to_owned(),
            self.root().display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// The store's private directory beside it: credentials and postroj's cache.
    pub fn private_dir(&self) -> &Path {
        self.auth.path()
    }

    /// Runs racker with `args`; returns the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running racker")
    }

    /// Runs racker and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "racker {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs racker and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "racker {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `postroj` on this store.
    pub fn postroj(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postroj"));
        cmd.arg("--root").arg(self.root());
        cmd.env("REGISTRY_AUTH_FILE", self.auth_file());
        // The probe cache (package lists, downloads) is the store's own too, never the host's.
        cmd.env("POSTROJ_APT_CACHE", self.apt_cache());
        cmd
    }

    /// Where postroj keeps package lists and downloads for this store's probes.
    pub fn apt_cache(&self) -> PathBuf {
        self.auth.path().join("apt-cache")
    }

    /// Nothing of the store's is mounted, no container process runs, no snapshot or
    /// container record is left.
    pub fn assert_clean(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.root().display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        let ps = Command::new("ps").args(["-eo", "args"]).output().expect("ps");
        let procs: Vec<String> = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains("systemd-nspawn") && l.contains(&root))
            .map(str::to_owned)
            .collect();
        assert!(procs.is_empty(), "container processes left behind: {procs:#?}");
        let orphans = orphaned_container_inits(self.since, self.root());
        assert!(orphans.is_empty(), "container leaders left running without their nspawn: {orphans:?}");
        let snapshots = self.files("snapshots");
        assert!(snapshots.is_empty(), "snapshots left behind: {snapshots:?}");
        // Only a test that made volumes has any: it removes them.
        let volumes = self.files("volumes");
        assert!(volumes.is_empty(), "volumes left behind: {volumes:?}");
        self.assert_no_network_left();
    }

    /// No container is attached to any of the store's private networks, and nothing
    /// of them is on the host: bridges, veths (their alias), namespaces and nftables
    /// chains all carry the network's id (`rk-<id>`).
    pub fn assert_no_network_left(&self) {
        for name in self.files("networks").iter().filter_map(|f| f.strip_suffix(".json")) {
            let path = self.root().join("networks").join(format!("{name}.json"));
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("a network record")).expect("json");
            let attached = record["containers"].as_object().map_or(0, |c| c.len());
            assert_eq!(attached, 0, "containers still attached to network {name}: {record}");
            let tag = format!("rk-{}", record["id"].as_str().expect("a network id"));
            for (what, args) in [
                ("links", &["ip", "-o", "link"][..]),
                ("namespaces", &["ip", "netns", "list"]),
                ("nftables", &["nft", "list", "ruleset"]),
            ] {
                let listing = Command::new(args[0]).args(&args[1..]).output().map(|o| out(&o)).unwrap_or_default();
                let left: Vec<&str> = listing.lines().filter(|l| l.contains(&tag)).collect();
                assert!(left.is_empty(), "{what} of network {name} left behind: {left:#?}");
            }
        }
    }

    /// The mounts below the store that this process sees (mountinfo lines).
    pub fn mounts(&self) -> Vec<String> {
        let root = self.root().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_owned)
            .collect()
    }

    pub fn files(&self, area: &str) -> BTreeSet<String> {
        let dir = self.root().join(area);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                entries.map(|e| e.expect("listing the store").file_name().to_string_lossy().into_owned()).collect()
            }
            Err(_) => BTreeSet::new(),
        }
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.root().join("racker.db")).expect("opening the store database")
    }

    pub fn count(&self, table: &str) -> i64 {
        self.db().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("counting rows")
    }

    /// Everything that makes up the store's visible state: files by area and all rows.
    pub fn snapshot(&self) -> String {
        let mut out = String::new();
        for area in ["blobs/sha256", "layers", "ingest"] {
            out.push_str(&format!("{area}: {:?}\n", self.files(area)));
        }
        let objects: BTreeSet<String> = walkdir::WalkDir::new(self.root().join("objects"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.push_str(&format!("objects: {objects:?}\n"));
        if self.root().join("racker.db").exists() {
            let db = self.db();
            for table in ["blobs", "layers", "images", "image_layers", "tags", "repo_digests"] {
                let mut stmt = db.prepare(&format!("SELECT * FROM {table}")).expect("reading a table");
                let n = stmt.column_count();
                let rows: Vec<String> = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|v| v.join("|"))
                    })
                    .expect("reading rows")
                    .map(|r| r.expect("reading a row"))
                    .collect();
                out.push_str(&format!("{table}: {rows:?}\n"));
            }
        }
        out
    }
}

/// A read-only overlayfs mount of layer directories (top first), unmounted on drop.
pub struct OverlayMount {
    pub target: tempfile::TempDir,
    /// An empty bottom layer: overlayfs mounts read-only only with two lowers or more.
    _empty: tempfile::TempDir,
}

impl OverlayMount {
    pub fn new(lowers_top_first: &[PathBuf]) -> OverlayMount {
        require_root();
        let target = tempfile::Builder::new().prefix("racker-overlay-").tempdir().expect("creating a mount point");
        let empty = tempfile::Builder::new().prefix("racker-empty-").tempdir().expect("creating an empty layer");
        let lowerdir: Vec<String> =
            lowers_top_first.iter().chain([&empty.path().to_path_buf()]).map(|p| p.display().to_string()).collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &format!("ro,lowerdir={}", lowerdir.join(":"))])
            .arg(target.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting overlayfs failed");
        OverlayMount { target, _empty: empty }
    }

    pub fn path(&self) -> &Path {
        self.target.path()
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.target.path()).status();
    }
}

/// What a container of the `whiteouts` fixture image must see.
pub fn assert_whiteouts_view(root: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let exists = |p: &str| root.join(p).symlink_metadata().is_ok();
    assert!(!exists("etc/motd"), "a whited-out file is visible");
    assert!(!exists("usr/share/doc/old"), "a whited-out directory is visible");
    assert!(exists("usr/share/doc/readme") && exists("etc/hostname") && exists("etc/added"));
    let app: Vec<String> = std::fs::read_dir(root.join("var/lib/app"))
        .expect("opaque dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(app, ["fresh"], "the opaque directory shows only the upper layer's file");
    assert_eq!(std::fs::read_to_string(root.join("etc/greeting")).expect("greeting"), "hello from top\n");
    assert_eq!(std::fs::metadata(root.join("bin/su-ish")).expect("su-ish").mode() & 0o7777, 0o4755);
    let dev = std::fs::symlink_metadata(root.join("dev/null-ish")).expect("device node");
    assert!(dev.file_type().is_char_device() && dev.rdev() == rustix::fs::makedev(1, 3));
    assert_eq!(std::fs::metadata(root.join("home/user/notes.txt")).expect("notes").uid(), 1000);
}

/// Polls `done` until it holds, failing with `what` after `secs` seconds: for states a
/// test observes from outside (another process's progress), not for readiness in racker.
pub fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} (waited {secs} s)");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The write end of a real pipe whose read end is already closed, as a program's
/// output is once its reader (`| head -1`) has gone: every write fails with EPIPE.
pub fn closed_pipe() -> std::process::Stdio {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("running mkfifo");
    assert!(made.success(), "mkfifo {} failed", fifo.display());
    // A non-blocking reader lets the writer open without waiting; then it goes.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .expect("opening the pipe to read");
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).expect("opening the pipe to write");
    drop(reader);
    writer.into()
}

/// Runs `cmd` with its standard output on a pipe nobody reads any more.
pub fn output_into_closed_pipe(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running the command")
}
