//! Containers beyond one foreground run: detached containers owned by a monitor
//! process (as conmon owns podman's), and `ps`, `exec`, `stop`, `kill`, `rm`, `logs`.
//! Waiting for a process to end uses a pidfd, never a polling loop.
// unsafe: the monitor adopts its status descriptor; systemd's SIGRTMIN+4 by number.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::attach::InputRelay;
use super::machine::{Console, Machine, SignalForwarder};
use super::restart::{self, Backoff};
use super::run::{
    cgroup_of, check_command, discard, discard_or_warn, exit_code, machine_of, prepare, DiscardUnlessKept,
    DEFAULT_BOOT_TIMEOUT, KILL_TIMEOUT,
};
use super::{nspawn, rootfs, runtime_dir, spec_of, Registration, Result, RunRequest, RunSpec, RuntimeError};
use crate::snapshot;
use crate::store::{ContainerRecord, ContainerState, Leader, Store};

/// The environment variable that tells a monitor which descriptor reports its start.
pub const STATUS_FD_ENV: &str = "RACKER_MONITOR_STATUS_FD";

/// systemd powers off on SIGRTMIN+4 (glibc's SIGRTMIN is 34 on Linux).
const SIGRTMIN_PLUS_4: i32 = 38;

/// Whether process `pid` runs: a zombie (ended, not yet reaped by its parent) does not.
pub(super) fn alive(pid: Option<i64>) -> bool {
    pid.and_then(|p| i32::try_from(p).ok()).and_then(identify).is_some()
}

/// The process `pid` as a container's leader is recorded: with its start time, which
/// no later process given the same pid shares. None if it is gone or a zombie (ended,
/// not yet reaped: an orphan's new parent may take its time).
pub(super) fn identify(pid: i32) -> Option<Leader> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold anything.
    let fields = &stat[stat.rfind(')')? + 1..];
    if matches!(fields.split_whitespace().next(), Some("Z" | "X")) {
        return None;
    }
    let start = fields.split_whitespace().nth(19)?.parse().ok()?;
    Some(Leader { pid: i64::from(pid), start })
}

/// Whether the container's leader lives (whatever its owner does).
pub(super) fn is_running(record: &ContainerRecord) -> bool {
    record.state == ContainerState::Running
        && record.leader.is_some_and(|l| i32::try_from(l.pid).ok().and_then(identify) == Some(l))
}

/// Waits until `pid` has exited, or `timeout` passes; true if it exited.
pub(super) fn wait_exit(pid: Option<i64>, timeout: Duration) -> bool {
    let Some(pid) = pid.and_then(|p| Pid::from_raw(p as i32)) else { return true };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return true };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let spec = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&spec)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return !alive(Some(pid.as_raw_nonzero().get() as i64)),
        }
    }
}

/// Whether anything of the container still runs: its leader, or any process in its
/// cgroup (nspawn, or what outlived a killed nspawn or owner).
pub(super) fn is_live(record: &ContainerRecord) -> bool {
    is_running(record) || cgroup_of(record).populated()
}

/// A container as `ps` shows it: its record, and whether it really runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    #[serde(flatten)]
    pub record: ContainerRecord,
    /// Its leader lives, or some other process of it does: a container is not shown as
    /// exited while anything of it runs, whatever its record says. (One its owner is
    /// still starting is shown as created, as docker does.)
    pub running: bool,
    /// Its processes are frozen (`pause`).
    pub paused: bool,
}

/// Containers, with stale "running" records (their owner died) shown as not running.
pub fn list(store: &Store, all: bool) -> Result<Vec<ContainerStatus>> {
    Ok(store
        .containers()?
        .into_iter()
        .map(|record| {
            let starting = record.state == ContainerState::Created && alive(record.monitor_pid);
            let running = is_running(&record) || (!starting && cgroup_of(&record).populated());
            let paused = running && cgroup_of(&record).frozen();
            ContainerStatus { record, running, paused }
        })
        // docker counts a restarting container as running (between two runs).
        .filter(|c| all || c.running || c.record.state == ContainerState::Restarting)
        .collect())
}

