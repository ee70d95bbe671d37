//! `racker attach` on real detached containers: output from the moment of attaching,
//! input to a container made with `-i`, the container's exit status, docker's detach
//! keys (the container runs on), and a refusal for a stopped container.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};

use crate::common::{busybox_store, err, out, TempStore};

/// `racker attach ARGS…` with piped stdin and stdout.
fn attach(store: &TempStore, args: &[&str]) -> Child {
    store
        .cmd()
        .arg("attach")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn racker attach")
}

/// A container that answers each line it reads, and exits 7 after "quit".
const ECHO: &str = "while read x; do echo \"got $x\"; [ \"$x\" = quit ] && exit 7; done";

#[test]
fn attach_passes_input_and_ends_with_the_containers_status() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-di", "--name", "echo", "bb", "sh", "-c", ECHO]);
    let mut child = attach(&store, &["echo"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    stdin.write_all(b"one\n").expect("write");
    assert_eq!(lines.next().expect("a line").expect("read"), "got one");
    stdin.write_all(b"quit\n").expect("write");
    assert_eq!(lines.next().expect("a line").expect("read"), "got quit");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7), "attach ends with the container's status");
    assert_eq!(store.ok(&["logs", "echo"]), "got one\ngot quit\n");
    store.ok(&["rm", "echo"]);
    store.assert_clean();
}

#[test]
fn the_detach_keys_leave_the_container_running() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "-di", "--name", "echo", "bb", "sh", "-c", ECHO]);
    // docker's default keys: ctrl-p ctrl-q.
    let mut child = attach(&store, &["echo"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    stdin.write_all(b"first\n").expect("write");
    assert_eq!(lines.next().expect("a line").expect("read"), "got first");
    stdin.write_all(b"\x10\x11").expect("write");
    assert_eq!(child.wait().expect("wait").code(), Some(0), "detaching is a success");
    assert!(store.ok(&["ps"]).contains("echo"), "the container runs on");

    // Keys of one's own; a broken sequence is input.
    let mut child = attach(&store, &["--detach-keys", "ctrl-a,x", "echo"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    stdin.write_all(b"\x01y\n").expect("write");
    assert_eq!(lines.next().expect("a line").expect("read"), "got \x01y");
    stdin.write_all(b"\x01x").expect("write");
    assert_eq!(child.wait().expect("wait").code(), Some(0));

    // Without input: output only, until the container ends. The watcher sees what is
    // written once it is attached: a feeder writes until it has seen a line.
    let mut watcher = attach(&store, &["--no-stdin", "echo"]);
    let mut feeder = attach(&store, &["echo"]);
    let mut fed = feeder.stdin.take().expect("stdin");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeding = {
        let seen = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            while !seen.load(std::sync::atomic::Ordering::SeqCst) {
                fed.write_all(b"ping\n").expect("write");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            fed.write_all(b"quit\n").expect("write");
        })
    };
    let mut watched = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    assert_eq!(watched.next().expect("a line").expect("read"), "got ping");
    seen.store(true, std::sync::atomic::Ordering::SeqCst);
    feeding.join().expect("feeder");
    assert!(watched.any(|l| l.is_ok_and(|l| l == "got quit")), "the watcher sees the output to the end");
    assert_eq!(watcher.wait().expect("wait").code(), Some(7));
    assert_eq!(feeder.wait().expect("wait").code(), Some(7));
    store.ok(&["rm", "echo"]);
    store.assert_clean();
}

#[test]
fn attach_refuses_a_stopped_container_and_bad_keys() {
    let (store, _dir) = busybox_store();
    store.ok(&["run", "--name", "done", "bb", "true"]);
    let o = store.run(&["attach", "done"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("start it first"), "{}", err(&o));
    assert!(out(&o).is_empty());
    let o = store.run(&["attach", "--detach-keys", "ctrl-", "done"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--detach-keys"), "{}", err(&o));
    store.ok(&["rm", "done"]);
    store.assert_clean();
}
