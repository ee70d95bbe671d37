//! Container commands: run (and later ps, exec, stop, kill, rm, logs).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use racker::reference::Reference;
use racker::registry::{self, PullOptions};
use racker::runtime::{self, Bind, Network, RunOptions, RunRequest};
use racker::snapshot::Driver;
use racker::store::{Store, StoreError};

#[derive(clap::Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to pass racker's own)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind mount a volume, SRC:DST[:ro]
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<Bind>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// User to run as: name|uid[:group|gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// host (default) or none
    #[arg(long, default_value = "host")]
    network: Network,
    /// Boot systemd as PID 1 and run the command inside (default: when the image has systemd)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    boot: Option<bool>,
    /// Seconds to wait for a booted container to become ready
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// overlay or btrfs (default: by the store's file system)
    #[arg(long)]
    storage_driver: Option<Driver>,
    /// Image to run
    image: String,
    /// Command and arguments
    command: Vec<String>,
}

/// Finds the image, pulling it as docker does when the store does not have it.
pub fn ensure_image(store: &Store, image: &str) -> Result<String> {
    match store.resolve(image) {
        Ok(id) => Ok(id.to_string()),
        Err(StoreError::ImageNotFound(_)) => {
            let reference = Reference::parse(image).with_context(|| format!("no image {image:?} in the store"))?;
            eprintln!(
                "Unable to find image '{}' locally",
                reference.familiar_name() + reference.tag().map(|t| format!(":{t}")).as_deref().unwrap_or("")
            );
            let pulled =
                registry::pull(store, &reference, &PullOptions::default(), racker::progress::for_stderr(false))?;
            Ok(pulled.id.to_string())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(store: &Store, args: RunArgs) -> Result<i32> {
    let image = ensure_image(store, &args.image)?;
    let request = RunRequest {
        options: RunOptions {
            command: args.command,
            entrypoint: args.entrypoint,
            env: args.env,
            env_files: args.env_file,
            workdir: args.workdir,
            user: args.user,
            hostname: args.hostname,
            binds: args.volume,
            network: args.network,
            tty: args.tty,
            interactive: args.interactive,
        },
        name: args.name,
        remove: args.rm,
        boot: args.boot,
        driver: args.storage_driver,
        boot_timeout: Duration::from_secs(args.boot_timeout),
    };
    Ok(runtime::run(store, &image, &request)?)
}
