//! `postroj pkgprobe` and `selftest` on a real Debian bookworm image (mmdebstrap from the
//! configured mirror, cached), with a real .deb built here by dpkg-deb: a systemd unit
//! that serves HTTP with busybox httpd on a fixed port, downloaded from an HTTP server
//! this test starts on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use crate::common::postroj::{build_deb, build_web_package, err, out, postroj, probe_store, FileServer};

/// The port the test package's service listens on inside the container (the host's
/// network: containers share it).
const SERVICE_PORT: u16 = 18471;

/// A registries.conf that sends docker.io to a port nothing listens on.
fn refusing_registries_conf(dir: &Path) -> PathBuf {
    let conf = dir.join("registries.conf");
    std::fs::write(&conf, "[[registry]]\nprefix = \"docker.io\"\nlocation = \"127.0.0.1:1\"\n").expect("write");
    conf
}

#[test]
fn a_booted_image_passes_a_unit_check_and_a_missing_unit_fails_with_the_reason() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let o = postroj(&store, cache.path(), &["pkgprobe", "--image=debian-bookworm", "--check-unit=systemd-journald"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("unit systemd-journald") && out(&o).contains("passed"), "{}", out(&o));

    let o = postroj(
        &store,
        cache.path(),
        &["pkgprobe", "--image=debian-bookworm", "--check-unit=systemd-journald", "--check-unit=no-such-thing"],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("unit no-such-thing is not installed"), "{}", out(&o));
    store.assert_clean();
    assert_eq!(store.ok(&["ps", "-a", "-q"]), "", "no container records remain");
}

#[test]
fn a_package_from_a_url_installs_its_unit_serves_http_and_is_downloaded_once() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let served = tempfile::tempdir().expect("served");
    build_web_package(served.path(), SERVICE_PORT);
    let server = FileServer::start(served.path());
    let package = server.url("racker-probe-web_1.0_all.deb");
    let service = format!("http://localhost:{SERVICE_PORT}/");

    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={package}"),
            "--check-unit=racker-probe-web",
            &format!("--check-network={service}"),
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let cases = report["suites"][0]["cases"].as_array().expect("cases").clone();
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "boot",
            "install racker-probe-web_1.0_all.deb",
            "unit racker-probe-web",
            &format!("network {service}"),
            "teardown"
        ]
    );
    assert!(cases.iter().all(|c| c["result"] == "passed"), "{cases:#?}");
    assert!(cases[3]["detail"].as_str().unwrap_or_default().contains("200"), "{:#?}", cases[3]);

    // The wrong port: the network check fails and says why; the package is not fetched again.
    let wrong = format!("--check-network=http://localhost:{}/", SERVICE_PORT + 1);
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={package}"),
            "--check-unit=racker-probe-web",
            &wrong,
            "--network-timeout=3",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("connection refused"), "{}", out(&o));
    assert_eq!(server.gets("racker-probe-web_1.0_all.deb"), 1, "one download for both runs");
    store.assert_clean();
}

