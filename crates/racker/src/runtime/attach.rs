//! `racker attach`: a detached container's output as it is written and, for one made
//! with `-i`, the caller's input on its standard input, as `docker attach` gives them.
//! The monitor holds the container's stdin pipe and serves it on a socket in the
//! runtime directory (`<id>.attach`, root's alone); `attach` writes what it reads there
//! until docker's detach keys (ctrl-p,ctrl-q, or `--detach-keys`) or the container's end.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex};

use super::lifecycle::is_running;
use super::logfile::{container_logs, LogOptions};
use super::machine::SignalForwarder;
use super::pty::RawMode;
use super::{runtime_dir, spec_of, Result, RuntimeError};
use crate::store::{ContainerState, Store};

fn socket_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.attach"))
}

/// The monitor's side: the socket whose clients' bytes go to the container's stdin.
/// Each start of the container hands over its new pipe ([`InputRelay::connect`]).
pub(super) struct InputRelay {
    path: PathBuf,
    sink: Arc<Mutex<Option<ChildStdin>>>,
}

impl InputRelay {
    pub(super) fn serve(dir: &Path, id: &str) -> Result<InputRelay> {
        let path = socket_path(dir, id);
        let io = |source| RuntimeError::Io { path: path.clone(), source };
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io)?;
        let sink: Arc<Mutex<Option<ChildStdin>>> = Arc::default();
        let shared = Arc::clone(&sink);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let sink = Arc::clone(&shared);
                std::thread::spawn(move || relay(client, &sink));
            }
        });
        Ok(InputRelay { path, sink })
    }

    /// The stdin of the container's current run.
    pub(super) fn connect(&self, stdin: Option<ChildStdin>) {
        if let Ok(mut sink) = self.sink.lock() {
            *sink = stdin;
        }
    }
}

impl Drop for InputRelay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies one client's bytes to the container's stdin, until either side ends.
fn relay(mut client: UnixStream, sink: &Mutex<Option<ChildStdin>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = client.read(&mut buf) {
        let Ok(mut sink) = sink.lock() else { return };
        if let Some(stdin) = sink.as_mut() {
            if stdin.write_all(&buf[..n]).and_then(|()| stdin.flush()).is_err() {
                *sink = None; // the run ended; the next start brings a new pipe
            }
        }
    }
}

/// docker's `--detach-keys`: comma-separated keys, each a character or `ctrl-X` (X one
/// of a-z, @, [, \, ], ^, _), as bytes.
pub fn parse_detach_keys(value: &str) -> std::result::Result<Vec<u8>, String> {
    let bad = |key: &str| {
        format!("invalid --detach-keys {value:?}: {key:?} is not a key: use a character or ctrl-X, as in ctrl-p,ctrl-q")
    };
    value
        .split(',')
        .map(|key| match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                b @ b'a'..=b'z' => Ok(b - b'a' + 1),
                b @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_') => Ok(b - b'@'),
                _ => Err(bad(key)),
            },
            None if key.len() == 1 => Ok(key.as_bytes()[0]),
            _ => Err(bad(key)),
        })
        .collect()
}

/// Finds the detach keys in a stream of input, passing on every other byte (also a
/// partial match that the next byte breaks), as docker's proxy does.
#[derive(Debug)]
struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    /// Appends to `out` what goes to the container; true once the keys were typed.
    fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
            } else if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        false
    }
}

/// `racker attach`'s options.
pub struct AttachOptions {
    /// Pass the caller's standard input (docker's default; `--no-stdin` turns it off).
    pub stdin: bool,
    pub detach_keys: Vec<u8>,
    /// Forward SIGINT, SIGTERM, SIGHUP and SIGQUIT to the container's main process.
    pub sig_proxy: bool,
}

/// Attaches to a running container: its output (stdout to `out`, stderr to `err`) from
/// now on and, if it was made with `-i`, the caller's stdin as its input. Returns its
/// status once it ends. Typing the detach keys calls `on_detach` (output is followed
/// until the container ends, so the caller ends its attach there).
pub fn attach(
    store: &Store,
    name: &str,
    opts: &AttachOptions,
    on_detach: Box<dyn Fn() + Send>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32> {
    let record = store.container(name)?;
    let restarting = record.state == ContainerState::Restarting && super::lifecycle::alive(record.monitor_pid);
    if !is_running(&record) && !restarting {
        return Err(RuntimeError::Invalid {
            what: format!("container {}", record.name),
            reason: "it is not running: you cannot attach to a stopped container, start it first".into(),
        });
    }
    let spec = spec_of(&record).unwrap_or_default();
    // Output from now on, by time: what the input passed below makes is written later,
    // however soon the container answers.
    let follow = LogOptions { follow: true, since: Some(chrono::Utc::now()), ..LogOptions::default() };
    // A container with a terminal gets the keys as typed: the caller's terminal goes raw
    // (restored before the detach keys end the caller, and when the container ends).
    let raw = Arc::new(Mutex::new(None));
    if opts.stdin && spec.interactive && !spec.boot {
        let path = socket_path(&runtime_dir()?, &record.id);
        let socket = UnixStream::connect(&path).map_err(|source| RuntimeError::Io { path, source })?;
        let keys = DetachKeys { keys: opts.detach_keys.clone(), matched: 0 };
        if spec.tty {
            *lock(&raw) = RawMode::enter();
        }
        let raw = Arc::clone(&raw);
        std::thread::spawn(move || {
            pass_input(socket, keys, &|| {
                lock(&raw).take();
                on_detach();
            })
        });
    }
    // Only a leader known to be this run's (its start time checked): never a reused pid.
    let _signals = match (opts.sig_proxy && !spec.tty, record.leader.filter(|_| is_running(&record))) {
        (true, Some(leader)) => Some(SignalForwarder::to_process(leader.pid as i32)?),
        _ => None,
    };
    let followed = container_logs(store, name, &follow, out, err);
    lock(&raw).take();
    followed?;
    super::start::wait(store, name)
}

/// The raw-mode slot, also after a panic elsewhere (it only restores the terminal).
fn lock(raw: &Mutex<Option<RawMode>>) -> std::sync::MutexGuard<'_, Option<RawMode>> {
    raw.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies the caller's stdin to the container until the detach keys or the end of input.
fn pass_input(mut socket: UnixStream, mut keys: DetachKeys, on_detach: &dyn Fn()) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut pass = Vec::with_capacity(buf.len());
    while let Ok(n @ 1..) = stdin.read(&mut buf) {
        pass.clear();
        let detach = keys.scan(&buf[..n], &mut pass);
        if socket.write_all(&pass).is_err() {
            return;
        }
        if detach {
            on_detach();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_writes_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q"), Ok(vec![16, 17]));
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-[,a"), Ok(vec![0, 27, b'a']));
        for bad in ["ctrl-", "ctrl-pp", "ab", "ctrl-1", ""] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_keys_are_found_across_reads_and_a_broken_match_is_passed_on() {
        let mut keys = DetachKeys { keys: vec![16, 17], matched: 0 };
        let mut out = Vec::new();
        assert!(!keys.scan(b"ab\x10", &mut out));
        assert!(!keys.scan(b"c\x10", &mut out), "ctrl-p then c is input");
        assert_eq!(out, b"ab\x10c");
        assert!(keys.scan(b"\x11rest", &mut out));
        assert_eq!(out, b"ab\x10c", "nothing of the keys or after them goes on");
        let mut keys = DetachKeys { keys: vec![16, 17], matched: 0 };
        let mut out = Vec::new();
        assert!(!keys.scan(b"\x10\x10x", &mut out));
        assert_eq!(out, b"\x10\x10x");
    }
}
