//! A real registry for tests: CNCF distribution (`docker-registry serve`) on
//! `127.0.0.1:<free port>`, filesystem storage in a temporary directory, optionally with
//! htpasswd basic auth or on HTTPS only with a self-signed certificate; images are put into it with skopeo from OCI layouts, and
//! reference root filesystems come out of it through skopeo + `umoci unpack`.
//!
//! The guard kills and reaps the registry and removes its directory on drop, also when a
//! test panics (then it prints the tail of the registry's access log first).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    creds: Option<(String, String)>,
    /// Serves HTTPS only, with this self-signed certificate (no host trusts it).
    certificate: Option<PathBuf>,
    counter: Cell<u32>,
}

/// Runs `cmd`, insisting on success; returns its output.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `sha256:HEX` or `HEX` → `HEX`.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A plain HTTP/1.0 GET; returns the status code, or None if nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The status of a GET over HTTPS, certificate unchecked (curl); None if nothing answered.
fn https_status(port: u16, path: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout).parse().ok().filter(|code| *code != 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding a free port").port()
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Self::start_inner(None, false)
    }

    /// A registry that wants HTTP basic auth as `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user.into(), password.into())), false)
    }

    /// A registry that speaks HTTPS only, with a self-signed certificate for 127.0.0.1
    /// made here (openssl): a client that checks certificates finds no issuer it trusts.
    pub fn start_tls() -> Registry {
        Self::start_inner(None, true)
    }

    fn start_inner(creds: Option<(String, String)>, tls: bool) -> Registry {
        // The port is free when picked but can be taken before the registry binds it:
        // then the registry exits and we try another.
        for _attempt in 0..5 {
            if let Some(r) = Self::try_start(creds.clone(), tls) {
                return r;
            }
        }
        panic!("docker-registry did not come up on any of 5 ports");
    }

    fn try_start(creds: Option<(String, String)>, tls: bool) -> Option<Registry> {
        let dir =
            tempfile::Builder::new().prefix("racker-registry-").tempdir().expect("creating the registry's directory");
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("creating the storage directory");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let certificate = tls.then(|| {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
                // An end entity's certificate for this address, signed by itself: the one
                // fault a checking client can find is that no issuer it trusts vouches for it.
                .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert));
            // Under `http:`, which the base configuration ends with.
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            cert
        });
        if let Some((user, password)) = &creds {
            let out = run(Command::new("htpasswd").args(["-Bbn", user, password]));
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, &out.stdout).expect("writing htpasswd");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: racker-test\n    path: {}\n", htpasswd.display()));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("writing the registry config");
        // Access log (stdout) and application log (stderr) both go to registry.log.
        let log = dir.path().join("registry.log");
        let open_log = || OpenOptions::new().create(true).append(true).open(&log).expect("opening the registry log");
        let mut cmd = Command::new("docker-registry");
        // distribution reads REGISTRY_* variables as configuration (REGISTRY_AUTH_FILE
        // would become `auth.file`): none of the caller's may reach it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(open_log())
            .stderr(open_log())
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        let mut registry = Registry { child, dir, port, creds, certificate, counter: Cell::new(0) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if registry.child.try_wait().expect("polling the registry").is_some() {
                // Exited: most likely the port was taken meanwhile. Drop cleans up.
                eprintln!("docker-registry on port {port} exited early:\n{}", registry.log());
                return None;
            }
            match registry.status("/v2/") {
                Some(200) if registry.creds.is_none() => return Some(registry),
                Some(401) if registry.creds.is_some() => return Some(registry),
                Some(other) => panic!("GET /v2/ answered {other}:\n{}", registry.log()),
                None => {}
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer within 30 s:\n{}", registry.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status of a GET of `path` from the registry; None if nothing answered.
    fn status(&self, path: &str) -> Option<u16> {
        match self.certificate {
            Some(_) => https_status(self.port, path),
            None => http_status(self.port, path),
        }
    }

    /// The self-signed certificate of a [`Registry::start_tls`] registry.
    pub fn certificate(&self) -> Option<&Path> {
        self.certificate.as_deref()
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO[:TAG|@DIGEST]`
    pub fn name(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.addr())
    }

    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A fresh directory inside the registry's directory (removed with it).
    fn scratch(&self, what: &str) -> PathBuf {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let p = self.dir.path().join(format!("{what}-{n}"));
        fs::create_dir(&p).expect("creating a scratch directory");
        p
    }

    /// skopeo with an auth file of its own (never the host's) and the test registry's
    /// credentials where it talks to it (`--creds`, `--src-creds`, `--dest-creds`).
    fn skopeo(&self) -> Command {
        let mut cmd = Command::new("skopeo");
        cmd.env("REGISTRY_AUTH_FILE", self.dir.path().join("skopeo-auth.json"));
        cmd
    }

    fn creds_arg(&self, flag: &str, cmd: &mut Command) {
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("{flag}={u}:{p}"));
        }
    }

    /// Pushes `layout_dir:ref_name` (an OCI layout) to `repo_tag` (`repo:tag`) as skopeo
    /// does by default (plain tar layers get gzip-compressed); `--all` so that an image
    /// index is pushed with all its manifests.
    pub fn skopeo_copy_oci(&self, layout_dir: &Path, ref_name: &str, repo_tag: &str) {
        let mut cmd = self.skopeo();
        cmd.args(["copy", "-q", "--all", "--dest-tls-verify=false"]);
        self.creds_arg("--dest-creds", &mut cmd);
        cmd.arg(format!("oci:{}:{ref_name}", layout_dir.display())).arg(format!("docker://{}", self.name(repo_tag)));
        run(&mut cmd);
    }

    /// Pushes the image with every layer zstd-compressed. skopeo 1.9 with
    /// `--dest-compress-format zstd` straight to a registry silently keeps gzip blobs it
    /// knows the registry has (its blob info cache), so: recompress into a temporary
    /// layout first, then push that with `--preserve-digests` (which forbids the same
    /// substitution on the second copy). Asserts that the pushed layers are zstd.
    pub fn skopeo_copy_oci_zstd(&self, layout_dir: &Path, ref_name: &str, repo_tag: &str) {
        let tmp = self.scratch("zstd-layout");
        run(self.skopeo().args([
            "copy",
            "-q",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
            &format!("oci:{}:{ref_name}", layout_dir.display()),
            &format!("oci:{}:{ref_name}", tmp.display()),
        ]));
        let mut cmd = self.skopeo();
        cmd.args(["copy", "-q", "--preserve-digests", "--dest-tls-verify=false"]);
        self.creds_arg("--dest-creds", &mut cmd);
        cmd.arg(format!("oci:{}:{ref_name}", tmp.display())).arg(format!("docker://{}", self.name(repo_tag)));
        run(&mut cmd);
        let manifest = self.manifest(repo_tag);
        for layer in manifest["layers"].as_array().expect("layers") {
            let mt = layer["mediaType"].as_str().expect("mediaType");
            assert!(mt.ends_with("+zstd"), "the pushed {repo_tag} has a non-zstd layer: {manifest}");
        }
    }

    /// Copies `from` to `to` (both `repo:tag`) inside the registry, blobs as they are.
    pub fn copy_within(&self, from: &str, to: &str) {
        let mut cmd = self.skopeo();
        cmd.args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]);
        self.creds_arg("--src-creds", &mut cmd);
        self.creds_arg("--dest-creds", &mut cmd);
        cmd.arg(format!("docker://{}", self.name(from))).arg(format!("docker://{}", self.name(to)));
        run(&mut cmd);
    }

    /// The raw manifest (or index) bytes of `repo_ref` (`repo:tag` or `repo@sha256:…`).
    pub fn raw_manifest(&self, repo_ref: &str) -> Vec<u8> {
        let mut cmd = self.skopeo();
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        self.creds_arg("--creds", &mut cmd);
        cmd.arg(format!("docker://{}", self.name(repo_ref)));
        run(&mut cmd).stdout
    }

    pub fn manifest(&self, repo_ref: &str) -> Value {
        serde_json::from_slice(&self.raw_manifest(repo_ref)).expect("a JSON manifest")
    }

    /// `sha256:…` of the manifest (or index) `repo_ref` names.
    pub fn manifest_digest(&self, repo_ref: &str) -> String {
        format!("sha256:{}", sha256_hex(&self.raw_manifest(repo_ref)))
    }

    /// The raw config blob of the image `repo_ref` names (a single-platform manifest).
    pub fn raw_config(&self, repo_ref: &str) -> Vec<u8> {
        let mut cmd = self.skopeo();
        cmd.args(["inspect", "--config", "--raw", "--tls-verify=false"]);
        self.creds_arg("--creds", &mut cmd);
        cmd.arg(format!("docker://{}", self.name(repo_ref)));
        run(&mut cmd).stdout
    }

    /// `repo@sha256:…` of the platform manifest `repo_tag` resolves to for `arch`
    /// (os linux): the tag itself when it names a single manifest.
    pub fn platform_ref(&self, repo_tag: &str, arch: &str) -> String {
        let top = self.manifest(repo_tag);
        let repo = repo_tag.split([':', '@']).next().expect("a repository");
        match top["mediaType"].as_str() {
            Some(MT_INDEX) | Some(MT_DOCKER_LIST) => {
                let m = top["manifests"]
                    .as_array()
                    .expect("manifests")
                    .iter()
                    .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                    .unwrap_or_else(|| panic!("no linux/{arch} in {top}"));
                format!("{repo}@{}", m["digest"].as_str().expect("digest"))
            }
            _ => repo_tag.to_owned(),
        }
    }

    /// Hex digests of the blobs a pull of `repo_ref` must store: the (platform)
    /// manifest, its config and its layers. For an index, pass the platform's
    /// `repo@digest` (see `platform_ref`).
    pub fn image_blobs(&self, repo_ref: &str) -> BTreeSet<String> {
        let manifest = self.manifest(repo_ref);
        let mut blobs = BTreeSet::new();
        blobs.insert(hex_of(&self.manifest_digest(repo_ref)).to_owned());
        blobs.insert(hex_of(manifest["config"]["digest"].as_str().expect("config digest")).to_owned());
        for l in manifest["layers"].as_array().expect("layers") {
            blobs.insert(hex_of(l["digest"].as_str().expect("layer digest")).to_owned());
        }
        blobs
    }

    /// Waits until every request answered so far is in the access log: the registry
    /// logs a request after its response is written, so a client can be done before the
    /// line is. A marker request made afterwards and seen in the log bounds that.
    pub fn settle(&self) {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let marker = format!("/v2/?settle={n}");
        self.status(&marker);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(&format!("\"GET {marker} ")) {
            assert!(Instant::now() < deadline, "the access log lags by 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Access-log lines of `method` requests whose path satisfies `matches`.
    fn requests(&self, method: &str, matches: impl Fn(&str) -> bool) -> usize {
        self.settle();
        let quoted = format!("\"{method} ");
        self.log()
            .lines()
            .filter_map(|l| l.split_once(&quoted).map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once(' ').map(|(path, _)| path))
            .filter(|path| matches(path))
            .count()
    }

    fn gets(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.requests("GET", matches)
    }

    /// Blob uploads started in repository `repo` (`POST /v2/<repo>/blobs/uploads/`,
    /// which every upload, chunked, monolithic or cross-repository mount, begins with).
    pub fn blob_uploads(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/blobs/uploads/");
        self.requests("POST", |p| p.starts_with(&prefix))
    }

    /// How many times the blob `digest` (`sha256:…` or hex) was fetched (`GET
    /// /v2/<any repo>/blobs/sha256:<hex>`; HEAD requests are not counted).
    pub fn blob_gets(&self, digest: &str) -> usize {
        let suffix = format!("/blobs/sha256:{}", hex_of(digest));
        self.gets(|p| p.starts_with("/v2/") && p.ends_with(&suffix))
    }

    /// All blob `GET`s from repository `repo`.
    pub fn repo_blob_gets(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/blobs/");
        self.gets(|p| p.starts_with(&prefix))
    }

    /// Manifest `GET`s (by tag or digest) from repository `repo`.
    pub fn manifest_gets(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.gets(|p| p.starts_with(&prefix))
    }

    /// Where the registry keeps the blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = hex_of(digest);
        self.storage().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Flips one bit in the middle of the stored blob `digest`: the registry then
    /// serves bytes that do not match their digest. Calling it again restores the blob.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).expect("writing the corrupted blob");
    }

    /// The root filesystem `umoci unpack` makes of `repo_tag` (linux/amd64 from an index).
    pub fn umoci_rootfs(&self, repo_tag: &str) -> PathBuf {
        self.umoci_rootfs_for(repo_tag, "amd64", None)
    }

    /// The same for another platform (linux/`arch`[/`variant`]). The layout goes through
    /// gzip on the way: umoci 0.4.7 cannot read zstd layers (the tars are the same).
    pub fn umoci_rootfs_for(&self, repo_tag: &str, arch: &str, variant: Option<&str>) -> PathBuf {
        let layout = self.scratch("umoci-layout");
        let bundle = self.scratch("umoci-bundle").join("bundle");
        let mut cmd = self.skopeo();
        cmd.args(["copy", "-q", "--src-tls-verify=false", "--override-os", "linux", "--override-arch", arch]);
        if let Some(v) = variant {
            cmd.args(["--override-variant", v]);
        }
        self.creds_arg("--src-creds", &mut cmd);
        cmd.args(["--dest-compress", "--dest-compress-format", "gzip"])
            .arg(format!("docker://{}", self.name(repo_tag)))
            .arg(format!("oci:{}:img", layout.display()));
        run(&mut cmd);
        run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:img", layout.display())).arg(&bundle));
        bundle.join("rootfs")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let access: Vec<&str> = log.lines().filter(|l| !l.starts_with("time=")).collect();
            let tail = &access[access.len().saturating_sub(40)..];
            eprintln!(
                "--- registry {} access log (last {} requests) ---\n{}",
                self.addr(),
                tail.len(),
                tail.join("\n")
            );
        }
        // The temporary directory (storage, log, scratch layouts, bundles) goes with `dir`.
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