/// An HTTP server on 127.0.0.1 that answers nobody until `n` requests are open at once
/// (clients that gave up meanwhile do not count), then answers them all 200 OK: a
/// network check passes only while `n` checks are under way together. At that moment it
/// runs `observe`, whose result it returns; None if told to stop (a request for `/stop`)
/// before that.
fn serve_barrier<T>(listener: TcpListener, n: usize, observe: impl FnOnce() -> T) -> Option<T> {
    let mut open: Vec<TcpStream> = Vec::new();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).map_or(true, |read| read == 0) {
                break;
            }
            head.push(byte[0]);
        }
        if head.starts_with(b"GET /stop ") {
            return None;
        }
        open.push(stream);
        // A client that gave up has closed its end: reading finds the end (or an error)
        // at once, where a waiting one has nothing to read.
        open.retain(|s| {
            s.set_nonblocking(true).is_ok()
                && matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        if open.len() == n {
            let seen = observe();
            for mut s in open {
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
            return Some(seen);
        }
    }
    None
}

#[test]
fn a_matrix_runs_in_parallel_and_reports_junit() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    // Each image's network check reaches a barrier that answers only while both checks
    // wait there, each from inside its probe with its container up: with `-j 1` the
    // first would wait alone until its timeout and fail.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the barrier");
    let barrier = format!("http://{}/", listener.local_addr().expect("address"));
    let (o, together) = std::thread::scope(|scope| {
        let running = || store.ok(&["ps", "-q"]).lines().count();
        let server = scope.spawn(move || serve_barrier(listener, 2, running));
        let o = postroj(
            &store,
            cache.path(),
            &[
                "pkgprobe",
                "--image=debian-bookworm",
                "--image=debian-trixie",
                "-j",
                "2",
                "--check-unit=systemd-journald",
                "--check-unit=absent-unit",
                &format!("--check-network={barrier}"),
                "--network-timeout=120",
                "--format=junit",
            ],
        );
        // Ends the barrier if the probes never met there.
        let _ = TcpStream::connect(barrier.trim_start_matches("http://").trim_end_matches('/'))
            .and_then(|mut s| s.write_all(b"GET /stop HTTP/1.0\r\n\r\n"));
        (o, server.join().expect("the barrier"))
    });
    assert_eq!(together, Some(2), "both probes' checks waited at the barrier, with both containers up");
    assert_eq!(o.status.code(), Some(1), "one check fails in each image:\n{}\n{}", out(&o), err(&o));
    let xml = out(&o);
    assert!(xml.starts_with("<?xml"), "{xml}");
    // boot, two units, the network check and the teardown, in each image.
    assert!(xml.contains("<testsuites ") && xml.contains("tests=\"10\"") && xml.contains("failures=\"2\""), "{xml}");
    for label in ["debian-bookworm", "debian-trixie"] {
        assert!(xml.contains(&format!("<testsuite name=\"{label}\"")), "{xml}");
        assert!(xml.contains(&format!("classname=\"postroj.pkgprobe.{label}\" name=\"unit systemd-journald\"")));
    }
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert_eq!(xml.matches("name=\"unit absent-unit\"").count(), 2, "{xml}");
    store.assert_clean();
}