/// `racker run -d`: prepares the container, hands it to a monitor process (`monitor`
/// is the command that runs [`monitor`]), and returns once it runs.
pub fn run_detached(store: &Store, image: &str, request: &RunRequest, monitor: Command) -> Result<ContainerRecord> {
    let prepared = prepare(store, image, request, true)?;
    let unstarted = DiscardUnlessKept::new(store, &*prepared.snapshotter, &prepared.id);
    if !prepared.spec.boot {
        check_command(&prepared.rootfs, &prepared.spec)?;
    }
    hand_to_monitor(&prepared.id, &prepared.name, monitor)?;
    unstarted.keep();
    Ok(store.container(&prepared.id)?)
}

/// Starts `monitor` (the command that runs [`monitor`]) for container `id` and returns
/// once it reports the container running, or with the reason it did not start.
pub(super) fn hand_to_monitor(id: &str, name: &str, mut monitor: Command) -> Result<()> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|source| RuntimeError::Spawn { program: "monitor".into(), source })?;
    // The monitor inherits `theirs` (and only it) to report its start.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .map_err(|e| RuntimeError::Spawn { program: "monitor".into(), source: e.into() })?;
    use std::os::unix::process::CommandExt;
    monitor
        .arg(id)
        .env(STATUS_FD_ENV, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child =
        monitor.spawn().map_err(|source| RuntimeError::Spawn { program: "racker monitor".into(), source })?;
    drop(theirs);
    let mut line = String::new();
    BufReader::new(ours)
        .read_line(&mut line)
        .map_err(|source| RuntimeError::Spawn { program: "racker monitor".into(), source })?;
    match line.trim_end().split_once(' ') {
        Some(("ok", _)) | None if line.starts_with("ok") => {}
        Some(("error", message)) => {
            return Err(RuntimeError::Invalid { what: format!("container {name}"), reason: message.to_owned() });
        }
        _ => {
            let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            return Err(RuntimeError::ExitedEarly { status });
        }
    }
    Ok(())
}

/// The monitor of a detached container: starts it, reports the start on the status
/// descriptor, waits for the end, records it and cleans up (`--rm`).
pub fn monitor(store: &Store, id: &str) -> Result<i32> {
    // SAFETY: the descriptor number comes from run_detached, which left it open for us.
    let status: Option<UnixStream> = std::env::var(STATUS_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse::<i32>().ok())
        .map(|fd| unsafe { UnixStream::from_raw_fd(fd) });
    let record = store.container(id)?;
    if Registration::detect() == Registration::Machined {
        leave_callers_unit(id);
    }
    // The monitor owns the container from here on, also while it starts: `gc` leaves a
    // container alone while its owner lives.
    store.set_container_state(id, ContainerState::Created, None, None)?;
    let spec = spec_of(&record).ok_or_else(|| RuntimeError::Invalid {
        what: format!("container {id}"),
        reason: "no run spec recorded".into(),
    })?;
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    let mut status = status;
    let result = super::start::mount_root(store, &record, &*snapshotter)
        .and_then(|_| supervise(store, id, &record, &spec, &mut status));
    match &result {
        Ok(_) => {}
        Err(e) => report(&status, &format!("error {e}")),
    }
    let code = match &result {
        Ok(code) => *code,
        Err(e) => e.exit_code(),
    };
    if spec.remove {
        discard_or_warn(store, &*snapshotter, id);
    } else {
        super::start::release_root(&*snapshotter, id);
        store.set_container_state(id, ContainerState::Exited, None, Some(code))?;
    }
    result
}

/// Moves the monitor (and the nspawn it starts) into a scope of its own, out of the unit
/// of whoever ran racker: a service running `racker run -d` ends when racker returns, and
/// the container must not end with it. Without the scope it still runs, tied to that unit.
fn leave_callers_unit(id: &str) {
    let scope = super::systemd::monitor_scope(id);
    let entered = super::systemd::SystemBus::connect().and_then(|bus| {
        bus.enter_new_scope(&scope, std::process::id(), &format!("racker container {}", &id[..12.min(id.len())]))
    });
    if let Err(e) = entered {
        tracing::warn!("container {id}: no scope of its own ({e}): it ends with the unit that started it");
    }
}

