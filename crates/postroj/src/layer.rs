//! Shell scripts in throw-away command-mode containers of an image: how postroj makes
//! layers (systemd into a registry image, a dependency set into a curated one) and asks
//! an image's package manager questions (a dependency simulation).
//!
//! Command mode, not a boot: no systemd runs while the script does, so package scripts
//! start no services (as in a `docker build`), and the writes are the script's alone.
//! The container is removed however the script ends, and a script that cannot end is
//! stopped: past its timeout, or when a file system it fills is full (apt's download
//! methods then wait forever instead of failing).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use racker::digest::Digest;
use racker::runtime::{self, Bind, CommitError, CommitOptions, Console, RunOptions, RunRequest, RuntimeError};
use racker::snapshot::Driver;
use racker::store::{Store, StoreError};

/// One script run: `/bin/sh -c SCRIPT NAME ARGS…` in a container of `image`.
#[derive(Clone, Debug)]
pub struct Script<'a> {
    /// The image (an id or a name the store resolves).
    pub image: &'a str,
    /// Names the container (`<name>-<random>`) and is the script's `$0`.
    pub name: &'a str,
    pub script: &'a str,
    pub args: Vec<String>,
    pub binds: Vec<Bind>,
    /// Where the output goes; `None`: captured into [`Finished::output`].
    pub console: Option<Console>,
    /// How long the script may run.
    pub timeout: Duration,
    /// A directory whose file system the script writes to: when it is full, the script
    /// is stopped.
    pub watch_space: Option<PathBuf>,
}

/// How long a script runs at most unless told otherwise: an install of many packages
/// from a slow mirror.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How much of a script's output is kept: its start, where the package manager says what
/// it does; a runaway script's flood beyond it is not read.
const MAX_OUTPUT: u64 = 16 << 20;

/// How often a running script's limits are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// A finished script's container, kept for [`Finished::commit`]; removed on drop.
pub struct Finished<'s> {
    store: &'s Store,
    container: String,
    pub exit_code: i32,
    /// What the script wrote to standard output and error, when captured.
    pub output: String,
    /// Why the script was stopped before it ended, if it was.
    pub stopped: Option<String>,
}

impl<'a> Script<'a> {
    pub fn new(image: &'a str, name: &'a str, script: &'a str) -> Script<'a> {
        Script {
            image,
            name,
            script,
            args: Vec::new(),
            binds: Vec::new(),
            console: None,
            timeout: DEFAULT_TIMEOUT,
            watch_space: None,
        }
    }

    /// Runs the script to its end.
    pub fn run<'s>(&self, store: &'s Store) -> Result<Finished<'s>, RuntimeError> {
        let container = format!("{}-{:08x}", self.name, rand::random::<u32>());
        let log_dir = tempfile::Builder::new()
            .prefix("postroj-script-")
            .tempdir()
            .map_err(|source| RuntimeError::Io { path: std::env::temp_dir(), source })?;
        let log: PathBuf = log_dir.path().join("output");
        // From here on the container may exist: the guard removes it on every path.
        let mut finished =
            Finished { store, container: container.clone(), exit_code: -1, output: String::new(), stopped: None };
        let mut command = vec!["-c".to_owned(), self.script.to_owned(), self.name.to_owned()];
        command.extend(self.args.iter().cloned());
        let request = RunRequest {
            options: RunOptions {
                // An entrypoint of the image's own must not wrap the script.
                entrypoint: Some("/bin/sh".into()),
                command,
                binds: self.binds.clone(),
                ..RunOptions::default()
            },
            name: Some(container),
            remove: false,
            boot: Some(false),
            driver: Some(Driver::Overlay),
            output: self.console.clone().unwrap_or_else(|| Console::Log(log.clone())),
            ..RunRequest::default()
        };
        let done = AtomicBool::new(false);
        let stopped = Mutex::new(None);
        let code = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| self.watch(store.root(), &container_name(&request), &done, &stopped));
            let code = runtime::run(store, self.image, &request);
            done.store(true, Ordering::Release);
            // Not a moment's wait for the watcher's next look.
            watcher.thread().unpark();
            code
        })?;
        finished.exit_code = code;
        finished.stopped = stopped.into_inner().unwrap_or_else(|e| e.into_inner());
        finished.output = read_output(&log);
        Ok(finished)
    }
}

fn read_output(log: &Path) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    let _ = std::fs::File::open(log).and_then(|f| f.take(MAX_OUTPUT).read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn container_name(request: &RunRequest) -> String {
    request.name.clone().unwrap_or_default()
}

impl Script<'_> {
    /// Until `done`: stops the container `name` when the script runs past its timeout or
    /// the watched file system is full, saying why in `stopped`.
    fn watch(&self, store_root: &Path, name: &str, done: &AtomicBool, stopped: &Mutex<Option<String>>) {
        let started = Instant::now();
        let mut reason = None;
        while !done.load(Ordering::Acquire) {
            std::thread::park_timeout(WATCH_INTERVAL);
            if reason.is_none() {
                reason = self.limit_reached(started);
            }
            let Some(why) = &reason else { continue };
            // Until the container runs, there is nothing to stop: try again next time.
            let killed = Store::open(store_root)
                .map_err(RuntimeError::from)
                .and_then(|store| runtime::kill(&store, name, rustix::process::Signal::KILL));
            if killed.is_ok() {
                if let Ok(mut slot) = stopped.lock() {
                    *slot = Some(why.clone());
                }
                return;
            }
        }
    }

    fn limit_reached(&self, started: Instant) -> Option<String> {
        if started.elapsed() > self.timeout {
            return Some(format!("it ran longer than {} s", self.timeout.as_secs()));
        }
        let dir = self.watch_space.as_ref()?;
        let fs = rustix::fs::statvfs(dir).ok()?;
        (fs.f_bavail == 0 || fs.f_favail == 0).then(|| format!("the file system of {} is full", dir.display()))
    }
}

impl Finished<'_> {
    /// The script ended by itself with exit status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.stopped.is_none()
    }

    /// The script's writes as a new layer on its image: the new image's id.
    pub fn commit(&self, opts: &CommitOptions) -> Result<Digest, CommitError> {
        runtime::commit(self.store, &self.container, opts)
    }

    /// The last `lines` lines of the output, for error messages.
    pub fn output_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.output.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        match runtime::remove(self.store, &self.container, true) {
            Ok(()) | Err(RuntimeError::Store(StoreError::ContainerNotFound(_))) => {}
            Err(e) => tracing::warn!("removing the container {}: {e}", self.container),
        }
    }
}
