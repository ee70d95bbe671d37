//! A real one-node Slurm cluster for tests: munged, slurmctld and slurmd (the Debian
//! packages) as children of the test, with a munge key, socket, state, spool, logs and
//! slurm.conf of their own in one private temporary directory. Nothing of the machine's
//! Slurm or munge is used or changed (/etc/slurm, /etc/munge, /run), the daemons listen
//! on 127.0.0.1 only, on ports picked at run time, so that clusters of parallel tests
//! (and of parallel suite runs) do not meet.
//!
//! No cgroups: jobs are tracked by parent process (proctrack/linuxproc), with no task
//! plugin and no accounting, as on a machine whose PID 1 is no systemd.
//!
//! The guard cancels every job, stops the daemons, kills what is left of its jobs and
//! removes the directory on drop, also when a test fails (then it prints the daemons'
//! logs first).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a daemon may take to come up: slurmctld and slurmd take a few seconds, more
/// under a loaded suite (four threads on two cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to end on SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The one partition, the default for every job.
pub const PARTITION: &str = "racker-test";

/// Clusters started by this process: their names only have to differ from each other's.
static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// Ports handed out by this process: a port picked by binding port 0 is free again once
/// its listener is closed, and a second cluster starting at the same moment must not get
/// it before the first one's daemon binds it.
static PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Variables of the environment a client takes its options from (`SBATCH_PARTITION`,
/// `SLURM_JOB_ID`, ...): a suite run inside a job of another Slurm must not hand that
/// job's settings to this cluster.
const CLIENT_PREFIXES: [&str; 6] = ["SLURM_", "SBATCH_", "SQUEUE_", "SINFO_", "SACCT_", "SCANCEL_"];

/// A daemon the cluster owns, with the file its standard output and error go to.
struct Daemon {
    name: &'static str,
    child: Child,
    output: PathBuf,
}

/// A one-node Slurm cluster of its own (munged, slurmctld, slurmd as children of the
/// test) whose node runs several one-CPU jobs at once; stopped and removed on drop, also
/// when the test fails.
pub struct Slurm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    node: String,
    /// Started in order (munged, slurmctld, slurmd), stopped in reverse.
    daemons: Vec<Daemon>,
    /// A failure message has shown the logs already: the drop need not print them again.
    logs_shown: Cell<bool>,
}

/// `name` where Debian installs daemons, whatever the test's PATH holds.
fn sbin(name: &str) -> PathBuf {
    let found = ["/usr/local/sbin", "/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists());
    found.unwrap_or_else(|| PathBuf::from(name))
}

/// A TCP port free on 127.0.0.1 that no other cluster of this process was given.
fn free_port() -> u16 {
    let mut given = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding a free port").port();
        if given.insert(port) {
            return port;
        }
    }
}

/// The machine's short host name: slurmctld runs only on a host named in SlurmctldHost.
fn short_hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").expect("reading /proc/sys/kernel/hostname");
    name.trim().split('.').next().unwrap_or_default().to_owned()
}

/// Memory the node may offer, in MiB: a tenth less than the machine has, as slurmd
/// takes a node that claims more than it finds for misconfigured.
fn real_memory_mib() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib / 1024 * 9 / 10
}

/// `program` for the cluster in `dir` with configuration `conf`: run in `dir`, with
/// `SLURM_CONF` and without the Slurm settings this process was given.
fn in_cluster(mut cmd: Command, dir: &Path, conf: &Path) -> Command {
    for (name, _) in std::env::vars_os() {
        if CLIENT_PREFIXES.iter().any(|p| name.as_bytes().starts_with(p.as_bytes())) {
            cmd.env_remove(name);
        }
    }
    cmd.env("SLURM_CONF", conf).current_dir(dir);
    cmd
}

/// Client `program` (`sinfo`, `sbatch`, ...) of the cluster in `dir`.
fn client(dir: &Path, conf: &Path, program: &str) -> Command {
    in_cluster(Command::new(program), dir, conf)
}

