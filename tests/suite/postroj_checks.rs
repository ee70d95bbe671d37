//! postroj's network checks and package cache against real servers on 127.0.0.1 (a small
//! HTTP server thread here, python3 for HTTPS), and package kinds on a real `.deb`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use postroj::catalog::PackageManager;
use postroj::check::{self, CheckOptions, Target};
use postroj::package::{self, PackageCache, PackageKind};
use postroj::report::{Case, Report, Suite};
use racker::progress::Silent;

use crate::common;

/// What the test server answers for a request path: status, reason, body.
type Handler = dyn Fn(&str) -> (u16, &'static str, Vec<u8>) + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 that answers one request per connection and counts
/// the requests; stopped on drop.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&str) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static) -> Server {
        Server::on(TcpListener::bind("127.0.0.1:0").expect("binding a test server"), Box::new(handler))
    }

    /// Serves on `listener`.
    fn on(listener: TcpListener, handler: Box<Handler>) -> Server {
        let addr = listener.local_addr().expect("the server's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(path) = read_request(&mut stream) else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (status, reason, body) = handler(&path);
                let head = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nX-Probe: yes\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            }
        });
        Server { addr, requests, stop, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The request's path, after reading its head.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            return Some(path);
        }
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn target(s: &str) -> Target {
    Target::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn tcp_check_passes_on_a_listening_port() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = listener.local_addr().expect("address").port();
    let outcome = check::check(&target(&format!("tcp://127.0.0.1:{port}")), Duration::from_secs(5));
    assert!(outcome.passed, "{outcome:?}");
    assert_eq!(outcome.detail, format!("connected to 127.0.0.1:{port}"));
    assert_eq!(outcome.attempts, 1);
}

#[test]
fn tcp_check_fails_on_a_closed_port_with_connection_refused() {
    let port = closed_port();
    let timeout = Duration::from_millis(500);
    let outcome = check::check(&target(&format!("tcp://127.0.0.1:{port}")), timeout);
    assert!(!outcome.passed, "{outcome:?}");
    assert!(outcome.attempts > 1, "it retried: {outcome:?}");
    // It gives up at its timeout, not before: the figure it reports is the time it tried.
    let after = outcome.detail.strip_prefix("connection refused after ").and_then(|s| s.strip_suffix(" s"));
    let after: f64 = after.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{}", outcome.detail));
    assert!(outcome.duration >= timeout && after >= timeout.as_secs_f64(), "{outcome:?}");
}

#[test]
fn http_below_500_passes_and_5xx_fails_with_the_status() {
    let server = Server::start(|path| match path {
        "/ok" => (200, "OK", b"hello".to_vec()),
        "/missing" => (404, "Not Found", Vec::new()),
        _ => (503, "Service Unavailable", b"starting".to_vec()),
    });
    let ok = check::check(&target(&server.url("/ok")), Duration::from_secs(5));
    assert!(ok.passed && ok.detail == "HTTP 200 OK" && ok.status == Some(200), "{ok:?}");
    assert!(ok.headers.iter().any(|(k, v)| k == "x-probe" && v == "yes"), "{:?}", ok.headers);
    let missing = check::check(&target(&server.url("/missing")), Duration::from_secs(5));
    assert!(missing.passed && missing.detail == "HTTP 404 Not Found", "{missing:?}");
    let unavailable = check::check(&target(&server.url("/busy")), Duration::from_secs(5));
    assert!(!unavailable.passed && unavailable.status == Some(503), "{unavailable:?}");
    assert_eq!(unavailable.detail, "HTTP 503 Service Unavailable");
    assert_eq!(unavailable.attempts, 1, "an answer is final, not retried: {unavailable:?}");
    assert_eq!(server.requests(), 3);
}

