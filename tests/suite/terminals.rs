//! Real terminals: racker driven through a pseudo-terminal on the test's side, as a user
//! at a terminal drives it (racker's stdio is the slave and its controlling terminal; the
//! test types into the master and reads what racker shows there).
// unsafe: pre_exec, to give racker the test's terminal as its controlling terminal.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::termios::Winsize;

use crate::common::images;
use crate::common::{require_root, TempStore};

/// The test's side of a terminal racker runs on: everything shown on it is collected.
struct Terminal {
    master: Arc<OwnedFd>,
    shown: Arc<(Mutex<Vec<u8>>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn size(rows: u16, cols: u16) -> Winsize {
    Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl Terminal {
    /// Starts `cmd` on a new terminal of `rows`×`cols`, in a session of its own whose
    /// controlling terminal it is (so that it gets SIGWINCH), with `TERM` set to `term`.
    fn spawn(mut cmd: Command, rows: u16, cols: u16, term: &str) -> (Child, Terminal) {
        let flags = rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY;
        let master = rustix::pty::openpt(flags | rustix::pty::OpenptFlags::CLOEXEC).expect("posix_openpt");
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        rustix::termios::tcsetwinsize(&master, size(rows, cols)).expect("setting the window size");
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).expect("opening the slave");
        let dup = || Stdio::from(slave.try_clone().expect("dup"));
        cmd.stdin(dup()).stdout(dup()).stderr(dup()).env("TERM", term);
        // SAFETY: setsid(2) and ioctl(2) are async-signal-safe; descriptor 0 is the slave.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting racker on the terminal");
        drop(slave);
        let master = Arc::new(master);
        let shown = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let reader = {
            let (master, shown) = (Arc::clone(&master), Arc::clone(&shown));
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once racker (and everything it started on the terminal) is gone.
                while let Ok(n @ 1..) = rustix::io::read(master.as_fd(), &mut buf) {
                    let (text, changed) = &*shown;
                    text.lock().expect("lock").extend_from_slice(&buf[..n]);
                    changed.notify_all();
                }
            })
        };
        (child, Terminal { master, shown, reader: Some(reader) })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.shown.0.lock().expect("lock")).into_owned()
    }

    /// Waits until `want` has been shown (a bound against hanging, not a timing check).
    fn expect(&self, want: &str) -> String {
        let (text, changed) = &*self.shown;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut shown = text.lock().expect("lock");
        while !String::from_utf8_lossy(&shown).contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{want:?} never shown; the terminal shows:\n{}", String::from_utf8_lossy(&shown));
            shown = changed.wait_timeout(shown, left).expect("lock").0;
        }
        String::from_utf8_lossy(&shown).into_owned()
    }

    fn type_in(&self, bytes: &[u8]) {
        let mut left = bytes;
        while !left.is_empty() {
            let n = rustix::io::write(self.master.as_fd(), left).expect("typing into the terminal");
            left = &left[n..];
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        rustix::termios::tcsetwinsize(self.master.as_fd(), size(rows, cols)).expect("resizing the terminal");
    }

    /// Everything shown, once racker is gone.
    fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader");
        }
        self.text()
    }
}

/// A store with the busybox image as `bb` and a detached container `box` running in it.
fn store_with_box() -> (TempStore, tempfile::TempDir) {
    require_root();
    let store = TempStore::new();
    let dir = images::add_busybox(&store);
    store.ok(&["run", "-d", "--name", "box", "bb", "sleep", "1000"]);
    (store, dir)
}

fn racker(store: &TempStore, args: &[&str]) -> Command {
    let mut cmd = store.cmd();
    cmd.args(args);
    cmd
}

#[test]
fn exec_it_gives_a_terminal_of_the_callers_size_that_follows_it() {
    let (store, _dir) = store_with_box();
    let script = "tty; stty size; echo term=$TERM; trap 'stty size' WINCH; echo ready; \
                  while :; do sleep 0.1; done";
    let cmd = racker(&store, &["exec", "-it", "box", "sh", "-c", script]);
    let (mut child, term) = Terminal::spawn(cmd, 33, 111, "racker-test-term");
    let shown = term.expect("ready");
    assert!(shown.contains("/dev/pts/"), "tty names the container's terminal: {shown}");
    assert!(shown.contains("33 111"), "the caller's size: {shown}");
    assert!(shown.contains("term=racker-test-term"), "the caller's TERM: {shown}");
    term.resize(40, 120);
    term.expect("40 120");
    // Ctrl-C, typed: the container's line discipline signals the foreground process.
    term.type_in(b"\x03");
    let status = child.wait().expect("racker exec");
    assert_eq!(status.code(), Some(130), "ended by SIGINT: {}", term.finish());
    store.ok(&["rm", "-f", "box"]);
    store.assert_clean();
}