/// Runs the container until it ends for good: again after each end as its `--restart`
/// policy says, unless the user stopped it. Only the first start is reported on `status`.
fn supervise(
    store: &Store,
    id: &str,
    record: &ContainerRecord,
    spec: &RunSpec,
    status: &mut Option<UnixStream>,
) -> Result<i32> {
    let mut backoff = Backoff::new();
    let mut restarts = 0;
    // `-i`: `attach` reaches the container's stdin through the monitor, over all its runs.
    let input = match spec.interactive && !spec.boot {
        true => Some(InputRelay::serve(&runtime_dir()?, id)?),
        false => None,
    };
    loop {
        let began = Instant::now();
        let code = start_and_wait(store, id, record, spec, status, input.as_ref())?;
        *status = None;
        if restart::stopped_by_user(id) || !spec.flags.restart.restarts_after(code, restarts) {
            return Ok(code);
        }
        restarts += 1;
        store.note_container_restart(id, code, restarts)?;
        let delay = backoff.next(began.elapsed());
        tracing::debug!("container {id} exited with {code}: restart {restarts} in {delay:?}");
        // A stop during the delay ends the container here (checked often: `stop` waits).
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if restart::stopped_by_user(id) {
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
        super::ended::forget(id);
    }
}

/// Writes one line to `racker run -d`, if it still listens.
fn report(status: &Option<UnixStream>, line: &str) {
    if let Some(mut s) = status.as_ref() {
        let _ = writeln!(s, "{line}");
    }
}

/// The monitor's part between preparing and recording the end: starts the container,
/// reports the start, and waits until it ends (booted with a command: until the command
/// does). Returns the exit status; the caller records it and cleans up.
fn start_and_wait(
    store: &Store,
    id: &str,
    record: &ContainerRecord,
    spec: &RunSpec,
    status: &Option<UnixStream>,
    input: Option<&InputRelay>,
) -> Result<i32> {
    let rootfs = spec.rootfs.clone().ok_or_else(|| RuntimeError::Invalid {
        what: format!("container {id}"),
        reason: "no root file system recorded".into(),
    })?;
    let console = spec.console.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("{id}.console")));
    let runtime = runtime_dir()?;
    let output = if spec.boot { console.clone() } else { super::logfile::json_log_path(&console) };
    let mut machine = Machine::start(
        store.root(),
        spec,
        &rootfs,
        &record.name,
        id,
        Registration::detect(),
        &runtime,
        if spec.boot { Console::Log(output.clone()) } else { Console::Json(output.clone()) },
    )?;
    let timeout = Duration::from_secs(spec.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT.as_secs()));
    let leader = machine.wait_started(spec.boot, timeout)?;
    if let Some(input) = input {
        input.connect(machine.take_stdin());
    }
    store.set_container_state(id, ContainerState::Running, identify(leader), None)?;
    report(status, &format!("ok {leader}"));
    if spec.boot && !spec.argv.is_empty() {
        // The container lives as long as its command, as in docker.
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&console)
            .map_err(|source| RuntimeError::Io { path: console.clone(), source })?;
        let err = log.try_clone().map_err(|source| RuntimeError::Io { path: console.clone(), source })?;
        let ids = spec.user.as_deref().and_then(|u| rootfs::resolve_user(&rootfs, u).ok());
        let mut cmd = machine.enter(spec, ids)?;
        let code = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .map(exit_code)
            .map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
        machine.terminate()?;
        Ok(code)
    } else {
        let status = machine.wait()?;
        Ok(super::limits::exit_code(spec, super::ended::command_code(status, id, Some(&output))))
    }
}

/// The container's record, spec and leader, if its leader lives (whatever its owner
/// does: a container whose owner died still runs and must still be stoppable).
fn running(store: &Store, name: &str) -> Result<(ContainerRecord, RunSpec, i32)> {
    let record = store.container(name)?;
    let Some(leader) = record.leader.filter(|_| is_running(&record)) else {
        return Err(RuntimeError::NotRunning { name: record.name });
    };
    let spec = spec_of(&record).unwrap_or_default();
    Ok((record, spec, leader.pid as i32))
}

