//! A cgroup of its own for every container on hosts without machined. There nspawn
//! `--keep-unit` puts the container into `payload` below the cgroup nspawn runs in: every
//! container started from one cgroup would share that tree, a booted systemd would manage
//! it with the others, and once nspawn is gone nothing would tell one container's
//! processes from another's. So nspawn is started in `<caller's cgroup>/racker-<id>`, and
//! the tree is the container: its processes are found, ended and waited for through it,
//! from any racker process, by the paths recorded with the container. (With machined,
//! the container's machine scope is its cgroup, systemd's to make and remove.)
// unsafe: pre_exec, to join the cgroup between fork and exec.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

const ROOT: &str = "/sys/fs/cgroup";

pub struct ContainerCgroup {
    /// The cgroup in each hierarchy systemd tools use: cgroup2 (at the root, or at
    /// `unified/` on hybrid hosts) and v1 `name=systemd` where it exists. nspawn moves the
    /// container by its path in one of them and mirrors it into the other.
    dirs: Vec<PathBuf>,
    /// Made and removed by racker; not a machine's scope, which systemd makes when
    /// machined registers the container and removes once it is empty.
    owned: bool,
}

/// Processes of a container that would not end, or a cgroup that would not go.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct CgroupLeft {
    pub path: PathBuf,
    pub reason: String,
}

impl ContainerCgroup {
    /// Where container `id`'s cgroup goes when this process starts it: beside this
    /// process's own cgroup in each hierarchy (none without a cgroup file system).
    pub fn paths_for(id: &str) -> Vec<PathBuf> {
        own_cgroups().into_iter().map(|own| own.join(name(id))).collect()
    }

    /// The cgroup at `dirs` (as recorded with its container), whether or not it exists.
    pub fn at(dirs: Vec<PathBuf>) -> ContainerCgroup {
        ContainerCgroup { dirs, owned: true }
    }

    /// The scope machined's systemd puts machine `machine` in
    /// (`machine.slice/machine-<escaped name>.scope`), in each hierarchy systemd tracks it.
    pub fn of_machine(machine: &str) -> ContainerCgroup {
        let scope = format!("machine.slice/machine-{}.scope", unit_name_escape(machine));
        let (v2, named) = hierarchies();
        ContainerCgroup { dirs: v2.into_iter().chain(named).map(|root| root.join(&scope)).collect(), owned: false }
    }

    /// Creates the cgroup at `dirs`, or None where that fails (nspawn then does as it
    /// would without racker).
    pub fn create(dirs: &[PathBuf]) -> Option<ContainerCgroup> {
        let cgroup = ContainerCgroup::at(dirs.to_vec());
        for dir in dirs {
            if let Err(e) = std::fs::create_dir(dir) {
                tracing::debug!("no cgroup of its own for the container: {}: {e}", dir.display());
                let _ = cgroup.remove();
                return None;
            }
        }
        (!dirs.is_empty()).then_some(cgroup)
    }

