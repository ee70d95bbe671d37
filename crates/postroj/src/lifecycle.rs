//! Lifecycle modes, as piuparts tests a package: which installs (and removals) a probe
//! runs, and where the checks (units, commands, network) run between them.
//!
//! ```text
//! install    install ─ [effects] ─ checks
//! purge      install ─ [effects] ─ checks (after install) ─ purge ─ leftovers
//! upgrade    install --from ─ checks (after install) ─ upgrade ─ [effects] ─ checks (after upgrade)
//! reinstall  install ─ [effects] ─ checks (after install) ─ reinstall ─ checks (after reinstall)
//! ```
//!
//! A mode is a plan of [`Step`]s; a step that fails (an install, the purge) skips the
//! rest, each skipped case named as it would have run. The leftover check compares the
//! system after the purge with the one before the install ([`effects::compare`]): what
//! was added or changed and is still there, outside [`effects::IGNORED`], was left behind.

use std::collections::BTreeSet;
use std::time::Instant;

use racker::runtime::{Bind, Booted};

use crate::catalog::{CuratedImage, PackageManager};
use crate::effects::{self, Effects, EffectsError, Image, State};
use crate::package::Package;
use crate::probe::{self, ProbeSpec, COMMAND_TIMEOUT, PACKAGE_DIR};
use crate::report::{Case, Suite};

/// What a probe does with its package.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// Install, then check.
    #[default]
    Install,
    /// Install, check, purge, then fail on what the package left behind.
    Purge,
    /// Install the `from` version, check, upgrade to the package, check again.
    Upgrade { from: Package },
    /// Install, check, install the same file again, check again.
    Reinstall,
}

impl Mode {
    /// The mode's name, as `--mode` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Install => "install",
            Mode::Purge => "purge",
            Mode::Upgrade { .. } => "upgrade",
            Mode::Reinstall => "reinstall",
        }
    }
}

/// Where `--from`'s package is bound: a directory of its own, as both files may have the
/// same name.
const FROM_DIR: &str = "/run/postroj/from";

/// The package files bound (read-only) into the container: the package, and in upgrade
/// mode the version it upgrades from.
pub(crate) fn package_binds(spec: &ProbeSpec) -> Vec<Bind> {
    let bind = |package: &Package, dir: &str| Bind {
        source: package.path.clone(),
        target: format!("{dir}/{}", package.file_name),
        read_only: true,
    };
    let mut binds = Vec::new();
    if let Some(package) = &spec.package {
        binds.push(bind(package, PACKAGE_DIR));
        if let Mode::Upgrade { from } = &spec.mode {
            binds.push(bind(from, FROM_DIR));
        }
    }
    binds
}

/// One step of a mode's plan.
enum Step<'a> {
    /// Install the package file at `path` (in the container) as the case `name`. A
    /// `measured` install is the package's own: the effects are those of this step.
    Install {
        path: String,
        name: String,
        measured: bool,
    },
    /// The effect report of the measured install.
    Effects,
    /// The spec's checks; case names say `(after PHASE)` in the modes with several.
    Checks {
        after: Option<&'static str>,
    },
    Purge {
        package: &'a Package,
    },
    Leftovers,
}

fn plan(spec: &ProbeSpec) -> Vec<Step<'_>> {
    let Some(package) = &spec.package else {
        return vec![Step::Checks { after: None }];
    };
    let path = format!("{PACKAGE_DIR}/{}", package.file_name);
    let install =
        |measured| Step::Install { path: path.clone(), name: format!("install {}", package.file_name), measured };
    let effects = || spec.effects.then_some(Step::Effects);
    let mut steps = Vec::new();
    match &spec.mode {
        Mode::Install => {
            steps.push(install(spec.effects));
            steps.extend(effects());
            steps.push(Step::Checks { after: None });
        }
        Mode::Purge => {
            steps.push(install(true));
            steps.extend(effects());
            steps.push(Step::Checks { after: Some("install") });
            steps.push(Step::Purge { package });
            steps.push(Step::Leftovers);
        }
        Mode::Upgrade { from } => {
            steps.push(Step::Install {
                path: format!("{FROM_DIR}/{}", from.file_name),
                name: format!("install {}", from.file_name),
                measured: false,
            });
            steps.push(Step::Checks { after: Some("install") });
            steps.push(Step::Install {
                path: path.clone(),
                name: format!("upgrade to {}", package.file_name),
                measured: spec.effects,
            });
            steps.extend(effects());
            steps.push(Step::Checks { after: Some("upgrade") });
        }
        Mode::Reinstall => {
            steps.push(install(spec.effects));
            steps.extend(effects());
            steps.push(Step::Checks { after: Some("install") });
            steps.push(Step::Install {
                path: path.clone(),
                name: format!("reinstall {}", package.file_name),
                measured: false,
            });
            steps.push(Step::Checks { after: Some("reinstall") });
        }
    }
    steps
}