/// `racker exec`'s options.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    /// `-d`: start the command and return at once; it ends with the container.
    pub detach: bool,
}

/// Runs a command in a running container (either mode), returning its exit status.
pub fn exec(store: &Store, name: &str, opts: &ExecOptions) -> Result<i32> {
    let (record, mut spec, leader) = running(store, name)?;
    for entry in &opts.env {
        let (k, v) = entry.split_once('=').ok_or_else(|| RuntimeError::Invalid {
            what: format!("-e {entry}"),
            reason: "expected KEY=VALUE".into(),
        })?;
        spec.env.retain(|(key, _)| key != k);
        spec.env.push((k.to_owned(), v.to_owned()));
    }
    spec.argv = opts.argv.clone();
    spec.tty = opts.tty;
    spec.interactive = opts.interactive;
    if let Some(w) = &opts.workdir {
        spec.workdir = w.clone();
    }
    let root = std::path::PathBuf::from(format!("/proc/{leader}/root"));
    check_command(&root, &spec)?;
    let ids = opts
        .user
        .as_deref()
        .map(|u| {
            rootfs::resolve_user(&root, u)
                .map_err(|reason| RuntimeError::Invalid { what: format!("--user {u}"), reason })
        })
        .transpose()?;
    if opts.tty && !opts.detach {
        super::pty::pass_term(&mut spec.env);
        let cmd = nspawn::enter(&spec, leader, ids)?;
        return super::pty::Pty::open(&root)?.run(cmd, opts.interactive, "nsenter").map(exit_code);
    }
    let mut cmd = nspawn::enter(&spec, leader, ids)?;
    cmd.stdin(if opts.interactive { Stdio::inherit() } else { Stdio::null() });
    if opts.detach {
        return exec_detached(cmd, &record);
    }
    if !opts.tty {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
    let _signals = if opts.tty { None } else { Some(SignalForwarder::to_group(child.id() as i32)?) };
    child.wait().map(exit_code).map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })
}

/// `exec -d`: the command runs on without racker, in the container's cgroup (so that
/// `stop`, `rm -f` and `gc` find it), its output dropped as docker drops it.
fn exec_detached(mut cmd: Command, record: &ContainerRecord) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    let cgroup = cgroup_of(record);
    if cgroup.populated() {
        cgroup.enter_on_spawn(&mut cmd);
    }
    cmd.spawn().map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
    Ok(0)
}

fn signal_leader(leader: i32, signal: Signal) -> Result<()> {
    let pid = Pid::from_raw(leader).ok_or(RuntimeError::ExitedEarly { status: -1 })?;
    rustix::process::kill_process(pid, signal)
        .map_err(|e| RuntimeError::Io { path: format!("/proc/{leader}").into(), source: e.into() })
}

/// Sends `signal` to the container's leader (its PID 1). SIGKILL ends every process of
/// the container where its owner will not: it is gone, or the leader already is.
pub fn kill(store: &Store, name: &str, signal: Signal) -> Result<()> {
    let record = store.container(name)?;
    let cgroup = cgroup_of(&record);
    let leader = record.leader.filter(|_| is_running(&record));
    if leader.is_none() && !cgroup.populated() {
        return Err(RuntimeError::NotRunning { name: record.name });
    }
    super::start::thaw(&record);
    if let Some(leader) = leader {
        restart::note_stop(&record.id);
        super::ended::note_kill(&record.id, signal.as_raw());
        signal_leader(leader.pid as i32, signal)?;
    }
    if signal == Signal::KILL && (leader.is_none() || !alive(record.monitor_pid)) {
        end_processes(&record)?;
    }
    Ok(())
}

