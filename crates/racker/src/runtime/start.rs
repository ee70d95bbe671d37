//! A container's life after `run`: `create` makes one without starting it, `start`
//! runs a created or exited one again on the same snapshot (its writes survive),
//! `restart`, `wait` and `rename`. While a container is not running its snapshot holds
//! no mount ([`release_root`]); whatever needs its root mounts it first
//! ([`mount_root`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::lifecycle::{self, hand_to_monitor, is_running};
use super::run::{discard_or_warn, execute, prepare_unmounted, ready_root, Prepared};
use super::{spec_of, Result, RunRequest, RuntimeError};
use crate::snapshot::{self, ImageLayers, Snapshotter};
use crate::store::{ContainerRecord, ContainerState, Store};

/// Mounts the root of container `record` again (a no-op where it is mounted) and
/// returns it: for starting it, and for anything else that reads a stopped
/// container's files.
pub fn mount_root(store: &Store, record: &ContainerRecord, snapshotter: &dyn Snapshotter) -> Result<PathBuf> {
    let image = store.ready_image(&record.image_id)?;
    Ok(snapshotter.mount(&record.id, &ImageLayers::of(store, &image))?)
}

/// Unmounts the root of a container whose processes are gone. A failure is logged,
/// not returned: the container has ended either way, and `rm` removes what is left.
pub(crate) fn release_root(snapshotter: &dyn Snapshotter, id: &str) {
    if let Err(e) = snapshotter.unmount(id) {
        tracing::warn!("container {}: leaving its root mounted: {e}", &id[..12.min(id.len())]);
    }
    if let Ok(dir) = super::runtime_dir() {
        super::identity::remove(&dir, id);
    }
}

/// Runs `f` on the root of container `record`: its live root while anything holds it
/// (its processes, or a monitor starting it or waiting to restart it), else its
/// snapshot mounted for the time of `f` and unmounted after, unless it was started
/// meanwhile (`cp`, `export`).
pub(super) fn with_root<T>(store: &Store, record: &ContainerRecord, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let held = |r: &ContainerRecord| {
        lifecycle::is_live(r)
            || (matches!(r.state, ContainerState::Created | ContainerState::Restarting)
                && lifecycle::alive(r.monitor_pid))
    };
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    let was_held = held(record);
    let rootfs = mount_root(store, record, &*snapshotter)?;
    let result = f(&rootfs);
    if !was_held && !store.container(&record.id).is_ok_and(|r| held(&r)) {
        release_root(&*snapshotter, &record.id);
    }
    result
}

/// `racker create`: the container made as `run` makes it (record, snapshot, spec), not
/// started. Its root is not mounted before `start`: what goes into it waits for the first
/// start, which also checks what only the root can tell (the `--user`), as docker's does.
pub fn create(store: &Store, image: &str, request: &RunRequest) -> Result<ContainerRecord> {
    let prepared = prepare_unmounted(store, image, request)?;
    Ok(store.container(&prepared.id)?)
}

/// How `start` runs a container.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// `-a`: in the foreground, its output on the caller's, its status returned.
    pub attach: bool,
    /// `-i`: the caller's standard input too (with `attach`).
    pub interactive: bool,
}

/// `racker start`: runs a created or exited container again, on its own snapshot.
/// Detached (a monitor owns it, as after `run -d`) it returns `None` once it runs;
/// attached it returns the container's exit status. Starting a running container is
/// fine, as in docker.
pub fn start(store: &Store, name: &str, opts: &StartOptions, monitor: Command) -> Result<Option<i32>> {
    let record = store.container(name)?;
    let restarting = record.state == ContainerState::Restarting && lifecycle::alive(record.monitor_pid);
    if restarting || is_running(&record) || super::run::cgroup_of(&record).populated() {
        return Ok(None);
    }
    let mut spec = spec_of(&record).ok_or_else(|| RuntimeError::Invalid {
        what: format!("container {}", record.name),
        reason: "no run spec recorded".into(),
    })?;
    if opts.attach && spec.argv.is_empty() {
        return Err(RuntimeError::Invalid {
            what: format!("container {}", record.name),
            reason: "a booted system without a command has no output to attach: start it without -a".into(),
        });
    }
    let snapshotter = snapshot::open(store, record.snapshotter.parse().ok())?;
    let rootfs = mount_root(store, &record, &*snapshotter)?;
    if spec.root_pending {
        spec.root_pending = false;
        let readied = ready_root(store, &spec, &rootfs).and_then(|()| {
            Ok(store.update_container_spec(&record.id, &serde_json::to_value(&spec).unwrap_or_default())?)
        });
        if let Err(e) = readied {
            release_root(&*snapshotter, &record.id);
            return Err(e);
        }
    }
    super::ended::forget(&record.id);
    super::restart::forget_stop(&record.id);
    if !opts.attach {
        let started = hand_to_monitor(&record.id, &record.name, monitor);
        if started.is_err() {
            release_root(&*snapshotter, &record.id);
        }
        return started.map(|()| None);
    }
    spec.interactive = opts.interactive;
    // Attached, this process owns the container, as the foreground `racker run` does.
    store.set_container_state(&record.id, ContainerState::Created, None, None)?;
    let request = RunRequest {
        boot_timeout: Duration::from_secs(spec.boot_timeout.unwrap_or(super::DEFAULT_BOOT_TIMEOUT.as_secs())),
        ..RunRequest::default()
    };
    let remove = spec.remove;
    let prepared = Prepared { id: record.id.clone(), name: record.name.clone(), spec, rootfs, snapshotter };
    let result = execute(store, &prepared, &request);
    let code = result.as_ref().map_or_else(RuntimeError::exit_code, |c| *c);
    if remove {
        discard_or_warn(store, &*prepared.snapshotter, &prepared.id);
    } else {
        release_root(&*prepared.snapshotter, &prepared.id);
        store.set_container_state(&prepared.id, ContainerState::Exited, None, Some(code))?;
    }
    result.map(Some)
}

