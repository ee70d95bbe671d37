//! Shell scripts in throw-away command-mode containers of an image: how postroj makes
//! layers (systemd into a registry image, a dependency set into a curated one) and asks
//! an image's package manager questions (a dependency simulation).
//!
//! Command mode, not a boot: no systemd runs while the script does, so package scripts
//! start no services (as in a `docker build`), and the writes are the script's alone.
//! The container is removed however the script ends.

use std::path::PathBuf;

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
}

/// A finished script's container, kept for [`Finished::commit`]; removed on drop.
pub struct Finished<'s> {
    store: &'s Store,
    container: String,
    pub exit_code: i32,
    /// What the script wrote to standard output and error, when captured.
    pub output: String,
}

impl<'a> Script<'a> {
    pub fn new(image: &'a str, name: &'a str, script: &'a str) -> Script<'a> {
        Script { image, name, script, args: Vec::new(), binds: Vec::new(), console: None }
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
        let mut finished = Finished { store, container: container.clone(), exit_code: -1, output: String::new() };
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
        finished.exit_code = runtime::run(store, self.image, &request)?;
        finished.output = std::fs::read(&log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        Ok(finished)
    }
}

impl Finished<'_> {
    pub fn success(&self) -> bool {
        self.exit_code == 0
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