#[test]
fn ctrl_c_interrupts_a_sleep_and_the_terminal_is_restored() {
    let (store, _dir) = store_with_box();
    let cmd = racker(&store, &["exec", "-it", "box", "sh", "-c", "echo sleeping; exec sleep 1000"]);
    let (mut child, term) = Terminal::spawn(cmd, 24, 80, "xterm");
    term.expect("sleeping");
    term.type_in(b"\x03");
    assert_eq!(child.wait().expect("racker exec").code(), Some(130), "{}", term.text());
    // racker put its terminal back as it found it: canonical mode, echo on.
    let attrs = rustix::termios::tcgetattr(term.master.as_fd()).expect("tcgetattr");
    let local = attrs.local_modes;
    assert!(
        local.contains(rustix::termios::LocalModes::ICANON) && local.contains(rustix::termios::LocalModes::ECHO),
        "the caller's terminal was left raw: {local:?}"
    );
    term.finish();
    // Without -i nothing is read from the caller, and the command still has a terminal.
    let cmd = racker(&store, &["exec", "-t", "box", "sh", "-c", "tty; exit 3"]);
    let (mut child, term) = Terminal::spawn(cmd, 24, 80, "xterm");
    assert_eq!(child.wait().expect("racker exec").code(), Some(3));
    assert!(term.finish().contains("/dev/pts/"));
    store.ok(&["rm", "-f", "box"]);
    store.assert_clean();
}

#[test]
fn exec_d_starts_a_command_that_ends_with_the_container() {
    let (store, _dir) = store_with_box();
    let o = store.run(&["exec", "-d", "box", "sh", "-c", "echo detached > /tmp/mark; exec sleep 1000"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    crate::common::wait_until(30, "the detached command never ran", || {
        store.run(&["exec", "box", "cat", "/tmp/mark"]).stdout == b"detached\n"
    });
    let o = store.ok(&["exec", "box", "sh", "-c", "ps -o args | grep -c '^sleep 1000' || true"]);
    assert_eq!(o.trim(), "2", "the container's sleep and the detached one: {o}");
    store.ok(&["rm", "-f", "box"]);
    store.assert_clean();
}

#[test]
fn run_it_in_boot_mode_gives_the_command_a_terminal() {
    require_root();
    let store = TempStore::new();
    let tarball = images::debian_rootfs_tarball();
    store.ok(&["import", "-q", tarball.to_str().expect("utf-8"), "debian:bookworm-systemd"]);
    let script = "tty; stty size; echo term=$TERM; echo sleeping; exec sleep 1000";
    let cmd = racker(
        &store,
        &["run", "-it", "--rm", "--boot-target", "minimal", "debian:bookworm-systemd", "sh", "-c", script],
    );
    let (mut child, term) = Terminal::spawn(cmd, 33, 111, "racker-boot-term");
    let shown = term.expect("sleeping");
    assert!(shown.contains("/dev/pts/"), "tty names the container's terminal: {shown}");
    assert!(shown.contains("33 111"), "the caller's size: {shown}");
    assert!(shown.contains("term=racker-boot-term"), "the caller's TERM: {shown}");
    term.type_in(b"\x03");
    assert_eq!(child.wait().expect("racker run").code(), Some(130), "{}", term.text());
    term.finish();
    store.assert_clean();
}

#[test]
fn attach_to_a_dit_container_types_raw_and_detaches_with_the_terminal_restored() {
    require_root();
    let store = TempStore::new();
    let _dir = images::add_busybox(&store);
    let script = "tty; while read x; do echo \"got $x\"; [ \"$x\" = quit ] && exit 5; done";
    store.ok(&["run", "-dit", "--name", "tbox", "bb", "sh", "-c", script]);
    let (mut child, term) = Terminal::spawn(racker(&store, &["attach", "tbox"]), 24, 80, "xterm");
    term.type_in(b"hello\r");
    term.expect("got hello");
    // docker's keys: the container runs on, and racker gave the terminal back as it was.
    term.type_in(b"\x10\x11");
    assert_eq!(child.wait().expect("racker attach").code(), Some(0), "{}", term.text());
    let local = rustix::termios::tcgetattr(term.master.as_fd()).expect("tcgetattr").local_modes;
    assert!(local.contains(rustix::termios::LocalModes::ICANON), "the terminal was left raw: {local:?}");
    term.finish();
    assert!(store.ok(&["ps"]).contains("tbox"));
    let (mut child, term) = Terminal::spawn(racker(&store, &["attach", "tbox"]), 24, 80, "xterm");
    term.type_in(b"quit\r");
    assert_eq!(child.wait().expect("racker attach").code(), Some(5), "{}", term.text());
    let logs = store.ok(&["logs", "tbox"]);
    assert!(logs.contains("/dev/pts/") && logs.contains("got hello"), "{logs}");
    store.ok(&["rm", "tbox"]);
    store.assert_clean();
}