impl Step<'_> {
    /// The names of the cases the step makes.
    fn case_names(&self, spec: &ProbeSpec) -> Vec<String> {
        match self {
            Step::Install { name, .. } => vec![name.clone()],
            Step::Effects => vec!["effects".into()],
            Step::Checks { after } => probe::check_names(spec).into_iter().map(|n| phase_name(n, *after)).collect(),
            Step::Purge { package } => vec![format!("purge {}", package.file_name)],
            Step::Leftovers => vec!["leftovers".into()],
        }
    }
}

/// `unit foo (after upgrade)`.
fn phase_name(name: String, after: Option<&str>) -> String {
    match after {
        Some(phase) => format!("{name} (after {phase})"),
        None => name,
    }
}

/// Records every case of `spec`'s plan as skipped for `reason` (the container did not boot).
pub(crate) fn skip_all(spec: &ProbeSpec, reason: &str, suite: &mut Suite, record: &mut dyn FnMut(&mut Suite, Case)) {
    for step in plan(spec) {
        for name in step.case_names(spec) {
            record(suite, Case::skipped(name, reason));
        }
    }
}

/// What the steps hand on to later ones.
#[derive(Default)]
struct Observed {
    /// The system before the measured install, and right after it.
    before: Option<Result<State, EffectsError>>,
    after: Option<Result<State, EffectsError>>,
    /// The system before the purge (after the checks).
    before_purge: Option<Result<State, EffectsError>>,
    /// The name of the measured install's step.
    step: String,
}

/// Runs `spec`'s mode in the booted `container`, installing package files with
/// `install_script` (`$1`: the file), recording every case in `suite`.
pub(crate) fn run(
    container: &Booted,
    image: &CuratedImage,
    spec: &ProbeSpec,
    install_script: &str,
    suite: &mut Suite,
    record: &mut dyn FnMut(&mut Suite, Case),
) {
    let steps = plan(spec);
    let mut seen = Observed::default();
    for (i, step) in steps.iter().enumerate() {
        let failed = match step {
            Step::Install { path, name, measured, .. } => {
                if *measured {
                    seen.before = Some(State::take(container));
                }
                let case = probe::install(container, install_script, &[path], name.clone());
                let ok = probe::passed(&case);
                record(suite, case);
                if *measured && ok {
                    seen.after = Some(State::take(container));
                    seen.step = name.clone();
                }
                (!ok).then(|| {
                    if name.starts_with("install ") {
                        "the package did not install"
                    } else {
                        "the install failed"
                    }
                })
            }
            Step::Effects => {
                let (case, effects) = effects_case(container, image, spec, &seen);
                suite.effects = effects;
                record(suite, case);
                None
            }
            Step::Checks { after } => {
                probe::run_checks(container, spec, &mut |mut case| {
                    case.name = phase_name(case.name, *after);
                    record(suite, case);
                });
                None
            }
            Step::Purge { package } => {
                seen.before_purge = Some(State::take(container));
                let case = purge(container, image, package);
                let ok = probe::passed(&case);
                record(suite, case);
                (!ok).then_some("the purge failed")
            }
            Step::Leftovers => {
                record(suite, leftovers_case(container, &seen));
                None
            }
        };
        if let Some(reason) = failed {
            for rest in &steps[i + 1..] {
                for name in rest.case_names(spec) {
                    record(suite, Case::skipped(name, reason));
                }
            }
            return;
        }
    }
}

/// The case `effects`: what the measured install did, or why that cannot be told.
fn effects_case(
    container: &Booted,
    image: &CuratedImage,
    spec: &ProbeSpec,
    seen: &Observed,
) -> (Case, Option<Effects>) {
    let started = Instant::now();
    let compared = (|| -> Result<Effects, String> {
        let (before, after) = (taken(&seen.before)?, taken(&seen.after)?);
        let layers = Image::of(container).map_err(|e| e.to_string())?;
        let mut fx = effects::compare(&seen.step, before, after, &layers);
        if let Some(package) = &spec.package {
            fx.conffiles = conffiles(container, image.package_manager, package)?;
        }
        Ok(fx)
    })();
    match compared {
        Ok(fx) => (Case::passed("effects", started.elapsed(), fx.summary()), Some(fx)),
        Err(message) => (Case::error("effects", started.elapsed(), message, ""), None),
    }
}

/// The configuration files of the installed `package`.
fn conffiles(container: &Booted, manager: PackageManager, package: &Package) -> Result<Vec<String>, String> {
    let Some(script) = effects::conffiles_script(manager) else { return Ok(Vec::new()) };
    let name = package_name(container, manager, package)?;
    let out = container.exec(&["sh", "-c", script, "conffiles", &name], COMMAND_TIMEOUT).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "listing the conffiles of {name} failed ({}): {}",
            out.status,
            probe::combined(&out).trim()
        ));
    }
    Ok(effects::parse_conffiles(&String::from_utf8_lossy(&out.stdout)))
}

