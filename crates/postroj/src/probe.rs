//! `pkgprobe`: for each image, boot a throw-away container lean (racker's minimal
//! target: the journal only; whatever the package's units need is started on demand),
//! install the package, enable and start the units and ask whether each is active, check
//! the network addresses from the host (containers share its network), tear down by
//! termination. Several images run in parallel, each in its own container; every step
//! becomes a [`Case`] of the image's [`Suite`].

use std::path::Path;
use std::time::{Duration, Instant};

use super::catalog::CuratedImage;
use super::check::{self, Target};
use super::deps::layer::{self as deplayer, DepLayerError, Needs};
use super::deps::DepsError;
use super::package::Package;
use super::report::{Case, Report, Suite};
use racker::runtime::rootfs::LEGACY_GENERATOR_MASKS;
use racker::runtime::{Bind, BootTarget, Booted, RunOptions, RunRequest};
use racker::store::Store;

/// Where the package is bound (read-only) inside the container.
const PACKAGE_DIR: &str = "/run/postroj";

/// How long one command inside the container may take (an install downloads dependencies).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// What to probe in each image.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub package: Option<Package>,
    /// Packages from the image's repositories to install before the package (by name).
    pub requires: Vec<String>,
    /// How the package's dependencies (and `requires`) get into the container.
    pub dependencies: Dependencies,
    pub units: Vec<String>,
    /// Commands that must exit 0 inside the container (`selftest hostnamectl`).
    pub commands: Vec<Vec<String>>,
    pub network: Vec<Target>,
    pub network_timeout: Duration,
    pub boot_timeout: Duration,
    /// Boot the image's full default target instead of the minimal one.
    pub full_boot: bool,
}

/// How a probe gets what the package needs from the image's repositories.
#[derive(Clone, Debug)]
pub enum Dependencies {
    /// From a dependency layer, built once per image and set and then booted under the
    /// probe, which installs only the package (apt images; others install as `Uncached`).
    Cached(deplayer::Options),
    /// Installed by the package manager in every probe (`--no-cache`): fetch the lists,
    /// download and install the dependencies, as a plain `apt install ./pkg.deb` does.
    Uncached,
}

/// `postroj selftest`: what shows that a curated image works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    /// Boot fully and ask hostnamectl: systemd, D-Bus and hostnamed at work.
    Hostnamectl,
    /// Probe lean, as pkgprobe does: boot, start systemd-journald and find it active.
    Pkgprobe,
}

impl ProbeSpec {
    /// The probe `test` runs in each image: no package, no network.
    pub fn selftest(test: Selftest, boot_timeout: Duration) -> ProbeSpec {
        let (units, commands) = match test {
            Selftest::Pkgprobe => (vec!["systemd-journald".into()], vec![]),
            Selftest::Hostnamectl => (vec![], vec![vec!["hostnamectl".into()]]),
        };
        ProbeSpec {
            package: None,
            requires: vec![],
            dependencies: Dependencies::Uncached,
            units,
            commands,
            network: vec![],
            network_timeout: Duration::from_secs(5),
            boot_timeout,
            full_boot: test == Selftest::Hostnamectl,
        }
    }
}

/// Receives one line per finished step, for people watching (`debian-bookworm: unit x: active`).
pub type StepLog<'a> = &'a (dyn Fn(&str, &Case) + Sync);

/// Probes `images` with up to `jobs` at once; the report lists them in the given order.
/// Each worker opens its own connection to the store at `store_root`.
pub fn probe_all(store_root: &Path, images: &[&CuratedImage], spec: &ProbeSpec, jobs: usize, log: StepLog) -> Report {
    let suites = racker::pool::run_ordered(images, jobs, None, |_, image| match Store::open(store_root) {
        Ok(store) => probe_image(&store, image, spec, log),
        Err(e) => {
            let mut suite = Suite::new(image.label);
            suite.push(Case::error("boot", Duration::ZERO, format!("opening the store: {e}"), ""));
            suite
        }
    });
    let mut report = Report::new();
    for suite in suites.into_iter().flatten() {
        report.push(suite);
    }
    report
}

