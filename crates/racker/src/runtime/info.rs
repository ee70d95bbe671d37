//! `racker info`: what a store holds and what the host offers containers, gathered from
//! files and one `systemd-nspawn --version`, so that it works (and tells why containers
//! would not) on any host.

use std::path::PathBuf;

use super::host::Registration;
use super::Result;
use crate::snapshot::Driver;
use crate::store::Store;

/// `statfs.f_type` of cgroup2 (linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `statfs.f_type` of tmpfs, where cgroup v1 hierarchies are mounted under.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Which cgroup hierarchies the host mounts at /sys/fs/cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    /// cgroup2 alone at /sys/fs/cgroup ("unified").
    #[serde(rename = "2")]
    V2,
    /// v1 controllers, with a cgroup2 tree at /sys/fs/cgroup/unified.
    #[serde(rename = "hybrid")]
    Hybrid,
    /// v1 controllers only ("legacy").
    #[serde(rename = "1")]
    V1,
    /// Nothing mounted at /sys/fs/cgroup.
    #[serde(rename = "none")]
    None,
}

impl CgroupVersion {
    pub fn detect() -> CgroupVersion {
        // f_type's width differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let magic = |p: &str| rustix::fs::statfs(p).ok().map(|s| s.f_type as i64);
        match magic("/sys/fs/cgroup") {
            Some(CGROUP2_SUPER_MAGIC) => CgroupVersion::V2,
            Some(TMPFS_MAGIC) if magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) => CgroupVersion::Hybrid,
            Some(TMPFS_MAGIC) => CgroupVersion::V1,
            _ => CgroupVersion::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V2 => "2",
            CgroupVersion::Hybrid => "hybrid",
            CgroupVersion::V1 => "1",
            CgroupVersion::None => "none",
        }
    }
}

/// Facts about the host that decide how containers run. Each is read where the system
/// keeps it; a fact that cannot be read is absent (or false), never an error.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostFacts {
    /// systemd runs as PID 1 (`/proc/1/comm`).
    pub systemd_pid1: bool,
    /// machined can be reached: systemd is PID 1 and the system bus, which starts it on
    /// demand, is there (a leftover `/run/systemd/machines` alone says nothing).
    pub machined: bool,
    /// How racker registers containers ([`Registration::detect`]).
    pub registration: Registration,
    /// Why that way: what racker found on the host.
    pub registration_reason: String,
    pub cgroup_version: CgroupVersion,
    /// The first line of `systemd-nspawn --version`, absent when it cannot run.
    pub nspawn_version: Option<String>,
    pub kernel_version: Option<String>,
    /// `PRETTY_NAME` of /etc/os-release.
    pub operating_system: Option<String>,
    #[serde(rename = "OSType")]
    pub os_type: &'static str,
    pub architecture: &'static str,
    /// CPUs this process may run on.
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    /// Bytes of memory (`MemTotal` of /proc/meminfo).
    pub mem_total: Option<u64>,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let (registration, registration_reason) = Registration::detect_why();
        HostFacts {
            systemd_pid1: read("/proc/1/comm").is_some_and(|c| c.trim() == "systemd"),
            machined: registration == Registration::Machined,
            registration,
            registration_reason,
            cgroup_version: CgroupVersion::detect(),
            nspawn_version: nspawn_version(),
            kernel_version: read("/proc/sys/kernel/osrelease").map(|r| r.trim().to_owned()),
            operating_system: read("/etc/os-release").as_deref().and_then(pretty_name),
            os_type: std::env::consts::OS,
            architecture: std::env::consts::ARCH,
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total: read("/proc/meminfo").as_deref().and_then(mem_total),
        }
    }
}

/// What a store holds, by the counts `docker info` shows.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoreInfo {
    pub root_dir: PathBuf,
    /// The storage driver new containers get: the store's file system decides.
    pub driver: String,
    pub images: usize,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    pub volumes: usize,
    pub networks: usize,
}

impl StoreInfo {
    /// Counts what `store` holds; containers by their live state, as `ps` shows them.
    pub fn of(store: &Store) -> Result<StoreInfo> {
        let containers = super::list(store, true)?;
        let running = containers.iter().filter(|c| c.running && !c.paused).count();
        let paused = containers.iter().filter(|c| c.paused).count();
        Ok(StoreInfo {
            root_dir: store.root().to_owned(),
            driver: Driver::default_for(store.root()).to_string(),
            images: store.images()?.len(),
            containers: containers.len(),
            containers_running: running,
            containers_paused: paused,
            containers_stopped: containers.len() - running - paused,
            volumes: store.volumes()?.len(),
            networks: super::network::recorded(store)?.len(),
        })
    }
}

fn nspawn_version() -> Option<String> {
    let out = std::process::Command::new("systemd-nspawn")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.lines().next().unwrap_or_default().trim().to_owned())
}

fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_owned())
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_and_meminfo_are_read_as_written() {
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(pretty_name(os).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(pretty_name("ID=x\n"), None);
        assert_eq!(mem_total("MemTotal:        8000000 kB\nMemFree: 1 kB\n"), Some(8_000_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }
}
