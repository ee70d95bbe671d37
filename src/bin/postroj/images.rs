//! `postroj list-images` and `postroj pull`.

use anyhow::{bail, Result};
use postroj::catalog::{self, CuratedImage};
use postroj::provision::{self, Event, Outcome, PullOptions, SourceChoice, Used};
use racker::digest::Digest;
use racker::runtime::Console;
use racker::store::Store;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A JSON array of the labels (what the original postroj printed)
    #[default]
    Json,
    /// Label, aliases (also taken wherever a label is), source, family, and whether the store has the image
    Table,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: ListFormat,
}

pub fn list(store: &Store, args: &ListArgs) -> Result<()> {
    let images = catalog::all();
    match args.format {
        ListFormat::Json => {
            let labels: Vec<&str> = images.iter().map(|i| i.label).collect();
            outln!("{}", serde_json::to_string_pretty(&labels)?)?;
        }
        ListFormat::Table => {
            let mut rows = Vec::new();
            for image in images {
                let present = store.resolve(&image.local_name()).is_ok();
                let family = serde_json::to_value(image.family)?.as_str().unwrap_or_default().to_owned();
                let aliases = image.aliases().collect::<Vec<_>>().join(",");
                rows.push(vec![
                    image.label.to_owned(),
                    // A word in every column: rows split on whitespace.
                    if aliases.is_empty() { "-".to_owned() } else { aliases },
                    image.source.to_owned(),
                    family,
                    if present { "yes" } else { "no" }.to_owned(),
                ]);
            }
            out!("{}", racker::table::table(&["LABEL", "ALIASES", "SOURCE", "FAMILY", "IN STORE"], &rows))?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// The registry; the Debian mirror when the registry cannot be reached
    #[default]
    Auto,
    /// The label's registry image, provisioned with systemd when it has none
    Registry,
    /// A Debian image built with mmdebstrap from the host's Debian mirror
    Mirror,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Labels or aliases to pull (`postroj list-images --format table` shows them)
    #[arg(conflicts_with = "all")]
    labels: Vec<String>,
    /// Pull every curated image
    #[arg(long)]
    all: bool,
    /// Provision again even when the store has an image provisioned from the same base
    #[arg(long)]
    force: bool,
    /// Where images come from
    #[arg(long, value_enum, default_value_t)]
    source: SourceArg,
    /// Suppress progress and build output
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    shared: SharedRegistry,
}

/// Where a team's machines share their curated images (`postroj push`).
#[derive(clap::Args, Clone, Default)]
pub struct SharedRegistry {
    /// Pull missing curated images as `postroj push` stored them in REGISTRY
    /// (REGISTRY/postroj/LABEL:latest) instead of building them
    #[arg(long, env = "POSTROJ_REGISTRY", value_name = "REGISTRY")]
    pub from_registry: Option<String>,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Labels or aliases of curated images in the store
    #[arg(required = true, value_name = "LABEL")]
    labels: Vec<String>,
    /// The registry (HOST[:PORT][/PATH]) they go to, as REGISTRY/postroj/LABEL:latest
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// Suppress progress output
    #[arg(short, long)]
    quiet: bool,
}

/// Where `image` is kept in the shared `registry`.
fn shared_name(registry: &str, image: &CuratedImage) -> String {
    format!("{}/postroj/{}:latest", registry.trim_end_matches('/'), image.label)
}

/// `postroj push`: curated images, as provisioned in the store, to a registry that other
/// machines pull them from (`--from-registry`).
pub fn push(store: &Store, args: &PushArgs) -> Result<()> {
    let images: Vec<&'static CuratedImage> = args.labels.iter().map(|l| catalog::find(l)).collect::<Result<_, _>>()?;
    for image in &images {
        if store.resolve(&image.local_name()).is_err() {
            bail!("{}: not in the store: postroj pull {} first", image.label, image.label);
        }
    }
    for image in images {
        let target = racker::reference::Reference::parse(&shared_name(&args.registry, image))?;
        let opts = racker::registry::PushOptions::default();
        let progress = crate::progress::for_stderr(args.quiet);
        let digest = racker::registry::push(store, &image.local_name(), &target, &opts, progress)?;
        outln!("{target}@{digest}")?;
    }
    Ok(())
}

/// Pulls `images` from the shared `registry` and names them as curated images.
pub fn pull_shared(
    store: &Store,
    images: &[&'static CuratedImage],
    registry: &str,
    quiet: bool,
) -> Result<Vec<Digest>> {
    let mut ids = Vec::new();
    for image in images {
        let reference = racker::reference::Reference::parse(&shared_name(registry, image))?;
        let opts = racker::registry::PullOptions::default();
        let pulled = racker::registry::pull(store, &reference, &opts, crate::progress::for_stderr(quiet))?;
        store.tag(&pulled.id.to_string(), &image.local_name())?;
        if !quiet {
            errln!("{}: pulled from {reference}", image.label);
        }
        ids.push(pulled.id);
    }
    Ok(ids)
}

pub fn pull(store: &Store, args: &PullArgs) -> Result<()> {
    // Every label is checked before anything is pulled.
    let images: Vec<&'static CuratedImage> = if args.all {
        catalog::all().iter().collect()
    } else if args.labels.is_empty() {
        bail!(
            "no image to pull: name labels (`postroj list-images` shows them), or pull every curated image with --all"
        );
    } else {
        args.labels.iter().map(|l| catalog::find(l)).collect::<Result<_, _>>()?
    };
    let source = match args.source {
        SourceArg::Auto => SourceChoice::Auto,
        SourceArg::Registry => SourceChoice::Registry,
        SourceArg::Mirror => SourceChoice::Mirror,
    };
    if let Some(registry) = &args.shared.from_registry {
        pull_shared(store, &images, registry, args.quiet)?;
        for image in &images {
            outln!("{}", image.local_name())?;
        }
        return Ok(());
    }
    pull_images(store, &images, source, args.force, args.quiet, true).map(drop)
}

/// Pulls `images` one after the other, with progress on standard error and, if
/// `print_names`, each one's name on standard output; one failure does not stop the others.
/// Returns the images' ids, in order.
pub fn pull_images(
    store: &Store,
    images: &[&'static CuratedImage],
    source: SourceChoice,
    force: bool,
    quiet: bool,
    print_names: bool,
) -> Result<Vec<Digest>> {
    let opts = PullOptions {
        source,
        force,
        registry: racker::registry::PullOptions::default(),
        progress: crate::progress::for_stderr(quiet),
        // Standard output carries only the names pulled.
        output: if quiet { Console::Discard } else { Console::Stderr },
    };
    let mut failed = Vec::new();
    let mut ids = Vec::new();
    for image in images {
        let label = image.label;
        let report = |event: Event<'_>| match event {
            Event::Source { used, reason } => {
                let used = match used {
                    Used::Registry => "registry",
                    Used::Mirror => "Debian mirror",
                };
                errln!("{label}: source {used}: {reason}");
            }
            Event::Step(step) if !quiet => errln!("{label}: {step}"),
            Event::Mirror(line) if !quiet => errln!("{label}: {line}"),
            _ => {}
        };
        match provision::pull(store, image, &opts, &report) {
            Ok(pulled) => {
                if !quiet {
                    let how = match pulled.outcome {
                        Outcome::AsPulled => "pulled, boots as it is",
                        Outcome::Provisioned => "provisioned",
                        Outcome::Reused => "reused",
                        Outcome::Built => "built from the mirror",
                    };
                    errln!("{label}: {how}: {} {}", pulled.name, pulled.image);
                }
                if print_names {
                    outln!("{}", pulled.name)?;
                }
                ids.push(pulled.image);
            }
            // The error names the label itself.
            Err(e) if images.len() == 1 => return Err(e.into()),
            Err(e) => {
                errln!("Error: {e}");
                failed.push(label);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} images failed: {}", failed.len(), images.len(), failed.join(", "));
    }
    Ok(ids)
}
