//! The run path: a container prepared (its record claims the name, its snapshot is made,
//! its spec decided), started in the foreground in command or boot mode, and discarded
//! again (`--rm`, or whatever failed on the way). Detached runs and [`Booted`](super::Booted)
//! share the preparing and the discarding.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup::ContainerCgroup;
use super::machine::{Console, Machine, SignalForwarder};
use super::{
    lifecycle, prepare_nspawn_state, rootfs, runtime_dir, spec_of, BootTarget, Registration, Result, RunOptions,
    RunSpec, RuntimeError,
};
use crate::snapshot::{self, Driver};
use crate::store::{ContainerRecord, ContainerState, Store};

/// `racker run`'s choices beyond the command itself.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub options: RunOptions,
    pub name: Option<String>,
    /// `--rm`: remove the container (and its writes) when it ends.
    pub remove: bool,
    /// None: boot when the image has systemd, as the original tool did.
    pub boot: Option<bool>,
    /// What a boot starts.
    pub boot_target: BootTarget,
    pub driver: Option<Driver>,
    pub boot_timeout: Duration,
    /// Where the command's output goes (foreground runs).
    pub output: Console,
}

/// How long a boot may take by default.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            options: RunOptions::default(),
            name: None,
            remove: false,
            boot: None,
            boot_target: BootTarget::Default,
            driver: None,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            output: Console::Inherit,
        }
    }
}

fn new_id() -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A container made ready to start: its record claims the name, its snapshot is
/// prepared, its spec decided.
pub(crate) struct Prepared {
    pub id: String,
    pub name: String,
    pub spec: RunSpec,
    pub rootfs: PathBuf,
    pub snapshotter: Box<dyn snapshot::Snapshotter>,
}

/// Everything up to starting nspawn, shared by foreground and detached runs. On error,
/// whatever was made is removed again.
pub(crate) fn prepare(store: &Store, image: &str, request: &RunRequest, detached: bool) -> Result<Prepared> {
    make(store, image, request, detached, true)
}

/// `racker create`: the container made as [`prepare`] makes it, detached, but its root
/// left unmounted: the mount and what goes into the root wait for the first start.
pub(crate) fn prepare_unmounted(store: &Store, image: &str, request: &RunRequest) -> Result<Prepared> {
    make(store, image, request, true, false)
}

fn make(store: &Store, image: &str, request: &RunRequest, detached: bool, mounted: bool) -> Result<Prepared> {
    let image_id = store.resolve(image)?;
    let record = store.ready_image(&image_id)?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&record.config_digest)?).map_err(|e| {
        RuntimeError::Invalid { what: format!("config of image {}", image_id.short()), reason: e.to_string() }
    })?;
    let snapshotter = snapshot::open(store, request.driver)?;
    let id = new_id();
    let name = request.name.clone().unwrap_or_else(|| format!("racker-{}", &id[..12]));
    // The record first: it claims the name, so two runs never collide.
    store.create_container(&id, &name, &image_id, &snapshotter.driver().to_string(), &serde_json::json!({}))?;
    let unmade = DiscardUnlessKept::new(store, &*snapshotter, &id);
    let layers = snapshot::ImageLayers::of(store, &record);
    let snap = match mounted {
        true => snapshotter.prepare(&id, &layers, request.remove)?,
        false => snapshotter.create(&id, &layers)?,
    };
    let boot = request.boot.unwrap_or_else(|| match mounted {
        true => rootfs::has_systemd(&snap.rootfs),
        false => rootfs::layers_have_systemd(layers.layers.iter().rev().map(|l| l.dir.as_path())),
    });
    let mut spec = RunSpec::new(&request.options, &config, boot)?;
    super::network::check(store, &spec.network)?;
    spec.remove = request.remove;
    spec.boot_target = request.boot_target.clone();
    spec.rootfs = Some(snap.rootfs.clone());
    spec.boot_timeout = Some(request.boot_timeout.as_secs());
    spec.machine = Some(super::nspawn::machine_name(&name, &id));
    if Registration::detect() == Registration::Direct {
        spec.cgroup = ContainerCgroup::paths_for(&id);
        spec.cgroup.extend(super::limits::controller_dirs(&id, &spec.flags)?);
    }
    if spec.argv.is_empty() && !detached {
        return Err(RuntimeError::Invalid {
            what: "command".into(),
            reason: "no command specified: give one after the image name, or run the booted system with -d".into(),
        });
    }
    if boot || detached {
        let dir = if request.remove { runtime_dir()? } else { store.root().join("containers").join(&id) };
        crate::private::dir(&dir).map_err(|source| RuntimeError::Io { path: dir.clone(), source })?;
        spec.console = Some(dir.join(format!("{id}.console")));
    }
    super::volumes::attach(store, &mut spec)?;
    spec.root_pending = !mounted;
    if mounted {
        ready_root(store, &spec, &snap.rootfs)?;
    }
    store.update_container_spec(&id, &serde_json::to_value(&spec).unwrap_or_default())?;
    unmade.keep();
    let mode = if spec.boot { "boots systemd" } else { "runs its command" };
    tracing::info!("container {name} ({id}) of image {image} made ({mode}), root at {}", snap.rootfs.display());
    Ok(Prepared { id, name, spec, rootfs: snap.rootfs, snapshotter })
}

