//! The command lines' edge, as a user meets it: output into a pipe that closed early,
//! container names, `login -p`, what `load` says it loaded.

use std::process::Output;

use crate::common::images;
use crate::common::{self, output_into_closed_pipe, TempStore};

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A reader that went away ends the program quietly, as SIGPIPE ends docker: the shell
/// sees 141, and nothing is said (in particular no panic, exit 101).
fn assert_quiet_sigpipe_exit(what: &str, o: &Output) {
    assert!(!err(o).contains("panicked"), "{what} panicked on a closed pipe:\n{}", err(o));
    assert_eq!(o.status.code(), Some(141), "{what} into a closed pipe: {:?}\n{}", o.status, err(o));
    assert_eq!(err(o), "", "{what} into a closed pipe says something");
}

#[test]
fn listings_into_a_closed_pipe_end_quietly() {
    let store = TempStore::new();
    store.ok(&["load", "-q", "-i", common::fixture("archives/whiteouts-docker-save.tar").to_str().expect("utf-8")]);
    for args in [&["images"][..], &["images", "-q"], &["images", "--format", "json"], &["ps", "-a"], &["system", "df"]]
    {
        let o = output_into_closed_pipe(store.cmd().args(args));
        assert_quiet_sigpipe_exit(&format!("racker {args:?}"), &o);
    }
    for args in [&["list-images", "--format", "table"][..], &["list-images"]] {
        let o = output_into_closed_pipe(store.postroj().args(args));
        assert_quiet_sigpipe_exit(&format!("postroj {args:?}"), &o);
    }
}

#[test]
fn help_version_and_info_into_a_closed_pipe_end_quietly() {
    let store = TempStore::new();
    for args in [&["--help"][..], &["run", "--help"], &["version"], &["info"], &["info", "--format", "json"]] {
        let o = output_into_closed_pipe(store.cmd().args(args));
        assert_quiet_sigpipe_exit(&format!("racker {args:?}"), &o);
    }
    let o = output_into_closed_pipe(store.postroj().arg("--help"));
    assert_quiet_sigpipe_exit("postroj --help", &o);
}

/// Runs `cmd` as `cmd 2>&1 | head -0` runs it: standard output and error both on a
/// pipe nobody reads any more. Nothing is left to read the messages; the status tells.
fn both_into_a_closed_pipe(cmd: &mut std::process::Command) -> std::process::ExitStatus {
    cmd.stdin(std::process::Stdio::null())
        .stdout(common::closed_pipe())
        .stderr(common::closed_pipe())
        .status()
        .expect("running the command")
}

#[test]
fn a_closed_standard_error_is_no_panic() {
    let store = TempStore::new();
    // Listings end as they do with only standard output closed (and logging to the
    // closed standard error is no failure either).
    let listing = both_into_a_closed_pipe(store.cmd().args(["images"]).env("RACKER_LOG", "trace"));
    assert_eq!(listing.code(), Some(141), "racker images 2>&1 | head -0: {listing:?}");
    let listing = both_into_a_closed_pipe(store.postroj().args(["list-images"]).env("RACKER_LOG", "trace"));
    assert_eq!(listing.code(), Some(141), "postroj list-images 2>&1 | head -0: {listing:?}");
    // A failure whose message nobody can read fails as it does with a reader (the
    // message said), never with a panic's 101.
    let failures: [(&str, &[&str]); 4] = [
        ("postroj", &["pull", "no-such-label"]),
        ("racker", &["rm", "no-such-container"]),
        ("racker", &["images", "--no-such-flag"]),
        ("postroj", &["--no-such-flag"]),
    ];
    for (program, args) in failures {
        let what = format!("{program} {args:?}");
        let cmd = || {
            let mut cmd = if program == "postroj" { store.postroj() } else { store.cmd() };
            cmd.args(args);
            cmd
        };
        let read = cmd().output().expect("running the command");
        assert!(!err(&read).contains("panicked") && !err(&read).is_empty(), "{what}:\n{}", err(&read));
        assert!(!read.status.success() && read.status.code() != Some(101), "{what}: {:?}", read.status);
        let closed = both_into_a_closed_pipe(&mut cmd());
        assert_eq!(closed.code(), read.status.code(), "{what} 2>&1 | head -0: {closed:?}");
    }
}

#[test]
fn removals_into_a_closed_pipe_end_quietly_and_still_remove() {
    common::require_root();
    let store = TempStore::new();
    let _dir = images::add_busybox(&store);
    store.ok(&["run", "--name", "gone", "bb", "true"]);
    let o = output_into_closed_pipe(store.cmd().args(["rm", "gone"]));
    assert_quiet_sigpipe_exit("racker rm gone", &o);
    assert_eq!(store.ok(&["ps", "-aq"]), "", "the container is left");
    store.assert_clean();
}

#[test]
fn a_container_whose_output_closes_early_is_still_torn_down() {
    common::require_root();
    let store = TempStore::new();
    let _dir = images::add_busybox(&store);
    let o = output_into_closed_pipe(store.cmd().args(["run", "--rm", "bb", "sh", "-c", "echo one; echo two"]));
    assert!(!err(&o).contains("panicked"), "racker run panicked:\n{}", err(&o));
    assert_eq!(store.ok(&["ps", "-aq"]), "", "the --rm container is left");
    store.assert_clean();
}

#[test]
fn container_names_docker_refuses_are_refused_before_anything_is_made() {
    common::require_root();
    let store = TempStore::new();
    let _dir = images::add_busybox(&store);
    for name in ["a/b", "../../x", "", "-x", "x y"] {
        let flag = format!("--name={name}");
        for detach in [false, true] {
            let mut args = vec!["run", flag.as_str()];
            if detach {
                args.push("-d");
            }
            args.extend(["bb", "true"]);
            let o = store.run(&args);
            assert_eq!(o.status.code(), Some(125), "racker {args:?}: {:?}\n{}", o.status, err(&o));
            let want = format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
            assert!(err(&o).contains(&want), "racker {args:?}:\n{}", err(&o));
        }
    }
    assert_eq!(store.ok(&["ps", "-aq"]), "", "a container was made");
    store.assert_clean();
    store.ok(&["run", "--rm", "--name", "ok_name.v2-x", "bb", "true"]);
    store.ok(&["run", "--rm", "--name", "a", "bb", "true"]);
}
