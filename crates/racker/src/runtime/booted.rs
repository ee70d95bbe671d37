//! A booted throw-away container that a caller drives step by step (postroj's probes:
//! install, start units, ask their state), with every command's output captured. It is
//! torn down by [`Booted::stop`] (or, failing that, when dropped): the leader killed, the
//! snapshot and record removed. [`Booted::keep`] leaves it running instead, for a person
//! to look into (`racker exec`, then `racker rm -f`).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use super::machine::Machine;
use super::run::{boot, check_command, discard, discard_or_warn, prepare, Prepared};
use super::{Result, RunRequest, RuntimeError};
use crate::store::Store;

pub struct Booted<'s> {
    store: &'s Store,
    prepared: Prepared,
    machine: Machine,
    /// Stopped or kept: nothing is left for drop to do.
    done: bool,
}

impl<'s> Booted<'s> {
    /// Boots `image` (always in boot mode, always removed at the end) and waits until
    /// systemd reports it ready, at most `request.boot_timeout`.
    pub fn start(store: &'s Store, image: &str, request: &RunRequest) -> Result<Booted<'s>> {
        let request = RunRequest { boot: Some(true), remove: true, ..request.clone() };
        let prepared = prepare(store, image, &request, true)?;
        match boot(store, &prepared, request.boot_timeout) {
            Ok(machine) => Ok(Booted { store, prepared, machine, done: false }),
            Err(e) => {
                discard_or_warn(store, &*prepared.snapshotter, &prepared.id);
                Err(e)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.prepared.name
    }

    /// The container's root file system as the host sees it.
    pub fn rootfs(&self) -> &Path {
        &self.prepared.rootfs
    }

    /// The directory that holds exactly what the container has written so far, in
    /// overlayfs notation (whiteouts for deletions): what a caller diffs to see the
    /// effects of a step. Overlay snapshots only; btrfs fails with
    /// [`SnapshotError::NoUpper`](crate::snapshot::SnapshotError::NoUpper).
    pub fn upper_dir(&self) -> Result<PathBuf> {
        Ok(self.prepared.snapshotter.upper_dir(&self.prepared.id)?)
    }

    /// The unpacked layers of the container's image, base first, whiteouts in overlayfs
    /// notation: what tells a file the container changed from one it added.
    pub fn image_layer_dirs(&self) -> Result<Vec<PathBuf>> {
        let record = self.store.container(&self.prepared.id)?;
        let image = self.store.image(&record.image_id)?;
        Ok(image.layers.iter().map(|layer| self.store.layer_dir(layer.layer_id)).collect())
    }

    /// Runs `argv` inside the booted system with the image's environment and no input;
    /// returns its status and captured output. `timeout` ends a command that hangs.
    pub fn exec(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        let spec = super::RunSpec {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            interactive: false,
            tty: false,
            ..self.prepared.spec.clone()
        };
        check_command(&self.prepared.rootfs, &spec)?;
        let mut cmd = self.machine.enter(&spec, None)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?;
        wait_with_timeout(child, timeout)
    }

    /// The container's address on its private network (`--network private|NAME`); None
    /// on the host's network.
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        super::network::endpoint(self.store, &self.prepared.id).ok().flatten().map(|(_, a)| a.address)
    }

    /// The last lines of the container's console (systemd's own messages).
    pub fn console_tail(&self, lines: usize) -> Option<String> {
        self.machine.console_tail(lines)
    }

    /// Tears the container down now: its processes ended, its snapshot, cgroup and record
    /// removed. Unlike a drop, says what could not be removed (its record then stays, for
    /// `racker rm -f` or `gc`).
    pub fn stop(mut self) -> Result<()> {
        self.done = true;
        let ended = self.machine.terminate();
        let removed = discard(self.store, &*self.prepared.snapshotter, &self.prepared.id);
        ended.and(removed)
    }

    /// Leaves the container running after this handle and this process are gone, for a
    /// person to look into: `racker ps` lists it, `racker exec NAME` enters it and
    /// `racker rm -f NAME` removes it. Its record names systemd-nspawn as its owner, whose
    /// life is the container's: `racker gc` leaves it alone while it runs and cleans up
    /// after it once it has ended. Returns its name. On error it is torn down as usual.
    pub fn keep(mut self) -> Result<String> {
        self.store.set_container_owner(&self.prepared.id, i64::from(self.machine.pid()))?;
        self.machine.release();
        self.done = true;
        Ok(self.prepared.name.clone())
    }
}

impl Drop for Booted<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(e) = self.machine.terminate() {
            tracing::warn!("ending container {}: {e}", self.prepared.name);
        }
        discard_or_warn(self.store, &*self.prepared.snapshotter, &self.prepared.id);
    }
}

/// Collects a child's output; kills it (and reports a timeout) when it runs too long.
fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Result<Output> {
    // Drain both pipes on threads, so a chatty command cannot block on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match waited.recv_timeout(timeout) {
        Ok(status) => status.map_err(|source| RuntimeError::Spawn { program: "nsenter".into(), source })?,
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err(RuntimeError::Timeout { what: "finish the command", after: timeout });
        }
    };
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}
