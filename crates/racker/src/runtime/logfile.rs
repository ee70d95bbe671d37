//! Container logs as docker's json-file driver keeps them: the monitor of a detached
//! command-mode container reads the command's stdout and stderr from two pipes and
//! writes one JSON object per line, `{"log": …, "stream": "stdout"|"stderr", "time": …}`
//! (RFC 3339 with nanoseconds), to a 0600 file beside the container's console. Keeping
//! the streams apart and stamped is what `logs --tail/--since/--until/-t` and
//! stdout-to-stdout need; a console log has neither. Booted containers keep showing their
//! console and journal.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{nspawn, spec_of, Result, RuntimeError};
use crate::store::Store;

/// Longest piece of a line kept in one record, as docker splits long lines at 16 KiB.
const MAX_RECORD: usize = 16 * 1024;

/// The json log of the container whose console is logged at `console`.
pub(crate) fn json_log_path(console: &Path) -> PathBuf {
    let stem = console.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    console.with_file_name(format!("{stem}-json.log"))
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRecord {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// The writer side: one thread per stream, both appending whole records to one file.
pub(crate) struct JsonLog {
    threads: Vec<JoinHandle<()>>,
}

impl JsonLog {
    /// Opens the log for appending: a container started again keeps its earlier output.
    pub(crate) fn create(path: &Path) -> Result<std::fs::File> {
        let io = |source| RuntimeError::Io { path: path.to_owned(), source };
        let mut file = crate::private::create_file(path, false).map_err(io)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(file)
    }

    /// Starts copying `stdout` and `stderr` into `file`, until both are closed.
    pub(crate) fn start(
        file: std::fs::File,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> JsonLog {
        let file = Arc::new(Mutex::new(file));
        let copy = |stream: &'static str, input: Box<dyn Read + Send>| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || copy_records(stream, input, &file))
        };
        JsonLog { threads: vec![copy("stdout", Box::new(stdout)), copy("stderr", Box::new(stderr))] }
    }

    /// Waits until both streams are closed and written.
    pub(crate) fn finish(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn copy_records(stream: &'static str, input: Box<dyn Read + Send>, file: &Mutex<std::fs::File>) {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut input).take(MAX_RECORD as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let record = LogRecord {
            log: String::from_utf8_lossy(&line).into_owned(),
            stream: stream.to_owned(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
        };
        let Ok(mut text) = serde_json::to_vec(&record) else { continue };
        text.push(b'\n');
        // One write per record: the two streams never interleave within a line. A full
        // disk loses records, never the container.
        if let Ok(mut file) = file.lock() {
            let _ = file.write_all(&text);
        }
    }
}

/// `racker logs`'s choices.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Go on showing what is written until the container ends.
    pub follow: bool,
    /// Only the last N records (None: all).
    pub tail: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Prefix every line with its time.
    pub timestamps: bool,
}

impl LogOptions {
    fn shows(&self, time: &DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| *time >= s) && self.until.is_none_or(|u| *time <= u)
    }
}

/// Writes a container's logs: a command-mode container's records (stdout to `out`,
/// stderr to `err`), or a booted one's console and journal to `out`.
pub fn container_logs(
    store: &Store,
    name: &str,
    opts: &LogOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let record = store.container(name)?;
    let spec = spec_of(&record).unwrap_or_default();
    let json = spec.console.as_deref().map(json_log_path).filter(|p| p.exists());
    match json {
        Some(path) if !spec.boot => follow_json(&path, record.monitor_pid, opts, out, err),
        _ => booted_logs(store, name, opts, out),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io { path: path.to_owned(), source }
}

/// Prints one record as asked; false once past `--until` (nothing later can show).
fn show(line: &[u8], opts: &LogOptions, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<bool> {
    let Ok(record) = serde_json::from_slice::<LogRecord>(line) else { return Ok(true) };
    let Ok(time) = DateTime::parse_from_rfc3339(&record.time).map(|t| t.with_timezone(&Utc)) else { return Ok(true) };
    if opts.until.is_some_and(|u| time > u) {
        return Ok(false);
    }
    if !opts.shows(&time) {
        return Ok(true);
    }
    let target: &mut dyn Write = if record.stream == "stderr" { err } else { out };
    if opts.timestamps {
        write!(target, "{} ", record.time)?;
    }
    target.write_all(record.log.as_bytes())?;
    target.flush()?;
    Ok(true)
}

/// Shows the records of `path`, then (`follow`) those written later, until the monitor
/// `monitor_pid` (the writer) has ended: it finishes the log before it exits.
fn follow_json(
    path: &Path,
    monitor_pid: Option<i64>,
    opts: &LogOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let wrap = io_error(path);
    // Watching starts before the first read, so that nothing written in between is missed.
    let watch = if opts.follow { Watch::start(path, monitor_pid) } else { None };
    let mut file = std::fs::File::open(path).map_err(&wrap)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(&wrap)?;
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let lines: Vec<&[u8]> = text[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let first = opts.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[first..] {
        if !show(line, opts, out, err).map_err(&wrap)? {
            return Ok(());
        }
    }
    let Some(watch) = watch else { return Ok(()) };
    let mut offset = complete as u64;
    loop {
        let ended = watch.wait();
        file.seek(SeekFrom::Start(offset)).map_err(&wrap)?;
        let mut more = Vec::new();
        file.read_to_end(&mut more).map_err(&wrap)?;
        let complete = more.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in more[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if !show(line, opts, out, err).map_err(&wrap)? {
                return Ok(());
            }
        }
        offset += complete as u64;
        if ended {
            return Ok(());
        }
    }
}

/// What `logs -f` waits on: the log file growing (inotify), or its writer ending (pidfd).
struct Watch {
    inotify: std::os::fd::OwnedFd,
    writer: Option<std::os::fd::OwnedFd>,
}

impl Watch {
    /// None when the writer has already ended: the log is complete.
    fn start(path: &Path, monitor_pid: Option<i64>) -> Option<Watch> {
        use rustix::fs::inotify;
        let pid = monitor_pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw)?;
        let writer = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // A monitor pid reused by another process would be followed forever: only while
        // the container's record still names a live owner is it the writer.
        super::lifecycle::identify(pid.as_raw_nonzero().get())?;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC).ok()?;
        inotify::add_watch(&fd, path, inotify::WatchFlags::MODIFY | inotify::WatchFlags::CLOSE_WRITE).ok()?;
        Some(Watch { inotify: fd, writer: Some(writer) })
    }

    /// Waits until the file changed or the writer ended; true once it ended.
    fn wait(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let Some(writer) = &self.writer else { return true };
        let mut fds = [PollFd::new(&self.inotify, PollFlags::IN), PollFd::new(writer, PollFlags::IN)];
        loop {
            match poll(&mut fds, None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return true,
            }
        }
        if !fds[0].revents().is_empty() {
            // The events themselves say nothing more than "changed": drain them.
            let mut buf = [0u8; 4096];
            let _ = rustix::io::read(&self.inotify, &mut buf);
        }
        !fds[1].revents().is_empty()
    }
}

/// A booted container's console, and while it runs its journal (`--tail`, `--since`,
/// `--until` and `-f` apply to the journal, which has its own timestamps).
fn booted_logs(store: &Store, name: &str, opts: &LogOptions, out: &mut dyn Write) -> Result<()> {
    let record = store.container(name)?;
    let spec = spec_of(&record).unwrap_or_default();
    if let Some(console) = spec.console.as_ref().filter(|_| opts.tail.is_none() && opts.since.is_none()) {
        match std::fs::read(console) {
            Ok(bytes) => out.write_all(&bytes).map_err(io_error(console))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuntimeError::Io { path: console.clone(), source }),
        }
    }
    let leader = record.leader.filter(|_| super::lifecycle::is_running(&record));
    let (true, Some(leader)) = (spec.boot, leader) else { return Ok(()) };
    let mut spec = spec;
    let mut argv: Vec<String> = ["journalctl", "--no-pager", "--quiet", "--boot"].map(String::from).to_vec();
    if let Some(n) = opts.tail {
        argv.push(format!("--lines={n}"));
    }
    if let Some(since) = opts.since {
        argv.push(format!("--since=@{}", since.timestamp()));
    }
    if let Some(until) = opts.until {
        argv.push(format!("--until=@{}", until.timestamp()));
    }
    if opts.follow {
        argv.push("--follow".into());
    }
    if opts.timestamps {
        argv.push("--output=short-iso-precise".into());
    }
    spec.argv = argv;
    spec.workdir = "/".into();
    let mut child = nspawn::enter(&spec, leader.pid as i32, None)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| RuntimeError::Spawn { program: "nsenter journalctl".into(), source })?;
    // Streamed: with --follow it ends when the container does.
    let copied = child.stdout.take().map(|mut journal| std::io::copy(&mut journal, out));
    if matches!(copied, Some(Err(_))) {
        let _ = child.kill();
    }
    let _ = child.wait();
    match copied {
        Some(Err(source)) => Err(RuntimeError::Io { path: "stdout".into(), source }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_streams_apart_and_filter_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c-json.log");
        let file = JsonLog::create(&path).expect("create");
        let mut log = JsonLog::start(file, &b"out 1\nout 2\n"[..], &b"err 1\n"[..]);
        log.finish();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        follow_json(&path, None, &LogOptions::default(), &mut out, &mut err).expect("read");
        assert_eq!((out.as_slice(), err.as_slice()), (&b"out 1\nout 2\n"[..], &b"err 1\n"[..]));
        let later = LogOptions { since: Some(Utc::now() + chrono::Duration::hours(1)), ..LogOptions::default() };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        follow_json(&path, None, &later, &mut out, &mut err).expect("read");
        assert!(out.is_empty() && err.is_empty());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    }
}
