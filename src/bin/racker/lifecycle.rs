//! Container lifecycle commands beyond `run`: create, start, restart, wait, rename,
//! pause, unpause, generate systemd.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use racker::runtime::{self, StartOptions};
use racker::store::Store;

use crate::containers::{each, monitor_command, run_request, RunArgs};

#[derive(clap::Args)]
pub struct StartArgs {
    /// Attach the container's output and exit with its status
    #[arg(short, long)]
    attach: bool,
    /// Attach standard input (with -a)
    #[arg(short, long)]
    interactive: bool,
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct RestartArgs {
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    containers: Vec<String>,
    /// Seconds to wait for the stop before killing (default: the container's
    /// --stop-timeout, or 10)
    #[arg(short, long)]
    time: Option<u64>,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct AttachArgs {
    /// Do not attach standard input
    #[arg(long)]
    no_stdin: bool,
    /// Keys that detach (docker's syntax: a character or ctrl-X, comma-separated)
    #[arg(long, default_value = "ctrl-p,ctrl-q", value_name = "KEYS")]
    detach_keys: String,
    /// Forward signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT) to the container
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// Container name or id
    container: String,
}

#[derive(clap::Args)]
pub struct RenameArgs {
    /// Container, by name or id (prefix)
    container: String,
    /// Its new name
    new_name: String,
}

/// The lifecycle verbs, flattened into racker's command list.
#[derive(clap::Subcommand)]
pub enum LifecycleCommand {
    /// Create a new container without starting it (the flags of run); prints its id
    Create(Box<RunArgs>),
    /// Start created or stopped containers (their writes kept)
    Start(StartArgs),
    /// Stop and start containers again
    Restart(RestartArgs),
    /// Block until containers stop, then print their exit codes
    Wait(WaitArgs),
    /// Attach to a running container's output (and input, if it was made with -i)
    Attach(AttachArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Freeze every process of containers (cgroup freezer)
    Pause(WaitArgs),
    /// Thaw paused containers
    Unpause(WaitArgs),
    /// Generate configuration for other tools (`generate systemd NAME`)
    #[command(subcommand)]
    Generate(GenerateCommand),
}

#[derive(clap::Subcommand)]
pub enum GenerateCommand {
    /// Print a systemd unit that runs the container as a service (survives reboots)
    Systemd {
        /// Container, by name or id (prefix)
        container: String,
        /// Write container-NAME.service in the current directory instead
        #[arg(long)]
        files: bool,
    },
}

/// Runs a lifecycle verb; returns racker's exit status (the container's for `start -a`).
pub fn run(store: &Store, root: &Path, command: LifecycleCommand) -> Result<i32> {
    match command {
        LifecycleCommand::Create(args) => {
            let (image, request) = run_request(store, *args)?;
            let record = runtime::create(store, &image, &request)?;
            outln!("{}", record.id)?;
            Ok(0)
        }
        LifecycleCommand::Start(args) => start(store, root, &args),
        LifecycleCommand::Restart(args) => {
            let timeout = args.time.map(Duration::from_secs);
            each(&args.containers, |n| runtime::restart(store, n, timeout, monitor(root)?)).map(|()| 0)
        }
        LifecycleCommand::Wait(args) => {
            let mut failed = 0;
            for name in &args.containers {
                match runtime::wait(store, name) {
                    Ok(code) => outln!("{code}")?,
                    Err(e) => {
                        errln!("Error: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        LifecycleCommand::Attach(args) => attach(store, &args),
        LifecycleCommand::Pause(args) => each(&args.containers, |n| runtime::pause(store, n)).map(|()| 0),
        LifecycleCommand::Unpause(args) => each(&args.containers, |n| runtime::unpause(store, n)).map(|()| 0),
        LifecycleCommand::Generate(GenerateCommand::Systemd { container, files }) => {
            let racker = std::env::current_exe().map_err(|e| anyhow::anyhow!("finding the racker binary: {e}"))?;
            let unit = runtime::systemd_unit(store, &container, &racker)?;
            if files {
                let path = std::path::PathBuf::from(format!("container-{container}.service"));
                std::fs::write(&path, unit).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                outln!("{}", path.display())?;
            } else {
                crate::cli::print(&unit)?;
            }
            Ok(0)
        }
        LifecycleCommand::Rename(args) => {
            runtime::rename(store, &args.container, &args.new_name)?;
            Ok(0)
        }
    }
}

fn monitor(root: &Path) -> racker::runtime::Result<std::process::Command> {
    monitor_command(root)
        .map_err(|e| racker::runtime::RuntimeError::Invalid { what: "racker binary".into(), reason: e.to_string() })
}

/// `start`: detached, each name is printed once it runs (docker's output); attached
/// (`-a`, one container), the container's status is racker's.
fn start(store: &Store, root: &Path, args: &StartArgs) -> Result<i32> {
    let opts = StartOptions { attach: args.attach, interactive: args.interactive };
    if args.attach {
        let [name] = args.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        return Ok(runtime::start(store, name, &opts, monitor(root)?)?.unwrap_or(0));
    }
    each(&args.containers, |n| runtime::start(store, n, &opts, monitor(root)?).map(drop)).map(|()| 0)
}

/// `attach`: the container's status once it ends; 0 after the detach keys.
fn attach(store: &Store, args: &AttachArgs) -> Result<i32> {
    let opts = runtime::AttachOptions {
        stdin: !args.no_stdin,
        detach_keys: runtime::parse_detach_keys(&args.detach_keys).map_err(anyhow::Error::msg)?,
        sig_proxy: args.sig_proxy,
    };
    // The detach keys end racker at once: the container runs on, as after docker's.
    let on_detach = Box::new(|| std::process::exit(0));
    let mut out = crate::cli::CheckedStdout::default();
    let attached = runtime::attach(store, &args.container, &opts, on_detach, &mut out, &mut crate::cli::Stderr);
    if let Some(closed) = out.failed {
        return Err(crate::cli::StdoutError(closed).into());
    }
    Ok(attached?)
}

/// docker's status for a failed verb: `create` and `start -a` fail as `run` does (125),
/// the others with 1.
pub fn failure_code(command: &LifecycleCommand) -> i32 {
    match command {
        LifecycleCommand::Create(_) => 125,
        LifecycleCommand::Start(args) if args.attach => 125,
        _ => 1,
    }
}