/// A container on its way to being made or started: dropped before [`keep`](Self::keep),
/// it is discarded again (snapshot, cgroup, logs, record), so that every early return on
/// the way leaves nothing behind.
pub(super) struct DiscardUnlessKept<'a> {
    store: &'a Store,
    snapshotter: &'a dyn snapshot::Snapshotter,
    id: &'a str,
    kept: bool,
}

impl<'a> DiscardUnlessKept<'a> {
    pub(super) fn new(store: &'a Store, snapshotter: &'a dyn snapshot::Snapshotter, id: &'a str) -> Self {
        DiscardUnlessKept { store, snapshotter, id, kept: false }
    }

    /// The container is made: it stays.
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for DiscardUnlessKept<'_> {
    fn drop(&mut self) {
        if !self.kept {
            discard_or_warn(self.store, self.snapshotter, self.id);
        }
    }
}

/// How long a container's processes may take to end once killed (they are in the
/// kernel's hands by then: only an uninterruptible wait holds them).
pub(super) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The container's cgroup, from its record (or, for a record from before racker recorded
/// it, where this process would have made it).
pub(crate) fn cgroup_of(record: &ContainerRecord) -> ContainerCgroup {
    match spec_of(record) {
        Some(spec) if !spec.cgroup.is_empty() => ContainerCgroup::at(spec.cgroup),
        // Made on a machined host: its processes are in its machine's scope, also those
        // of a run whose racker was killed before it recorded anything of them.
        Some(RunSpec { machine: Some(machine), .. }) => ContainerCgroup::of_machine(&machine),
        _ => ContainerCgroup::at(ContainerCgroup::paths_for(&record.id)),
    }
}

/// The name machined knows container `record` by.
pub(crate) fn machine_of(record: &ContainerRecord) -> String {
    spec_of(record)
        .and_then(|spec| spec.machine)
        .unwrap_or_else(|| super::nspawn::machine_name(&record.name, &record.id))
}