#[test]
fn a_service_that_answers_late_still_passes() {
    // A service that is starting: its socket accepts, but the connection is reset
    // (request unread) the first `STARTING` times, as behind a proxy whose backend is
    // not up yet; then it answers. Counted by the server, not guessed from time.
    const STARTING: usize = 2;
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = listener.local_addr().expect("address").port();
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    let service = std::thread::spawn(move || {
        for stream in listener.incoming().take(STARTING) {
            let mut stream = stream.expect("accepting");
            // Closing with the request unread sends a reset, not an orderly end.
            stream.read_exact(&mut [0u8; 1]).expect("the request's first byte");
            counted.fetch_add(1, Ordering::SeqCst);
        }
        Server::on(listener, Box::new(|_| (200, "OK", Vec::new())))
    });
    let http = check::check(&target(&format!("http://127.0.0.1:{port}/")), Duration::from_secs(60));
    // (Before joining: a check that gave up leaves the service waiting for it.)
    assert!(http.passed && http.detail == "HTTP 200 OK", "{http:?}");
    let server = service.join().expect("the service thread");
    assert_eq!((resets.load(Ordering::SeqCst), server.requests()), (STARTING, 1));
    assert_eq!(http.attempts as usize, STARTING + 1, "one attempt per reset, then the answer: {http:?}");
    let tcp = check::check(&target(&format!("tcp://localhost:{port}")), Duration::from_secs(5));
    assert!(tcp.passed, "localhost reaches a service on 127.0.0.1 only: {tcp:?}");
    drop(server);
}

#[test]
fn unparseable_targets_name_the_value_and_the_accepted_forms() {
    for value in ["localhost:80", "ftp://localhost/", "tcp://localhost", "tcp://localhost:99999", "http://"] {
        let err = Target::parse(value).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(value) && err.contains("tcp://HOST:PORT, http://HOST[:PORT]/PATH"), "{value}: {err}");
    }
}

/// An HTTPS server with a self-signed certificate (python3's http.server over ssl).
struct HttpsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    fn start() -> HttpsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("running openssl");
        assert!(status.success(), "openssl made no certificate");
        let script = "import http.server, ssl, sys\n\
            s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2])\n\
            s.socket = c.wrap_socket(s.socket, server_side=True)\n\
            print(s.server_address[1], flush=True)\n\
            s.serve_forever()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&cert)
            .arg(&key)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("python3's stdout");
        BufReader::new(stdout).read_line(&mut line).expect("reading the port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("python3 printed no port: {line:?}"));
        HttpsServer { child, port, _dir: dir }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_accepts_a_self_signed_certificate_unless_told_to_verify() {
    let server = HttpsServer::start();
    let url = target(&format!("https://localhost:{}/", server.port));
    let outcome = check::check(&url, Duration::from_secs(5));
    assert!(outcome.passed && outcome.status == Some(200), "{outcome:?}");
    let verified =
        check::check_with(&url, &CheckOptions { verify_tls: true, ..CheckOptions::new(Duration::from_secs(5)) });
    assert!(!verified.passed && verified.status.is_none(), "{verified:?}");
    assert!(verified.detail.to_lowercase().contains("certificate"), "{}", verified.detail);
    assert_eq!(verified.attempts, 1, "a certificate error is final: {verified:?}");
}

/// A real Debian package, built by dpkg-deb.
fn build_deb(dir: &Path) -> PathBuf {
    crate::common::postroj::build_deb(dir, "foo", "a test", &[("usr/share/foo/hello", b"hi\n", 0o644)])
}

fn files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_local_deb_is_a_deb_and_not_for_rpm_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    assert_eq!(PackageKind::detect(&deb).ok(), Some(PackageKind::Deb));
    let cache = PackageCache::new(dir.path().join("cache"));
    let package = package::resolve(deb.to_str().expect("utf-8"), &cache, &Silent).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((package.kind, package.file_name.as_str()), (PackageKind::Deb, "foo_1.0_all.deb"));
    assert!(package.ensure_installable_with(PackageManager::Apt).is_ok());
    let err = package.ensure_installable_with(PackageManager::Dnf).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("foo_1.0_all.deb") && err.contains("rpm packages with dnf"), "{err}");
    let junk = dir.path().join("junk.deb");
    std::fs::write(&junk, b"<html>404</html>").expect("write");
    let err = package::resolve(junk.to_str().expect("utf-8"), &cache, &Silent).err().map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("junk.deb is not a package"));
    let missing = package::resolve("/nonexistent/foo.deb", &cache, &Silent).err().map(|e| e.to_string());
    assert!(missing.unwrap_or_default().contains("/nonexistent/foo.deb does not exist"));
}