/// Probes one image: its provisioned image must be in the store (`postroj pull`).
pub fn probe_image(store: &Store, image: &CuratedImage, spec: &ProbeSpec, log: StepLog) -> Suite {
    let mut suite = Suite::new(image.label);
    let mut record = |suite: &mut Suite, case: Case| {
        log(image.label, &case);
        suite.push(case);
    };
    let package_path = spec.package.as_ref().map(|p| format!("{PACKAGE_DIR}/{}", p.file_name));
    let mut binds = Vec::new();
    if let (Some(package), Some(path)) = (&spec.package, &package_path) {
        binds.push(Bind { source: package.path.clone(), target: path.clone(), read_only: true });
    }
    let mut boot_image = image.local_name();
    // What the dependency layer pins (package lists, download workspace) for the probe.
    let mut _dependencies = None;
    if let Dependencies::Cached(opts) = &spec.dependencies {
        let wanted = spec.package.is_some() || !spec.requires.is_empty();
        if wanted && deplayer::supported(image) {
            let started = Instant::now();
            let prepared = store.resolve(&boot_image).map_err(DepLayerError::from).and_then(|base| {
                let package = spec.package.as_ref().zip(package_path.as_deref());
                let needs = Needs { image, base: &base, package, requires: &spec.requires };
                deplayer::prepare(store, needs, opts)
            });
            match prepared {
                Ok(prepared) => {
                    record(&mut suite, Case::passed("dependencies", started.elapsed(), prepared.describe()));
                    boot_image = prepared.image.to_string();
                    binds.extend(prepared.binds());
                    _dependencies = Some(prepared);
                }
                Err(e) => {
                    let (message, evidence) = match e.to_string().split_once('\n') {
                        Some((first, rest)) => (first.to_owned(), rest.to_owned()),
                        None => (e.to_string(), String::new()),
                    };
                    // Unresolvable dependencies are the package's failure, the rest ours.
                    let case = match e {
                        DepLayerError::Deps(DepsError::Unresolvable { .. }) | DepLayerError::Simulation { .. } => {
                            Case::failed("dependencies", started.elapsed(), message, evidence)
                        }
                        _ => Case::error("dependencies", started.elapsed(), message, evidence),
                    };
                    record(&mut suite, case);
                    skip_rest(&mut suite, spec, "the dependencies are not installed", &mut record);
                    return suite;
                }
            }
        }
    }
    let cached = _dependencies.is_some();
    let request = RunRequest {
        options: RunOptions { binds, ..RunOptions::default() },
        boot_target: if spec.full_boot { BootTarget::Default } else { BootTarget::Minimal },
        boot_timeout: spec.boot_timeout,
        ..RunRequest::default()
    };
    let started = Instant::now();
    let container = match Booted::start(store, &boot_image, &request) {
        Ok(container) => {
            record(&mut suite, Case::passed("boot", started.elapsed(), format!("booted {}", container.name())));
            container
        }
        Err(e) => {
            record(&mut suite, Case::error("boot", started.elapsed(), e.to_string(), ""));
            skip_rest(&mut suite, spec, "the container did not boot", &mut record);
            return suite;
        }
    };

    if !spec.requires.is_empty() && !cached {
        let name = format!("install {}", spec.requires.join(" "));
        let mut argv = vec!["sh", "-c", image.package_manager.install_by_name_script(), "install"];
        argv.extend(spec.requires.iter().map(String::as_str));
        let case = install(&container, name, &argv);
        let failed = !matches!(case.outcome, super::report::Outcome::Passed { .. });
        record(&mut suite, case);
        if failed {
            skip_rest(&mut suite, spec, "the required packages did not install", &mut record);
            return suite;
        }
    }
    if let (Some(package), Some(path)) = (&spec.package, &package_path) {
        let name = format!("install {}", package.file_name);
        // On a dependency layer only the package itself is left to install.
        let script = if cached {
            image.package_manager.install_on_layer_script()
        } else {
            image.package_manager.install_script()
        };
        let case = install(&container, name, &["sh", "-c", script, "install", path]);
        let failed = !matches!(case.outcome, super::report::Outcome::Passed { .. });
        record(&mut suite, case);
        if failed {
            skip_rest(&mut suite, spec, "the package did not install", &mut record);
            return suite;
        }
    }

    for unit in &spec.units {
        let case = check_unit(&container, unit, !spec.full_boot);
        record(&mut suite, case);
    }
    for command in &spec.commands {
        let case = check_exit_status(&container, command);
        record(&mut suite, case);
    }
    for target in &spec.network {
        let outcome = check::check(target, spec.network_timeout);
        record(&mut suite, Case::from_check(target, &outcome));
    }
    suite
}

