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
