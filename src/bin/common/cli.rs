//! What both command lines (`racker`, `postroj`) do the same way at their edge.

/// How much is logged to standard error, as docker's and podman's global flags set it.
/// `RACKER_LOG` (a tracing filter such as `racker=debug`), when set, wins over them.
#[derive(clap::Args, Debug, Default)]
pub struct LogArgs {
    /// Log level: trace, debug, info, warn, error or fatal (default warn; `RACKER_LOG` wins)
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Debug output: the same as --log-level debug
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Say what is done, step by step: the same as --log-level info
    #[arg(long)]
    pub verbose: bool,
}

/// docker's levels (`fatal` is `error`: racker has no level above it) and podman's `trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    /// Everything, the libraries racker is built on included
    Trace,
    /// What racker does and why, with the commands it runs
    Debug,
    /// What racker does, step by step
    Info,
    /// Only what went wrong or may have (the default)
    Warn,
    /// Only errors
    Error,
    /// Only errors (docker's name)
    Fatal,
}

impl LogArgs {
    /// The most verbose level asked for, if any.
    pub fn level(&self) -> Option<LogLevel> {
        let flags = [self.debug.then_some(LogLevel::Debug), self.verbose.then_some(LogLevel::Info)];
        flags.into_iter().chain([self.log_level]).flatten().min()
    }

    /// The tracing filter for the level asked for. racker's and postroj's own events
    /// take the level; the libraries below them stay at warnings (their debug output is
    /// protocol noise) unless `trace` asks for everything. rustls-platform-verifier's is
    /// off: it logs every certificate it rejects as an ERROR, and the command reports
    /// that failure as its one-line error anyway.
    pub fn filter(&self) -> String {
        let own = match self.level().unwrap_or(LogLevel::Warn) {
            LogLevel::Trace => return "trace".into(),
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Fatal => "error",
        };
        let others = if own == "error" { "error" } else { "warn" };
        format!("{others},racker={own},postroj={own},rustls_platform_verifier=off")
    }
}

/// Logs to standard error, filtered by `RACKER_LOG` when it is set (and valid), else by
/// the flags `log` holds.
pub fn init_logging(log: &LogArgs) {
    let from_env = std::env::var("RACKER_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = from_env
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(log.filter()));
    // Colours only for a terminal: a log in a file or a pipe stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// Refuses to go on as another user than root, before anything fails half-way on a
/// permission: the store is root's alone, and containers need mounts, cgroups and
/// systemd-nspawn. Said once, as the command's one error.
pub fn require_root(program: &str) -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    anyhow::bail!(
        "{program} must run as root: the image store is root's, and containers need mounts, cgroups and \
         systemd-nspawn (try `sudo {program} ...`)"
    )
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

/// The subcommand and alias names a user is shown anywhere in `cmd`'s tree: those of
/// subcommands that are not hidden, and their visible aliases.
pub fn public_names(cmd: &clap::Command) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::from(["help".to_owned()]);
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        names.insert(sub.get_name().to_owned());
        names.extend(sub.get_visible_aliases().map(str::to_owned));
        names.extend(public_names(sub));
    }
    names
}

/// `err` without suggestions of internal subcommands or hidden aliases: clap offers
/// every name it knows for a typo (`racker container-monitr` → `container-monitor`),
/// and a name the help never shows must not be put in a user's mouth.
pub fn public_suggestions(mut err: clap::Error, cmd: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::Strings(suggested)) = err.get(ContextKind::SuggestedSubcommand) else { return err };
    let public = public_names(cmd);
    let kept: Vec<String> = suggested.iter().filter(|s| public.contains(*s)).cloned().collect();
    if kept.is_empty() {
        err.remove(ContextKind::SuggestedSubcommand);
    } else {
        err.insert(ContextKind::SuggestedSubcommand, ContextValue::Strings(kept));
    }
    err
}

/// Prints clap's help, version or usage error and gives the exit status: `usage` for
/// an error, 0 for help and version, [`CLOSED_PIPE_EXIT`] when the help went into a
/// pipe that closed (`racker --help | head -1`).
pub fn usage_exit(err: clap::Error, cmd: &clap::Command, usage: u8) -> std::process::ExitCode {
    let err = public_suggestions(err, cmd);
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

/// The arguments and subcommands in `cmd`'s tree that `--help` shows without a word of
/// help, as `racker exec -i` paths: each is a gap in the help and the man pages.
#[cfg(test)]
pub fn undocumented(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &str, gaps: &mut Vec<String>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg.get_long().map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
                gaps.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                gaps.push(sub_path.clone());
            }
            walk(sub, &sub_path, gaps);
        }
    }
    let mut cmd = cmd.clone();
    cmd.build();
    let mut gaps = Vec::new();
    walk(&cmd, cmd.get_name(), &mut gaps);
    gaps
}

/// What is suggested for typos (each letter left out, each pair swapped) of every verb
/// at every level of `cmd`, hidden ones included, that is not a public name: a list of
/// `typed → suggested` lines, empty when all is well.
#[cfg(test)]
pub fn non_public_suggestions(cmd: &clap::Command) -> Vec<String> {
    use clap::error::{ContextKind, ContextValue};
    fn typos(word: &str) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let mut typos = Vec::new();
        for i in 0..chars.len() {
            let mut dropped = chars.clone();
            dropped.remove(i);
            typos.push(dropped.into_iter().collect());
            if i + 1 < chars.len() {
                let mut swapped = chars.clone();
                swapped.swap(i, i + 1);
                typos.push(swapped.into_iter().collect());
            }
        }
        typos
    }
    fn walk(
        root: &clap::Command,
        level: &clap::Command,
        path: &[String],
        public: &std::collections::BTreeSet<String>,
        bad: &mut Vec<String>,
    ) {
        let known: Vec<&str> =
            level.get_subcommands().flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases())).collect();
        for sub in level.get_subcommands() {
            for name in std::iter::once(sub.get_name()).chain(sub.get_all_aliases()) {
                for typo in typos(name).into_iter().filter(|t| !t.is_empty() && !known.contains(&t.as_str())) {
                    let line: Vec<String> = std::iter::once(root.get_name().to_owned())
                        .chain(path.iter().cloned())
                        .chain([typo.clone()])
                        .collect();
                    let Err(err) = root.clone().try_get_matches_from(&line) else { continue };
                    let err = public_suggestions(err, root);
                    let rendered = err.render().to_string();
                    if let Some(ContextValue::Strings(suggested)) = err.get(ContextKind::SuggestedSubcommand) {
                        bad.extend(
                            suggested
                                .iter()
                                .filter(|s| !public.contains(*s))
                                .map(|s| format!("{} → {s}", line.join(" "))),
                        );
                    }
                    for hidden in level.get_subcommands().filter(|c| c.is_hide_set()) {
                        if rendered.contains(hidden.get_name()) {
                            bad.push(format!("{} → {} (in the message)", line.join(" "), hidden.get_name()));
                        }
                    }
                }
            }
            if !sub.is_hide_set() && sub.has_subcommands() {
                let mut deeper = path.to_vec();
                deeper.push(sub.get_name().to_owned());
                walk(root, sub, &deeper, public, bad);
            }
        }
    }
    let mut root = cmd.clone();
    root.build();
    let public = public_names(&root);
    let mut bad = Vec::new();
    walk(&root, &root, &[], &public, &mut bad);
    bad
}
