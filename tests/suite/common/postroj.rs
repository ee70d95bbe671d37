//! Support for postroj's tests: a store with the curated Debian bookworm image, postroj
//! run on it, .deb packages built with dpkg-deb, and a local HTTP server to download
//! packages from.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::images;
use super::{require_root, wait_until, TempStore};

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store whose Debian bookworm + systemd image is the curated `debian-bookworm` (and,
/// for matrix runs, also `debian-trixie`: same image, second label).
pub fn probe_store() -> TempStore {
    require_root();
    with_curated_debian(TempStore::new())
}

/// `store` with the images of [`probe_store`].
pub fn with_curated_debian(store: TempStore) -> TempStore {
    let tarball = images::debian_rootfs_tarball();
    store.ok(&["import", "-q", tarball.to_str().expect("utf-8"), "localhost/postroj/debian-bookworm:latest"]);
    store.ok(&["tag", "localhost/postroj/debian-bookworm:latest", "localhost/postroj/debian-trixie:latest"]);
    store
}

/// Runs postroj on `store` with its package cache in `cache`.
pub fn postroj(store: &TempStore, cache: &Path, args: &[&str]) -> Output {
    store.postroj().env("POSTROJ_PACKAGE_CACHE", cache).args(args).output().expect("running postroj")
}

/// A .deb to build: its files (path, contents, mode) and its control area's other files
/// (`conffiles`, `postinst`, `postrm`: scripts are made executable).
pub struct Deb<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub description: &'a str,
    pub files: &'a [(&'a str, &'a [u8], u32)],
    pub control: &'a [(&'a str, &'a str)],
}

impl Deb<'_> {
    /// Builds `NAME_VERSION_all.deb` in `dir` with dpkg-deb.
    pub fn build(&self, dir: &Path) -> PathBuf {
        self.build_with(dir, None)
    }

    /// The same, declaring `Depends: DEPENDS` (packages of the mirror).
    pub fn build_depending_on(&self, dir: &Path, depends: &str) -> PathBuf {
        self.build_with(dir, Some(depends))
    }

    fn build_with(&self, dir: &Path, depends: Option<&str>) -> PathBuf {
        let Deb { name, version, description, .. } = self;
        let root = dir.join(format!("{name}-{version}-pkg"));
        let write = |rel: &str, contents: &[u8], mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, contents).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        let depends = depends.map(|d| format!("Depends: {d}\n")).unwrap_or_default();
        let control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: racker tests <tests@racker.invalid>\n\
             {depends}Description: {description}\n"
        );
        write("DEBIAN/control", control.as_bytes(), 0o644);
        for (file, contents) in self.control {
            let mode = if *file == "conffiles" { 0o644 } else { 0o755 };
            write(&format!("DEBIAN/{file}"), contents.as_bytes(), mode);
        }
        for (rel, contents, mode) in self.files {
            write(rel, contents, *mode);
        }
        let deb = dir.join(format!("{name}_{version}_all.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            .stdout(Stdio::null())
            .status()
            .expect("dpkg-deb");
        assert!(status.success(), "dpkg-deb failed");
        deb
    }
}

/// Builds `racker-probe-web_1.0_all.deb` in `dir`: busybox httpd as a systemd service on
/// 127.0.0.1:`port`, serving one page.
pub fn build_web_package(dir: &Path, port: u16) -> PathBuf {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let unit = format!(
        "[Unit]\nDescription=racker probe web\n\n[Service]\n\
         ExecStart=/usr/lib/racker-probe-web/busybox httpd -f -p 127.0.0.1:{port} -h /usr/share/racker-probe-web/www\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    build_deb(
        dir,
        "racker-probe-web",
        "busybox httpd as a systemd service, for postroj's tests",
        &[
            ("usr/lib/racker-probe-web/busybox", &busybox, 0o755),
            ("usr/share/racker-probe-web/www/index.html", b"<h1>probed</h1>\n", 0o644),
            ("lib/systemd/system/racker-probe-web.service", unit.as_bytes(), 0o644),
        ],
    )
}

/// Builds `NAME_1.0_all.deb` in `dir` with dpkg-deb, of `files` (path, contents, mode).
pub fn build_deb(dir: &Path, name: &str, description: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
    Deb { name, version: "1.0", description, files, control: &[] }.build(dir)
}

/// `python3 -m http.server` on 127.0.0.1 serving a directory; killed on drop. Its
/// access log says how often a file was fetched.
pub struct FileServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl FileServer {
    pub fn start(dir: &Path) -> FileServer {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let log = dir.join("access.log");
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("python3 -m http.server");
        let server = FileServer { child, port, log };
        wait_until(10, "the file server listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        server
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn gets(&self, name: &str) -> usize {
        let mut text = String::new();
        std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text)).expect("access log");
        text.lines().filter(|l| l.contains(&format!("\"GET /{name} "))).count()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two packages for a matrix: `racker-good` installs, `racker-bad`'s postinst fails.
pub fn matrix_packages(dir: &Path) -> [PathBuf; 2] {
    let good = build_deb(
        dir,
        "racker-good",
        "a package that installs, for postroj's tests",
        &[("usr/share/racker-good/data", b"good\n", 0o644)],
    );
    let bad = Deb {
        name: "racker-bad",
        version: "1.0",
        description: "a package whose postinst fails, for postroj's tests",
        files: &[("usr/share/racker-bad/data", b"bad\n", 0o644)],
        control: &[("postinst", "#!/bin/sh\necho racker-bad refuses >&2\nexit 1\n")],
    }
    .build(dir);
    [good, bad]
}

/// A JSON report's verdicts without its times: each suite (image, package, mode) with
/// the name and result of each of its cases.
pub fn verdicts(report: &serde_json::Value) -> Vec<(String, Vec<(String, String)>)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut suites: Vec<(String, Vec<(String, String)>)> = report["suites"]
        .as_array()
        .unwrap_or_else(|| panic!("no suites in {report}"))
        .iter()
        .map(|s| {
            let title = format!("{} {} {}", text(&s["image"]), text(&s["package"]), text(&s["mode"]));
            let cases = s["cases"].as_array().map(Vec::as_slice).unwrap_or_default();
            (title, cases.iter().map(|c| (text(&c["name"]), text(&c["result"]))).collect())
        })
        .collect();
    suites.sort();
    suites
}
