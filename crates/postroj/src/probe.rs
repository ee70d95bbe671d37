//! `pkgprobe`: for each image, boot a throw-away container lean (racker's minimal
//! target: the journal only; whatever the package's units need is started on demand),
//! install the package, enable and start the units and ask whether each is active, check
//! the network addresses from the host (containers share its network, or with a private
//! network loopback addresses are sent to the container's own), tear down by
//! termination. Several images run in parallel, each in its own container; every step
//! becomes a timed [`Case`] of the image's [`Suite`], the teardown too. Which installs
//! and checks run in which order is the [`Mode`]'s ([`lifecycle`](super::lifecycle));
//! `--keep-on-failure` leaves a failed probe's container running instead.

use std::path::Path;
use std::time::{Duration, Instant};

use super::catalog::{CuratedImage, Family};
use super::check::{self, Target};
use super::deps::layer::{self as deplayer, DepLayerError, Needs};
use super::deps::DepsError;
use super::lifecycle::{self, Mode};
use super::package::Package;
use super::report::{Case, Outcome, Report, Suite};
use racker::runtime::rootfs::LEGACY_GENERATOR_MASKS;
use racker::runtime::{BootTarget, Booted, Network, RunOptions, RunRequest};
use racker::store::Store;

/// Where the package is bound (read-only) inside the container.
pub(crate) const PACKAGE_DIR: &str = "/run/postroj";

/// How long one command inside the container may take (an install downloads dependencies).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

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
    /// The probe containers' network: the host's, or a private one (each container its
    /// own address, where loopback check targets are sent: parallel probes of a service
    /// on one fixed port do not collide).
    pub container_network: Network,
    pub boot_timeout: Duration,
    /// Boot the image's full default target instead of the minimal one.
    pub full_boot: bool,
    /// Which installs run, and when the checks run between them.
    pub mode: Mode,
    /// Report what the install of the package did (files, units, users, conffiles).
    pub effects: bool,
    /// Leave a failed probe's container running for inspection ([`Suite::kept`]).
    pub keep_on_failure: bool,
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
    /// Probe lean, as pkgprobe does: boot, find systemd-journald active, install the
    /// family's web server and probe its unit and its port.
    Pkgprobe,
}

impl ProbeSpec {
    /// The probe `test` runs in each image of `family`. The pkgprobe selftest is the
    /// original postroj's: find systemd-journald active, then install the family's web
    /// server from the image's own repositories and find its unit active and its port
    /// answering.
    pub fn selftest(test: Selftest, family: Family, boot_timeout: Duration) -> ProbeSpec {
        let mut spec = ProbeSpec {
            requires: vec![],
            package: None,
            dependencies: Dependencies::Uncached,
            units: vec![],
            commands: vec![],
            network: vec![],
            network_timeout: Duration::from_secs(10),
            container_network: Network::Host,
            boot_timeout,
            full_boot: test == Selftest::Hostnamectl,
            mode: Mode::Install,
            effects: false,
            keep_on_failure: false,
        };
        match test {
            Selftest::Hostnamectl => spec.commands.push(vec!["hostnamectl".into()]),
            Selftest::Pkgprobe => {
                let server = family.web_server();
                spec.requires.push(server.package.into());
                spec.units = vec!["systemd-journald".into(), server.unit.into()];
                spec.network.extend(Target::parse(&format!("http://localhost:{}/", server.port)).ok());
            }
        }
        spec
    }
}

/// Receives one line per finished step, for people watching (`debian-bookworm: unit x: active`).
pub type StepLog<'a> = &'a (dyn Fn(&str, &Case) + Sync);

/// Probes `images` with up to `jobs` at once; the report lists them in the given order.
/// Each worker opens its own connection to the store at `store_root`.
pub fn probe_all(store_root: &Path, images: &[&CuratedImage], spec: &ProbeSpec, jobs: usize, log: StepLog) -> Report {
    let probes: Vec<Probe> = images.iter().map(|&image| Probe { image, spec, title: image.label.to_owned() }).collect();
    let mut report = Report::new();
    for suite in probe_matrix(store_root, &probes, jobs, log) {
        report.push(suite);
    }
    report
}

/// One cell of a matrix to probe: an image, what to probe in it, and the title its
/// progress lines carry.
pub struct Probe<'a> {
    pub image: &'a CuratedImage,
    pub spec: &'a ProbeSpec,
    pub title: String,
}