/// Removes a container: ends whatever of it still runs, then its snapshot (and mounts),
/// cgroup, logs and last its record, so that what could not go is still found by its
/// record (`rm -f`, `gc`) and named in the error.
pub(crate) fn discard(store: &Store, snapshotter: &dyn snapshot::Snapshotter, id: &str) -> Result<()> {
    let (name, cgroup) = match store.container(id) {
        Ok(record) => (record.name.clone(), cgroup_of(&record)),
        Err(_) => (id.to_owned(), ContainerCgroup::at(ContainerCgroup::paths_for(id))),
    };
    let left = |what: String| RuntimeError::Left { name: name.clone(), what };
    // Processes first: they hold the container's mounts.
    cgroup.kill_all(KILL_TIMEOUT).map_err(|e| left(format!("not removed: cgroup {e}")))?;
    snapshotter.remove(id).map_err(|e| left(format!("not removed: its snapshot is left: {e}")))?;
    cgroup.remove().map_err(|e| left(format!("not removed: cgroup {e}")))?;
    super::network::release(store.root(), id).map_err(|e| left(format!("not removed: its network {e}")))?;
    let _ = std::fs::remove_dir_all(store.root().join("containers").join(id));
    if let Ok(dir) = runtime_dir() {
        let _ = std::fs::remove_file(dir.join(format!("{id}.console")));
        let _ = std::fs::remove_file(super::logfile::json_log_path(&dir.join(format!("{id}.console"))));
        // Left behind when its racker was killed; nobody listens on it any more.
        let _ = std::fs::remove_file(dir.join(format!("{id}.notify")));
        let _ = std::fs::remove_file(dir.join(format!("{id}.attach")));
        super::ended::forget(id);
        super::restart::forget_stop(id);
        super::identity::remove(&dir, id);
    }
    store.remove_container(id)?;
    Ok(())
}

/// [`discard`] where the caller has a failure of its own to report: what is left is
/// logged, and `gc` finds it by the record that stays.
pub(crate) fn discard_or_warn(store: &Store, snapshotter: &dyn snapshot::Snapshotter, id: &str) {
    if let Err(e) = discard(store, snapshotter, id) {
        tracing::warn!("{e}");
    }
}

/// Runs `image` in the foreground with the caller's stdio and returns the command's
/// exit status (docker's numbers for failures to start it).
pub fn run(store: &Store, image: &str, request: &RunRequest) -> Result<i32> {
    let prepared = prepare(store, image, request, false)?;
    let result = execute(store, &prepared, request);
    let code = match &result {
        Ok(code) => Some(*code),
        Err(e) => Some(e.exit_code()),
    };
    if request.remove {
        discard_or_warn(store, &*prepared.snapshotter, &prepared.id);
    } else {
        super::start::release_root(&*prepared.snapshotter, &prepared.id);
        store.set_container_state(&prepared.id, ContainerState::Exited, None, code)?;
    }
    result
}

/// Starts the prepared container and waits for its command.
pub(super) fn execute(store: &Store, p: &Prepared, request: &RunRequest) -> Result<i32> {
    if p.spec.boot {
        return run_booted(store, p, request);
    }
    check_command(&p.rootfs, &p.spec)?;
    let (registration, runtime) = (Registration::detect(), runtime_dir()?);
    let output = request.output.clone();
    let mut machine = Machine::start(store.root(), &p.spec, &p.rootfs, &p.name, &p.id, registration, &runtime, output)?;
    let _signals = if p.spec.tty { None } else { Some(SignalForwarder::to_group(machine.pid())?) };
    store.set_container_state(
        &p.id,
        ContainerState::Running,
        machine.leader_now().and_then(lifecycle::identify),
        None,
    )?;
    let status = machine.wait()?;
    if machine.leader().is_none() {
        // nspawn failed before the command ran (its message is on stderr): racker's
        // failure, never the command's status.
        return Err(RuntimeError::ExitedEarly { status: exit_code(status) });
    }
    Ok(super::limits::exit_code(&p.spec, super::ended::command_code(status, &p.id, None)))
}

pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Docker's 127/126 before anything starts: nspawn itself says only "exit 1".
pub(super) fn check_command(rootfs: &Path, spec: &RunSpec) -> Result<()> {
    match rootfs::find_executable(rootfs, &spec.argv[0], spec.path_env(), &spec.workdir) {
        rootfs::Lookup::Found(_) => Ok(()),
        rootfs::Lookup::NotExecutable(path) => Err(RuntimeError::NotExecutable(path)),
        rootfs::Lookup::NotFound => Err(RuntimeError::NotFound(spec.argv[0].clone())),
    }
}

