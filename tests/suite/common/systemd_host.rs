#![allow(dead_code)]
//! A real systemd host, for the path nearly every user takes and this machine does not:
//! a Debian root with systemd-container booted by systemd-nspawn, so that systemd is its
//! PID 1 with machined on its system bus. The racker and postroj binaries and the test's
//! store are bound in at their own paths, so a [`TempStore`] works on both sides; racker
//! inside registers its containers with that machined.
//!
//! The guard powers the host off (and kills what is left) on drop, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{images, TempStore};

/// How long a host may take to boot: systemd under a loaded suite (four threads on two
/// cores) has been seen to take a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Hosts booting at once: each boot is CPU-bound work of its own; more at a time only
/// makes each slower.
static BOOTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cgroup v1 controllers a host can be given for resource limits (cgroup v2 hosts
/// have them in the unified hierarchy); systemd takes cpu only with cpuacct beside it.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

pub struct SystemdHost {
    pub name: String,
    /// Controller hierarchies bound in writable, with the groups they had before the boot:
    /// the host's systemd makes its slices there, which the drop removes again.
    delegated: Vec<(PathBuf, Vec<PathBuf>)>,
    nspawn: Child,
    /// The host's PID 1, seen from outside.
    leader: i32,
    /// Upper and work directories of the root's overlay, and its mount point.
    dir: tempfile::TempDir,
}

/// The cached host root, unpacked once from its tarball (the lower layer of every host).
fn lower() -> PathBuf {
    let tarball = images::debian_systemd_host_tarball();
    let lower = tarball.with_extension("root");
    let lock = std::fs::File::create(tarball.with_extension("lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let done = lower.join(".unpacked");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&lower);
        std::fs::create_dir_all(&lower).expect("mkdir lower");
        let status = Command::new("tar")
            .args(["-x", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
            .arg(&lower)
            .arg("-f")
            .arg(&tarball)
            .status()
            .expect("tar");
        assert!(status.success(), "unpacking {}", tarball.display());
        std::fs::write(&done, b"").expect("marker");
    }
    lower
}

/// The groups directly below cgroup directory `dir`.
fn subgroups(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries.map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// Removes cgroup `dir` with every group below it, deepest first (a group goes with
/// rmdir once it holds no process).
fn remove_group(dir: &Path) {
    for sub in subgroups(dir) {
        remove_group(&sub);
    }
    let _ = std::fs::remove_dir(dir);
}

/// The children of process `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|l| l.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

impl SystemdHost {
    /// Boots a host that sees `store` (bound in at its own path) and waits until its
    /// systemd reports the system running.
    pub fn boot(store: &TempStore) -> SystemdHost {
        SystemdHost::boot_with(store, false)
    }

    /// [`Self::boot`], with this machine's cgroup v1 controllers (where it has them)
    /// bound in writable, as a host's own systemd has them: nspawn otherwise gives a
    /// container read-only controllers, and limits would be recorded but not written.
    /// One such host at a time: they share the controllers' top-level groups.
    pub fn boot_with_controllers(store: &TempStore) -> SystemdHost {
        SystemdHost::boot_with(store, true)
    }

    fn boot_with(store: &TempStore, controllers: bool) -> SystemdHost {
        super::require_root();
        let lower = lower();
        let dir = tempfile::Builder::new().prefix("racker-systemd-host-").tempdir_in("/var/tmp").expect("tempdir");
        let (upper, work, root) = (dir.path().join("upper"), dir.path().join("work"), dir.path().join("root"));
        for d in [&upper, &work, &root] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        let status = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&root).status();
        assert!(status.is_ok_and(|s| s.success()), "mounting the host's root");
        // What an installed Debian has and mmdebstrap does not write: localhost resolves.
        std::fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            .expect("the host's /etc/hosts");
        let name = format!("rkhost-{}", &dir.path().file_name().expect("name").to_string_lossy()[20..]);
        let name = name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
        let bin = Path::new(env!("CARGO_BIN_EXE_racker")).parent().expect("bin dir").to_owned();
        let store_root = store.root().display().to_string();
        let _booting = BOOTING.lock().unwrap_or_else(|e| e.into_inner());
        let uuid =
            std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random uuid").trim().replace('-', "");
        let delegated: Vec<(PathBuf, Vec<PathBuf>)> = match controllers {
            true => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new("/sys/fs/cgroup").join(c))
                .filter(|d| rustix::fs::statfs(d).is_ok_and(|s| s.f_type == 0x0027_e0eb))
                .map(|d| {
                    let before = subgroups(&d);
                    (d, before)
                })
                .collect(),
            false => Vec::new(),
        };
        let mut nspawn = Command::new("systemd-nspawn");
        for (dir, _) in &delegated {
            nspawn.arg(format!("--bind={0}:{0}", dir.display()));
        }
        let nspawn = nspawn
            .args(["--quiet", "--register=no", "--keep-unit", "--boot", "--capability=all", "--link-journal=no"])
            .arg("--system-call-filter=@mount @privileged @keyring")
            .arg("--bind-ro=/sys/fs/cgroup:/sys/fs/cgroup:norbind")
            .arg(format!("--directory={}", root.display()))
            .arg(format!("--machine={name}"))
            .arg(format!("--uuid={uuid}"))
            .arg(format!("--bind={store_root}:{store_root}"))
            .arg(format!("--bind-ro={}:{}", bin.display(), bin.display()))
            .arg(format!("--bind={0}:{0}", store.private_dir().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn");
        let mut host = SystemdHost { name, delegated, leader: 0, nspawn, dir };
        host.wait_booted();
        host
    }

    fn wait_booted(&mut self) {
        let start = Instant::now();
        let mut state = String::new();
        while start.elapsed() < BOOT_TIMEOUT {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("the systemd host {} ended while booting: {status}", self.name);
            }
            if self.leader == 0 {
                // nspawn's one child, once it runs systemd, is the host's PID 1.
                let kids = children(self.nspawn.id() as i32);
                let comm = |p: &i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if let Some(pid) = kids.iter().find(|p| comm(p).trim() == "systemd") {
                    self.leader = *pid;
                }
            } else {
                let out = self.command(&["systemctl", "is-system-running"]).output().expect("nsenter");
                state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if state == "running" || state == "degraded" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the systemd host {} did not boot in {BOOT_TIMEOUT:?} (state {state:?})", self.name);
    }

    pub fn leader_pid(&self) -> i32 {
        self.leader
    }

    /// `args` in the host's namespaces, as a process of the host's root (outside any
    /// unit of its systemd: use [`Self::scope`] or [`Self::service`] for racker).
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a", "--"]).args(args);
        cmd.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    /// `args` in a transient scope of the host's systemd, as a login shell's commands run.
    pub fn scope<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = self.command(&["systemd-run", "--scope", "--quiet", "--collect", "--"]);
        cmd.args(args);
        cmd
    }

    /// `args` as a transient service of the host's systemd (as from a unit file), its
    /// output piped back; the unit ends with its main process.
    pub fn service<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd =
            self.command(&["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec", "--"]);
        cmd.args(args);
        cmd
    }

    /// The output of `args` in the host, insisting on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("nsenter");
        assert!(out.status.success(), "{args:?} in the systemd host failed: {}{}", super::err(&out), super::out(&out));
        super::out(&out)
    }

    /// racker on `store`, in a scope of the host, whatever its exit status.
    pub fn racker(&self, store: &TempStore, args: &[&str]) -> Output {
        self.scope(&store.argv(env!("CARGO_BIN_EXE_racker"), args)).output().expect("nsenter")
    }

    /// racker on `store` in the host, insisting on success; its standard output.
    pub fn racker_ok(&self, store: &TempStore, args: &[&str]) -> String {
        let out = self.racker(store, args);
        assert!(
            out.status.success(),
            "racker {args:?} in the systemd host failed ({}): {}{}\n{}",
            out.status,
            super::err(&out),
            super::out(&out),
            self.diagnose()
        );
        super::out(&out)
    }

    /// What the host's machined and systemd say, for a failing test's message: its
    /// machines, racker's and machined's units, their cgroups and the journal's end.
    pub fn diagnose(&self) -> String {
        let ask = |args: &[&str]| {
            let o = self.command(args).output().map(|o| super::out(&o) + &super::err(&o));
            format!("$ {}\n{}", args.join(" "), o.unwrap_or_else(|e| e.to_string()))
        };
        [
            ask(&["machinectl", "list", "--no-pager"]),
            ask(&["systemctl", "list-units", "--all", "--no-pager", "machine-*", "racker-*"]),
            ask(&["systemd-cgls", "--no-pager", "-u", "machine.slice"]),
            ask(&["journalctl", "--no-pager", "-n", "60"]),
        ]
        .join("\n")
    }

    /// `machinectl list` of the host: the names of the machines machined knows.
    pub fn machines(&self) -> Vec<String> {
        self.ok(&["machinectl", "list", "--no-legend", "--no-pager"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// Units of the host matching `pattern`, in every state (`systemctl list-units --all`).
    pub fn units(&self, pattern: &str) -> Vec<String> {
        self.ok(&["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager", pattern])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// A file of the host's, as text ("" if it cannot be read).
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/root{path}", self.leader)).unwrap_or_default()
    }

    /// Whether `path` exists in the host.
    pub fn exists(&self, path: &str) -> bool {
        Path::new(&format!("/proc/{}/root{path}", self.leader)).exists()
    }

    /// Mounts inside the host below `root` (not `root` itself: the host's bind of it).
    pub fn mounts_below(&self, root: &Path) -> Vec<String> {
        let below = format!("{}/", root.display());
        let mountinfo = self.read("/proc/1/mountinfo");
        mountinfo
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&below)))
            .map(str::to_owned)
            .collect()
    }

    /// Nothing of racker's is left in the host: no machine registered, no scope of
    /// racker's or of a machine, no mount of `store`'s. A scope goes once systemd sees
    /// it empty, a moment after its last process: give that up to 10 s.
    pub fn assert_clean(&self, store: &TempStore) {
        assert_eq!(self.machines(), Vec::<String>::new(), "machines left registered");
        let units = || [self.units("machine-*"), self.units("racker-*")].concat();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !units().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(units(), Vec::<String>::new(), "units left behind");
        assert_eq!(self.mounts_below(store.root()), Vec::<String>::new(), "mounts left in the host");
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        if self.leader != 0 {
            // A clean power-off ends every container inside (and their machined scopes).
            let _ = self.command(&["systemctl", "poweroff", "--no-block"]).output();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.nspawn.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Ok(None) = self.nspawn.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.leader) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        let root = self.dir.path().join("root");
        let _ = rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH);
        for (dir, before) in &self.delegated {
            subgroups(dir).iter().filter(|g| !before.contains(g)).for_each(|g| remove_group(g));
        }
    }
}