/// Probes `probes` with up to `jobs` at once; their suites come in the given order.
pub fn probe_matrix(store_root: &Path, probes: &[Probe], jobs: usize, log: StepLog) -> Vec<Suite> {
    let suites = racker::pool::run_ordered(probes, jobs, None, |_, probe| {
        let log = |_: &str, case: &Case| log(&probe.title, case);
        match Store::open(store_root) {
            Ok(store) => probe_image(&store, probe.image, probe.spec, &log),
            Err(e) => {
                let mut suite = Suite::new(probe.image.label);
                suite.push(Case::error("boot", Duration::ZERO, format!("opening the store: {e}"), ""));
                suite
            }
        }
    });
    suites.into_iter().flatten().collect()
}

/// Probes one image: its provisioned image must be in the store (`postroj pull`).
pub fn probe_image(store: &Store, image: &CuratedImage, spec: &ProbeSpec, log: StepLog) -> Suite {
    let mut suite = Suite::new(image.label);
    let mut record = |suite: &mut Suite, case: Case| {
        log(image.label, &case);
        suite.push(case);
    };
    let mut binds = lifecycle::package_binds(spec);
    let mut boot_image = image.local_name();
    // What the dependency layer pins (package lists, download workspace) for the probe.
    let dependencies = match dependency_layer(store, image, spec) {
        None => None,
        Some(Ok((prepared, case))) => {
            record(&mut suite, case);
            boot_image = prepared.image.to_string();
            binds.extend(prepared.binds());
            Some(prepared)
        }
        Some(Err(case)) => {
            record(&mut suite, case);
            lifecycle::skip_all(spec, "the dependencies are not installed", &mut suite, &mut record);
            return suite;
        }
    };
    let request = RunRequest {
        options: RunOptions { binds, network: spec.container_network.clone(), ..RunOptions::default() },
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
            lifecycle::skip_all(spec, "the container did not boot", &mut suite, &mut record);
            return suite;
        }
    };
    if !spec.requires.is_empty() && dependencies.is_none() {
        let script = image.package_manager.install_named_script();
        let requires: Vec<&str> = spec.requires.iter().map(String::as_str).collect();
        let case = install(&container, script, &requires, format!("dependencies {}", spec.requires.join(" ")));
        let ok = passed(&case);
        record(&mut suite, case);
        if !ok {
            lifecycle::skip_all(spec, "the required packages did not install", &mut suite, &mut record);
        }
    }
    if suite.passed() {
        // On a dependency layer only the package itself is left to install.
        let script = match dependencies {
            Some(_) => image.package_manager.install_on_layer_script(),
            None => image.package_manager.install_script(),
        };
        lifecycle::run(&container, image, spec, script, &mut suite, &mut record);
    }
    teardown(container, spec, &mut suite, &mut record);
    suite
}

/// The dependency layer the probe boots, with its case `dependencies`, or the failed case;
/// `None` when the probe has nothing to install from the repositories or the image's
/// package manager gets no layers (`--no-cache` or not apt).
fn dependency_layer(
    store: &Store,
    image: &CuratedImage,
    spec: &ProbeSpec,
) -> Option<Result<(deplayer::Prepared, Case), Case>> {
    let Dependencies::Cached(opts) = &spec.dependencies else { return None };
    if (spec.package.is_none() && spec.requires.is_empty()) || !deplayer::supported(image) {
        return None;
    }
    let started = Instant::now();
    let package_path = spec.package.as_ref().map(|p| format!("{PACKAGE_DIR}/{}", p.file_name));
    let prepared = store.resolve(&image.local_name()).map_err(DepLayerError::from).and_then(|base| {
        let package = spec.package.as_ref().zip(package_path.as_deref());
        let needs = Needs { image, base: &base, package, requires: &spec.requires };
        deplayer::prepare(store, needs, opts)
    });
    Some(match prepared {
        // Nothing asked of apt: no phase to report.
        Ok(prepared) if prepared.resolution == deplayer::Resolution::Declared => return None,
        Ok(prepared) => {
            let case = Case::passed("dependencies", started.elapsed(), prepared.describe());
            Ok((prepared, case))
        }
        Err(e) => {
            let text = e.to_string();
            let (message, evidence) = text.split_once('\n').unwrap_or((text.as_str(), ""));
            // Unresolvable dependencies are the package's failure, the rest ours.
            Err(match e {
                DepLayerError::Deps(DepsError::Unresolvable { .. }) | DepLayerError::Simulation { .. } => {
                    Case::failed("dependencies", started.elapsed(), message, evidence)
                }
                _ => Case::error("dependencies", started.elapsed(), message, evidence),
            })
        }
    })
}