    /// Makes the process `cmd` spawns join the cgroup before it executes.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let procs: Vec<CString> = self
            .dirs
            .iter()
            .filter_map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok())
            .collect();
        // SAFETY: between fork and exec only open(2), write(2) and close(2) run, which are
        // async-signal-safe, on paths allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &procs {
                    let fd = rustix::fs::open(file.as_c_str(), rustix::fs::OFlags::WRONLY, rustix::fs::Mode::empty())?;
                    rustix::io::write(&fd, b"0")?;
                }
                Ok(())
            });
        }
    }

    /// Whether any process is left in the cgroup or below it.
    pub fn populated(&self) -> bool {
        match self.events() {
            Some(events) => read_populated(&events).unwrap_or(false),
            None => self.dirs.iter().any(|dir| !pids_below(dir).is_empty()),
        }
    }

    /// The processes in the cgroup and below it, in every hierarchy, each once.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.dirs.iter().flat_map(|dir| pids_below(dir)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The cgroup's directories, one per hierarchy (and per v1 controller of its limits).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Ends every process in the cgroup and below it, and waits until none is left (at
    /// most `timeout`): nspawn, the container's init and whatever they started.
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupLeft> {
        if !self.populated() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        // A process leaves its cgroup early in its exit; a PID namespace's init then still
        // waits for its children. Their pidfds tell when they are done.
        let exiting: Vec<_> = self
            .dirs
            .iter()
            .flat_map(|dir| pids_below(dir))
            .filter_map(|pid| {
                rustix::process::pidfd_open(Pid::from_raw(pid)?, rustix::process::PidfdFlags::empty()).ok()
            })
            .collect();
        match self.events() {
            Some(events) if std::fs::write(events.with_file_name("cgroup.kill"), b"1").is_ok() => {
                self.wait_empty(&events, timeout)?
            }
            // Kernels before 5.14 and v1-only hosts: each process by its pid, again until
            // none is left, as a process may fork while it is being killed.
            _ => self.kill_each(timeout)?,
        }
        for pidfd in &exiting {
            let left = deadline.saturating_duration_since(Instant::now());
            let spec = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
            let mut fds = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
            if let Ok(0) = rustix::event::poll(&mut fds, Some(&spec)) {
                return Err(self.left(timeout));
            }
        }
        Ok(())
    }

    /// Waits until the cgroup is empty: by `cgroup.events`, which the kernel notifies
    /// when `populated` changes, so this wakes when the last process exits.
    fn wait_empty(&self, events: &Path, timeout: Duration) -> Result<(), CgroupLeft> {
        let deadline = Instant::now() + timeout;
        let Ok(mut file) = std::fs::File::open(events) else { return Ok(()) };
        loop {
            // Reading through the descriptor arms it: a change after it wakes the poll.
            let mut text = String::new();
            let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
            if read.is_err() || parse_populated(&text) != Some(true) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.left(timeout));
            }
            let spec = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
            let mut fds = [rustix::event::PollFd::new(&file, rustix::event::PollFlags::PRI)];
            match rustix::event::poll(&mut fds, Some(&spec)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// SIGKILL to every pid in the tree until it is empty: without `cgroup.kill` and
    /// without `cgroup.events` there is nothing to wait on but the tree itself.
    fn kill_each(&self, timeout: Duration) -> Result<(), CgroupLeft> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids: Vec<i32> = self.dirs.iter().flat_map(|dir| pids_below(dir)).collect();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.left(timeout));
            }
            for pid in pids.into_iter().filter_map(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the cgroup and what nspawn and the container's systemd made below it,
    /// deepest first; once the container's processes are gone, nothing holds them.
    pub fn remove(&self) -> Result<(), CgroupLeft> {
        if !self.owned {
            return Ok(());
        }
        let mut failed = None;
        for dir in &self.dirs {
            let mut tree = Vec::new();
            collect_dirs(dir, &mut tree);
            for cgroup in tree.iter().rev() {
                match std::fs::remove_dir(cgroup) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => failed = Some(CgroupLeft { path: cgroup.clone(), reason: format!("removing it: {e}") }),
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Freezes (`pause`) or thaws (`unpause`) every process of the container through
    /// cgroup2's `cgroup.freeze`, and waits until the kernel reports it done
    /// (`frozen` in `cgroup.events`, which it notifies on).
    pub fn freeze(&self, frozen: bool, timeout: Duration) -> Result<(), CgroupLeft> {
        let Some(events) = self.events() else {
            let path = self.dirs.first().cloned().unwrap_or_default();
            return Err(CgroupLeft { path, reason: "no cgroup2 freezer for the container".into() });
        };
        let control = events.with_file_name("cgroup.freeze");
        std::fs::write(&control, if frozen { "1" } else { "0" })
            .map_err(|e| CgroupLeft { path: control.clone(), reason: format!("writing it: {e}") })?;
        let deadline = Instant::now() + timeout;
        let Ok(mut file) = std::fs::File::open(&events) else { return Ok(()) };
        loop {
            let mut text = String::new();
            let read = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
            if read.is_err() || parse_field(&text, "frozen ") == Some(frozen) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let what = if frozen { "freeze" } else { "thaw" };
                return Err(CgroupLeft { path: events, reason: format!("did not {what} within {timeout:?}") });
            }
            let spec = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
            let mut fds = [rustix::event::PollFd::new(&file, rustix::event::PollFlags::PRI)];
            let _ = rustix::event::poll(&mut fds, Some(&spec));
        }
    }

    /// Whether the container is frozen (`pause`d).
    pub fn frozen(&self) -> bool {
        self.events()
            .and_then(|events| std::fs::read_to_string(events).ok())
            .is_some_and(|text| parse_field(&text, "frozen ") == Some(true))
    }

    /// The cgroup2 directory's `cgroup.events`, where the kernel has one.
    fn events(&self) -> Option<PathBuf> {
        self.dirs.iter().map(|dir| dir.join("cgroup.events")).find(|events| events.exists())
    }

    fn left(&self, timeout: Duration) -> CgroupLeft {
        let reason = format!("its processes did not end within {timeout:?} of SIGKILL");
        CgroupLeft { path: self.dirs.first().cloned().unwrap_or_default(), reason }
    }
}

/// `populated` of a `cgroup.events` file; None if it is gone (the cgroup with it).
fn read_populated(events: &Path) -> Option<bool> {
    parse_populated(&std::fs::read_to_string(events).ok()?)
}

fn parse_populated(text: &str) -> Option<bool> {
    parse_field(text, "populated ")
}

/// A boolean field (`populated `, `frozen `) of a `cgroup.events` text.
fn parse_field(text: &str, field: &str) -> Option<bool> {
    text.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim() != "0")
}

/// The pids in the cgroup `dir` and below it.
fn pids_below(dir: &Path) -> Vec<i32> {
    let mut tree = Vec::new();
    collect_dirs(dir, &mut tree);
    tree.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|procs| procs.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

/// The cgroup directory name of container `id`.
pub(super) fn name(id: &str) -> String {
    format!("racker-{}", &id[..32.min(id.len())])
}

/// This process's own cgroup in each hierarchy that holds containers' cgroups: cgroup2
/// (at the root, or at `unified/` on hybrid hosts) and v1 `name=systemd` where it exists.
fn own_cgroups() -> Vec<PathBuf> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else { return Vec::new() };
    // Lines are `hierarchy-id:controllers:path`; cgroup2's has no controllers.
    let path_of = |wanted: &str| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            (parts.next()? == wanted).then(|| parts.next()).flatten().map(|p| p.trim_end_matches('/'))
        })
    };
    let (v2, named) = hierarchies();
    let mut dirs = Vec::new();
    if let (Some(path), Some(root)) = (path_of(""), v2) {
        dirs.push(PathBuf::from(format!("{}{path}", root.display())));
    }
    if let (Some(path), Some(root)) = (path_of("name=systemd"), named) {
        dirs.push(PathBuf::from(format!("{}{path}", root.display())));
    }
    dirs
}