/// Ends every process of the container and waits until they are gone: its leader
/// (which ends its PID namespace, also where it has no cgroup of its own), and everything
/// in its cgroup.
fn end_processes(record: &ContainerRecord) -> Result<()> {
    if let Some(leader) = record.leader.filter(|_| is_running(record)) {
        let _ = signal_leader(leader.pid as i32, Signal::KILL);
        wait_exit(Some(leader.pid), KILL_TIMEOUT);
    }
    // On a systemd host the container's cgroup is its machine's scope: what a killed
    // nspawn left there is machined's to end.
    if Registration::detect() == Registration::Machined {
        super::systemd::SystemBus::connect()
            .and_then(|bus| bus.kill_machine(&machine_of(record), &record.id, KILL_TIMEOUT))
            .map_err(|e| RuntimeError::Left { name: record.name.clone(), what: format!("not ended: {e}") })?;
    }
    cgroup_of(record)
        .kill_all(KILL_TIMEOUT)
        .map_err(|e| RuntimeError::Left { name: record.name.clone(), what: format!("not ended: cgroup {e}") })
}

/// Stops a container as docker does: a polite signal (systemd's poweroff for a booted
/// one, its `--stop-signal` or SIGTERM otherwise), then SIGKILL after `timeout` (None:
/// its `--stop-timeout`, or 10 s). Stopping a stopped one is fine; whatever of it is left
/// once its owner is done (a container whose nspawn or owner was killed) is ended too.
pub fn stop(store: &Store, name: &str, timeout: Option<Duration>) -> Result<()> {
    // Before any signal: its monitor must not start it again (`--restart`).
    restart::note_stop(&store.container(name)?.id);
    let record = match running(store, name) {
        Ok((record, spec, leader)) => {
            super::start::thaw(&record);
            let timeout = timeout
                .unwrap_or(Duration::from_secs(spec.flags.stop_timeout.unwrap_or(super::flags::DEFAULT_STOP_TIMEOUT)));
            let polite = match (spec.boot, spec.flags.stop_signal) {
                // SAFETY: 38 is a valid real-time signal number on Linux.
                (true, _) => unsafe { Signal::from_raw_unchecked(SIGRTMIN_PLUS_4) },
                // SAFETY: parse_signal keeps a stop signal within the kernel's 1..=64.
                (false, Some(n)) => unsafe { Signal::from_raw_unchecked(n) },
                (false, None) => Signal::TERM,
            };
            signal_leader(leader, polite)?;
            if !wait_exit(Some(leader as i64), timeout) {
                super::ended::note_kill(&record.id, Signal::KILL.as_raw());
                let _ = signal_leader(leader, Signal::KILL);
            }
            // The owner records the end and cleans up; wait for it so that the caller sees it.
            wait_exit(record.monitor_pid, Duration::from_secs(30));
            record
        }
        Err(RuntimeError::NotRunning { .. }) => {
            let record = store.container(name)?;
            if record.state == ContainerState::Restarting {
                wait_exit(record.monitor_pid, Duration::from_secs(30));
            }
            record
        }
        Err(e) => return Err(e),
    };
    if alive(record.monitor_pid) && record.state != ContainerState::Exited {
        return Ok(()); // its owner ends the rest (a start that has not reported yet)
    }
    end_processes(&record)
}

/// Removes a container: a running one only with `force` (every process of it killed
/// first). Succeeds only when no process, mount or snapshot of it is left.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<()> {
    let record = store.container(name)?;
    let restarting = record.state == ContainerState::Restarting && alive(record.monitor_pid);
    if is_live(&record) || restarting {
        if !force {
            return Err(RuntimeError::Running { name: record.name });
        }
        restart::note_stop(&record.id);
        super::start::thaw(&record);
        end_processes(&record)?;
        // Its owner, if it lives, sees nspawn end and cleans up: let it finish first.
        if record.state != ContainerState::Exited {
            wait_exit(record.monitor_pid, Duration::from_secs(30));
        }
    }
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    discard(store, &*snapshotter, &record.id)
}

