//! A cgroup of its own for every booted container on hosts without machined. There
//! nspawn `--keep-unit` puts the container into `payload` below the cgroup nspawn runs in:
//! every container started from one cgroup would share that tree, and the systemds booted
//! in them would manage it together. So nspawn is started in `<caller's cgroup>/racker-<id>`
//! instead, and the tree goes with the container. (With machined, nspawn gets a scope.)

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = "/sys/fs/cgroup";

pub struct ContainerCgroup {
    /// The cgroup in each hierarchy systemd tools use: cgroup2 (at the root, or at
    /// `unified/` on hybrid hosts) and v1 `name=systemd` where it exists. nspawn moves the
    /// container by its path in one of them and mirrors it into the other.
    dirs: Vec<PathBuf>,
    /// Their `cgroup.procs`, which nspawn's process joins before it executes nspawn.
    procs: Vec<CString>,
}

impl ContainerCgroup {
    /// Creates the container's cgroup beside this process's own, or None where there is
    /// no writable cgroup file system (nspawn then does as it would without racker).
    pub fn create(id: &str) -> Option<ContainerCgroup> {
        let dirs: Vec<PathBuf> = own_cgroups().into_iter().map(|own| own.join(name(id))).collect();
        let mut procs = Vec::new();
        for dir in &dirs {
            if let Err(e) = std::fs::create_dir(dir) {
                tracing::debug!("no cgroup of its own for container {id}: {}: {e}", dir.display());
                ContainerCgroup { dirs: dirs.clone(), procs }.remove();
                return None;
            }
            procs.push(CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()?);
        }
        (!procs.is_empty()).then_some(ContainerCgroup { dirs, procs })
    }

    /// Makes the process `cmd` spawns join the cgroup before it executes.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
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

    /// Removes the cgroup and what nspawn and the container's systemd made below it,
    /// deepest first; once the container's processes are gone, nothing holds them.
    pub fn remove(&self) {
        for dir in &self.dirs {
            let mut tree = Vec::new();
            collect_dirs(dir, &mut tree);
            for cgroup in tree.iter().rev() {
                if let Err(e) = std::fs::remove_dir(cgroup) {
                    tracing::debug!("leaving cgroup {}: {e}", cgroup.display());
                }
            }
        }
    }
}

/// The cgroup directory name of container `id`.
fn name(id: &str) -> String {
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
    let mounted = |dir: &str| Path::new(dir).join("cgroup.procs").exists();
    let mut dirs = Vec::new();
    if let Some(path) = path_of("") {
        if let Some(mount) = [ROOT.to_owned(), format!("{ROOT}/unified")].into_iter().find(|m| mounted(m)) {
            dirs.push(PathBuf::from(format!("{mount}{path}")));
        }
    }
    if let (Some(path), true) = (path_of("name=systemd"), mounted(&format!("{ROOT}/systemd"))) {
        dirs.push(PathBuf::from(format!("{ROOT}/systemd{path}")));
    }
    dirs
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
