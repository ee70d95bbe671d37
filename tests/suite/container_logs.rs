//! `racker logs` of detached command-mode containers, as docker's json-file driver keeps
//! them: stdout and stderr apart, every line stamped; `--tail`, `--since`, `--until`,
//! `-t`, and `-f` following a writer until its container ends.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use crate::common::{busybox_store, TempStore};

/// Waits for the detached container `name` to end: `logs -f` returns once it has.
fn wait_for_end(store: &TempStore, name: &str) {
    store.ok(&["logs", "-f", name]);
    assert!(store.ok(&["ps", "-a"]).contains("Exited (0)"), "{}", store.ok(&["ps", "-a"]));
}

fn split(o: &std::process::Output) -> (String, String) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn logs_keep_stdout_and_stderr_apart() {
    let (store, _dir) = busybox_store();
    let script = "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2";
    store.ok(&["run", "-d", "--name", "c", "bb", "sh", "-c", script]);
    wait_for_end(&store, "c");
    let (out, err) = split(&store.run(&["logs", "c"]));
    assert_eq!((out.as_str(), err.as_str()), ("out-1\nout-2\n", "err-1\nerr-2\n"));
    // The log is the container's, readable by root only.
    let logs: Vec<_> = walkdir::WalkDir::new(store.root().join("containers"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with("-json.log"))
        .collect();
    assert_eq!(logs.len(), 1, "one json log: {logs:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(logs[0].metadata().expect("stat").permissions().mode() & 0o777, 0o600);
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(logs[0].path()).expect("read").lines().next().expect("a line"))
            .expect("json");
    assert!(first["log"].is_string() && first["stream"].is_string() && first["time"].is_string(), "{first}");
    store.ok(&["rm", "c"]);
    store.assert_clean();
}

#[test]
fn tail_timestamps_since_and_until_select_lines() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-d", "--name", "c", "bb", "sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done"]);
    wait_for_end(&store, "c");
    assert_eq!(store.ok(&["logs", "--tail", "2", "c"]), "line-4\nline-5\n");
    assert_eq!(store.ok(&["logs", "--tail", "all", "c"]).lines().count(), 5);
    assert_eq!(store.ok(&["logs", "-n", "0", "c"]), "");
    let stamped = store.ok(&["logs", "-t", "c"]);
    let times: Vec<&str> = stamped
        .lines()
        .map(|l| {
            let (time, text) = l.split_once(' ').expect("TIME TEXT");
            assert!(text.starts_with("line-"), "{l}");
            assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "an RFC 3339 time: {l}");
            time
        })
        .collect();
    assert_eq!(times.len(), 5, "{stamped}");
    assert_eq!(store.ok(&["logs", "--since", times[2], "c"]), "line-3\nline-4\nline-5\n");
    assert_eq!(store.ok(&["logs", "--until", times[1], "c"]), "line-1\nline-2\n");
    assert_eq!(store.ok(&["logs", "--since", "1h", "c"]).lines().count(), 5, "a duration ago");
    assert_eq!(store.ok(&["logs", "--since", "2999-01-01T00:00:00Z", "c"]), "");
    let bad = store.fails(&["logs", "--since", "not-a-time", "c"]);
    assert!(bad.contains("not-a-time"), "{bad}");
    store.ok(&["rm", "c"]);
    store.assert_clean();
}

#[test]
fn logs_f_follows_a_writer_until_the_container_ends() {
    let (store, _dir) = busybox_store();
    let script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second >&2; echo third";
    store.ok(&["run", "-d", "--name", "c", "bb", "sh", "-c", script]);
    let mut follow = store
        .cmd()
        .args(["logs", "-f", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("racker logs -f");
    let mut out = BufReader::new(follow.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "first\n");
    store.ok(&["exec", "c", "touch", "/tmp/go"]);
    // Ends by itself once the container has: no kill needed.
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    let mut err = String::new();
    follow.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    assert!(follow.wait().expect("wait").success());
    assert_eq!((rest.as_str(), err.as_str()), ("third\n", "second\n"));
    assert!(store.ok(&["ps", "-a"]).contains("Exited (0)"));
    store.ok(&["rm", "c"]);
    store.assert_clean();
}