/// Writes the container's console log to `out`, and for a running booted container
/// its journal too.
pub fn logs(store: &Store, name: &str, out: &mut dyn Write) -> Result<()> {
    let record = store.container(name)?;
    let spec = spec_of(&record).unwrap_or_default();
    if let Some(console) = &spec.console {
        match std::fs::read(console) {
            Ok(bytes) => out.write_all(&bytes).map_err(|source| RuntimeError::Io { path: console.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuntimeError::Io { path: console.clone(), source }),
        }
    }
    if let (true, Ok((_, mut spec, leader))) = (spec.boot, running(store, name)) {
        spec.argv = ["journalctl", "--no-pager", "--quiet", "--boot"].map(String::from).to_vec();
        spec.workdir = "/".into();
        let output = nspawn::enter(&spec, leader, None)?
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn { program: "nsenter journalctl".into(), source })?;
        out.write_all(&output.stdout).map_err(|source| RuntimeError::Io { path: "stdout".into(), source })?;
    }
    Ok(())
}

/// Finds what crashed runs left: records whose owner died (marked exited, removed if
/// `--rm`), and snapshots without a record. Returns what it cleaned.
pub fn collect(store: &Store) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let snapshotter = snapshot::open(store, None)?;
    let records = store.containers()?;
    for record in &records {
        if record.state != ContainerState::Exited && alive(record.monitor_pid) {
            continue; // its owner runs it, or starts it
        }
        let never_started = record.state == ContainerState::Created && record.leader.is_none();
        if never_started && !spec_of(record).is_some_and(|s| s.remove) && !is_live(record) {
            // Made by `create` (or a run killed before it started): it waits for `start`,
            // holding no mount meanwhile.
            super::start::release_root(&*snapshotter, &record.id);
            continue;
        }
        // Its owner is gone: nobody records its end or removes it. What still runs of it
        // is ended, as containerd ends a container whose shim died.
        if is_live(record) {
            match end_processes(record) {
                Ok(()) => cleaned.push(format!("processes of container {}", record.name)),
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            }
        }
        if spec_of(record).is_some_and(|s| s.remove) {
            match discard(store, &*snapshotter, &record.id) {
                Ok(()) => cleaned.push(format!("container {}", record.name)),
                Err(e) => tracing::warn!("{e}"),
            }
        } else {
            if let Err(e) = cgroup_of(record).remove() {
                tracing::warn!("leaving cgroup {e}");
            }
            if let Err(e) = super::network::release(store.root(), &record.id) {
                tracing::warn!("{e}");
            }
            super::start::release_root(&*snapshotter, &record.id);
            if record.state != ContainerState::Exited {
                store.set_container_state(&record.id, ContainerState::Exited, None, None)?;
            }
        }
    }
    let known: std::collections::HashSet<String> = store.containers()?.into_iter().map(|r| r.id).collect();
    for key in snapshotter.list()? {
        if !known.contains(&key) {
            // Best effort: one snapshot that cannot go must not stop the rest of gc.
            match snapshotter.remove(&key) {
                Ok(()) => cleaned.push(format!("snapshot {key}")),
                Err(e) => tracing::warn!("leaving snapshot {key}: {e}"),
            }
        }
    }
    let live: Vec<_> = store.images()?.into_iter().map(|i| i.id).collect();
    for image in snapshotter.prune(&live)? {
        cleaned.push(format!("materialised image {image}"));
    }
    if let Ok(dir) = runtime_dir() {
        for id in super::notify::remove_stale(&dir) {
            cleaned.push(format!("notify socket of {}", &id[..12.min(id.len())]));
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::identify;

    #[test]
    fn a_leader_is_identified_by_pid_and_start_time_until_it_is_gone() {
        // A command name with ") " in it must not shift the fields after it.
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = dir.path().join("a) 1 2 3");
        std::fs::copy("/bin/sleep", &odd).expect("copy sleep");
        let mut child = std::process::Command::new(&odd).arg("10").spawn().expect("spawn");
        let pid = child.id() as i32;
        let me = identify(std::process::id() as i32).expect("this process");
        let it = identify(pid).expect("the child");
        assert_eq!(identify(pid), Some(it), "the same process is identified the same way");
        // Clock ticks are USER_HZ, 100 per second on Linux.
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("uptime")
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("seconds");
        assert!(me.start <= it.start && it.start as f64 <= uptime * 100.0 + 1.0, "{me:?} {it:?} {uptime}");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(identify(pid), None, "a reaped process is gone");
    }
}
