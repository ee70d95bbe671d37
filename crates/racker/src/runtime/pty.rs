//! Real terminals for `exec -t` and `run -t` in boot mode. racker opens the pseudo-
//! terminal pair on the host and hands the slave to nsenter as its stdio and controlling
//! terminal: both survive setns and exec, so the command inside sees a `/dev/pts/N` of
//! its own without racker reaching into the container's devpts. racker relays the master
//! to its caller; the caller's terminal goes into raw mode, so that the container's line
//! discipline (not the caller's) turns Ctrl-C into SIGINT for the foreground process.
// unsafe: pre_exec (setsid and TIOCSCTTY between fork and exec), descriptor 0 borrowed there.
#![allow(unsafe_code)]

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions, Termios};

use super::machine::SignalForwarder;
use super::{Result, RuntimeError};

/// docker's `TERM` for a terminal when the caller has none.
const DEFAULT_TERM: &str = "xterm";

/// How long output is still read once the command has ended, when something it left
/// running keeps the terminal open (the command's own output is there by then).
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Gives the command the caller's `TERM` (docker's `xterm` without one), unless it was
/// set explicitly (`-e TERM=…`).
pub(crate) fn pass_term(env: &mut Vec<(String, String)>) {
    if !env.iter().any(|(k, _)| k == "TERM") {
        let term = std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| DEFAULT_TERM.into());
        env.push(("TERM".into(), term));
    }
}

/// A pseudo-terminal pair opened on the host.
pub struct Pty {
    master: Arc<OwnedFd>,
    slave: OwnedFd,
}

impl Pty {
    /// Opens a pair in the container's own devpts (its `/dev/pts/ptmx`, resolved inside
    /// `root`), so that the command finds its terminal by name (`tty`, `ttyname`) where
    /// it looks: a host pty is not in the container's `/dev/pts`. Its size is the
    /// caller's terminal's, if it has one.
    pub fn open(root: &Path) -> Result<Pty> {
        let error = |what: &str, e: Errno| RuntimeError::Io {
            path: root.join("dev/pts/ptmx"),
            source: io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}")),
        };
        let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| error("open", e))?;
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
        let master = loop {
            match rustix::fs::openat2(&dir, "dev/pts/ptmx", flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                Err(Errno::AGAIN) => continue,
                other => break other.map_err(|e| error("open", e))?,
            }
        };
        // Only the multiplexer itself (char 5:2) hands out terminals: not a node an image
        // put in its place.
        let stat = rustix::fs::fstat(&master).map_err(|e| error("stat", e))?;
        let is_ptmx = rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::CharacterDevice
            && rustix::fs::major(stat.st_rdev) == 5
            && rustix::fs::minor(stat.st_rdev) == 2;
        if !is_ptmx {
            return Err(error("check", Errno::NODEV));
        }
        rustix::pty::grantpt(&master).map_err(|e| error("grantpt", e))?;
        rustix::pty::unlockpt(&master).map_err(|e| error("unlockpt", e))?;
        // TIOCGPTPEER opens the slave through the master itself, not by a path another
        // process could race for.
        let peer = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, peer).map_err(|e| error("TIOCGPTPEER", e))?;
        let pty = Pty { master: Arc::new(master), slave };
        copy_size(&pty.master);
        Ok(pty)
    }

    /// Makes the slave `cmd`'s stdio and controlling terminal, in a session of its own
    /// (its process group is the terminal's foreground, which Ctrl-C signals).
    pub fn attach(&self, cmd: &mut Command) -> Result<()> {
        let dup = || {
            self.slave
                .try_clone()
                .map(Stdio::from)
                .map_err(|source| RuntimeError::Io { path: "pseudo-terminal".into(), source })
        };
        cmd.stdin(dup()?).stdout(dup()?).stderr(dup()?);
        // SAFETY: setsid(2) and ioctl(2) are async-signal-safe; descriptor 0 is the slave,
        // put there by the spawn before this runs.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                Ok(())
            });
        }
        Ok(())
    }

    /// Spawns `cmd` on the terminal and relays it to the caller until the command ends;
    /// the caller's terminal is restored on every way out.
    pub fn run(self, mut cmd: Command, interactive: bool, program: &str) -> Result<ExitStatus> {
        self.attach(&mut cmd)?;
        let spawn_error = |source: io::Error| RuntimeError::Spawn { program: program.to_owned(), source };
        // Raw before the command starts: what the user types early must not be echoed twice.
        let _raw = if interactive { RawMode::enter() } else { None };
        let _resize = Resizer::start(Arc::clone(&self.master));
        let mut child = cmd.spawn().map_err(spawn_error)?;
        // Only the command holds the slave now: the master reads EIO once it is done.
        drop(self.slave);
        let _signals = SignalForwarder::to_group(child.id() as i32)?;
        let pidfd =
            rustix::process::pidfd_open(rustix::process::Pid::from_child(&child), rustix::process::PidfdFlags::empty())
                .map_err(|e| spawn_error(e.into()))?;
        relay(&self.master, &pidfd, interactive);
        child.wait().map_err(spawn_error)
    }
}