/// The last `n` lines of file `path` ("" if it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Processes (not zombies) of the cluster in `dir`, other than this one, with their
/// command lines: daemons started on its files (munged, slurmctld, slurmd), and what
/// runs for its jobs. slurmstepd and a job's processes are no children of slurmd (it
/// daemonizes them) and are all called alike; they carry the cluster's `SLURM_CONF` in
/// their environment, or run in its directory.
pub fn processes_of(dir: &Path) -> Vec<(i32, String)> {
    let conf = format!("SLURM_CONF={}", dir.join("slurm.conf").display()).into_bytes();
    let below = format!("{}/", dir.display()).into_bytes();
    let own = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == own {
            continue;
        }
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let in_cmdline = cmdline.windows(below.len()).any(|w| w == below);
        let in_environ = environ.split(|b| *b == 0).any(|v| v == conf);
        if in_cmdline || in_environ || cwd.starts_with(dir) {
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_owned()));
        }
    }
    found
}

impl Slurm {
    /// Starts munged, slurmctld and slurmd and waits (up to a minute) until the node is
    /// idle; panics with the daemons' logs if one ends or does not come up.
    pub fn start() -> Slurm {
        super::require_root();
        let dir = tempfile::Builder::new().prefix("racker-slurm-").tempdir().expect("creating the cluster's directory");
        let root = dir.path().to_owned();
        for sub in ["munge", "log", "state", "spool"] {
            fs::create_dir(root.join(sub)).expect("creating the cluster's directories");
        }
        let mut slurm = Slurm {
            conf: root.join("slurm.conf"),
            node: short_hostname(),
            daemons: Vec::new(),
            logs_shown: Cell::new(false),
            dir,
        };

        // A key of its own: the machine's (/etc/munge/munge.key) is munge's, not ours.
        let mut key = [0u8; 1024];
        File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).expect("reading /dev/urandom");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(root.join("munge/munge.key"))
            .and_then(|mut f| f.write_all(&key))
            .expect("writing the munge key");
        let socket = root.join("munge/munge.socket");
        let arg = |name: &str, path: &str| format!("--{name}={}", root.join(path).display());
        let mut munged = Command::new(sbin("munged"));
        // --force: munged refuses to run as root without it.
        munged.args(["--foreground", "--force"]);
        munged.args([
            arg("key-file", "munge/munge.key"),
            arg("socket", "munge/munge.socket"),
            arg("pid-file", "munge/munged.pid"),
            arg("seed-file", "munge/munged.seed"),
            arg("log-file", "log/munged.log"),
        ]);
        slurm.spawn("munged", munged);
        slurm.wait_for("munged to listen on its socket", || std::os::unix::net::UnixStream::connect(&socket).is_ok());

        fs::write(&slurm.conf, slurm.slurm_conf()).expect("writing slurm.conf");
        // An empty SPANK stack: the machine's plugstack.conf may load plugins of its own.
        fs::write(root.join("plugstack.conf"), "").expect("writing plugstack.conf");
        let mut slurmctld = Command::new(sbin("slurmctld"));
        slurmctld.arg("-D").arg("-f").arg(&slurm.conf);
        slurm.spawn("slurmctld", slurmctld);
        let mut slurmd = Command::new(sbin("slurmd"));
        slurmd.arg("-D").arg("-f").arg(&slurm.conf).arg("-N").arg(&slurm.node);
        slurm.spawn("slurmd", slurmd);

