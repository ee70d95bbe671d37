//! `postroj pkgprobe` and `postroj selftest`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use postroj::catalog::{self, CuratedImage};
use postroj::check::Target;
use postroj::package::{self, Package, PackageCache};
use postroj::probe::{self, ProbeSpec};
use postroj::provision::SourceChoice;
use postroj::report::{Case, Outcome, Report};
use racker::store::Store;

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
}

#[derive(clap::Args)]
pub struct PkgprobeArgs {
    /// Curated image label (see list-images); repeat for a matrix
    #[arg(long = "image", required = true, value_name = "LABEL")]
    images: Vec<String>,
    /// The package to install: a URL (downloaded once, cached) or a file
    #[arg(long, value_name = "URL|PATH")]
    package: Option<String>,
    /// A systemd unit to enable, start and find active; repeatable
    #[arg(long = "check-unit", value_name = "UNIT")]
    units: Vec<String>,
    /// An address that must answer: tcp://H:P, http://H:P/PATH or https://...; repeatable
    #[arg(long = "check-network", value_name = "ADDRESS")]
    network: Vec<Target>,
    /// Seconds to keep trying each network address
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    network_timeout: f64,
    /// Boot the image's full default target instead of the minimal one
    #[arg(long)]
    full_boot: bool,
    /// Where downloaded packages are kept
    #[arg(long, env = "POSTROJ_PACKAGE_CACHE", default_value = package::DEFAULT_CACHE_DIR, value_name = "DIR")]
    package_cache: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
pub struct SelftestArgs {
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

pub fn pkgprobe(store: &Store, args: &PkgprobeArgs) -> Result<i32> {
    let images = labels(&args.images)?;
    pull_missing(store, &images, args.run.quiet)?;
    let package = match &args.package {
        Some(source) => Some(fetch_package(source, &images, args)?),
        None => None,
    };
    let network_timeout = Duration::try_from_secs_f64(args.network_timeout)
        .with_context(|| format!("--network-timeout {}: give seconds, such as 5 or 0.5", args.network_timeout))?;
    let spec = ProbeSpec {
        requires: vec![],
        package,
        units: args.units.clone(),
        commands: vec![],
        network: args.network.clone(),
        network_timeout,
        boot_timeout: Duration::from_secs(args.run.boot_timeout),
        full_boot: args.full_boot,
    };
    run_probes(store, &images, &spec, &args.run)
}

pub fn selftest(store: &Store, args: &SelftestArgs) -> Result<i32> {
    let images = if args.images.is_empty() {
        let present: Vec<&'static CuratedImage> =
            catalog::all().iter().filter(|i| store.resolve(&i.local_name()).is_ok()).collect();
        anyhow::ensure!(!present.is_empty(), "no curated image is in the store: run `postroj pull LABEL` first");
        present
    } else {
        let images = labels(&args.images)?;
        pull_missing(store, &images, args.run.quiet)?;
        images
    };
    let test = match args.test {
        Selftest::Hostnamectl => probe::Selftest::Hostnamectl,
        Selftest::Pkgprobe => probe::Selftest::Pkgprobe,
    };
    let boot_timeout = Duration::from_secs(args.run.boot_timeout);
    let spec_for = |image: &CuratedImage| ProbeSpec::selftest(test, image.family, boot_timeout);
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
    finish(&report, &args.run)
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

/// Pulls the images the store does not have yet, as `postroj pull` would (the cold cycle).
fn pull_missing(store: &Store, images: &[&'static CuratedImage], quiet: bool) -> Result<()> {
    let names: Vec<String> = images.iter().map(|i| i.local_name()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    store.resolve_or_pull(&names, |missing| {
        let missing: Vec<&'static CuratedImage> = missing.iter().map(|&i| images[i]).collect();
        if !quiet {
            let labels: Vec<&str> = missing.iter().map(|i| i.label).collect();
            errln!("not in the store yet, pulling: {}", labels.join(", "));
        }
        crate::images::pull_images(store, &missing, SourceChoice::Auto, false, quiet, false)
    })?;
    Ok(())
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

fn run_probes(store: &Store, images: &[&CuratedImage], spec: &ProbeSpec, run: &RunArgs) -> Result<i32> {
    let report = probe::probe_all(store.root(), images, spec, run.jobs as usize, &step_log(run.quiet));
    finish(&report, run)
}

/// The progress line of each finished step, unless `quiet`.
fn step_log(quiet: bool) -> impl Fn(&str, &Case) + Sync {
    move |label: &str, case: &Case| {
        if !quiet {
            errln!("{label}: {} {}", case.name, describe(case));
        }
    }
}

/// Writes the report; the exit status says whether every check passed.
fn finish(report: &Report, run: &RunArgs) -> Result<i32> {
    write_report(report, run)?;
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

fn write_report(report: &Report, run: &RunArgs) -> Result<()> {
    let text = match run.format {
        ReportFormat::Table => report.render_text(),
        ReportFormat::Json => report.render_json(),
        ReportFormat::Junit => report.render_junit(),
    };
    match &run.output {
        Some(path) => std::fs::write(path, text.as_bytes()).with_context(|| format!("writing {}", path.display())),
        None => Ok(crate::cli::print(&text)?),
    }
}
