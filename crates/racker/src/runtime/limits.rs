//! `--memory`, `--cpus`, `--pids-limit` and `--device` permissions on the container's
//! own cgroup (`racker-<id>`, see cgroup.rs). cgroup v2 where the host gives the unified
//! hierarchy the controller; otherwise the controller's v1 hierarchy, where the
//! container gets a `racker-<id>` directory too, recorded with its other cgroups so that
//! teardown removes it. With machined, nspawn's scope takes them as unit properties.

use std::path::{Path, PathBuf};

use super::cgroup;
use super::flags::{Device, RunFlags};
use super::spec::RunSpec;
use super::{Registration, Result, RuntimeError};

const ROOT: &str = "/sys/fs/cgroup";
/// The CFS period docker uses: `--cpus 0.5` is 50000 µs in every 100000.
const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits, as stored with the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Bytes of memory (no swap beyond it).
    pub memory: Option<u64>,
    /// Millionths of a CPU.
    pub cpus: Option<u64>,
    /// Tasks (processes and threads).
    pub pids: Option<u64>,
}

impl Limits {
    /// `cpu.max`'s value: quota and period in microseconds.
    pub fn cpu_max(&self) -> Option<String> {
        self.cpus.map(|micro| format!("{} {CPU_PERIOD_US}", (micro * CPU_PERIOD_US / 1_000_000).max(1000)))
    }

    /// The same limits as properties of nspawn's scope (`--property=`), with machined.
    pub(crate) fn unit_properties(&self) -> Vec<String> {
        let mut props = Vec::new();
        if let Some(bytes) = self.memory {
            props.push(format!("--property=MemoryMax={bytes}"));
            props.push("--property=MemorySwapMax=0".into());
        }
        if let Some(micro) = self.cpus {
            props.push(format!("--property=CPUQuota={}%", (micro / 10_000).max(1)));
        }
        if let Some(pids) = self.pids {
            props.push(format!("--property=TasksMax={pids}"));
        }
        props
    }
}

/// The devices whose permissions are narrower than `rwm`: only those need the devices
/// cgroup (nspawn without machined puts no device policy on the container).
fn restricted(devices: &[Device]) -> impl Iterator<Item = &Device> {
    devices.iter().filter(|d| d.permissions.len() < 3)
}

/// The controllers `flags` need.
fn controllers(flags: &RunFlags) -> Vec<&'static str> {
    let l = &flags.limits;
    let mut wanted = Vec::new();
    if l.memory.is_some() {
        wanted.push("memory");
    }
    if l.cpus.is_some() {
        wanted.push("cpu");
    }
    if l.pids.is_some() {
        wanted.push("pids");
    }
    if restricted(&flags.devices).next().is_some() {
        wanted.push("devices");
    }
    wanted
}

/// The cgroup2 mount and this process's cgroup in it.
fn own_v2() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_end_matches('/').to_owned();
    let mount = [ROOT.to_owned(), format!("{ROOT}/unified")]
        .into_iter()
        .find(|m| Path::new(m).join("cgroup.controllers").exists())?;
    Some(PathBuf::from(format!("{mount}{path}")))
}

/// This process's cgroup in the v1 hierarchy of `controller`, if one is mounted.
fn own_v1(controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':').skip(1);
        let (controllers, path) = (parts.next()?, parts.next()?);
        if !controllers.split(',').any(|c| c == controller) {
            return None;
        }
        let mount = Path::new(ROOT).join(controllers);
        let mount = if mount.join("cgroup.procs").exists() { mount } else { Path::new(ROOT).join(controller) };
        mount.join("cgroup.procs").exists().then(|| PathBuf::from(format!("{}{path}", mount.display())))
    })
}

fn unusable(controller: &str, why: String) -> RuntimeError {
    let flag = match controller {
        "memory" => "--memory",
        "cpu" => "--cpus",
        "pids" => "--pids-limit",
        _ => "--device",
    };
    RuntimeError::Invalid { what: flag.into(), reason: format!("the {controller} cgroup controller {why}") }
}

/// The cgroups, beyond the ones every container has, that container `id` needs for its
/// flags: the v1 hierarchies of controllers cgroup v2 does not offer here. A v2
/// controller is enabled for the children of racker's own cgroup instead.
pub(crate) fn controller_dirs(id: &str, flags: &RunFlags) -> Result<Vec<PathBuf>> {
    if Registration::detect() != Registration::Direct {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for controller in controllers(flags) {
        // Devices is never a file controller in cgroup v2 (a BPF program is): v1 only.
        let v2 = own_v2().filter(|own| {
            let available = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
            available.split_whitespace().any(|c| c == controller)
        });
        if let Some(own) = v2 {
            let control = own.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == controller) {
                std::fs::write(&control, format!("+{controller}"))
                    .map_err(|e| unusable(controller, format!("cannot be enabled in {}: {e}", control.display())))?;
            }
            continue;
        }
        match own_v1(controller) {
            Some(own) => dirs.push(own.join(cgroup::name(id))),
            None => return Err(unusable(controller, "is not available on this host".into())),
        }
    }
    Ok(dirs)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| RuntimeError::Io { path, source })
}

