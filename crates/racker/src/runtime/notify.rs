//! The sd_notify socket racker gives systemd-nspawn: nspawn reports the container's
//! leader PID at once and, with `--notify-ready=yes`, `READY=1` when the container's
//! systemd says it has booted. Readiness is this event, never a polling loop.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::{Result, RuntimeError};

pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

/// Removes the notify sockets in `dir` that nobody listens on any more: their racker was
/// killed before it could remove them (a live one refuses nothing). The directory is
/// shared by every store, so a socket is judged by itself, not by any store's records.
/// Returns the container ids whose sockets went.
pub fn remove_stale(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".notify")) else {
            continue;
        };
        let refused = UnixDatagram::unbound()
            .and_then(|probe| probe.connect(&path))
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
        if refused && std::fs::remove_file(&path).is_ok() {
            removed.push(id.to_owned());
        }
    }
    removed
}

/// What nspawn has told so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readiness {
    pub leader: Option<i32>,
    pub ready: bool,
}

impl NotifySocket {
    pub fn bind(dir: &Path, name: &str) -> Result<NotifySocket> {
        let path = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
        // Only root's nspawn reports here (the directory is 0700 too).
        crate::private::tighten(&path, crate::private::FILE_MODE)
            .map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
        Ok(NotifySocket { socket, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until nspawn reports what is asked for (`want_ready`: READY=1, else the leader
    /// PID), the child exits, or `timeout` passes. What was reported is kept in `state`
    /// also on error: a boot that times out still has a leader to kill.
    pub fn wait(&self, child: &mut Child, state: &mut Readiness, want_ready: bool, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            if state.leader.is_some() && (state.ready || !want_ready) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Timeout { what: if want_ready { "boot" } else { "start" }, after: timeout });
            }
            // Wake up now and then to notice a child that died without a word.
            let slice = left.min(Duration::from_millis(100));
            self.socket
                .set_read_timeout(Some(slice))
                .map_err(|source| RuntimeError::Io { path: self.path.clone(), source })?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        if let Some(pid) = line.strip_prefix("X_NSPAWN_LEADER_PID=") {
                            state.leader = pid.trim().parse().ok();
                        } else if line == "READY=1" {
                            state.ready = true;
                        }
                    }
                }
                // A signal racker forwards to the container (Ctrl-C) interrupts the wait, not the start.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(RuntimeError::ExitedEarly { status: status.code().unwrap_or(-1) });
                    }
                }
                Err(source) => return Err(RuntimeError::Io { path: self.path.clone(), source }),
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
