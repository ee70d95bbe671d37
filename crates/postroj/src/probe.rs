//! `pkgprobe`: for each image, boot a throw-away container lean (racker's minimal
//! target: the journal only; whatever the package's units need is started on demand),
//! install the package, enable and start the units and ask whether each is active, check
//! the network addresses from the host (containers share its network), tear down by
//! termination. Several images run in parallel, each in its own container; every step
//! becomes a [`Case`] of the image's [`Suite`].

use std::path::Path;
use std::time::{Duration, Instant};

use super::catalog::{CuratedImage, Family};
use super::check::{self, Target};
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
    /// Packages from the image's repositories, installed before the package file.
    pub requires: Vec<String>,
    pub package: Option<Package>,
    pub units: Vec<String>,
    /// Commands that must exit 0 inside the container (`selftest hostnamectl`).
    pub commands: Vec<Vec<String>>,
    pub network: Vec<Target>,
    pub network_timeout: Duration,
    pub boot_timeout: Duration,
    /// Boot the image's full default target instead of the minimal one.
    pub full_boot: bool,
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
            units: vec![],
            commands: vec![],
            network: vec![],
            network_timeout: Duration::from_secs(10),
            boot_timeout,
            full_boot: test == Selftest::Hostnamectl,
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
    let mut binds = Vec::new();
    if let Some(package) = &spec.package {
        binds.push(Bind {
            source: package.path.clone(),
            target: format!("{PACKAGE_DIR}/{}", package.file_name),
            read_only: true,
        });
    }
    let request = RunRequest {
        options: RunOptions { binds, ..RunOptions::default() },
        boot_target: if spec.full_boot { BootTarget::Default } else { BootTarget::Minimal },
        boot_timeout: spec.boot_timeout,
        ..RunRequest::default()
    };
    let started = Instant::now();
    let container = match Booted::start(store, &image.local_name(), &request) {
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

    if !spec.requires.is_empty() {
        let name = format!("dependencies {}", spec.requires.join(" "));
        let started = Instant::now();
        // As after the package's install below: systemd learns the new units.
        let script = format!("{{ {}; }} && systemctl daemon-reload", image.package_manager.install_named_script());
        let mut argv = vec!["sh", "-c", &script, "requires"];
        argv.extend(spec.requires.iter().map(String::as_str));
        let case = match container.exec(&argv, COMMAND_TIMEOUT) {
            Ok(out) if out.status.success() => Case::passed(name, started.elapsed(), "installed"),
            Ok(out) => Case::failed(
                name,
                started.elapsed(),
                format!("the package manager failed ({})", out.status),
                tail(&combined(&out), 30),
            ),
            Err(e) => Case::error(name, started.elapsed(), e.to_string(), ""),
        };
        let failed = !matches!(case.outcome, super::report::Outcome::Passed { .. });
        record(&mut suite, case);
        if failed {
            skip_rest(&mut suite, spec, "the dependencies did not install", &mut record);
            return suite;
        }
    }

    if let Some(package) = &spec.package {
        let name = format!("install {}", package.file_name);
        let path = format!("{PACKAGE_DIR}/{}", package.file_name);
        let started = Instant::now();
        // The package may bring SysV scripts: systemd makes units of them again.
        let script = format!(
            "rm -f {} && {{ {}; }} && systemctl daemon-reload",
            LEGACY_GENERATOR_MASKS.join(" "),
            image.package_manager.install_script()
        );
        let case = match container.exec(&["sh", "-c", &script, "install", &path], COMMAND_TIMEOUT) {
            Ok(out) if out.status.success() => Case::passed(name, started.elapsed(), "installed"),
            Ok(out) => Case::failed(
                name,
                started.elapsed(),
                format!("the package manager failed ({})", out.status),
                tail(&combined(&out), 30),
            ),
            Err(e) => Case::error(name, started.elapsed(), e.to_string(), ""),
        };
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
    // scripts) costs one question; any other is enabled where it can be, then started.
    let script = "if state=$(systemctl is-active \"$1\"); then echo \"state=$state\"; exit; fi; \
                  systemctl enable --quiet \"$1\" 2>/dev/null; systemctl start \"$1\" 2>&1; \
                  echo \"state=$(systemctl is-active \"$1\")\"";
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
