//! `--restart` policies, carried out by a detached container's monitor on real
//! containers: on-failure counts its retries, always restarts until the user stops it,
//! a `kill` or `stop` is never undone, and a container waiting for its next start can
//! be stopped and removed. Every test ends with the store's leak check.

use std::time::{Duration, Instant};

use crate::common::{busybox_store, err, TempStore};

/// Waits (at most a minute) until `done` holds for the output of `racker args`.
fn eventually(store: &TempStore, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = store.ok(args);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "racker {args:?} never got there: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The container's `inspect` as JSON.
fn inspect(store: &TempStore, name: &str) -> serde_json::Value {
    let text = store.ok(&["inspect", name]);
    let all: serde_json::Value = serde_json::from_str(&text).expect("inspect prints JSON");
    all[0].clone()
}

#[test]
fn on_failure_retries_n_times_on_the_same_snapshot() {
    let (store, _dir) = busybox_store();
    let script = "echo run >> /srv/n; wc -l < /srv/n; exit 2";
    store.ok(&["run", "-d", "--restart", "on-failure:3", "--name", "flaky", "bb", "sh", "-c", script]);
    // wait returns once the monitor gave up: the first run and three restarts.
    assert_eq!(store.ok(&["wait", "flaky"]), "2\n");
    assert_eq!(store.ok(&["logs", "flaky"]), "1\n2\n3\n4\n", "each restart sees the writes of the runs before");
    let info = inspect(&store, "flaky");
    assert_eq!(info["RestartCount"], 3, "{info}");
    assert_eq!(info["HostConfig"]["RestartPolicy"]["Name"], "on-failure", "{info}");
    assert_eq!(info["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3, "{info}");
    assert!(store.ok(&["ps", "-a"]).contains("Exited (2)"));

    // A success ends on-failure at once.
    store.ok(&["run", "-d", "--restart", "on-failure", "--name", "fine", "bb", "sh", "-c", "echo once"]);
    assert_eq!(store.ok(&["wait", "fine"]), "0\n");
    assert_eq!(store.ok(&["logs", "fine"]), "once\n");
    assert_eq!(inspect(&store, "fine")["RestartCount"], 0);
    store.ok(&["rm", "flaky", "fine"]);
    store.assert_clean();
}

#[test]
fn always_restarts_until_stopped_and_stop_is_not_undone() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-d", "--restart=always", "--name", "loop", "bb", "sh", "-c", "echo up; sleep 0.2"]);
    eventually(&store, &["logs", "loop"], |l| l.lines().count() >= 3);
    // Restarting or running, `ps` lists it as docker does (without -a).
    assert!(store.ok(&["ps"]).contains("loop"), "{}", store.ok(&["ps", "-a"]));
    store.ok(&["stop", "-t", "2", "loop"]);
    let ps = store.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "a stopped container stays stopped: {ps}");
    let after_stop = store.ok(&["logs", "loop"]);
    // Its monitor is gone: nothing starts it again.
    store.ok(&["wait", "loop"]);
    assert_eq!(store.ok(&["logs", "loop"]), after_stop);
    assert!(!store.ok(&["ps"]).contains("loop"));

    // start runs it under its policy again; kill ends it for good, as stop does.
    store.ok(&["start", "loop"]);
    eventually(&store, &["logs", "loop"], |l| l.lines().count() >= after_stop.lines().count() + 2);
    // Kill it while it runs (it may be between two runs: retry until a kill lands).
    eventually(&store, &["ps"], |_| store.run(&["kill", "loop"]).status.success());
    store.ok(&["wait", "loop"]);
    assert!(store.ok(&["ps", "-a"]).contains("Exited"), "{}", store.ok(&["ps", "-a"]));
    store.ok(&["rm", "loop"]);
    store.assert_clean();
}

#[test]
fn a_container_between_two_runs_is_stopped_and_removed() {
    let (store, _dir) = busybox_store();
    // Fails at once: its delays grow, and it spends most of its time restarting.
    store.ok(&["run", "-d", "--restart", "unless-stopped", "--name", "crash", "bb", "sh", "-c", "exit 1"]);
    eventually(&store, &["ps", "-a"], |ps| ps.contains("Restarting (1)"));
    let o = store.run(&["rm", "crash"]);
    assert_eq!(o.status.code(), Some(1), "rm of a restarting container without -f: {}", err(&o));
    store.ok(&["rm", "-f", "crash"]);
    assert!(!store.ok(&["ps", "-a"]).contains("crash"));

    store.ok(&["run", "-d", "--restart", "always", "--name", "crash2", "bb", "sh", "-c", "exit 1"]);
    eventually(&store, &["ps", "-a"], |ps| ps.contains("Restarting (1)"));
    store.ok(&["stop", "crash2"]);
    assert!(store.ok(&["ps", "-a"]).contains("Exited (1)"), "{}", store.ok(&["ps", "-a"]));
    store.ok(&["rm", "crash2"]);
    store.assert_clean();
}

#[test]
fn bad_policies_and_rm_with_restart_are_refused() {
    let (store, _dir) = busybox_store();
    for (args, says) in [
        (&["run", "-d", "--restart", "sometimes", "bb", "true"][..], "sometimes"),
        (&["run", "-d", "--restart", "on-failure:x", "bb", "true"], "on-failure:x"),
        (&["run", "-d", "--restart", "always", "--rm", "bb", "true"], "--rm"),
        (&["create", "--restart", "always:2", "bb", "true"], "always:2"),
    ] {
        let o = store.run(args);
        assert_eq!(o.status.code(), Some(125), "racker {args:?}: {}", err(&o));
        assert!(err(&o).contains(says) && err(&o).lines().count() == 1, "racker {args:?}: {}", err(&o));
    }
    assert_eq!(store.ok(&["ps", "-aq"]), "", "a refused run makes no container");
    store.assert_clean();
}