#[test]
fn the_cache_downloads_a_url_once_even_for_parallel_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = std::fs::read(build_deb(dir.path())).expect("reading the deb");
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
    let url = format!("http://{}/pool/main/f/foo/foo_1.0_all.deb?token=1", listener.local_addr().expect("address"));
    let cache = PackageCache::new(dir.path().join("cache"));
    let cached = cache.path_for(&url);
    let key = cached.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next()).expect("a key");
    // The download is answered only once the three other probes wait for its lock: all
    // four are provably under way at once.
    let lock = cache.dir().join(format!(".{key}.lock"));
    let me = std::process::id();
    let server = Server::on(
        listener,
        Box::new(move |_| {
            let waiting = || common::locks::on(&lock).iter().filter(|l| l.pid == me && l.waiting).count();
            common::wait_until(60, "the other probes never waited for the download", || waiting() == 3);
            (200, "OK", deb.clone())
        }),
    );
    // What a download killed half-way left behind.
    std::fs::create_dir_all(cache.dir()).expect("mkdir");
    std::fs::write(cache.dir().join(format!(".{key}.partialAbC123")), b"!<arch>\ndebian-bi").expect("write");
    let packages: Vec<_> = std::thread::scope(|s| {
        let probes: Vec<_> = (0..4).map(|_| s.spawn(|| package::resolve(&url, &cache, &Silent))).collect();
        probes.into_iter().map(|p| p.join().expect("a probe thread").unwrap_or_else(|e| panic!("{e}"))).collect()
    });
    assert_eq!(server.requests(), 1, "four parallel probes, one download");
    for package in &packages {
        assert_eq!((package.kind, package.file_name.as_str()), (PackageKind::Deb, "foo_1.0_all.deb"));
        assert_eq!(package.path, packages[0].path);
    }
    let again = package::resolve(&url, &cache, &Silent).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.path, packages[0].path);
    assert_eq!(server.requests(), 1, "a later run finds the download");
    assert_eq!(files(cache.dir()).len(), 1, "only the package: {:?}", files(cache.dir()));
    assert_eq!(again.path, cached);
    let mut head = [0u8; 8];
    std::fs::File::open(&again.path).and_then(|mut f| f.read_exact(&mut head)).expect("reading the cached file");
    assert_eq!(&head, b"!<arch>\n");
}

#[test]
fn a_failed_download_says_why_and_leaves_nothing() {
    let server = Server::start(|_| (404, "Not Found", b"no such package".to_vec()));
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = PackageCache::new(dir.path().join("cache"));
    let url = server.url("/pool/foo_2.0_all.deb");
    let err = package::resolve(&url, &cache, &Silent).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, format!("downloading {url} failed: the server answered 404 Not Found"));
    assert_eq!(files(cache.dir()), Vec::<String>::new());
    let refused = format!("http://127.0.0.1:{}/foo.deb", closed_port());
    let err = package::resolve(&refused, &cache, &Silent).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with(&format!("downloading {refused} failed: ")) && !err.contains('\n'), "{err}");
    assert_eq!(files(cache.dir()), Vec::<String>::new());
}

#[test]
fn a_report_of_real_checks_renders_as_junit() {
    let server =
        Server::start(
            |path| if path == "/" { (200, "OK", Vec::new()) } else { (500, "Internal Server Error", Vec::new()) },
        );
    let mut suite = Suite::new("debian-bookworm");
    suite.push(Case::passed("boot", Duration::from_millis(700), "running"));
    for path in ["/", "/broken"] {
        let t = target(&server.url(path));
        suite.push(Case::from_check(&t, &check::check(&t, Duration::from_secs(2))));
    }
    suite.push(Case::skipped("unit foo.service", "the package has no units"));
    let mut report = Report::new();
    report.push(suite);
    assert!(!report.passed());
    let xml = report.render_junit();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    let counts: Vec<_> = ["tests", "failures", "errors", "skipped"].iter().map(|a| root.attribute(*a)).collect();
    assert_eq!(counts, [Some("4"), Some("1"), Some("0"), Some("1")], "{xml}");
    let failure = doc.descendants().find(|n| n.has_tag_name("failure")).expect("a failure");
    assert_eq!(failure.attribute("message"), Some("HTTP 500 Internal Server Error"));
    assert!(failure.text().is_some_and(|t| t.contains("x-probe: yes")), "the response headers are the details: {xml}");
    assert_eq!(failure.attribute("type"), Some("network"));
    let case = failure.parent().expect("its testcase");
    assert_eq!(case.attribute("name"), Some(format!("network {}", server.url("/broken")).as_str()));
    assert_eq!(case.attribute("classname"), Some("postroj.pkgprobe.debian-bookworm"));
}
