//! What both command lines (`racker`, `postroj`) do the same way at their edge.

/// Logs to standard error, filtered by `RACKER_LOG` (warnings by default). By default
/// not rustls-platform-verifier's: it logs every certificate it rejects as an ERROR,
/// and the command reports that failure as its one-line error anyway.
pub fn init_logging() {
    let default = || "warn,rustls_platform_verifier=off".into();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RACKER_LOG").unwrap_or_else(|_| default()))
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes on one line, each cause once: library errors already
/// include their source in their message.
pub fn one_line(err: &anyhow::Error) -> String {
    racker::error::chain(err.as_ref())
}

/// Standard output could not be written. A closed pipe (`racker images | head -1`) is
/// the reader's choice: the program ends quietly (see [`exit_code_of`]) instead of
/// dying of SIGPIPE as docker does, so that a container being torn down is never cut
/// short by its output going away.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct StdoutError(#[from] pub std::io::Error);

/// What a shell reports for a program that SIGPIPE ended (128 + 13), as for docker.
pub const CLOSED_PIPE_EXIT: u8 = 141;

/// Writes `text` to standard output, now (for the pipe it may go to).
pub fn print(text: &str) -> Result<(), StdoutError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(out.flush()?)
}

/// Standard output as a writer for library code, keeping why it failed: the library
/// names its own context, which would hide a closed pipe.
#[derive(Default)]
#[allow(dead_code)] // racker's; postroj shows no logs
pub struct CheckedStdout {
    pub failed: Option<std::io::Error>,
}

impl std::io::Write for CheckedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = std::io::stdout().lock().write(buf);
        if let Err(e) = &written {
            self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        written
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

/// Writes `text` to standard error. A failure is ignored: there is nobody left to tell.
pub fn eprint(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The exit status for an error whose cause is a closed standard output, if it is one.
pub fn exit_code_of(err: &anyhow::Error) -> Option<u8> {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<StdoutError>())
        .any(|e| e.0.kind() == std::io::ErrorKind::BrokenPipe)
        .then_some(CLOSED_PIPE_EXIT)
}

/// Prints clap's help, version or usage error and gives the exit status: `usage` for
/// an error, 0 for help and version, [`CLOSED_PIPE_EXIT`] when the help went into a
/// pipe that closed (`racker --help | head -1`).
pub fn usage_exit(err: &clap::Error, usage: u8) -> std::process::ExitCode {
    let printed = err.print();
    if !err.use_stderr() && printed.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        return std::process::ExitCode::from(CLOSED_PIPE_EXIT);
    }
    std::process::ExitCode::from(if err.use_stderr() { usage } else { 0 })
}

/// `println!` that returns the [`StdoutError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that returns the [`StdoutError`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!($($arg)*))
    };
}

/// `eprintln!` that cannot panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::eprint(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard error, ignoring failures: nobody is left to tell.
#[allow(dead_code)] // racker's logs and attach; postroj has no use for it
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
