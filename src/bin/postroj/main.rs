//! `postroj`: curated OS images and fast package probes in booted throw-away containers.
//! A thin command line over the `postroj` library.

#[path = "../common/cli.rs"]
#[macro_use]
mod cli;
mod cache;
#[path = "../common/format.rs"]
mod format;
mod images;
mod probe;
#[path = "../common/progress.rs"]
mod progress;
mod report;
#[path = "../common/shell.rs"]
mod shell;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "postroj", version, about = "Test packages in booted OS containers on systemd-nspawn, fast")]
struct Cli {
    /// Root of the image store (shared with racker).
    #[arg(long, global = true, env = "RACKER_ROOT", default_value = racker::store::DEFAULT_ROOT)]
    root: PathBuf,
    /// Root of the host's apt cache: package lists per image, downloaded packages per release.
    #[arg(long, global = true, env = "POSTROJ_APT_CACHE", default_value = postroj::apt_cache::DEFAULT_ROOT, value_name = "DIR")]
    apt_cache: PathBuf,
    #[command(flatten)]
    log: cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the curated images (labels, sources, distribution families)
    ListImages(images::ListArgs),
    /// Pull curated images into the store, provisioned with systemd
    Pull(images::PullArgs),
    /// Push curated images from the store to a registry, for other machines to pull
    /// (postroj pull --from-registry)
    Push(images::PushArgs),
    /// Install a package in booted containers of curated images (pulled first if missing) and check its units and network services
    Pkgprobe(probe::PkgprobeArgs),
    /// Check that the curated images in the store work
    Selftest(probe::SelftestArgs),
    /// List and remove pkgprobe's dependency layers and apt cache
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Work with pkgprobe reports: merge the reports of a matrix's shards
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Run a pkgprobe matrix on a batch scheduler (Slurm), sharded, and follow it
    #[command(subcommand)]
    Submit(submit::SubmitCommand),
    /// Print a shell completion script (bash, zsh, fish) to standard output
    Completion(shell::CompletionArgs),
    /// Write man pages: postroj.1 and one per subcommand (postroj-pull.1, ...)
    Man(shell::ManArgs),
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    // Neither needs the store (a completion script is made before one exists).
    match &cli.command {
        Command::Completion(args) => {
            cli::print(&shell::completion_script(&Cli::command(), args.shell))?;
            return Ok(0);
        }
        Command::Man(args) => return shell::write_man_pages(&Cli::command(), &args.out_dir).map(|_| 0),
        // Reports are files: no store, no root.
        Command::Report(command) => return report::run(command),
        // The tasks need root, on the nodes; submitting does not.
        Command::Submit(command) => {
            return submit::run(command, &submit::Postroj { root: &cli.root, apt_cache: &cli.apt_cache })
        }
        _ => {}
    }
    cli::require_root("postroj")?;
    let store = racker::store::Store::open(&cli.root)
        .with_context(|| format!("opening the image store at {}", cli.root.display()))?;
    match cli.command {
        Command::ListImages(args) => images::list(&store, &args).map(|()| 0),
        Command::Pull(args) => images::pull(&store, &args).map(|()| 0),
        Command::Push(args) => images::push(&store, &args).map(|()| 0),
        Command::Pkgprobe(args) => probe::pkgprobe(&store, &cli.apt_cache, &args),
        Command::Selftest(args) => probe::selftest(&store, &cli.apt_cache, &args),
        Command::Cache(command) => cache::run(&store, &cli.apt_cache, &command).map(|()| 0),
        Command::Completion(_) | Command::Man(_) | Command::Report(_) | Command::Submit(_) => Ok(0),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::usage_exit(err, &Cli::command(), 2),
    };
    cli::init_logging(&cli.log);
    match run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(err) => {
            if let Some(code) = cli::exit_code_of(&err) {
                return ExitCode::from(code);
            }
            errln!("Error: {}", cli::one_line(&err));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_and_subcommand_has_help() {
        assert_eq!(cli::undocumented(&Cli::command()), Vec::<String>::new());
    }

    #[test]
    fn typos_of_every_verb_suggest_only_public_verbs() {
        assert_eq!(cli::non_public_suggestions(&Cli::command()), Vec::<String>::new());
    }
}