/// The name of the package in `package`'s file: a .deb's control file is read on the
/// host, other formats are asked of the package tools in the container.
fn package_name(container: &Booted, manager: PackageManager, package: &Package) -> Result<String, String> {
    let script = match manager {
        PackageManager::Apt => {
            let control = crate::deb::control(&package.path).map_err(|e| e.to_string())?;
            return control.get("Package").cloned().ok_or_else(|| format!("{} names no Package", package.file_name));
        }
        // An rpm is queried the same way whichever front end installs it.
        PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper => "rpm -qp --qf '%{NAME}\\n' \"$1\"",
        PackageManager::Pacman => "pacman -Qqp \"$1\"",
    };
    let path = format!("{PACKAGE_DIR}/{}", package.file_name);
    let out = container.exec(&["sh", "-c", script, "name", &path], COMMAND_TIMEOUT).map_err(|e| e.to_string())?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || name.is_empty() {
        return Err(format!(
            "reading the package name of {} failed: {}",
            package.file_name,
            probe::combined(&out).trim()
        ));
    }
    Ok(name)
}

/// A shell script that removes the installed package `$1` with its configuration.
fn purge_script(manager: PackageManager) -> &'static str {
    match manager {
        PackageManager::Apt => "export DEBIAN_FRONTEND=noninteractive; apt-get purge -y -qq \"$1\"",
        PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper => "rpm -e \"$1\"",
        PackageManager::Pacman => "pacman -Rn --noconfirm \"$1\"",
    }
}

/// The case `purge FILE`: `apt-get purge` (`rpm -e`) of the installed package.
fn purge(container: &Booted, image: &CuratedImage, package: &Package) -> Case {
    let case_name = format!("purge {}", package.file_name);
    let started = Instant::now();
    let name = match package_name(container, image.package_manager, package) {
        Ok(name) => name,
        Err(e) => return Case::error(case_name, started.elapsed(), e, ""),
    };
    let script = purge_script(image.package_manager);
    match container.exec(&["sh", "-c", script, "purge", &name], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => Case::passed(case_name, started.elapsed(), format!("purged {name}")),
        Ok(out) => Case::failed(
            case_name,
            started.elapsed(),
            format!("the package manager failed to purge {name} ({})", out.status),
            probe::tail(&probe::combined(&out), 30),
        ),
        Err(e) => Case::error(case_name, started.elapsed(), e.to_string(), ""),
    }
}

/// The case `leftovers`: what is there after the purge that was not before the install,
/// or was changed since, outside the usual exceptions. What the probe's own unit checks
/// added to /etc/systemd (`systemctl enable` of a unit the package did not enable: the
/// link, and its `.wants` directory) is the probe's, not the package's.
fn leftovers_case(container: &Booted, seen: &Observed) -> Case {
    let started = Instant::now();
    let measured = (|| -> Result<Effects, String> {
        let (before, after_install, before_purge) =
            (taken(&seen.before)?, taken(&seen.after)?, taken(&seen.before_purge)?);
        let now = State::take(container).map_err(|e| e.to_string())?;
        let image = Image::of(container).map_err(|e| e.to_string())?;
        let probe_made: BTreeSet<String> = effects::compare("checks", after_install, before_purge, &image)
            .added
            .into_iter()
            .filter(|f| f.path.starts_with("/etc/systemd/"))
            .map(|f| f.path)
            .collect();
        let mut fx = effects::compare("purge", before, &now, &image);
        fx.added.retain(|f| !probe_made.contains(&f.path));
        Ok(fx)
    })();
    let fx = match measured {
        Ok(fx) => fx,
        Err(message) => return Case::error("leftovers", started.elapsed(), message, ""),
    };
    let mut left: Vec<String> = fx.added.iter().map(|f| f.path.clone()).collect();
    left.extend(fx.changed.iter().map(|f| format!("{} (changed)", f.path)));
    left.extend(fx.removed.iter().map(|p| format!("{p} (removed)")));
    if left.is_empty() {
        return Case::passed("leftovers", started.elapsed(), "nothing left behind");
    }
    let shown: Vec<&str> = left.iter().take(5).map(String::as_str).collect();
    let more = if left.len() > shown.len() { format!(" and {} more", left.len() - shown.len()) } else { String::new() };
    let message = format!(
        "{} left behind after purge: {}{more}",
        if left.len() == 1 { "1 file".to_owned() } else { format!("{} files", left.len()) },
        shown.join(", ")
    );
    let details = format!(
        "{}\n(not counted: package databases, caches, logs, volatile directories, systemd's state, the user \
         database and the linker cache)",
        left.join("\n")
    );
    Case::failed("leftovers", started.elapsed(), message, details)
}

/// A state an earlier step took, or why there is none.
fn taken(state: &Option<Result<State, EffectsError>>) -> Result<&State, String> {
    match state {
        Some(Ok(state)) => Ok(state),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the system was not measured before this step".into()),
    }
}
