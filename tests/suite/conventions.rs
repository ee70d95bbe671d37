//! The command lines' conventions as a docker or podman user (or one of the original
//! Racker) meets them: the logging flags, suggestions for a mistyped verb, and the
//! one-line errors for the usual mistakes (not root, a missing `-v` path, `--env-file`
//! or working directory, an unknown name, a curated label not pulled).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, err, out, TempStore};

/// The one line a failure says, with its exit status checked.
fn failure(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "status: {:?}\n{}", o.status, err(o));
    let text = err(o);
    assert_eq!(text.lines().count(), 1, "more than one line:\n{text}");
    text.trim_end().to_owned()
}

#[test]
fn debug_shows_the_nspawn_command_verbose_the_steps_and_racker_log_wins() {
    let (store, _dir) = common::busybox_store();
    let run = |global: &[&str], env: Option<&str>| {
        // Global flags come before the verb, as `racker --verbose run ...` in the original's docs.
        let mut cmd = store.cmd();
        cmd.args(global).args(["run", "--rm", "-e", "SECRET=hunter2", "bb", "true"]).env_remove("RACKER_LOG");
        if let Some(filter) = env {
            cmd.env("RACKER_LOG", filter);
        }
        let o = cmd.output().expect("running racker");
        assert!(o.status.success(), "racker {global:?} run: {}", err(&o));
        err(&o)
    };
    assert_eq!(run(&[], None), "", "racker logs by default");
    for debug in [&["--debug"][..], &["-D"], &["--log-level", "debug"], &["--log-level=trace"]] {
        let log = run(debug, None);
        assert!(log.contains("DEBUG") && log.contains("systemd-nspawn"), "racker {debug:?}:\n{log}");
        assert!(log.contains("--setenv=SECRET"), "racker {debug:?}: no environment in the nspawn line:\n{log}");
        assert!(!log.contains("hunter2"), "racker {debug:?} logs a secret:\n{log}");
    }
    let verbose = run(&["--verbose"], None);
    assert!(verbose.contains("INFO") && verbose.contains("of image"), "racker --verbose:\n{verbose}");
    assert!(!verbose.contains("DEBUG"), "racker --verbose logs debug events:\n{verbose}");
    for quiet in [&["--log-level", "error"][..], &["--log-level", "fatal"], &["--log-level", "warn"]] {
        assert_eq!(run(quiet, None), "", "racker {quiet:?}");
    }
    // RACKER_LOG wins over the flags, both ways.
    assert_eq!(run(&["--debug"], Some("error")), "", "RACKER_LOG=error racker --debug");
    let log = run(&[], Some("racker=debug"));
    assert!(log.contains("systemd-nspawn"), "RACKER_LOG=racker=debug:\n{log}");
    store.assert_clean();
}