/// Runs the install script `argv`, then has systemd read the units it brought (SysV
/// scripts included: the masks of the minimal boot are lifted).
fn install(container: &Booted, name: String, argv: &[&str]) -> Case {
    let started = Instant::now();
    let script = format!("rm -f {} && {{ \"$@\"; }} && systemctl daemon-reload", LEGACY_GENERATOR_MASKS.join(" "));
    let mut full = vec!["sh", "-c", script.as_str(), "install"];
    full.extend_from_slice(argv);
    match container.exec(&full, COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => Case::passed(name, started.elapsed(), "installed"),
        Ok(out) => Case::failed(
            name,
            started.elapsed(),
            format!("the package manager failed ({})", out.status),
            tail(&combined(&out), 30),
        ),
        Err(e) => Case::error(name, started.elapsed(), e.to_string(), ""),
    }
}

/// Runs `command` inside; it passes when it exits 0, with its first line of output.
fn check_exit_status(container: &Booted, command: &[String]) -> Case {
    let name = format!("command {}", command.join(" "));
    let started = Instant::now();
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    match container.exec(&argv, COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Case::passed(name, started.elapsed(), text.lines().next().unwrap_or("exit 0").trim()).with_output(text)
        }
        Ok(out) => {
            Case::failed(name, started.elapsed(), format!("exited with {}", out.status), tail(&combined(&out), 30))
        }
        Err(e) => Case::error(name, started.elapsed(), e.to_string(), ""),
    }
}

/// Enables (where the unit can be) and starts `unit`, then asks whether it is active; a
/// unit that is not shows its status and last journal lines.
fn check_unit(container: &Booted, unit: &str, minimal_boot: bool) -> Case {
    let name = format!("unit {unit}");
    let started = Instant::now();
    // A unit that is already active (started by the boot or by the package's install
    // scripts) costs one question; any other is enabled where it can be (unless the
    // package did: enabling a unit with a SysV script runs update-rc.d, a second's work),
    // then started.
    let script = "if state=$(systemctl is-active \"$1\"); then echo \"state=$state\"; exit; fi; \
                  systemctl is-enabled --quiet \"$1\" 2>/dev/null || systemctl enable --quiet \"$1\" 2>/dev/null; \
                  systemctl start \"$1\" 2>&1; echo \"state=$(systemctl is-active \"$1\")\"";
    let out = match container.exec(&["sh", "-c", script, "unit", unit], COMMAND_TIMEOUT) {
        Ok(out) => out,
        Err(e) => return Case::error(name, started.elapsed(), e.to_string(), ""),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let state = text.lines().rev().find_map(|l| l.strip_prefix("state=")).unwrap_or("unknown").to_owned();
    if state == "active" {
        return Case::passed(name, started.elapsed(), "active");
    }
    let start_output = text.lines().filter(|l| !l.starts_with("state=")).collect::<Vec<_>>().join("\n");
    let message = if start_output.contains("not found") {
        let hint = if minimal_boot {
            " (a minimal boot makes no units of the image's SysV scripts; --full-boot does)"
        } else {
            ""
        };
        format!("unit {unit} is not installed: {}{hint}", start_output.trim())
    } else {
        format!("unit {unit} is {state}")
    };
    let evidence = container
        .exec(
            &[
                "sh",
                "-c",
                "systemctl status --no-pager --full \"$1\" 2>&1; echo; echo \"-- last journal lines of $1:\"; \
                 journalctl --no-pager --quiet -n 20 -u \"$1\" 2>&1",
                "status",
                unit,
            ],
            COMMAND_TIMEOUT,
        )
        .map(|o| combined(&o))
        .unwrap_or_else(|e| e.to_string());
    Case::failed(name, started.elapsed(), message, format!("{start_output}\n{evidence}").trim().to_owned())
}

fn skip_rest(suite: &mut Suite, spec: &ProbeSpec, reason: &str, record: &mut impl FnMut(&mut Suite, Case)) {
    for unit in &spec.units {
        record(suite, Case::skipped(format!("unit {unit}"), reason));
    }
    for command in &spec.commands {
        record(suite, Case::skipped(format!("command {}", command.join(" ")), reason));
    }
    for target in &spec.network {
        record(suite, Case::skipped(format!("network {target}"), reason));
    }
}

fn combined(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
