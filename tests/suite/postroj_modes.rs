//! `postroj pkgprobe`'s lifecycle modes (purge, upgrade, reinstall), its effect report,
//! its per-phase times and `--keep-on-failure`, on the real Debian bookworm image with
//! .debs built here by dpkg-deb. None of the packages depends on anything beyond the
//! image: no test needs a mirror.

use std::path::Path;

use serde_json::Value;

use crate::common::postroj::{err, out, postroj, probe_store, with_curated_debian, Deb, FileServer};
use crate::common::{btrfs, require_root, TempStore};

/// A oneshot service that stays active once started: a unit check passes on it.
const ONESHOT_UNIT: &[u8] = b"[Unit]\nDescription=racker modes test\n\n[Service]\nType=oneshot\n\
    RemainAfterExit=yes\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n";

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: not a JSON report:\n{}\n{}", out(o), err(o)))
}

/// The cases of the report's first suite, by name.
fn cases(report: &Value) -> Vec<(String, String)> {
    report["suites"][0]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (c["name"].as_str().unwrap_or_default().to_owned(), c["result"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn names(report: &Value) -> Vec<String> {
    cases(report).into_iter().map(|(name, _)| name).collect()
}

fn paths(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().filter_map(|f| f["path"].as_str().or(f.as_str())).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A package with a conffile, a unit, and a postinst that creates a system user and
/// group and enables the unit.
fn effects_package(dir: &Path) -> std::path::PathBuf {
    Deb {
        name: "racker-fx",
        version: "1.0",
        description: "a package with effects, for postroj's tests",
        files: &[
            ("etc/racker-fx.conf", b"setting = 1\n", 0o644),
            ("usr/share/racker-fx/data", b"data\n", 0o644),
            ("lib/systemd/system/racker-fx.service", ONESHOT_UNIT, 0o644),
        ],
        control: &[
            ("conffiles", "/etc/racker-fx.conf\n"),
            (
                "postinst",
                "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
                 getent passwd racker-fx >/dev/null || useradd --system --user-group --no-create-home \
                 --home-dir /nonexistent --shell /usr/sbin/nologin racker-fx\n\
                 systemctl enable racker-fx.service\nfi\n",
            ),
        ],
    }
    .build(dir)
}

#[test]
fn effects_show_the_files_the_conffile_the_user_and_the_enabled_unit_in_every_format() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("packages");
    let deb = effects_package(dir.path());
    let package = format!("--package={}", deb.display());
    let args = ["pkgprobe", "--image=debian-bookworm", &package, "--effects", "--check-unit=racker-fx"];
    let o = postroj(&store, cache.path(), &[&args[..], &["--format=json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    assert_eq!(names(&report), ["boot", "install racker-fx_1.0_all.deb", "effects", "unit racker-fx", "teardown"]);
    let fx = &report["suites"][0]["effects"];
    assert_eq!(fx["step"], "install racker-fx_1.0_all.deb");
    let added = paths(&fx["added"]);
    for wanted in ["/etc/racker-fx.conf", "/usr/share/racker-fx/data", "/usr/lib/systemd/system/racker-fx.service"] {
        assert!(added.iter().any(|p| p == wanted), "{wanted} not among the added files: {added:#?}");
    }
    assert!(
        added.iter().all(|p| !p.starts_with("/var/lib/dpkg") && !p.starts_with("/var/log") && p != "/etc/machine-id"),
        "bookkeeping and the boot's writes are not the package's effects: {added:#?}"
    );
    assert_eq!(fx["conffiles"], serde_json::json!(["/etc/racker-fx.conf"]));
    assert_eq!(fx["users_created"][0]["name"], "racker-fx", "{fx:#}");
    assert_eq!(fx["groups_created"][0]["name"], "racker-fx", "{fx:#}");
    assert_eq!(fx["units_enabled"], serde_json::json!(["racker-fx.service (multi-user.target.wants)"]));
    // The user database changed, as the users say: its files are not listed as changes.
    assert!(!paths(&fx["changed"]).iter().any(|p| p.starts_with("/etc/passwd")), "{fx:#}");
    // Every phase is timed.
    let phases = report["suites"][0]["phases"].as_object().expect("phases");
    let phase_names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(phase_names, ["boot", "checks", "effects", "install", "teardown"], "(sorted by serde_json)");
    assert!(phases.values().all(|t| t.as_f64().is_some_and(|t| t >= 0.0)), "{phases:?}");

    let o = postroj(&store, cache.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let table = out(&o);
    assert!(table.contains("debian-bookworm effects of install racker-fx_1.0_all.deb:"), "{table}");
    assert!(table.contains("/etc/racker-fx.conf (12 bytes, 0644)"), "{table}");
    assert!(table.contains("racker-fx.service (multi-user.target.wants)"), "{table}");
    assert!(table.contains("debian-bookworm phases: boot "), "{table}");

    let o = postroj(&store, cache.path(), &[&args[..], &["--format=junit"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let xml = out(&o);
    assert!(xml.contains("<property name=\"phase.install\"") && xml.contains("name=\"teardown\""), "{xml}");
    assert!(xml.contains("effects of install racker-fx_1.0_all.deb") && xml.contains("conffiles (1):"), "{xml}");
    store.assert_clean();
}

/// A package whose postinst writes files that nothing removes again.
fn littering_package(dir: &Path) -> std::path::PathBuf {
    Deb {
        name: "racker-litter",
        version: "1.0",
        description: "a package that leaves files behind, for postroj's tests",
        files: &[("usr/share/racker-litter/data", b"data\n", 0o644)],
        control: &[(
            "postinst",
            "#!/bin/sh\nset -e\nmkdir -p /var/lib/racker-litter\necho state > /var/lib/racker-litter/state\n\
             echo generated > /etc/racker-litter.generated\n",
        )],
    }
    .build(dir)
}

#[test]
fn purge_fails_naming_what_the_package_left_behind_and_passes_a_clean_package() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("packages");
    let litter = littering_package(dir.path());
    let o = postroj(
        &store,
        cache.path(),
        &["pkgprobe", "--image=debian-bookworm", &format!("--package={}", litter.display()), "--mode=purge"],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let table = out(&o);
    let row = table.lines().find(|l| l.contains(" leftovers ")).unwrap_or_else(|| panic!("a leftovers row:\n{table}"));
    assert!(row.contains("FAILED"), "{table}");
    assert!(table.contains("purge racker-litter_1.0_all.deb") && table.contains("purged racker-litter"), "{table}");
    let reason = table.lines().find(|l| l.contains("/ leftovers:")).unwrap_or_else(|| panic!("the reason:\n{table}"));
    for left in ["/etc/racker-litter.generated", "/var/lib/racker-litter/state", "/var/lib/racker-litter"] {
        assert!(reason.contains(left), "{left} is named: {reason}");
    }
    assert!(!table.contains("/usr/share/racker-litter"), "the purge removed the package's own files: {table}");

    // A clean package with a unit that the probe's check (not the package) enables: purged,
    // nothing is left, whatever the check did.
    let clean = Deb {
        name: "racker-clean",
        version: "1.0",
        description: "a package that purges cleanly, for postroj's tests",
        files: &[
            ("usr/share/racker-clean/data", b"data\n", 0o644),
            ("lib/systemd/system/racker-clean.service", ONESHOT_UNIT, 0o644),
        ],
        control: &[],
    }
    .build(dir.path());
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={}", clean.display()),
            "--mode=purge",
            "--check-unit=racker-clean",
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    assert_eq!(
        cases(&report),
        [
            ("boot", "passed"),
            ("install racker-clean_1.0_all.deb", "passed"),
            ("unit racker-clean (after install)", "passed"),
            ("purge racker-clean_1.0_all.deb", "passed"),
            ("leftovers", "passed"),
            ("teardown", "passed"),
        ]
        .map(|(n, r)| (n.to_owned(), r.to_owned()))
    );
    store.assert_clean();
}

#[test]
fn upgrade_checks_the_old_version_then_the_new_one_from_a_url() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let served = tempfile::tempdir().expect("served");
    let version = |v: &str, file: &str| {
        let contents = format!("{v}\n");
        Deb {
            name: "racker-up",
            version: v,
            description: "a package in two versions, for postroj's tests",
            files: &[
                ("usr/share/racker-up/version", contents.as_bytes(), 0o644),
                (file, b"x\n", 0o644),
                ("lib/systemd/system/racker-up.service", ONESHOT_UNIT, 0o644),
            ],
            control: &[],
        }
        .build(served.path())
    };
    version("1.0", "usr/share/racker-up/only-in-1.0");
    let new = version("2.0", "usr/share/racker-up/only-in-2.0");
    let server = FileServer::start(served.path());
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={}", new.display()),
            "--mode=upgrade",
            &format!("--from={}", server.url("racker-up_1.0_all.deb")),
            "--check-unit=racker-up",
            "--effects",
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    assert_eq!(
        names(&report),
        [
            "boot",
            "install racker-up_1.0_all.deb",
            "unit racker-up (after install)",
            "upgrade to racker-up_2.0_all.deb",
            "effects",
            "unit racker-up (after upgrade)",
            "teardown"
        ]
    );
    assert!(cases(&report).iter().all(|(_, result)| result == "passed"), "{report:#}");
    assert_eq!(server.gets("racker-up_1.0_all.deb"), 1, "--from was downloaded");
    // The upgrade's effects: the new version's file is there, the old one's gone.
    let fx = &report["suites"][0]["effects"];
    assert_eq!(fx["step"], "upgrade to racker-up_2.0_all.deb");
    assert!(paths(&fx["added"]).contains(&"/usr/share/racker-up/only-in-2.0".to_owned()), "{fx:#}");
    assert!(paths(&fx["removed"]).contains(&"/usr/share/racker-up/only-in-1.0".to_owned()), "{fx:#}");
    assert!(paths(&fx["changed"]).contains(&"/usr/share/racker-up/version".to_owned()), "{fx:#}");

    let o = postroj(
        &store,
        cache.path(),
        &["pkgprobe", "--image=debian-bookworm", &format!("--package={}", new.display()), "--mode=upgrade"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--mode upgrade needs --from"), "{}", err(&o));
    store.assert_clean();
}

#[test]
fn reinstall_checks_after_both_installs() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("packages");
    let deb = Deb {
        name: "racker-re",
        version: "1.0",
        description: "a package installed twice, for postroj's tests",
        files: &[("lib/systemd/system/racker-re.service", ONESHOT_UNIT, 0o644)],
        control: &[],
    }
    .build(dir.path());
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={}", deb.display()),
            "--mode=reinstall",
            "--check-unit=racker-re",
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    assert_eq!(
        cases(&report),
        [
            ("boot", "passed"),
            ("install racker-re_1.0_all.deb", "passed"),
            ("unit racker-re (after install)", "passed"),
            ("reinstall racker-re_1.0_all.deb", "passed"),
            ("unit racker-re (after reinstall)", "passed"),
            ("teardown", "passed"),
        ]
        .map(|(n, r)| (n.to_owned(), r.to_owned()))
    );
    store.assert_clean();
}

/// btrfs snapshots keep no record of a container's writes: the effects and the purge
/// check cannot be told there, and say so as errors (never a silent pass).
#[test]
fn on_btrfs_effects_and_the_purge_check_are_errors_that_say_why() {
    require_root();
    let fs = btrfs::BtrfsLoop::new();
    let _sweep = btrfs::MountSweep(vec![fs.path().to_owned()]);
    let store = with_curated_debian(TempStore::at(fs.path()));
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("packages");
    let deb = littering_package(dir.path());
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={}", deb.display()),
            "--mode=purge",
            "--effects",
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    let all = report["suites"][0]["cases"].as_array().expect("cases").clone();
    let case =
        |name: &str| all.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {all:#?}")).clone();
    assert_eq!(case("install racker-litter_1.0_all.deb")["result"], "passed");
    for name in ["effects", "leftovers"] {
        let c = case(name);
        assert_eq!(c["result"], "error", "{c:#}");
        let message = c["message"].as_str().unwrap_or_default();
        assert!(message.contains("btrfs") && message.contains("overlay storage driver"), "{message}");
        assert!(message.contains("effect report") && !message.contains("commit"), "in the probe's words: {message}");
    }
    assert!(report["suites"][0].get("effects").is_none(), "{report:#}");
    fs.assert_clean(&store);
}

/// Removes every container of the store on drop: a kept container must not outlive a
/// failed assertion.
struct RemoveContainers<'a>(&'a TempStore);

impl Drop for RemoveContainers<'_> {
    fn drop(&mut self) {
        for id in self.0.run(&["ps", "-a", "-q"]).stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let _ = self.0.run(&["rm", "-f", &String::from_utf8_lossy(id)]);
        }
    }
}

#[test]
fn keep_on_failure_leaves_the_failed_container_running_for_racker_exec_and_rm() {
    let store = probe_store();
    let _guard = RemoveContainers(&store);
    let cache = tempfile::tempdir().expect("cache");
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            "--check-unit=systemd-journald",
            "--check-unit=absent-unit",
            "--keep-on-failure",
            "--format=json",
            "--quiet",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let report = json(&o);
    let name =
        report["suites"][0]["kept"].as_str().unwrap_or_else(|| panic!("a kept container: {report:#}")).to_owned();
    assert_eq!(cases(&report).last().map(|(n, r)| (n.as_str(), r.as_str())), Some(("teardown", "skipped")));
    assert!(err(&o).contains(&format!("kept container {name} running")), "said even with --quiet: {}", err(&o));
    assert!(err(&o).contains(&format!("racker rm -f {name}")), "{}", err(&o));

    // postroj has exited; the container runs on, and racker knows it.
    assert!(store.ok(&["ps"]).contains(&name), "{}", store.ok(&["ps", "-a"]));
    let os = store.ok(&["exec", &name, "cat", "/etc/os-release"]);
    assert!(os.contains("bookworm"), "{os}");
    let state = store.ok(&["exec", &name, "systemctl", "is-system-running"]);
    assert!(!state.trim().is_empty(), "its systemd answers");
    // gc leaves a kept container alone while it runs.
    store.ok(&["gc"]);
    assert!(store.ok(&["exec", &name, "true"]).is_empty());

    store.ok(&["rm", "-f", &name]);
    assert_eq!(store.ok(&["ps", "-a", "-q"]), "", "no container records remain");
    store.assert_clean();

    // A probe that passes is torn down as usual.
    let o = postroj(
        &store,
        cache.path(),
        &["pkgprobe", "--image=debian-bookworm", "--check-unit=systemd-journald", "--keep-on-failure"],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("teardown") && !err(&o).contains("kept container"), "{}\n{}", out(&o), err(&o));
    assert_eq!(store.ok(&["ps", "-a", "-q"]), "");
    store.assert_clean();
}