/// Runs the install `script` with `args` as the step `name` (`install foo_1.0_all.deb`,
/// `upgrade to foo_2.0_all.deb`), then has systemd read the units it brought (SysV
/// scripts included: the masks of the minimal boot are lifted). Every install of every
/// mode goes through here.
pub(crate) fn install(container: &Booted, script: &str, args: &[&str], name: String) -> Case {
    let started = Instant::now();
    let wrapped = format!("rm -f {} && {{ {script}; }} && systemctl daemon-reload", LEGACY_GENERATOR_MASKS.join(" "));
    let mut argv = vec!["sh", "-c", wrapped.as_str(), "install"];
    argv.extend_from_slice(args);
    match container.exec(&argv, COMMAND_TIMEOUT) {
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

/// Runs the spec's checks (units, commands, network), handing each case to `each` as it
/// finishes.
pub(crate) fn run_checks(container: &Booted, spec: &ProbeSpec, each: &mut dyn FnMut(Case)) {
    for unit in &spec.units {
        each(check_unit(container, unit, !spec.full_boot));
    }
    for command in &spec.commands {
        each(check_exit_status(container, command));
    }
    let address = container.address();
    for target in &spec.network {
        // A container with an address of its own is reached there: the target names
        // the case as the user gave it.
        let reached = address.map_or_else(|| target.clone(), |ip| target.on(ip.into()));
        let outcome = check::check(&reached, spec.network_timeout);
        each(Case::from_check(target, &outcome));
    }
}

/// The names of the cases [`run_checks`] makes, for skipping them.
pub(crate) fn check_names(spec: &ProbeSpec) -> Vec<String> {
    let units = spec.units.iter().map(|unit| format!("unit {unit}"));
    let commands = spec.commands.iter().map(|command| format!("command {}", command.join(" ")));
    let network = spec.network.iter().map(|target| format!("network {target}"));
    units.chain(commands).chain(network).collect()
}

/// Ends the probe's container, timed as the case `teardown`; with `--keep-on-failure`
/// a failed probe's container is kept running instead, and named in the suite.
fn teardown(container: Booted, spec: &ProbeSpec, suite: &mut Suite, record: &mut impl FnMut(&mut Suite, Case)) {
    let started = Instant::now();
    let name = container.name().to_owned();
    if spec.keep_on_failure && !suite.passed() {
        match container.keep() {
            Ok(name) => {
                suite.kept = Some(name.clone());
                let reason = format!("container {name} kept running for inspection (--keep-on-failure)");
                record(suite, Case::skipped("teardown", reason));
            }
            Err(e) => {
                record(suite, Case::error("teardown", started.elapsed(), format!("keeping container {name}: {e}"), ""))
            }
        }
        return;
    }
    let case = match container.stop() {
        Ok(()) => Case::passed("teardown", started.elapsed(), format!("removed {name}")),
        Err(e) => Case::error("teardown", started.elapsed(), e.to_string(), ""),
    };
    record(suite, case);
}

/// Whether a case passed.
pub(crate) fn passed(case: &Case) -> bool {
    matches!(case.outcome, Outcome::Passed { .. })
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

pub(crate) fn combined(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkgprobe_selftest_installs_the_family_web_server_and_probes_unit_and_port() {
        let spec = ProbeSpec::selftest(Selftest::Pkgprobe, Family::Debian, Duration::from_secs(60));
        assert_eq!(spec.requires, ["lighttpd"]);
        assert_eq!(spec.units, ["systemd-journald", "lighttpd"]);
        assert_eq!(spec.network, [Target::parse("http://localhost:80/").expect("a target")]);
        assert!(spec.package.is_none() && !spec.full_boot);
        let fedora = ProbeSpec::selftest(Selftest::Pkgprobe, Family::Fedora, Duration::from_secs(60));
        assert_eq!((fedora.requires, fedora.units[1].as_str()), (vec!["nginx".to_owned()], "nginx"));

        let hostnamectl = ProbeSpec::selftest(Selftest::Hostnamectl, Family::Debian, Duration::from_secs(60));
        assert!(hostnamectl.requires.is_empty() && hostnamectl.network.is_empty() && hostnamectl.full_boot);
        assert_eq!(hostnamectl.commands, [["hostnamectl"]]);
    }
}