#[test]
fn log_flags_are_global_options_and_a_bad_level_is_a_usage_error() {
    let store = TempStore::new();
    let o = store.run(&["--log-level", "loud", "images"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("invalid value 'loud' for '--log-level <LEVEL>'"), "{}", err(&o));
    assert!(err(&o).contains("trace, debug, info, warn, error, fatal"), "{}", err(&o));
    let o = store.postroj().args(["--log-level", "loud", "list-images"]).output().expect("postroj");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    for flags in [&["--debug"][..], &["-D"], &["--verbose"], &["--log-level", "info"]] {
        let o = store.cmd().args(flags).args(["images", "-q"]).output().expect("racker");
        assert!(o.status.success(), "racker {flags:?} images: {}", err(&o));
        let o = store.postroj().args(flags).args(["list-images"]).output().expect("postroj");
        assert!(o.status.success(), "postroj {flags:?} list-images: {}", err(&o));
    }
    let help = store.ok(&["--help"]);
    for flag in ["--log-level <LEVEL>", "-D, --debug", "--verbose"] {
        assert!(help.contains(flag), "racker --help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_mistyped_verb_is_offered_only_public_verbs() {
    let store = TempStore::new();
    let said = |args: &[&str]| {
        let o = store.run(args);
        assert_eq!(o.status.code(), Some(125), "racker {args:?}: {}", err(&o));
        err(&o)
    };
    let typo = said(&["imgaes"]);
    assert!(typo.contains("unrecognized subcommand 'imgaes'"), "{typo}");
    assert!(typo.contains("tip: some similar subcommands exist: 'image', 'images'"), "{typo}");
    // The internal monitor is never put in a user's mouth, nor its name shown.
    for args in [&["container-monitr", "x"][..], &["container-moniter", "x"], &["containermonitor", "x"]] {
        let text = said(args);
        assert!(text.contains("unrecognized subcommand"), "racker {args:?}:\n{text}");
        assert!(!text.contains("container-monitor"), "racker {args:?} offers the internal verb:\n{text}");
    }
    // `top` is a verb: without its argument it asks for it, not "did you mean stop".
    let top = said(&["top"]);
    assert!(top.contains("<CONTAINER>") && !top.contains("stop"), "{top}");
}

/// The racker and postroj binaries, copied where an unprivileged user can run them
/// (the build's target directory need not be).
fn binaries_for_nobody() -> (tempfile::TempDir, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("racker-nobody-").tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = |from: &str, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(from, &to).expect("copying the binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        to
    };
    let racker = copy(env!("CARGO_BIN_EXE_racker"), "racker");
    let postroj = copy(env!("CARGO_BIN_EXE_postroj"), "postroj");
    (dir, racker, postroj)
}

fn as_nobody(program: &Path, root: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RACKER_LOG")
        .current_dir("/")
        .output()
        .expect("running setpriv")
}

#[test]
fn not_root_is_said_once_before_anything_is_touched() {
    common::require_root();
    let store = TempStore::new();
    let (_dir, racker, postroj) = binaries_for_nobody();
    let before = store.snapshot();
    let racker_says = "Error: racker must run as root: the image store is root's, and containers need mounts, \
                       cgroups and systemd-nspawn (try `sudo racker ...`)";
    for args in [&["images"][..], &["ps", "-a"], &["run", "--rm", "bb", "true"], &["info"], &["system", "df"]] {
        let o = as_nobody(&racker, store.root(), args);
        let code = if args[0] == "run" { 125 } else { 1 };
        assert_eq!(failure(&o, code), racker_says, "racker {args:?}");
    }
    // A fresh root is not made either (no half-made store owned by nobody).
    let fresh = tempfile::tempdir().expect("tempdir");
    let o = as_nobody(&racker, &fresh.path().join("store"), &["images"]);
    assert_eq!(failure(&o, 1), racker_says);
    assert!(!fresh.path().join("store").exists(), "a store was made for nobody");
    let o = as_nobody(&postroj, store.root(), &["list-images"]);
    assert_eq!(
        failure(&o, 2),
        "Error: postroj must run as root: the image store is root's, and containers need mounts, cgroups and \
         systemd-nspawn (try `sudo postroj ...`)"
    );
    // What needs no store works for anyone.
    for args in [&["version"][..], &["--help"], &["completion", "bash"]] {
        let o = as_nobody(&racker, store.root(), args);
        assert!(o.status.success(), "racker {args:?} as nobody: {}", err(&o));
    }
    let o = as_nobody(&postroj, store.root(), &["completion", "bash"]);
    assert!(o.status.success(), "postroj completion as nobody: {}", err(&o));
    assert_eq!(store.snapshot(), before, "the store changed");
}

#[test]
fn a_missing_bind_source_or_env_file_is_refused_and_nothing_is_made() {
    let (store, _dir) = common::busybox_store();
    let missing = tempfile::tempdir().expect("tempdir");
    let host = missing.path().join("not-there");
    let host = host.to_str().expect("utf-8");
    let bind = format!("{host}:/data");
    let mount = format!("type=bind,source={host},target=/data");
    for args in [&["-v", bind.as_str()][..], &["--mount", mount.as_str()]] {
        for verb in ["run", "create"] {
            let mut line = vec![verb];
            line.extend_from_slice(args);
            line.extend(["bb", "true"]);
            let o = store.run(&line);
            assert_eq!(
                failure(&o, 125),
                format!(
                    "Error: bind source {host}: no such file or directory on the host (racker does not make it; \
                     make it first)"
                ),
                "racker {line:?}"
            );
        }
    }
    assert!(!Path::new(host).exists(), "racker made the host path");
    let env_file = format!("{host}.env");
    let o = store.run(&["run", "--rm", "--env-file", &env_file, "bb", "true"]);
    assert_eq!(failure(&o, 125), format!("Error: --env-file {env_file}: no such file"));
    assert_eq!(store.ok(&["ps", "-aq"]), "", "a container was left");
    store.assert_clean();
}

#[test]
fn run_makes_a_missing_working_directory_exec_names_it() {
    let (store, _dir) = common::busybox_store();
    // docker's run makes it, in the container only.
    assert_eq!(store.ok(&["run", "--rm", "-w", "/new/work dir", "bb", "pwd"]), "/new/work dir\n");
    assert_eq!(store.ok(&["run", "--rm", "bb", "sh", "-c", "test -e /new && echo left || echo gone"]), "gone\n");
    // A file where the directory should be is no directory to make.
    let o = store.run(&["run", "--rm", "-w", "/bin/sh/x", "bb", "pwd"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("working directory /bin/sh/x: cannot be made in the container"), "{}", err(&o));
    // docker's exec does not make it: the error names it.
    store.ok(&["run", "-d", "--name", "wd", "bb", "sleep", "600"]);
    let _cleanup = RemoveOnDrop(&store, "wd");
    let o = store.run(&["exec", "-w", "/nowhere", "wd", "pwd"]);
    assert_eq!(failure(&o, 125), "Error: working directory /nowhere: no such directory in the container");
    assert_eq!(store.ok(&["exec", "-w", "/tmp", "wd", "pwd"]), "/tmp\n");
    store.ok(&["rm", "-f", "wd"]);
    store.assert_clean();
}

/// Removes a container when the test ends, also when it failed.
struct RemoveOnDrop<'a>(&'a TempStore, &'a str);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", self.1]);
    }
}

#[test]
fn inspect_takes_a_container_name_and_names_what_is_neither() {
    let (store, _dir) = common::busybox_store();
    store.ok(&["create", "--name", "named", "bb", "true"]);
    let _cleanup = RemoveOnDrop(&store, "named");
    let json: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "named"])).expect("json");
    assert_eq!(json[0]["Name"], "/named", "{json}");
    let o = store.run(&["inspect", "nosuchthing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err(&o).trim_end(), "Error: No such object: nosuchthing");
    assert_eq!(out(&o).trim(), "[]");
    // One found, one not: the found one is printed, the failure still said.
    let o = store.run(&["inspect", "named", "nosuchthing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err(&o).trim_end(), "Error: No such object: nosuchthing");
    store.ok(&["rm", "named"]);
    store.assert_clean();
}

#[test]
fn postroj_pull_without_labels_mentions_all() {
    let store = TempStore::new();
    let o = store.postroj().arg("pull").output().expect("postroj");
    assert_eq!(
        failure(&o, 2),
        "Error: no image to pull: name labels (`postroj list-images` shows them), or pull every curated image \
         with --all"
    );
}

#[test]
fn run_takes_a_curated_label_the_store_has() {
    let (store, _dir) = common::busybox_store();
    // postroj's name for a pulled label; the busybox image stands in for Debian.
    store.ok(&["tag", "bb", "localhost/postroj/debian-bullseye:latest"]);
    assert_eq!(store.ok(&["run", "--rm", "debian-bullseye", "echo", "label"]), "label\n");
    // An alias of the label too (debian-11 is bullseye).
    assert_eq!(store.ok(&["run", "--rm", "debian-11", "echo", "alias"]), "alias\n");
    let bb: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", "bb"])).expect("json");
    store.ok(&["create", "--name", "from-label", "debian-bullseye", "true"]);
    let _cleanup = RemoveOnDrop(&store, "from-label");
    let made: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "from-label"])).expect("json");
    assert_eq!(made[0]["Image"], bb[0]["Id"], "create debian-bullseye made it of another image");
    store.ok(&["rm", "from-label"]);
    // A label not pulled names the pull instead of asking Docker Hub.
    let o = store.run(&["run", "--rm", "debian-bookworm", "true"]);
    assert_eq!(
        failure(&o, 125),
        "Error: debian-bookworm is a curated postroj image the store does not have: run `postroj pull \
         debian-bookworm` first"
    );
    // An image of the user's own by that name wins over the label.
    store.ok(&["tag", "bb", "debian-bookworm"]);
    assert_eq!(store.ok(&["run", "--rm", "debian-bookworm", "echo", "own"]), "own\n");
    store.assert_clean();
}
