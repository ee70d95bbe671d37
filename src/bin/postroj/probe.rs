//! `postroj pkgprobe` and `postroj selftest`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postroj::apt_cache::IndexPolicy;
use postroj::catalog::{self, CuratedImage};
use postroj::check::Target;
use postroj::deps::layer as deplayer;
use postroj::lifecycle::Mode;
use postroj::matrix::{Cell, Shard};
use postroj::package::{self, Package, PackageCache};
use postroj::probe::{self, Dependencies, Probe, ProbeSpec};
use postroj::provision::SourceChoice;
use postroj::report::{Case, Outcome, Report};
use racker::store::Store;

/// How old cached package lists may get before a probe fetches them again.
const DEFAULT_LISTS_MAX_AGE_TEXT: &str = "6h";
const DEFAULT_LISTS_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    /// A summary table for people
    #[default]
    Table,
    Json,
    /// JUnit XML, as CI systems read it
    Junit,
}

/// What every probe run shares.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Probe images in parallel, up to N at once
    #[arg(short, long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
    /// Report format
    #[arg(long, value_enum, default_value_t)]
    format: ReportFormat,
    /// Write the report to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Seconds a boot may take
    #[arg(long, default_value_t = 60, value_name = "S")]
    boot_timeout: u64,
    /// No progress lines on standard error
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    shared: crate::images::SharedRegistry,
}

