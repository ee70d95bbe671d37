//! Shell completion scripts and man pages, generated from the command line's own clap
//! definitions (clap_complete, clap_mangen), so that they never drift from `--help`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The shells a completion script is made for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete in (load it with `source <(racker completion bash)`)
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory the pages are written to (made if missing)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
}

/// `cmd` without its hidden subcommands, at every level: clap_complete offers every
/// subcommand, hidden or not, and a hidden one (`container-monitor`) is internal. clap
/// has no way to remove a subcommand, so a level that hides one is assembled again
/// from its own arguments and its visible subcommands.
pub fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let hides = cmd.get_subcommands().any(clap::Command::is_hide_set);
    let visible = if hides {
        let mut level = clap::Command::new(cmd.get_name().to_owned())
            .args(cmd.get_arguments().cloned())
            .groups(cmd.get_groups().cloned())
            .subcommand_required(cmd.is_subcommand_required_set())
            .arg_required_else_help(cmd.is_arg_required_else_help_set())
            .subcommands(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        if let Some(version) = cmd.get_version() {
            level = level.version(version.to_owned());
        }
        if let Some(about) = cmd.get_about() {
            level = level.about(about.clone());
        }
        if let Some(about) = cmd.get_long_about() {
            level = level.long_about(about.clone());
        }
        level
    } else {
        cmd.clone()
    };
    visible.mut_subcommands(|c| without_hidden(&c))
}

/// The completion script for `shell`, as clap_complete writes it.
pub fn completion_script(cmd: &clap::Command, shell: Shell) -> String {
    let mut cmd = without_hidden(cmd);
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, &mut script),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, &mut script),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, name, &mut script),
    }
    String::from_utf8_lossy(&script).into_owned()
}

/// Writes `NAME.1` for the command and `NAME-SUB.1` for each of its subcommands (and
/// `NAME-SUB-SUBSUB.1` below them), as git and docker name theirs; returns the paths.
pub fn write_man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let mut cmd = without_hidden(cmd);
    cmd.build();
    let mut written = Vec::new();
    let name = cmd.get_name().to_owned();
    write_pages(&cmd, &name, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.to_owned()))
        .render(&mut page)
        .with_context(|| format!("rendering {}", path.display()))?;
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(&page))
        .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
