//! Running containers with systemd-nspawn: an image's snapshot as the root, the
//! command run directly (command mode) or inside a booted systemd (boot mode), and
//! teardown that leaves no mount, process or snapshot behind.
//!
//! ```text
//! racker run ──> image (pulled if missing) ──> snapshot.prepare ──> Machine::start
//!                   command mode: nspawn runs argv as PID 1; its status is the result
//!                   boot mode:    nspawn --boot, wait READY=1, nsenter argv, terminate
//!            <── snapshot.remove (--rm) ── record exit
//! ```
//!
//! [`Booted`] keeps a booted container for a caller that runs several commands in it
//! (postroj); `run_detached` hands a container to a monitor process; a stopped
//! container's writes become a new image with [`commit`].

mod attach;
mod booted;
mod cgroup;
mod commit;
mod copy;
mod ended;
mod files;
mod flags;
mod host;
mod identity;
mod image_prune;
mod info;
mod lifecycle;
mod limits;
mod logfile;
mod machine;
pub mod network;
mod notify;
mod nspawn;
mod prune;
mod pty;
mod restart;
pub mod rootfs;
mod run;
mod spec;
mod start;
mod systemd;
mod usage;
mod volumes;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use attach::{attach, parse_detach_keys, AttachOptions};
pub use booted::Booted;
pub use commit::{apply_change, commit, CommitError, CommitOptions};
pub use copy::{copy_from_container, copy_to_container, CopyOptions, HostSide};
pub use files::{diff, export, writes_size};
pub use flags::{
    parse_add_host, parse_capability, parse_cpus, parse_device, parse_dns, parse_hostname, parse_label, parse_memory,
    parse_pids_limit, parse_signal, parse_size, parse_tmpfs, Device, RunFlags, Tmpfs,
};
pub use host::{prepare_nspawn_state, runtime_dir, Registration};
pub use image_prune::{prune_images, ImagePrune};
pub use info::{CgroupVersion, HostFacts, StoreInfo};
pub use lifecycle::{
    collect, exec, kill, list, logs, monitor, remove, run_detached, stop, ContainerStatus, ExecOptions,
};
pub use limits::Limits;
pub use logfile::{container_logs, LogOptions, LogRecord};
pub use machine::{Console, Machine, SignalForwarder};
pub use network::{PortMapping, Protocol, Published};
pub use prune::{prune, PruneFilter};
pub use restart::{parse_restart, RestartPolicy};
pub use run::{run, RunRequest, DEFAULT_BOOT_TIMEOUT};
pub use spec::{spec_of, Bind, BootTarget, Network, RunOptions, RunSpec, SecurityOpt, DEFAULT_PATH, MINIMAL_TARGET};
pub use start::{create, mount_root, pause, rename, restart, start, systemd_unit, unpause, wait, StartOptions};
pub use volumes::{
    new_volume_name, parse_mount, parse_volume_flag, prune_volumes, remove_volume, volume_users, MountArg, VolumeMount,
};

pub use usage::{processes, top, usage, Usage};

use crate::snapshot::SnapshotError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("starting {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("the container did not {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("systemd-nspawn exited (status {status}) before the container started")]
    ExitedEarly { status: i32 },
    #[error("{source}; the container's console ended with:\n{tail}")]
    WithConsole { source: Box<RuntimeError>, tail: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    /// A flag or setting names what is not there (`--env-file FILE: no such file`).
    #[error("{what}: {reason}")]
    Missing { what: String, reason: String },
    #[error("{0}: executable file not found in $PATH")]
    NotFound(String),
    #[error("{0}: permission denied (not an executable file)")]
    NotExecutable(String),
    #[error("container {name} is not running")]
    NotRunning { name: String },
    #[error("container {name} is running: stop it first or use -f")]
    Running { name: String },
    /// Something of the container could not be ended or removed; its record stays so
    /// that `rm -f` or `gc` can try again.
    #[error("container {name}: {what}")]
    Left { name: String, what: String },
    #[error("exporting container {name}: {source}")]
    Export { name: String, source: crate::snapshot::diff::DiffError },
    #[error(transparent)]
    Network(Box<network::NetworkError>),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// The exit status docker gives for this failure: 127 not found, 126 not runnable,
    /// 125 for racker's own failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::NotFound(_) => 127,
            RuntimeError::NotExecutable(_) => 126,
            _ => 125,
        }
    }
}