#[derive(clap::Args)]
pub struct PkgprobeArgs {
    /// Curated image label (see list-images); repeat for a matrix
    #[arg(long = "image", required = true, value_name = "LABEL")]
    images: Vec<String>,
    /// The package to install: a URL (downloaded once, cached) or a file; repeat for a
    /// matrix (each image × each package)
    #[arg(long = "package", value_name = "URL|PATH")]
    packages: Vec<String>,
    /// What to do with the package: install it; purge it after the checks and fail on
    /// what it leaves behind; upgrade to it from --from; or install it twice; repeat
    /// for a matrix (each image × package × mode)
    #[arg(long = "mode", value_enum, requires = "packages")]
    modes: Vec<ModeArg>,
    /// The older package that --mode upgrade installs first: a URL or a file, as --package
    #[arg(long, value_name = "URL|PATH", requires = "packages")]
    from: Option<String>,
    /// Report what the install did: files added, changed and removed, units enabled,
    /// users and groups created, conffiles
    #[arg(long, requires = "packages")]
    effects: bool,
    /// Run only shard K of N of the matrix (image × package × mode), for many machines
    /// (Slurm array tasks, CI matrix jobs): `postroj report merge` joins their JSON reports
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Leave the container of a failed probe running (racker exec NAME to look into it,
    /// racker rm -f NAME to remove it)
    #[arg(long)]
    keep_on_failure: bool,
    /// A systemd unit to enable, start and find active; repeatable
    #[arg(long = "check-unit", value_name = "UNIT")]
    units: Vec<String>,
    /// An address that must answer: tcp://H:P, http://H:P/PATH or https://...; repeatable
    #[arg(long = "check-network", value_name = "ADDRESS")]
    network: Vec<Target>,
    /// Seconds to keep trying each network address
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    network_timeout: f64,
    /// The containers' network: host (shared with the host), or private (or a racker
    /// network's name): each container has its own address, where checks of localhost
    /// go, so services on one fixed port can be probed with -j N
    #[arg(long = "network", default_value = "host", value_name = "NETWORK")]
    container_network: racker::runtime::Network,
    /// Boot the image's full default target instead of the minimal one
    #[arg(long)]
    full_boot: bool,
    /// Where downloaded packages are kept
    #[arg(long, env = "POSTROJ_PACKAGE_CACHE", default_value = package::DEFAULT_CACHE_DIR, value_name = "DIR")]
    package_cache: PathBuf,
    /// Install the dependencies in every probe instead of booting a cached dependency layer
    #[arg(long)]
    no_cache: bool,
    /// Fetch the package lists now, however fresh the cached ones are
    #[arg(long, conflicts_with = "offline")]
    refresh: bool,
    /// Never fetch: use the cached package lists and downloads, or fail naming what is missing
    #[arg(long)]
    offline: bool,
    /// Fetch the package lists again when the cached ones are older than this (e.g. 90m, 6h, 2d)
    #[arg(long, default_value = DEFAULT_LISTS_MAX_AGE_TEXT, value_name = "AGE", value_parser = humantime::parse_duration)]
    lists_max_age: Duration,
    /// Install the package's Recommends too (by default only what it Depends on, as piuparts does)
    #[arg(long)]
    install_recommends: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModeArg {
    /// Install, then check
    #[default]
    Install,
    /// Install, check, purge, and fail on files left behind
    Purge,
    /// Install --from, check, upgrade to --package, check again
    Upgrade,
    /// Install, check, reinstall the same file, check again
    Reinstall,
}

#[derive(clap::Args)]
pub struct SelftestArgs {
    /// Which test to run
    #[arg(value_enum)]
    test: Selftest,
    /// Curated image labels to test (default: every curated image in the store)
    #[arg(long = "image", value_name = "LABEL")]
    images: Vec<String>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Selftest {
    /// Boot each image fully and ask hostnamectl (systemd, D-Bus and hostnamed at work)
    Hostnamectl,
    /// Probe each image lean, as the original postroj did: boot, find systemd-journald
    /// active, install the family's web server (lighttpd on Debian and Ubuntu) from the
    /// image's repositories, find its unit active and http://localhost:80/ answering
    Pkgprobe,
}

pub fn pkgprobe(store: &Store, apt_cache: &Path, args: &PkgprobeArgs) -> Result<i32> {
    let images = labels(&args.images)?;
    let matrix = Matrix::of(&images, args)?;
    let mine = match args.shard {
        Some(shard) => shard.cells(&matrix.cells),
        None => (0..matrix.cells.len()).collect(),
    };
    let cells: Vec<&Cell> = mine.iter().map(|&i| &matrix.cells[i]).collect();
    if let (Some(shard), false) = (args.shard, args.run.quiet) {
        errln!("shard {shard}: {} of the matrix's {} probes", cells.len(), matrix.cells.len());
    }
    // What this shard probes, and nothing more, is pulled and downloaded.
    let wanted: Vec<&'static CuratedImage> =
        images.iter().copied().filter(|i| cells.iter().any(|c| c.image == i.label)).collect();
    let pulled = pull_missing(store, &wanted, &args.run)?;
    let network_timeout = Duration::try_from_secs_f64(args.network_timeout)
        .with_context(|| format!("--network-timeout {}: give seconds, such as 5 or 0.5", args.network_timeout))?;
    let dependencies = if args.no_cache {
        Dependencies::Uncached
    } else {
        let index = match (args.refresh, args.offline) {
            (true, _) => IndexPolicy::Refresh,
            (_, true) => IndexPolicy::Offline,
            _ => IndexPolicy::Ttl(args.lists_max_age),
        };
        Dependencies::Cached(deplayer::Options {
            cache_root: apt_cache.to_owned(),
            index,
            recommends: args.install_recommends,
        })
    };
    let base = ProbeSpec {
        package: None,
        requires: vec![],
        dependencies,
        units: args.units.clone(),
        commands: vec![],
        network: args.network.clone(),
        network_timeout,
        container_network: args.container_network.clone(),
        boot_timeout: Duration::from_secs(args.run.boot_timeout),
        full_boot: args.full_boot,
        mode: Mode::Install,
        effects: args.effects,
        keep_on_failure: args.keep_on_failure,
    };
    // One spec per package and mode this shard probes, each package fetched once.
    let mut fetched: Vec<(String, Package)> = Vec::new();
    let mut specs: Vec<(Variant, ProbeSpec)> = Vec::new();
    for cell in &cells {
        let key = (cell.package.clone(), cell.mode.clone());
        if specs.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let mut spec = base.clone();
        if let Some(name) = &cell.package {
            let source = matrix.source(name);
            let package = match fetched.iter().find(|(s, _)| s == source) {
                Some((_, package)) => package.clone(),
                None => {
                    let package = fetch_package(source, &wanted, args)?;
                    fetched.push((source.to_owned(), package.clone()));
                    package
                }
            };
            spec.package = Some(package);
            spec.mode = match (cell.mode.as_deref(), &args.from) {
                (Some("upgrade"), Some(from)) => Mode::Upgrade { from: fetch_package(from, &wanted, args)? },
                (Some("purge"), _) => Mode::Purge,
                (Some("reinstall"), _) => Mode::Reinstall,
                _ => Mode::Install,
            };
        }
        specs.push((key, spec));
    }
    let probes: Vec<Probe> = cells
        .iter()
        .map(|cell| {
            let image = images.iter().copied().find(|i| i.label == cell.image);
            let spec = specs.iter().find(|(k, _)| *k == (cell.package.clone(), cell.mode.clone())).map(|(_, s)| s);
            match (image, spec) {
                (Some(image), Some(spec)) => Ok(Probe { image, spec, title: matrix.title(cell) }),
                _ => Err(anyhow::anyhow!("{cell}: not a cell of this matrix")),
            }
        })
        .collect::<Result<_>>()?;
    let mut report = Report::new();
    for (cell, mut suite) in
        cells.iter().zip(probe::probe_matrix(store.root(), &probes, args.run.jobs as usize, &step_log(args.run.quiet)))
    {
        suite.package = cell.package.clone();
        suite.mode = cell.mode.clone();
        report.push(suite);
    }
    if let Some(shard) = args.shard {
        report.shard = Some(shard);
        report.matrix = matrix.cells.clone();
    }
    finish(report, &pulled, &args.run)
}

/// What the probes of a matrix differ in beside the image: the package and the mode.
type Variant = (Option<String>, Option<String>);

/// Checks pkgprobe arguments as `pkgprobe` would before it pulls or downloads anything
/// (labels, modes); the number of probes of the matrix.
pub fn check(args: &PkgprobeArgs) -> Result<usize> {
    Ok(Matrix::of(&labels(&args.images)?, args)?.cells.len())
}

/// The cells of a pkgprobe command line, in the order its arguments give them (image ×
/// package × mode), and where each package comes from.
struct Matrix {
    cells: Vec<Cell>,
    /// Each package's name in the cells (its file name) and its source (URL or path).
    packages: Vec<(String, String)>,
    /// The matrix has more than one package, or more than one mode: titles name them.
    several: (bool, bool),
}

impl Matrix {
    /// Checked before anything is pulled or downloaded.
    fn of(images: &[&'static CuratedImage], args: &PkgprobeArgs) -> Result<Matrix> {
        let mut modes: Vec<ModeArg> = Vec::new();
        for mode in &args.modes {
            if !modes.contains(mode) {
                modes.push(*mode);
            }
        }
        if modes.is_empty() && !args.packages.is_empty() {
            modes.push(ModeArg::Install);
        }
        let upgrade = modes.contains(&ModeArg::Upgrade);
        match (upgrade, &args.from) {
            (true, None) => anyhow::bail!("--mode upgrade needs --from, the package it upgrades from"),
            (true, Some(_)) if args.packages.len() > 1 => {
                anyhow::bail!("--mode upgrade probes one --package (the upgrade from --from): give one")
            }
            (false, Some(_)) => {
                anyhow::bail!("--from is the package --mode upgrade upgrades from: give --mode upgrade")
            }
            _ => {}
        }
        let mut packages: Vec<(String, String)> = Vec::new();
        for source in &args.packages {
            let name = source.trim_end_matches('/').rsplit('/').next().unwrap_or(source).to_owned();
            match packages.iter().find(|(n, _)| *n == name) {
                Some((_, s)) if s == source => continue,
                Some(_) => anyhow::bail!("--package {source}: another --package has the file name {name}: rename one"),
                None => packages.push((name, source.clone())),
            }
        }
        let mode_name = |m: &ModeArg| clap::ValueEnum::to_possible_value(m).map(|v| v.get_name().to_owned());
        let mut cells = Vec::new();
        for image in images {
            if packages.is_empty() {
                cells.push(Cell { image: image.label.to_owned(), package: None, mode: None });
            }
            for (name, _) in &packages {
                for mode in &modes {
                    cells.push(Cell {
                        image: image.label.to_owned(),
                        package: Some(name.clone()),
                        mode: mode_name(mode),
                    });
                }
            }
        }
        let several = (packages.len() > 1, modes.len() > 1);
        Ok(Matrix { cells, packages, several })
    }

    fn source<'a>(&'a self, name: &'a str) -> &'a str {
        self.packages.iter().find(|(n, _)| n == name).map_or(name, |(_, s)| s.as_str())
    }

    /// A cell's name in progress lines: its image, and its package and mode where the
    /// matrix has several.
    fn title(&self, cell: &Cell) -> String {
        cell.title(self.several.0, self.several.1)
    }
}

pub fn selftest(store: &Store, apt_cache: &Path, args: &SelftestArgs) -> Result<i32> {
    let (images, pulled) = if args.images.is_empty() {
        let present: Vec<&'static CuratedImage> =
            catalog::all().iter().filter(|i| store.resolve(&i.local_name()).is_ok()).collect();
        anyhow::ensure!(!present.is_empty(), "no curated image is in the store: run `postroj pull LABEL` first");
        (present, Vec::new())
    } else {
        let images = labels(&args.images)?;
        let pulled = pull_missing(store, &images, &args.run)?;
        (images, pulled)
    };
    let test = match args.test {
        Selftest::Hostnamectl => probe::Selftest::Hostnamectl,
        Selftest::Pkgprobe => probe::Selftest::Pkgprobe,
    };
    let boot_timeout = Duration::from_secs(args.run.boot_timeout);
    // The web server comes from a dependency layer, as a probed package's dependencies do.
    let dependencies = Dependencies::Cached(deplayer::Options {
        cache_root: apt_cache.to_owned(),
        index: IndexPolicy::Ttl(DEFAULT_LISTS_MAX_AGE),
        recommends: false,
    });
    let spec_for = |image: &CuratedImage| ProbeSpec {
        dependencies: dependencies.clone(),
        ..ProbeSpec::selftest(test, image.family, boot_timeout)
    };
    let log = step_log(args.run.quiet);
    let report = match test {
        // Each image's web server listens on port 80 of the host's network, which the
        // containers share: in parallel, one image's check could reach another's server.
        probe::Selftest::Pkgprobe => {
            if args.run.jobs > 1 && images.len() > 1 && !args.run.quiet {
                errln!("selftest pkgprobe: one image at a time (each web server listens on the host's port 80)");
            }
            let mut report = Report::new();
            for image in &images {
                report.push(probe::probe_image(store, image, &spec_for(image), &log));
            }
            report
        }
        // The same probe in every image.
        probe::Selftest::Hostnamectl => {
            let spec = images.first().map(|i| spec_for(i)).context("no image to test")?;
            probe::probe_all(store.root(), &images, &spec, args.run.jobs as usize, &log)
        }
    };
    finish(report, &pulled, &args.run)
}

fn labels(labels: &[String]) -> Result<Vec<&'static CuratedImage>> {
    let mut images = Vec::new();
    for label in labels {
        let image = catalog::find(label)?;
        if !images.iter().any(|i: &&CuratedImage| i.label == image.label) {
            images.push(image);
        }
    }
    Ok(images)
}

/// An image the probe pulled first, and how long that took (the case `pull`).
struct Pulled {
    label: &'static str,
    took: Duration,
}

/// Pulls the images the store does not have yet, as `postroj pull` would (the cold cycle).
fn pull_missing(store: &Store, images: &[&'static CuratedImage], run: &RunArgs) -> Result<Vec<Pulled>> {
    let quiet = run.quiet;
    let names: Vec<String> = images.iter().map(|i| i.local_name()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pulled = Vec::new();
    store.resolve_or_pull(&names, |missing| {
        let missing: Vec<&'static CuratedImage> = missing.iter().map(|&i| images[i]).collect();
        if !quiet {
            let labels: Vec<&str> = missing.iter().map(|i| i.label).collect();
            errln!("not in the store yet, pulling: {}", labels.join(", "));
        }
        // One at a time, so that each image's pull is timed on its own.
        let mut ids = Vec::new();
        for image in missing {
            let started = Instant::now();
            ids.extend(match &run.shared.from_registry {
                Some(registry) => crate::images::pull_shared(store, &[image], registry, quiet)?,
                None => crate::images::pull_images(store, &[image], SourceChoice::Auto, false, quiet, false)?,
            });
            pulled.push(Pulled { label: image.label, took: started.elapsed() });
        }
        anyhow::Ok(ids)
    })?;
    Ok(pulled)
}

/// Downloads (once, into the cache) or takes the package, and checks that every image's
/// package manager installs its kind.
fn fetch_package(source: &str, images: &[&CuratedImage], args: &PkgprobeArgs) -> Result<Package> {
    let cache = PackageCache::new(&args.package_cache);
    let progress = crate::progress::for_stderr(args.run.quiet);
    let package = package::resolve(source, &cache, &*progress)?;
    for image in images {
        package.ensure_installable_with(image.package_manager).with_context(|| format!("--image {image}"))?;
    }
    Ok(package)
}

/// The progress line of each finished step, unless `quiet`.
fn step_log(quiet: bool) -> impl Fn(&str, &Case) + Sync {
    move |label: &str, case: &Case| {
        if !quiet {
            errln!("{label}: {} {}", case.name, describe(case));
        }
    }
}

/// Puts the pulls into the report and writes it; names the containers kept running. The
/// exit status says whether every check passed.
fn finish(mut report: Report, pulled: &[Pulled], run: &RunArgs) -> Result<i32> {
    for suite in &mut report.suites {
        if let Some(pull) = pulled.iter().find(|p| p.label == suite.image) {
            suite.prepend(Case::passed("pull", pull.took, "pulled into the store"));
        }
    }
    write_report(&report, run.format, run.output.as_deref())?;
    // Said even with --quiet: the container runs on until someone removes it.
    for suite in &report.suites {
        if let Some(name) = &suite.kept {
            errln!(
                "{}: kept container {name} running: racker exec {name} COMMAND to look into it, racker rm -f {name} to remove it",
                suite.image
            );
        }
    }
    Ok(if report.passed() { 0 } else { 1 })
}

/// One line on how a step went, for the progress lines.
fn describe(case: &Case) -> String {
    let secs = case.duration.as_secs_f64();
    match &case.outcome {
        Outcome::Passed { detail } => format!("passed ({detail}, {secs:.2} s)"),
        Outcome::Failed { message, .. } => format!("FAILED: {message} ({secs:.2} s)"),
        Outcome::Skipped { reason } => format!("skipped: {reason}"),
        Outcome::Error { message, .. } => format!("ERROR: {message} ({secs:.2} s)"),
    }
}

/// Writes `report` in `format` to `output`, or to standard output.
pub fn write_report(report: &Report, format: ReportFormat, output: Option<&Path>) -> Result<()> {
    let text = match format {
        ReportFormat::Table => report.render_text(),
        ReportFormat::Json => report.render_json(),
        ReportFormat::Junit => report.render_junit(),
    };
    match output {
        Some(path) => std::fs::write(path, text.as_bytes()).with_context(|| format!("writing {}", path.display())),
        None => Ok(crate::cli::print(&text)?),
    }
}
