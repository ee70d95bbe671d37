//! Registry commands: pull (registries and local OCI layouts), push, login, logout.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use racker::oci::Platform;
use racker::reference::Reference;
use racker::registry::{self, AuthFiles, PullOptions, PullOutcome, PushOptions};
use racker::source::{Layout, Transport};
use racker::store::Store;

/// `--tls-verify[=BOOL]` as podman spells it.
#[derive(clap::Args, Clone, Copy)]
pub struct TlsArgs {
    /// Require HTTPS and verified certificates (default: yes, except for loopback
    /// registries and those marked insecure in registries.conf)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    tls_verify: Option<bool>,
}

#[derive(clap::Args)]
pub struct AuthArgs {
    /// Credentials file (default: $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json)
    #[arg(long, value_name = "PATH")]
    authfile: Option<PathBuf>,
}

impl AuthArgs {
    fn files(&self) -> AuthFiles {
        match &self.authfile {
            Some(path) => AuthFiles::file(path.clone()),
            None => AuthFiles::from_env(),
        }
    }
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST] from a registry, or oci:DIR[:REF] / oci-archive:FILE[:REF]
    reference: String,
    /// Suppress the progress output
    #[arg(short, long)]
    quiet: bool,
    /// Platform to choose from a multi-platform image, OS/ARCH[/VARIANT]
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<Platform>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

pub fn pull(store: &Store, args: &PullArgs) -> Result<()> {
    let reference = match Transport::parse(&args.reference)? {
        Transport::Registry(reference) => reference,
        Transport::Layout(layout) => return pull_layout(store, &layout, args.quiet),
    };
    let shown = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => format!("{}:{tag}", reference.familiar_name()),
        (None, Some(d)) => format!("{}@{d}", reference.familiar_name()),
        (None, None) => reference.familiar_name(),
    };
    if !args.quiet {
        let version =
            reference.tag().map(str::to_owned).or(reference.digest().map(|d| d.to_string())).unwrap_or_default();
        errln!("{version}: Pulling from {}", reference.repository());
    }
    let opts = PullOptions {
        platform: args.platform.clone().unwrap_or_else(Platform::host),
        tls_verify: args.tls.tls_verify,
        auth: args.auth.files(),
        ..PullOptions::default()
    };
    // Registry errors name the reference or registry themselves.
    let pulled = registry::pull(store, &reference, &opts, crate::progress::for_stderr(args.quiet))?;
    if !args.quiet {
        errln!("Digest: {}", pulled.digest);
        match pulled.outcome {
            PullOutcome::UpToDate => errln!("Status: Image is up to date for {shown}"),
            PullOutcome::Downloaded => errln!("Status: Downloaded newer image for {shown}"),
        }
    }
    outln!("{reference}")?;
    Ok(())
}

fn pull_layout(store: &Store, layout: &Layout, quiet: bool) -> Result<()> {
    let progress = crate::progress::for_stderr(quiet);
    let default_name =
        layout.default_name().with_context(|| format!("naming the image from {:?}", layout.path.to_string_lossy()))?;
    let files = layout.open(store)?;
    let pulled = layout.import(store, &*files, default_name, progress).with_context(|| format!("pulling {layout}"))?;
    for imported in pulled {
        let image = store.image(&imported.id)?;
        if !quiet {
            errln!("Digest: {}", image.manifest_digest);
        }
        for (repo, tag) in crate::images::tagged_names(&imported.names) {
            outln!("{repo}:{tag}")?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Image to push (a name or id in the store)
    image: String,
    /// Where to push it, NAME[:TAG] (default: the image's own name)
    destination: Option<String>,
    /// Suppress the progress output
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

pub fn push(store: &Store, args: &PushArgs) -> Result<()> {
    let target = Reference::parse(args.destination.as_deref().unwrap_or(&args.image))?;
    if !args.quiet {
        errln!("The push refers to repository [{}]", target.name());
    }
    let opts = PushOptions { tls_verify: args.tls.tls_verify, auth: args.auth.files() };
    let digest = registry::push(store, &args.image, &target, &opts, crate::progress::for_stderr(args.quiet))?;
    let size = store.read_blob(&digest)?.len();
    if !args.quiet {
        outln!("{}: digest: {digest} size: {size}", target.tag().unwrap_or("latest"))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Registry host, e.g. quay.io or localhost:5000
    registry: String,
    /// User name at the registry
    #[arg(short, long)]
    username: Option<String>,
    /// Password: visible to every local user (ps) while racker runs; prefer --password-stdin
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

/// `docker.io` for the hub's spellings, the host otherwise.
fn registry_host(arg: &str) -> String {
    let host = arg.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

pub fn login(args: &LoginArgs) -> Result<()> {
    let registry = registry_host(&args.registry);
    let Some(user) = &args.username else {
        bail!("login to {registry} needs --username (there is no prompt without a terminal)")
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            // As docker: an argv is readable by every local user while racker runs.
            errln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the password from standard input")?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => bail!("login to {registry} needs --password or --password-stdin"),
    };
    let path = registry::login(&args.auth.files(), &registry, user, &password, args.tls.tls_verify)
        .with_context(|| format!("logging in to {registry}"))?;
    tracing::info!("credentials saved in {}", path.display());
    outln!("Login Succeeded!")?;
    Ok(())
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    /// Registry host, e.g. quay.io or localhost:5000
    registry: String,
    #[command(flatten)]
    auth: AuthArgs,
}

pub fn logout(args: &LogoutArgs) -> Result<()> {
    let registry = registry_host(&args.registry);
    if registry::logout(&args.auth.files(), &registry).with_context(|| format!("logging out of {registry}"))? {
        outln!("Removed login credentials for {registry}")?;
    } else {
        bail!("not logged in to {registry}");
    }
    Ok(())
}