/// `racker restart`: stops the container (as `stop` does, if it runs; `timeout` None:
/// its `--stop-timeout`) and starts it again, detached.
pub fn restart(store: &Store, name: &str, timeout: Option<Duration>, monitor: Command) -> Result<()> {
    lifecycle::stop(store, name, timeout)?;
    start(store, name, &StartOptions::default(), monitor).map(drop)
}

/// `racker wait`: blocks until the container has ended and its end is recorded, then
/// returns its exit status. Waits on its owner's (or else its leader's) pidfd.
pub fn wait(store: &Store, name: &str) -> Result<i32> {
    // Between its owner's end and the record of it (or a restart's handover) the record
    // can say neither running nor ended for a moment: look again, for a bounded time.
    let settle = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let record = store.container(name)?;
        let owner = record
            .monitor_pid
            .filter(|_| record.state != ContainerState::Exited && lifecycle::alive(record.monitor_pid));
        let leader = record.leader.filter(|_| is_running(&record)).map(|l| l.pid);
        match owner.or(leader) {
            Some(pid) => {
                lifecycle::wait_exit(Some(pid), Duration::from_secs(24 * 3600));
            }
            None if record.state == ContainerState::Created => {
                return Err(RuntimeError::Invalid {
                    what: format!("container {}", record.name),
                    reason: "it was never started: start it first".into(),
                })
            }
            None if super::run::cgroup_of(&record).populated() => {
                // Orphaned processes without a leader: only `rm -f` or `gc` end them.
                return Err(RuntimeError::Left {
                    name: record.name,
                    what: "runs without its owner: use rm -f or gc".into(),
                });
            }
            None if record.state != ContainerState::Exited
                && record.exit_code.is_none()
                && std::time::Instant::now() < settle =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            None => return Ok(record.exit_code.unwrap_or(-1)),
        }
    }
}

/// `racker rename`: the container's new name (a running one keeps its machine name
/// until it starts again).
pub fn rename(store: &Store, name: &str, new: &str) -> Result<()> {
    let record = store.container(name)?;
    Ok(store.rename_container(&record.id, new)?)
}

/// `racker pause`: freezes every process of a running container (cgroup2 freezer).
pub fn pause(store: &Store, name: &str) -> Result<()> {
    freeze(store, name, true)
}

/// `racker unpause`: thaws a paused container.
pub fn unpause(store: &Store, name: &str) -> Result<()> {
    freeze(store, name, false)
}

fn freeze(store: &Store, name: &str, frozen: bool) -> Result<()> {
    let record = store.container(name)?;
    let cgroup = super::run::cgroup_of(&record);
    if !is_running(&record) && !cgroup.populated() {
        return Err(RuntimeError::NotRunning { name: record.name });
    }
    if !frozen && !cgroup.frozen() {
        return Err(RuntimeError::Invalid {
            what: format!("container {}", record.name),
            reason: "it is not paused".into(),
        });
    }
    cgroup
        .freeze(frozen, FREEZE_TIMEOUT)
        .map_err(|e| RuntimeError::Left { name: record.name, what: format!("cgroup {e}") })
}

/// How long the kernel may take to freeze or thaw a container's processes.
pub(super) const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Thaws a paused container before it is signalled: a frozen nspawn could not see its
/// container end. Best effort: killing works on frozen processes anyway.
pub(super) fn thaw(record: &ContainerRecord) {
    let cgroup = super::run::cgroup_of(record);
    if cgroup.frozen() {
        if let Err(e) = cgroup.freeze(false, FREEZE_TIMEOUT) {
            tracing::warn!("{e}");
        }
    }
}

/// `racker generate systemd`: a unit that runs the container as a service, so that it
/// comes back after a reboot (nothing in racker restarts containers across reboots). A
/// container with a command runs attached (systemd sees its status and restarts it on
/// failure); a booted system without one is started and stopped as a oneshot.
pub fn systemd_unit(store: &Store, name: &str, racker: &std::path::Path) -> Result<String> {
    let record = store.container(name)?;
    let spec = spec_of(&record).unwrap_or_default();
    let root = store.root().display().to_string();
    let cmd = |verb: &str| format!("{} --root {root} {verb} {}", racker.display(), record.name);
    let service = if spec.argv.is_empty() {
        format!("Type=oneshot\nRemainAfterExit=yes\nExecStart={}\n", cmd("start"))
    } else {
        format!("Type=simple\nExecStart={}\nRestart=on-failure\n", cmd("start -a"))
    };
    Ok(format!(
        "# racker generate systemd {name}\n[Unit]\nDescription=racker container {name}\n\
         Wants=network-online.target\nAfter=network-online.target\n\n[Service]\n{service}\
         ExecStop={stop}\nTimeoutStopSec=30\n\n[Install]\nWantedBy=multi-user.target\n",
        name = record.name,
        stop = cmd("stop -t 10"),
    ))
}
