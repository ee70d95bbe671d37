//! A running container: the systemd-nspawn process, the container's leader (its PID 1
//! on the host), and how to end it. Teardown kills the leader, which ends the whole PID
//! namespace at once: killing nspawn alone would orphan the container's processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use super::cgroup::ContainerCgroup;
use super::host::Registration;
use super::logfile::JsonLog;
use super::notify::{NotifySocket, Readiness};
use super::spec::RunSpec;
use super::{nspawn, Result, RuntimeError};

/// Where a container's standard streams go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Console {
    /// The caller's terminal or pipes (`racker run` in the foreground).
    #[default]
    Inherit,
    /// Output to the caller's standard error, no input: a tool's standard output stays
    /// its own (postroj's provisioning).
    Stderr,
    /// Standard output dropped (errors still reach the caller's), no input: `--quiet`.
    Discard,
    /// A log file (booted consoles, detached containers).
    Log(PathBuf),
    /// docker's json-file log: stdout and stderr apart, each line stamped (detached
    /// command-mode containers; see logfile.rs).
    Json(PathBuf),
}

impl Console {
    /// Points `cmd`'s standard output and error where a foreground console goes
    /// (a log file is the machine's own business: see [`Machine::start`]).
    pub(crate) fn direct(&self, cmd: &mut Command) {
        match self {
            Console::Inherit | Console::Log(_) | Console::Json(_) => {}
            Console::Stderr => {
                cmd.stdin(Stdio::null());
                if let Ok(err) = rustix::io::dup(std::io::stderr()) {
                    cmd.stdout(Stdio::from(err));
                }
            }
            Console::Discard => {
                cmd.stdin(Stdio::null()).stdout(Stdio::null());
            }
        }
    }
}

pub struct Machine {
    pub name: String,
    child: Child,
    notify: NotifySocket,
    /// What nspawn has reported: the leader, and whether it has booted.
    reported: Readiness,
    console: Option<PathBuf>,
    cgroup: Option<ContainerCgroup>,
    /// Handed over ([`release`](Self::release)): dropping it leaves the container running.
    released: bool,
    /// Writes the json log, for [`Console::Json`].
    json: Option<JsonLog>,
    /// The container's standard input, for an interactive [`Console::Json`].
    stdin: Option<std::process::ChildStdin>,
    /// Its place on a private network, undone after the container ends (dropped after
    /// the teardown in [`Drop`]: fields drop last).
    network: Option<super::network::Attachment>,
}