/// What systemd-nspawn needs of a root that images do not always have: a `/usr`
/// directory; and a `--user` that the image resolves (nspawn is given it through a
/// getent racker binds in: see identity.rs).
/// What the container's mounted root needs before the container first starts: its empty
/// volumes seeded from the image, the flags' files and mount points, the user resolved.
pub(crate) fn ready_root(store: &Store, spec: &RunSpec, rootfs: &Path) -> Result<()> {
    super::volumes::seed(store, spec, rootfs)?;
    prepare_rootfs(rootfs, spec)?;
    prepare_nspawn_state()
}

fn prepare_rootfs(rootfs: &Path, spec: &RunSpec) -> Result<()> {
    super::flags::prepare_rootfs(rootfs, &spec.flags)?;
    let usr = rootfs.join("usr");
    if std::fs::symlink_metadata(&usr).is_err() {
        std::fs::create_dir(&usr).map_err(|source| RuntimeError::Io { path: usr.clone(), source })?;
    }
    if spec.boot && spec.boot_target == BootTarget::Minimal {
        rootfs::prepare_minimal_boot(rootfs).map_err(|source| RuntimeError::Io { path: rootfs.to_owned(), source })?;
    }
    // docker makes a missing working directory (`-w`, the image's WorkingDir) as it starts.
    if rootfs::open_dir(rootfs, &spec.workdir).is_err() {
        tracing::debug!("making the working directory {}", spec.workdir);
        rootfs::make_dir(rootfs, &spec.workdir).map_err(|e| RuntimeError::Invalid {
            what: format!("working directory {}", spec.workdir),
            reason: format!("cannot be made in the container: {e}"),
        })?;
    }
    if let (Some(user), false) = (&spec.user, spec.boot) {
        rootfs::resolve_user(rootfs, user)
            .map_err(|reason| RuntimeError::Invalid { what: format!("--user {user}"), reason })?;
    }
    Ok(())
}

/// Starts a prepared boot-mode container, its console logged, and waits until its
/// systemd is ready (the machine is ended again if that fails).
pub(super) fn boot(store: &Store, p: &Prepared, timeout: Duration) -> Result<Machine> {
    let runtime = runtime_dir()?;
    let console = p.spec.console.clone().unwrap_or_else(|| runtime.join(format!("{}.console", p.id)));
    let registration = Registration::detect();
    let mut machine = Machine::start(
        store.root(),
        &p.spec,
        &p.rootfs,
        &p.name,
        &p.id,
        registration,
        &runtime,
        Console::Log(console),
    )?;
    let leader = machine.wait_started(true, timeout)?;
    store.set_container_state(&p.id, ContainerState::Running, lifecycle::identify(leader), None)?;
    Ok(machine)
}

fn run_booted(store: &Store, p: &Prepared, request: &RunRequest) -> Result<i32> {
    let spec = &p.spec;
    let ids = spec
        .user
        .as_deref()
        .map(|u| {
            rootfs::resolve_user(&p.rootfs, u)
                .map_err(|reason| RuntimeError::Invalid { what: format!("--user {u}"), reason })
        })
        .transpose()?;
    let mut machine = boot(store, p, request.boot_timeout)?;
    let result = run_entered(&machine, p, ids, request);
    machine.terminate()?;
    result
}

/// Runs the container's command in its booted system and waits for it (the machine is
/// the caller's to end).
fn run_entered(machine: &Machine, p: &Prepared, ids: Option<(u32, u32)>, request: &RunRequest) -> Result<i32> {
    let spec = &p.spec;
    check_command(&p.rootfs, spec)?;
    if spec.tty {
        let mut spec = spec.clone();
        super::pty::pass_term(&mut spec.env);
        let cmd = machine.enter(&spec, ids)?;
        let root = PathBuf::from(format!("/proc/{}/root", machine.leader().unwrap_or_default()));
        return super::pty::Pty::open(&root)?.run(cmd, spec.interactive, "nsenter").map(exit_code);
    }
    let mut cmd = machine.enter(spec, ids)?;
    request.output.direct(&mut cmd);
    if !spec.tty {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
    let _signals = if spec.tty { None } else { Some(SignalForwarder::to_group(child.id() as i32)?) };
    let status = child.wait().map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
    Ok(exit_code(status))
}