        let (dir, conf, node) = (slurm.dir.path().to_owned(), slurm.conf.clone(), slurm.node.clone());
        slurm.wait_for("the node to be idle (sinfo)", || {
            let out = client(&dir, &conf, "sinfo").args(["-h", "-o", "%T", "-n", &node]).output();
            out.is_ok_and(|o| super::out(&o).trim() == "idle")
        });
        slurm
    }

    /// The configuration: the one node with this machine's CPUs and memory, everything
    /// that needs cgroups, accounting or a database off.
    fn slurm_conf(&self) -> String {
        let root = self.dir.path().display();
        let node = &self.node;
        let cluster = format!("rk{}x{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::Relaxed));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = real_memory_mib();
        let (ctld_port, slurmd_port) = (free_port(), free_port());
        format!(
            "\
ClusterName={cluster}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# Both daemons bind their own addresses (127.0.0.1), not every address of the machine.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
PlugStackConfig={root}/plugstack.conf
MailProg=/bin/true
ReturnToService=2
# Schedule as soon as something changes, not at most every 3 s: tests wait for jobs.
SchedulerParameters=batch_sched_delay=0
# Finished jobs stay known (scontrol show job) for the length of a test.
MinJobAge=600
# A cancelled job that ignores SIGTERM gets SIGKILL after this many seconds.
KillWait=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"
        )
    }

    /// Starts daemon `name` in the cluster's directory, its output into a log file beside
    /// the one it writes itself.
    fn spawn(&mut self, name: &'static str, cmd: Command) {
        let output = self.dir.path().join(format!("log/{name}.out"));
        let file = File::create(&output).expect("creating a daemon's output file");
        // SLURM_CONF also for what slurmd starts: slurmstepd is known by it (processes_of).
        let child = in_cluster(cmd, self.dir.path(), &self.conf)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("duplicating a file descriptor"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} (Debian's munge and slurm-wlm packages): {e}"));
        self.daemons.push(Daemon { name, child, output });
    }

    /// Polls `done` every 200 ms until it holds; fails with the daemons' logs when one
    /// of them ends or after [`START_TIMEOUT`].
    fn wait_for(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            let ended = self.daemons.iter_mut().find_map(|d| Some((d.name, d.child.try_wait().ok()??)));
            if let Some((name, status)) = ended {
                panic!("{name} ended ({status}) while waiting for {what}\n{}", self.logs());
            }
            assert!(start.elapsed() < START_TIMEOUT, "waited {START_TIMEOUT:?} for {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A client (`sbatch`, `squeue`, `scancel`, `scontrol`, `sinfo`, `sacct`) of this
    /// cluster, run in its directory (where a job's default output file goes).
    pub fn command(&self, program: &str) -> Command {
        client(self.dir.path(), &self.conf, program)
    }

    /// Runs client `program` with `args`, insisting on success; its standard output.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}): {}{}\n{}",
            out.status,
            super::err(&out),
            super::out(&out),
            self.logs()
        );
        super::out(&out)
    }

    /// Its slurm.conf.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Its directory: keys, sockets, state, spool, logs and slurm.conf.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The name of its one node (the machine's short host name).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The environment a client of this cluster needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SLURM_CONF".to_owned(), self.conf.display().to_string())]
    }

    /// The end of every daemon's output and log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        let mut files: Vec<PathBuf> = self.daemons.iter().map(|d| d.output.clone()).collect();
        files.extend(["munged.log", "slurmctld.log", "slurmd.log"].map(|f| self.dir.path().join("log").join(f)));
        let logs = files.iter().filter(|f| f.exists()).map(|f| format!("--- {} ---\n{}", f.display(), tail(f, 40)));
        logs.collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("--- slurm cluster in {} ---\n{}", self.dir.path().display(), self.logs());
        }
        // Jobs first, while slurmctld can still end them as a user would.
        let slurmctld_runs =
            self.daemons.iter_mut().any(|d| d.name == "slurmctld" && matches!(d.child.try_wait(), Ok(None)));
        if slurmctld_runs {
            let _ = self.command("scancel").args(["--partition", PARTITION]).output();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.command("squeue").args(["-h", "-o", "%i"]).output() {
                    Ok(o) if o.status.success() && !o.stdout.is_empty() => {}
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for daemon in self.daemons.iter_mut().rev() {
            let pid = rustix::process::Pid::from_child(&daemon.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(daemon.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        // What slurmd left running (slurmstepd, jobs that ignored the cancel).
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let left = processes_of(self.dir.path());
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for (pid, _) in left {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
