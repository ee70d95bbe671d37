//! `racker cp`: files between containers and the host, parsed here and copied by
//! [`racker::runtime::copy_from_container`] and [`racker::runtime::copy_to_container`].

use std::path::Path;

use anyhow::{bail, Result};
use racker::runtime::{self, CopyOptions, HostSide};
use racker::store::Store;

#[derive(clap::Args)]
pub struct CpArgs {
    /// Archive mode: keep uid and gid (otherwise the receiving side's user owns the copy)
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink that SRC_PATH names
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:SRC_PATH, or a host path (- for a tar on stdin)
    src: String,
    /// CONTAINER:DEST_PATH, or a host path (- for a tar on stdout)
    dest: String,
}

/// docker's reading of a cp argument: `CONTAINER:PATH`, unless it starts with `/` or
/// `.` (a host path that may hold a colon) or has no colon.
fn container_side(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with(['/', '.']) {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

fn host(arg: &str) -> HostSide<'_> {
    if arg == "-" {
        HostSide::Stream
    } else {
        HostSide::Path(Path::new(arg))
    }
}

pub fn cp(store: &Store, args: &CpArgs) -> Result<()> {
    let opts = CopyOptions { archive: args.archive, follow_link: args.follow_link };
    let copied = match (container_side(&args.src), container_side(&args.dest)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported: copy to the host first"),
        (None, None) => bail!("must specify at least one container source (CONTAINER:PATH)"),
        (Some((container, path)), None) => {
            // A closed standard output (`racker cp c:/x - | head -c1`) ends quietly.
            let mut stdout = crate::cli::CheckedStdout::default();
            let copied = runtime::copy_from_container(store, container, path, host(&args.dest), &mut stdout, opts);
            if let (Err(_), Some(closed)) = (&copied, stdout.failed) {
                return Err(crate::cli::StdoutError(closed).into());
            }
            copied
        }
        (None, Some((container, path))) => {
            let mut stdin = std::io::stdin().lock();
            runtime::copy_to_container(store, host(&args.src), &mut stdin, container, path, opts)
        }
    };
    Ok(copied?)
}