/// Writes the limits into the container's cgroups, made just before (`made`: false if
/// they could not be). Which file a directory has says which hierarchy it is in.
pub(crate) fn apply(spec: &RunSpec, registration: Registration, made: bool) -> Result<()> {
    let flags = &spec.flags;
    let wanted = controllers(flags);
    if registration != Registration::Direct || wanted.is_empty() {
        return Ok(());
    }
    if !made {
        return Err(unusable(wanted[0], "has no cgroup of the container to limit: it could not be made".into()));
    }
    let l = &flags.limits;
    let has = |file: &str| spec.cgroup.iter().find(|d| d.join(file).exists());
    if let Some(bytes) = l.memory {
        let bytes = bytes.to_string();
        if let Some(dir) = has("memory.max") {
            write(dir, "memory.max", &bytes)?;
            if dir.join("memory.swap.max").exists() {
                write(dir, "memory.swap.max", "0")?;
            }
        } else if let Some(dir) = has("memory.limit_in_bytes") {
            write(dir, "memory.limit_in_bytes", &bytes)?;
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                write(dir, "memory.memsw.limit_in_bytes", &bytes)?;
            }
        } else {
            return Err(unusable("memory", "has no limit file in the container's cgroup".into()));
        }
    }
    if let Some(max) = l.cpu_max() {
        if let Some(dir) = has("cpu.max") {
            write(dir, "cpu.max", &max)?;
        } else if let Some(dir) = has("cpu.cfs_quota_us") {
            let quota = max.split(' ').next().unwrap_or_default();
            write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            write(dir, "cpu.cfs_quota_us", quota)?;
        } else {
            return Err(unusable("cpu", "has no quota file in the container's cgroup".into()));
        }
    }
    if let Some(pids) = l.pids {
        let dir =
            has("pids.max").ok_or_else(|| unusable("pids", "has no pids.max in the container's cgroup".into()))?;
        write(dir, "pids.max", &pids.to_string())?;
    }
    if restricted(&flags.devices).next().is_some() {
        let dir = has("devices.deny")
            .ok_or_else(|| unusable("devices", "has no devices.deny in the container's cgroup".into()))?;
        for device in restricted(&flags.devices) {
            let denied: String = "rwm".chars().filter(|c| !device.permissions.contains(*c)).collect();
            write(dir, "devices.deny", &format!("{} {}:{} {denied}", device.kind, device.major, device.minor))?;
        }
    }
    Ok(())
}

/// The container's exit status: 137 when it failed and the kernel's OOM killer ended a
/// process of it (as docker reports an OOM kill), whatever nspawn or a shell made of it.
pub(crate) fn exit_code(spec: &RunSpec, code: i32) -> i32 {
    match code != 0 && oom_killed(spec) {
        true => 137,
        false => code,
    }
}

fn oom_killed(spec: &RunSpec) -> bool {
    if spec.flags.limits.memory.is_none() {
        return false;
    }
    spec.cgroup.iter().any(|dir| {
        ["memory.events", "memory.oom_control"].iter().any(|file| {
            std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill "))
                    .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
            })
        })
    })
}

/// Makes a command entered into the running container (`exec`, a booted container's
/// command) join its limits' v1 cgroups, which hold nothing else: nsenter enters its
/// namespaces, not its cgroups, and the limits must bind that command too. (A v2
/// controller's cgroup is the container's whole tree, which systemd inside manages.)
pub(crate) fn join_on_spawn(spec: &RunSpec, cmd: &mut std::process::Command) {
    const V1_FILES: [&str; 4] = ["memory.limit_in_bytes", "cpu.cfs_quota_us", "pids.max", "devices.deny"];
    let v1: Vec<PathBuf> = spec
        .cgroup
        .iter()
        .filter(|d| !d.join("cgroup.events").exists() && V1_FILES.iter().any(|f| d.join(f).exists()))
        .cloned()
        .collect();
    if !v1.is_empty() {
        cgroup::ContainerCgroup::at(v1).enter_on_spawn(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn cpus_become_a_quota_per_period() {
        let half = Limits { cpus: Some(500_000), ..Limits::default() };
        assert_eq!(half.cpu_max().as_deref(), Some("50000 100000"));
        let two = Limits { cpus: Some(2_000_000), ..Limits::default() };
        assert_eq!(two.cpu_max().as_deref(), Some("200000 100000"));
        assert!(half.unit_properties().contains(&"--property=CPUQuota=50%".to_owned()));
    }
}