/// Copies the caller's window size (from whichever of its stdio is a terminal) to `master`.
fn copy_size(master: &OwnedFd) {
    let size = termios::tcgetwinsize(io::stdin())
        .or_else(|_| termios::tcgetwinsize(io::stdout()))
        .or_else(|_| termios::tcgetwinsize(io::stderr()));
    if let Ok(size) = size {
        let _ = termios::tcsetwinsize(master, size);
    }
}

/// Relays the caller's input to `master` and its output to the caller's stdout, until
/// the terminal is closed (EIO) or the process behind `pidfd` ended and the output has
/// been drained.
fn relay(master: &OwnedFd, pidfd: &OwnedFd, interactive: bool) {
    let stdin = io::stdin();
    let mut stdout = io::stdout().lock();
    let mut input_open = interactive;
    let mut output_open = true;
    let mut ended = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let stdin_fd = stdin.as_fd();
        let mut fds = vec![PollFd::new(master, PollFlags::IN)];
        if !ended {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        if input_open {
            fds.push(PollFd::new(&stdin_fd, PollFlags::IN));
        }
        let grace = Timespec { tv_sec: 0, tv_nsec: DRAIN_GRACE.as_nanos() as i64 };
        match poll(&mut fds, if ended { Some(&grace) } else { None }) {
            Ok(0) => return, // ended, and nothing more came
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready = |fd: &PollFd| !fd.revents().is_empty();
        let master_ready = ready(&fds[0]);
        let pid_ready = !ended && ready(&fds[1]);
        let stdin_ready = input_open && fds.last().is_some_and(ready);
        drop(fds);
        if master_ready {
            match rustix::io::read(master, &mut buf) {
                Ok(0) | Err(Errno::IO) => return,
                Ok(n) => {
                    // A caller that stopped reading does not stop the command: its output
                    // is dropped from then on, as it would be on a hung-up terminal.
                    if output_open && stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                        output_open = false;
                    }
                }
                Err(Errno::INTR | Errno::AGAIN) => {}
                Err(_) => return,
            }
        }
        if stdin_ready {
            match rustix::io::read(stdin_fd, &mut buf) {
                Ok(0) | Err(_) => input_open = false,
                Ok(n) => {
                    if write_all(master, &buf[..n]).is_err() {
                        input_open = false;
                    }
                }
            }
        }
        if pid_ready {
            ended = true;
        }
    }
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> rustix::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The caller's terminal in raw mode while it lives; restored when dropped, also on
/// errors and panics that unwind.
pub(super) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// None when standard input is no terminal (a pipe, a file): nothing to change.
    pub(super) fn enter() -> Option<RawMode> {
        let stdin = io::stdin();
        if !termios::isatty(&stdin) {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drain: output still on its way is written with the raw settings it was meant for.
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Drain, &self.saved);
    }
}

/// Follows the caller's window size (SIGWINCH) onto the container's terminal while it lives.
struct Resizer {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Resizer {
    fn start(master: Arc<OwnedFd>) -> Option<Resizer> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH]).ok()?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for _ in signals.forever() {
                copy_size(&master);
            }
        });
        Some(Resizer { handle, thread: Some(thread) })
    }
}

impl Drop for Resizer {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
