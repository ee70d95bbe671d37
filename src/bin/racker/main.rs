//! `racker`: the docker-compatible command line over the racker library. It parses
//! arguments, calls the library and prints; the work is done in the library.

#[path = "../common/cli.rs"]
#[macro_use]
mod cli;
mod completion;
mod containers;
mod curated;
mod df;
mod files;
mod filters;
#[path = "../common/format.rs"]
mod format;
mod fsck;
mod history;
mod images;
mod lifecycle;
mod logs;
mod network;
mod observe;
#[path = "../common/progress.rs"]
mod progress;
mod prune;
mod registry;
mod runflags;
mod save;
#[path = "../common/shell.rs"]
mod shell;
mod system;
mod template;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "racker", version, about = "Operating-system containers on systemd-nspawn, fast")]
struct Cli {
    /// Root of the image store.
    #[arg(long, global = true, env = "RACKER_ROOT", default_value = racker::store::DEFAULT_ROOT)]
    root: PathBuf,
    #[command(flatten)]
    log: cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

pub use template::Format;

#[derive(Subcommand)]
enum Command {
    /// List images
    #[command(alias = "image-ls")]
    Images(images::ImagesArgs),
    /// Load images from a `docker save` archive or an OCI archive (tar, optionally compressed)
    Load {
        /// Archive to read (default: standard input; - is standard input)
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Suppress the progress output
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to a `docker save` archive or an OCI archive (standard output by default)
    Save(save::SaveArgs),
    /// Show the history of an image: its build steps and the size of each one's layer
    History(history::HistoryArgs),
    /// Import a root filesystem tarball (file, URL or - for stdin) as a one-layer image
    Import(images::ImportArgs),
    /// Pull an image from a registry, or from an OCI layout (`oci:DIR[:REF]`)
    Pull(registry::PullArgs),
    /// Push an image to a registry
    Push(registry::PushArgs),
    /// Log in to a registry (credentials are checked, then saved)
    Login(registry::LoginArgs),
    /// Log out of a registry
    Logout(registry::LogoutArgs),
    /// Run a command in a new container
    Run(Box<containers::RunArgs>),
    /// List containers
    Ps(containers::PsArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Stop containers (SIGTERM, or poweroff for booted ones; SIGKILL after a timeout)
    Stop {
        /// Containers to stop, by name or id (prefix)
        #[arg(required = true)]
        containers: Vec<String>,
        /// Seconds to wait before killing (default: the container's --stop-timeout, or 10)
        #[arg(short, long)]
        time: Option<u64>,
    },
    /// Send a signal to containers
    Kill {
        /// Containers to signal, by name or id (prefix)
        #[arg(required = true)]
        containers: Vec<String>,
        /// Signal to send, by name (KILL, SIGTERM, HUP) or number
        #[arg(short, long, default_value = "KILL", value_parser = containers::parse_signal)]
        signal: rustix::process::Signal,
    },
    /// Remove containers
    Rm {
        /// Containers to remove, by name or id (prefix)
        #[arg(required = true)]
        containers: Vec<String>,
        /// Kill running containers first
        #[arg(short, long)]
        force: bool,
    },
    /// Copy files between a container (running or stopped) and the host
    Cp(files::CpArgs),
    /// Create a new image from a stopped container's changes (overlay storage driver)
    Commit(containers::CommitArgs),
    /// Show a container's output (stdout and stderr apart), or a booted one's console and journal
    Logs(logs::LogsArgs),
    #[command(flatten)]
    Lifecycle(lifecycle::LifecycleCommand),
    /// Manage private networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// List a container's published ports, or the host address of one
    Port {
        /// Container, by name or id (prefix)
        container: String,
        /// PORT[/tcp|udp]
        port: Option<String>,
    },
    /// (internal) own a detached container until it ends
    #[command(hide = true)]
    ContainerMonitor { id: String },
    /// Create a tag TARGET that refers to SOURCE
    Tag {
        /// The image to name: NAME[:TAG] or id
        source: String,
        /// The new name, NAME[:TAG]
        target: String,
    },
    /// Remove images
    Rmi(RmiArgs),
    /// Show containers' or images' details as JSON (a container first, as docker)
    Inspect(observe::InspectArgs),
    #[command(flatten)]
    Observe(observe::ObserveCommand),
    /// Manage containers (docker's `container` subcommands)
    #[command(subcommand)]
    Container(observe::ContainerCommand),
    /// Remove blobs, layers and leftovers that no image references
    Gc {
        /// Only show what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage images (docker's `image` subcommands)
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage named volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// System information
    #[command(subcommand)]
    System(SystemCommand),
    /// Show racker's version, the Rust version it needs and the platform
    Version {
        /// table, json, or a Go template: '{{.ID}}', 'table {{.ID}}\t{{.Name}}' (see the README)
        #[arg(long, default_value = "table", value_name = "FORMAT")]
        format: Format,
    },
    /// Show what the store holds and what the host offers containers
    Info(InfoArgs),
    /// Print a shell completion script (bash, zsh, fish) to standard output
    Completion(shell::CompletionArgs),
    /// Write man pages: racker.1 and one per subcommand (racker-run.1, ...)
    Man(shell::ManArgs),
}

#[derive(clap::Args)]
struct InfoArgs {
    /// table, json, or a Go template: '{{.ID}}', 'table {{.ID}}\t{{.Name}}' (see the README)
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images
    Ls(images::ImagesArgs),
    /// Remove untagged images (-a: every image no container uses), then their files
    Prune(prune::ImagePruneArgs),
    /// Save images to an archive (same as `racker save`)
    Save(save::SaveArgs),
    /// Show the history of an image (same as `racker history`)
    History(history::HistoryArgs),
    /// Load images from an archive (same as `racker load`)
    Load {
        /// Archive to read (default: standard input; - is standard input)
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Suppress the progress output
        #[arg(short, long)]
        quiet: bool,
    },
    /// Import a root filesystem tarball as a one-layer image (same as `racker import`)
    Import(images::ImportArgs),
    /// Remove images
    Rm(RmiArgs),
    /// Show images' configuration and layers as JSON
    Inspect(InspectArgs),
    /// Give an image another name (same as `racker tag`)
    Tag {
        /// The image to name: NAME[:TAG] or id
        source: String,
        /// The new name, NAME[:TAG]
        target: String,
    },
    /// Push an image to a registry (same as `racker push`)
    Push(registry::PushArgs),
}

#[derive(clap::Args)]
struct RmiArgs {
    /// Images to remove, by NAME[:TAG] or id (prefix)
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image id even when several tags name it
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A Go template rendered for each image ('{{.Id}}', '{{json .Config}}')
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Images, by NAME[:TAG] or id (prefix)
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Show disk usage: images, containers, volumes (docker's rows), then the store's
    /// layers and blobs and how much sharing saves
    Df {
        /// table, json, or a Go template: '{{.Type}}', 'table {{.Type}}\t{{.Reclaimable}}' (see the README)
        #[arg(long, default_value = "table", value_name = "FORMAT")]
        format: Format,
        /// List each image, container and volume with its size
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show what the store holds and what the host offers containers (same as `racker info`)
    Info(InfoArgs),
    /// Store the files of layers unpacked without file objects (by an older racker, or
    /// with RACKER_FILE_OBJECTS=off) as objects, identical ones once
    Dedupe,
    /// Check every blob, file object and layer against its digest; exit 1 while damage remains
    Fsck {
        /// Remove what is damaged and rebuild the layers it broke from their blobs
        #[arg(long)]
        repair: bool,
        /// table, json, or a Go template: '{{len .Problems}}' (see the README)
        #[arg(long, default_value = "table", value_name = "FORMAT")]
        format: Format,
    },
    /// Remove stopped containers, unused networks, dangling (-a: unused) images and
    /// with --volumes unused volumes, then their files
    Prune(prune::SystemPruneArgs),
}

impl Command {
    /// `racker container VERB …` is `racker VERB …` for every verb both have; what only
    /// the group has (`prune`, a container-only `inspect`) stays in it.
    fn ungrouped(self) -> Command {
        use observe::ContainerCommand as C;
        let Command::Container(command) = self else { return self };
        match command {
            C::Ls(args) => Command::Ps(args),
            C::Run(args) => Command::Run(args),
            C::Exec(args) => Command::Exec(args),
            C::Stop(a) => Command::Stop { containers: a.containers, time: a.time },
            C::Kill(a) => Command::Kill { containers: a.containers, signal: a.signal },
            C::Rm(a) => Command::Rm { containers: a.containers, force: a.force },
            C::Logs(args) => Command::Logs(args),
            C::Commit(args) => Command::Commit(args),
            C::Lifecycle(command) => Command::Lifecycle(command),
            C::Observe(command) => Command::Observe(command),
            command @ (C::Inspect(_) | C::Prune(_)) => Command::Container(command),
        }
    }
}

/// Runs the command; returns the exit status (a container's own, for `run`).
fn run(cli: Cli) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let open = || {
        cli::require_root("racker")?;
        racker::store::Store::open(&cli.root)
            .with_context(|| format!("opening the image store at {}", cli.root.display()))
    };
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    match cli.command {
        Command::Completion(args) => {
            done(cli::print(&completion::script(&Cli::command(), args.shell)).map_err(Into::into))
        }
        Command::Man(args) => done(shell::write_man_pages(&Cli::command(), &args.out_dir).map(drop)),
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => done(images::list(&open()?, &args)),
        Command::Load { input, quiet } | Command::Image(ImageCommand::Load { input, quiet }) => {
            done(images::load(&open()?, input.as_deref(), quiet))
        }
        Command::Save(args) | Command::Image(ImageCommand::Save(args)) => done(save::save(&open()?, &args)),
        Command::History(args) | Command::Image(ImageCommand::History(args)) => done(history::history(&open()?, &args)),
        Command::Import(args) | Command::Image(ImageCommand::Import(args)) => done(images::import(&open()?, &args)),
        Command::Pull(args) => done(registry::pull(&open()?, &args)),
        Command::Push(args) | Command::Image(ImageCommand::Push(args)) => done(registry::push(&open()?, &args)),
        Command::Login(args) => done(registry::login(&args)),
        Command::Logout(args) => done(registry::logout(&args)),
        Command::Run(args) => containers::run(&open()?, &cli.root, *args),
        Command::Ps(args) => done(containers::ps(&open()?, &args)),
        Command::Exec(args) => containers::exec(&open()?, args),
        Command::Stop { containers: names, time } => done(containers::stop(&open()?, &names, time)),
        Command::Kill { containers: names, signal } => done(containers::kill(&open()?, &names, signal)),
        Command::Rm { containers: names, force } => done(containers::remove(&open()?, &names, force)),
        Command::Commit(args) => done(containers::commit(&open()?, args)),
        Command::Cp(args) => done(files::cp(&open()?, &args)),
        Command::Logs(args) => done(logs::logs(&open()?, &args)),
        Command::Lifecycle(command) => lifecycle::run(&open()?, &cli.root, command),
        Command::Network(command) => done(network::run(&open()?, command)),
        Command::Port { container, port } => done(network::port(&open()?, &container, port.as_deref())),
        Command::ContainerMonitor { id } => Ok(racker::runtime::monitor(&open()?, &id).unwrap_or(125)),
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            done(images::tag(&open()?, &source, &target))
        }
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => {
            done(images::remove(&open()?, &args.images, args.force))
        }
        Command::Inspect(args) => observe::inspect(&open()?, &args),
        Command::Image(ImageCommand::Inspect(args)) => {
            done(images::inspect(&open()?, &args.images, args.format.as_deref()))
        }
        Command::Observe(command) => observe::run(&open()?, command),
        Command::Container(command) => observe::run_group(&open()?, command),
        Command::Gc { dry_run } => done(images::gc(&open()?, dry_run)),
        Command::Image(ImageCommand::Prune(args)) => done(prune::image_prune(&open()?, &args)),
        Command::System(SystemCommand::Prune(args)) => done(prune::system_prune(&open()?, &args)),
        Command::Volume(command) => done(volumes::run(&open()?, command)),
        Command::System(SystemCommand::Df { format, verbose }) => done(df::disk_usage(&open()?, &format, verbose)),
        Command::System(SystemCommand::Fsck { repair, format }) => fsck::fsck(&open()?, repair, &format),
        Command::System(SystemCommand::Dedupe) => done(fsck::dedupe(&open()?)),
        Command::Info(args) | Command::System(SystemCommand::Info(args)) => done(system::info(&open()?, &args.format)),
        Command::Version { format } => done(system::version(&format)),
    }
}

fn main() -> ExitCode {
    // docker's convention: a usage error is racker's own failure (125); --help and
    // --version are not errors.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::usage_exit(err, &Cli::command(), 125),
    };
    cli::init_logging(&cli.log);
    let cli = Cli { command: cli.command.ungrouped(), ..cli };
    // docker's convention: `run` fails with 125 (126/127 when the command cannot run).
    let failure = match &cli.command {
        Command::Run(_) | Command::Exec(_) => 125,
        Command::Lifecycle(command) => lifecycle::failure_code(command),
        _ => 1,
    };
    match run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(err) => {
            if let Some(code) = cli::exit_code_of(&err) {
                return ExitCode::from(code);
            }
            errln!("Error: {}", cli::one_line(&err));
            // A runtime error's own status (126, 127: the command cannot run) is the
            // verb's where it fails as `run` does; other verbs fail with theirs (docker's 1).
            // A bad --format or --filter is racker's own failure: 125, as docker's.
            let code = match err.downcast_ref::<racker::runtime::RuntimeError>() {
                _ if err.chain().any(|c| c.is::<template::UsageError>()) => 125,
                Some(e) if failure == 125 => e.exit_code(),
                _ => failure,
            };
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_and_subcommand_has_help() {
        let gaps = cli::undocumented(&Cli::command());
        assert_eq!(gaps, Vec::<String>::new());
    }

    #[test]
    fn typos_of_every_verb_suggest_only_public_verbs() {
        assert_eq!(cli::non_public_suggestions(&Cli::command()), Vec::<String>::new());
    }
}