impl Machine {
    /// Starts systemd-nspawn for `spec` on `rootfs` (its private network, if any, is
    /// configured first: see network/mod.rs; `store_root` holds its record).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store_root: &Path,
        spec: &RunSpec,
        rootfs: &Path,
        name: &str,
        id: &str,
        registration: Registration,
        runtime_dir: &Path,
        console: Console,
    ) -> Result<Machine> {
        let machine = spec.machine.clone().unwrap_or_else(|| nspawn::machine_name(name, id));
        let notify = NotifySocket::bind(runtime_dir, id)?;
        let mut spec = spec.clone();
        spec.binds.extend(super::identity::binds(&spec, rootfs, runtime_dir, id)?);
        let network = super::network::attach(store_root, &spec, name, id)?;
        if let Some(attachment) = &network {
            spec.netns = Some(attachment.netns.clone());
            spec.binds.extend(attachment.binds.iter().cloned());
        }
        let spec = &spec;
        let mut cmd = nspawn::command(spec, rootfs, &machine, id, registration);
        tracing::debug!("container {id}: {}", nspawn::loggable(&cmd));
        cmd.env("NOTIFY_SOCKET", notify.path());
        let mut json_file = None;
        let console_path = match console {
            Console::Inherit | Console::Stderr | Console::Discard => {
                cmd.stdin(if spec.interactive { Stdio::inherit() } else { Stdio::null() });
                console.direct(&mut cmd);
                None
            }
            Console::Log(path) => {
                // Appended to: a container started again keeps its earlier output, as in docker.
                let mut log = crate::private::create_file(&path, false)
                    .map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
                std::io::Seek::seek(&mut log, std::io::SeekFrom::End(0))
                    .map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
                let err = log.try_clone().map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
                cmd.stdin(Stdio::null()).stdout(log).stderr(err);
                Some(path)
            }
            Console::Json(path) => {
                json_file = Some(JsonLog::create(&path)?);
                // `-i`: input comes later, from `attach` (see attach.rs), through a pipe.
                cmd.stdin(if spec.interactive { Stdio::piped() } else { Stdio::null() });
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
        };
        // Without a terminal, nspawn gets its own process group: racker forwards signals
        // itself, once. With one, nspawn must own the terminal's foreground.
        if !spec.tty {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        // Every container in a cgroup of its own: the handle on all its processes, also
        // once nspawn is gone (see cgroup.rs).
        let own_cgroup = registration == Registration::Direct && !spec.cgroup.is_empty();
        let cgroup = own_cgroup.then(|| ContainerCgroup::create(&spec.cgroup)).flatten();
        if let Some(cgroup) = &cgroup {
            cgroup.enter_on_spawn(&mut cmd);
        }
        if let Err(e) = super::limits::apply(spec, registration, cgroup.is_some()) {
            if let Some(cgroup) = &cgroup {
                let _ = cgroup.remove();
            }
            return Err(e);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(source) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(RuntimeError::Spawn { program: "systemd-nspawn".into(), source });
            }
        };
        let json = match (json_file, child.stdout.take(), child.stderr.take()) {
            (Some(file), Some(out), Some(err)) => Some(JsonLog::start(file, out, err)),
            _ => None,
        };
        let stdin = child.stdin.take();
        Ok(Machine {
            json,
            stdin,
            name: machine,
            child,
            notify,
            reported: Readiness::default(),
            console: console_path,
            cgroup,
            released: false,
            network,
        })
    }

    /// The container's standard input (an interactive detached container), once.
    pub(crate) fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.stdin.take()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn leader(&self) -> Option<i32> {
        self.reported.leader
    }

    /// The leader PID, which nspawn reports right after it starts the container
    /// (None if nspawn failed first).
    pub fn leader_now(&mut self) -> Option<i32> {
        let _ = self.notify.wait(&mut self.child, &mut self.reported, false, Duration::from_secs(10));
        self.reported.leader
    }

    /// Waits for the leader PID (and, for a boot, READY=1). On a timeout or an early
    /// death the container is torn down and the error carries the console's last lines.
    pub fn wait_started(&mut self, boot: bool, timeout: Duration) -> Result<i32> {
        match self.notify.wait(&mut self.child, &mut self.reported, boot, timeout) {
            Ok(()) => self.reported.leader.ok_or(RuntimeError::ExitedEarly { status: -1 }),
            Err(err) => {
                let tail = self.console_tail(15);
                let _ = self.terminate();
                Err(match tail {
                    Some(tail) if !tail.is_empty() => RuntimeError::WithConsole { source: Box::new(err), tail },
                    _ => err,
                })
            }
        }
    }

    /// The last `lines` lines of the console log, if it is logged.
    pub fn console_tail(&self, lines: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.console.as_ref()?).ok()?;
        let all: Vec<&str> = text.lines().collect();
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Runs `spec.argv` inside the booted container, with the caller's stdio.
    pub fn enter(&self, spec: &RunSpec, ids: Option<(u32, u32)>) -> Result<Command> {
        let leader = self.reported.leader.ok_or(RuntimeError::ExitedEarly { status: -1 })?;
        let mut cmd = nspawn::enter(spec, leader, ids)?;
        cmd.stdin(if spec.interactive { Stdio::inherit() } else { Stdio::null() });
        Ok(cmd)
    }

    /// Waits for nspawn to end; its status is the command's (command mode).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        let status =
            self.child.wait().map_err(|source| RuntimeError::Spawn { program: "systemd-nspawn".into(), source })?;
        // The log is complete before the end is recorded: `logs -f` stops at its writer's end.
        if let Some(json) = &mut self.json {
            // Processes that outlived a killed nspawn still hold the log's pipes: the
            // container is over, so they go now, or the log would never end.
            if let Some(cgroup) = &self.cgroup {
                let _ = cgroup.kill_all(super::run::KILL_TIMEOUT);
            }
            json.finish();
        }
        Ok(status)
    }

    /// Ends the container now: SIGKILL to its leader ends every process in it, then
    /// nspawn exits and is reaped; whatever outlived nspawn goes with its cgroup.
    pub fn terminate(&mut self) -> Result<()> {
        if let Ok(None) = self.child.try_wait() {
            self.kill_nspawn_side();
        }
        match &self.cgroup {
            Some(cgroup) => cgroup
                .kill_all(super::run::KILL_TIMEOUT)
                .map_err(|e| RuntimeError::Left { name: self.name.clone(), what: format!("not ended: cgroup {e}") }),
            None => Ok(()),
        }
    }

    /// Lets the container outlive this handle and this process: nspawn keeps running (in
    /// its own process group and cgroup, so neither the caller's signals nor its exit
    /// reach it), and whoever holds its record ends it later (`racker rm -f`).
    pub fn release(&mut self) {
        self.released = true;
        if let Some(network) = &mut self.network {
            network.keep();
        }
    }

    fn kill_nspawn_side(&mut self) {
        // Not yet reported (nspawn stuck before it said): its whole cgroup, or without one
        // nspawn's own children, the leader among them, and nspawn only when it has none.
        let targets = match (self.reported.leader, &self.cgroup) {
            (Some(leader), _) => vec![leader],
            (None, Some(cgroup)) => {
                let _ = cgroup.kill_all(super::run::KILL_TIMEOUT);
                Vec::new()
            }
            (None, None) => Some(children(self.pid())).filter(|c| !c.is_empty()).unwrap_or_else(|| vec![self.pid()]),
        };
        for pid in targets.into_iter().filter_map(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        // nspawn tears its side down once the container is gone; do not wait forever.
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.wait();
    }
}

/// The children of process `pid` (its leader thread's: nspawn does not fork from others).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = self.terminate() {
            tracing::warn!("{e}");
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = cgroup.remove() {
                tracing::warn!("leaving cgroup {e}");
            }
        }
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to a process group while the guard lives,
/// so that Ctrl-C and `kill` reach the container while racker stays to clean up.
pub struct SignalForwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalForwarder {
    /// Forwards to every process of group `pgid`.
    pub fn to_group(pgid: i32) -> Result<SignalForwarder> {
        Self::forward(rustix::process::kill_process_group, pgid)
    }

    /// Forwards to process `pid` alone (a container's leader, for `attach`).
    pub fn to_process(pid: i32) -> Result<SignalForwarder> {
        Self::forward(rustix::process::kill_process, pid)
    }

    fn forward(
        send: impl Fn(Pid, Signal) -> rustix::io::Result<()> + Send + 'static,
        target: i32,
    ) -> Result<SignalForwarder> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
            .map_err(|source| RuntimeError::Spawn { program: "signal handler".into(), source })?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for signal in signals.forever() {
                if let (Some(pid), Ok(sig)) = (Pid::from_raw(target), Signal::from_named_raw(signal).ok_or(())) {
                    let _ = send(pid, sig);
                }
            }
        });
        Ok(SignalForwarder { handle, thread: Some(thread) })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