/// Where the hierarchies systemd tools use are mounted: cgroup2 (at the root, or at
/// `unified/` on hybrid hosts) and v1 `name=systemd`, where they are.
fn hierarchies() -> (Option<PathBuf>, Option<PathBuf>) {
    let mounted = |dir: &Path| dir.join("cgroup.procs").exists();
    let v2 = [PathBuf::from(ROOT), Path::new(ROOT).join("unified")].into_iter().find(|m| mounted(m));
    let named = Some(Path::new(ROOT).join("systemd")).filter(|m| mounted(m));
    (v2, named)
}

/// A name as systemd escapes it into a unit name (`unit_name_escape`): `-`, `\` and
/// what a unit name cannot hold as `\xNN`, a leading `.` too.
fn unit_name_escape(name: &str) -> String {
    let mut escaped = String::new();
    for (i, b) in name.bytes().enumerate() {
        let kept = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        match (b, kept) {
            (b'/', _) => escaped.push('-'),
            (_, true) => escaped.push(b as char),
            (_, false) => escaped.push_str(&format!("\\x{b:02x}")),
        }
    }
    escaped
}

/// `dir` and the directories below it, parents before children.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    out.push(dir.to_owned());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerCgroup;
    use std::process::{Child, Command};
    use std::time::Duration;

    #[test]
    fn machine_names_escape_as_systemd_escapes_them() {
        assert_eq!(super::unit_name_escape("web"), "web");
        assert_eq!(super::unit_name_escape("web-1.example"), "web\\x2d1.example");
        assert_eq!(super::unit_name_escape(".x_y:z"), "\\x2ex_y:z");
        let scope = ContainerCgroup::of_machine("racker-ab12");
        assert!(
            scope.dirs.iter().all(|d| d.ends_with("machine.slice/machine-racker\\x2dab12.scope")),
            "{:?}",
            scope.dirs
        );
    }

    /// A cgroup for one test with a shell and its background child in it; whatever is
    /// left is killed and removed when it is dropped, also when the test fails.
    struct Populated {
        cgroup: ContainerCgroup,
        shell: Child,
    }

    impl Populated {
        fn new() -> Populated {
            assert!(rustix::process::geteuid().is_root(), "this test needs root (cgroups)");
            let id = format!("{:032x}", rand::random::<u128>());
            let cgroup = ContainerCgroup::create(&ContainerCgroup::paths_for(&id)).expect("a cgroup of its own");
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "sleep 1000 & echo forked; exec sleep 1001"]).stdout(std::process::Stdio::piped());
            cgroup.enter_on_spawn(&mut cmd);
            let mut shell = cmd.spawn().expect("spawn");
            let mut line = String::new();
            let stdout = shell.stdout.take().expect("stdout");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
            assert_eq!(line, "forked\n");
            Populated { cgroup, shell }
        }
    }

    impl Drop for Populated {
        fn drop(&mut self) {
            let _ = self.cgroup.kill_each(Duration::from_secs(5));
            let _ = self.shell.wait();
            let _ = self.cgroup.remove();
        }
    }

    #[test]
    fn cgroup_kill_ends_every_process_and_the_empty_cgroup_goes() {
        let mut test = Populated::new();
        assert!(test.cgroup.populated());
        test.cgroup.kill_all(Duration::from_secs(10)).expect("killed");
        assert!(!test.cgroup.populated());
        assert!(test.shell.try_wait().expect("wait").is_some(), "the shell was killed");
        test.cgroup.remove().expect("removed");
        assert!(test.cgroup.dirs.iter().all(|d| !d.exists()), "{:?}", test.cgroup.dirs);
        assert!(test.cgroup.remove().is_ok(), "removing a removed cgroup is fine");
    }

    #[test]
    fn without_cgroup_kill_each_process_is_killed_by_its_pid() {
        let mut test = Populated::new();
        let pids = super::pids_below(&test.cgroup.dirs[0]);
        assert_eq!(pids.len(), 2, "the shell and its child: {pids:?}");
        test.cgroup.kill_each(Duration::from_secs(10)).expect("killed");
        assert!(super::pids_below(&test.cgroup.dirs[0]).is_empty());
        assert!(test.shell.try_wait().expect("wait").is_some(), "the shell was killed");
    }
}
