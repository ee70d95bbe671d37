//! What the host offers: registration with systemd-machined where systemd runs the
//! host, direct nspawn otherwise; and the runtime directory for sockets and logs.

use std::path::{Path, PathBuf};

use super::{Result, RuntimeError};

/// The system bus's socket, where machined and systemd answer.
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

/// How containers relate to the host's systemd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// systemd is PID 1 with machined: nspawn registers the machine (`machinectl list`).
    Machined,
    /// No systemd as PID 1: `--register=no --keep-unit`, entered through the leader's namespaces.
    Direct,
}

impl Registration {
    /// Machined when systemd is PID 1 and the system bus's socket exists (the bus starts
    /// machined on demand); nothing asks machined itself, so this costs two file checks.
    pub fn detect() -> Registration {
        Registration::detect_why().0
    }

    /// [`Registration::detect`], with why, as `racker info` tells it.
    pub fn detect_why() -> (Registration, String) {
        let init = std::fs::read_to_string("/proc/1/comm").map(|c| c.trim().to_owned()).unwrap_or_default();
        if init != "systemd" || !Path::new("/run/systemd/system").is_dir() {
            let why = format!("PID 1 is {init:?}, not systemd: no machined, containers run in cgroups of racker's");
            return (Registration::Direct, why);
        }
        if !Path::new(SYSTEM_BUS).exists() {
            return (Registration::Direct, format!("systemd is PID 1 but {SYSTEM_BUS} is missing: no machined"));
        }
        let why = "systemd is PID 1 with a system bus: machined registers containers, systemd scopes hold them";
        (Registration::Machined, why.into())
    }

    pub fn nspawn_args(self) -> &'static [&'static str] {
        match self {
            Registration::Machined => &["--register=yes"],
            Registration::Direct => &["--register=no", "--keep-unit"],
        }
    }
}

/// `/run/racker` (or `RACKER_RUNTIME_DIR`): notify sockets and logs of running containers,
/// mode 0700 (also when an older racker made it 0755).
pub fn runtime_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("RACKER_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/racker"));
    crate::private::dir(&dir).map_err(|source| RuntimeError::Io { path: dir.clone(), source })?;
    Ok(dir)
}

/// systemd-nspawn keeps per-machine state under /run/systemd/nspawn and refuses to clean
/// it up (warning on every run) unless it is on a tmpfs, as /run is on systemd hosts.
/// On hosts whose /run is on disk, give it a tmpfs once.
pub fn prepare_nspawn_state() -> Result<()> {
    let dir = Path::new("/run/systemd/nspawn");
    let on_tmpfs = |p: &Path| rustix::fs::statfs(p).is_ok_and(|s| s.f_type == 0x0102_1994);
    if on_tmpfs(Path::new("/run")) || on_tmpfs(dir) {
        return Ok(());
    }
    // Concurrent runs must not stack mounts: decide under a lock.
    let lock_path = runtime_dir()?.join("nspawn-state.lock");
    let lock = crate::private::create_file(&lock_path, false)
        .map_err(|source| RuntimeError::Io { path: lock_path.clone(), source })?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| RuntimeError::Io { path: lock_path.clone(), source: e.into() })?;
    if on_tmpfs(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io { path: dir.to_owned(), source })?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs"])
        .arg(dir)
        .status()
        .map_err(|source| RuntimeError::Io { path: dir.to_owned(), source })?;
    if !status.success() && !on_tmpfs(dir) {
        return Err(RuntimeError::Invalid {
            what: dir.display().to_string(),
            reason: "could not mount a tmpfs there".into(),
        });
    }
    Ok(())
}