#[test]
fn selftests_cover_the_curated_images_in_the_store() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let o = postroj(&store, cache.path(), &["selftest", "hostnamectl", "-j", "2", "--format=json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let images: Vec<&str> =
        report["suites"].as_array().expect("suites").iter().filter_map(|s| s["image"].as_str()).collect();
    assert_eq!(images, ["debian-bookworm", "debian-trixie"], "every curated image in the store, in catalog order");
    assert!(out(&o).contains("command hostnamectl") && out(&o).contains("passed"), "{}", out(&o));

    let o = postroj(&store, cache.path(), &["pkgprobe", "--image=debian-potato", "--check-unit=x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("unknown image label") && err(&o).contains("debian-bookworm"), "{}", err(&o));
    // A missing image is pulled first: here no registry answers, and the error says so.
    let o = store
        .postroj()
        .env("CONTAINERS_REGISTRIES_CONF", refusing_registries_conf(cache.path()))
        .args(["pkgprobe", "--image=ubuntu-noble", "--check-unit=x"])
        .output()
        .expect("postroj");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("ubuntu-noble") && err(&o).contains("cannot reach the registry"), "{}", err(&o));
    store.assert_clean();
}

/// Panics, saying why, unless nothing on this host listens on port 80 (the web server of
/// `selftest pkgprobe` serves there, on the network the containers share with the host).
/// Takes the host's port 80 for the test (other tests' web servers wait) and insists that
/// nothing else listens there.
fn require_free_port_80() -> std::sync::MutexGuard<'static, ()> {
    let guard = crate::common::HOST_PORT_80.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = TcpListener::bind(("0.0.0.0", 80)) {
        panic!("port 80 of this host is taken ({e}): selftest pkgprobe probes its web server there; stop what listens");
    }
    guard
}

/// README: `selftest pkgprobe` is the original postroj's: it installs the family's web
/// server (lighttpd on Debian) from the image's own repositories, here the real Debian
/// mirror, and finds its unit active and port 80 answering. The image is named by its
/// version alias, as everywhere a label is taken.
#[test]
fn selftest_pkgprobe_installs_lighttpd_from_the_mirror_and_probes_its_unit_and_port() {
    let _port = require_free_port_80();
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let o = postroj(&store, cache.path(), &["selftest", "pkgprobe", "--image=debian-12", "--format=json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let suites = report["suites"].as_array().expect("suites");
    assert_eq!(suites.len(), 1, "{report:#}");
    assert_eq!(suites[0]["image"], "debian-bookworm", "the alias names the curated label");
    let cases = suites[0]["cases"].as_array().expect("cases");
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        ["dependencies", "boot", "unit systemd-journald", "unit lighttpd", "network http://localhost/", "teardown"]
    );
    assert!(cases.iter().all(|c| c["result"] == "passed"), "{cases:#?}");
    // lighttpd came from a dependency layer built from the mirror.
    assert!(cases[0]["detail"].as_str().unwrap_or_default().contains("built layer"), "{:#?}", cases[0]);
    assert!(cases[4]["detail"].as_str().unwrap_or_default().contains("200"), "{:#?}", cases[4]);
    // The server went with its container.
    assert!(TcpStream::connect(("127.0.0.1", 80)).is_err(), "nothing listens on port 80 after the probe");
    store.assert_clean();

    // pkgprobe takes the alias too.
    let o = postroj(&store, cache.path(), &["pkgprobe", "--image=debian-12", "--check-unit=systemd-journald"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("debian-bookworm"), "{}", out(&o));
}

/// README: a unit that is installed but does not come up fails its check, and the report
/// shows its status and its last journal lines. The package's oneshot service says why it
/// fails on standard error (the journal) and exits 3.
#[test]
fn a_unit_that_is_installed_but_fails_shows_its_status_and_journal() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("package dir");
    let unit = b"[Unit]\nDescription=racker probe failing service\n\n[Service]\nType=oneshot\n\
        ExecStart=/bin/sh -c 'echo racker-probe-fail: no configuration in /etc/racker-probe-fail.conf >&2; exit 3'\n\n\
        [Install]\nWantedBy=multi-user.target\n";
    let deb = build_deb(
        dir.path(),
        "racker-probe-fail",
        "a systemd service that fails, for postroj's tests",
        &[("lib/systemd/system/racker-probe-fail.service", unit, 0o644)],
    );
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            &format!("--package={}", deb.display()),
            "--check-unit=racker-probe-fail",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let report = out(&o);
    assert!(report.contains("install racker-probe-fail_1.0_all.deb") && report.contains("installed"), "{report}");
    let row = report.lines().find(|l| l.contains("unit racker-probe-fail ")).expect("the unit's row");
    assert!(row.contains("FAILED"), "{report}");
    assert!(report.contains("debian-bookworm / unit racker-probe-fail: unit racker-probe-fail is failed"), "{report}");
    // The status: systemctl's own view of the unit and of its process's exit.
    assert!(report.contains("racker-probe-fail.service - racker probe failing service"), "{report}");
    assert!(report.contains("Active: failed") && report.contains("status=3"), "{report}");
    // The journal: the service's own words, after the heading of the journal part.
    let (_, journal) = report.split_once("-- last journal lines of racker-probe-fail:").expect("a journal part");
    assert!(journal.contains("racker-probe-fail: no configuration in /etc/racker-probe-fail.conf"), "{report}");
    store.assert_clean();
}

/// README: `--output FILE` writes the report to FILE, and standard output carries none.
#[test]
fn output_writes_the_report_to_the_file() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("report dir");
    let file = dir.path().join("report.xml");
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            "--check-unit=systemd-journald",
            "--format=junit",
            &format!("--output={}", file.display()),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    assert_eq!(out(&o), "", "the report went to the file, not to standard output");
    let xml = std::fs::read_to_string(&file).expect("the report file");
    assert!(xml.starts_with("<?xml") && xml.contains("<testsuite name=\"debian-bookworm\""), "{xml}");
    assert!(xml.contains("name=\"unit systemd-journald\"") && xml.contains("failures=\"0\""), "{xml}");
    store.assert_clean();
}
