//! The package a probe installs: a local file, or a URL downloaded once into a cache
//! that all runs and images share, and its kind (deb, rpm, Arch), which must match the
//! image's package manager.
//!
//! ```text
//! /var/cache/postroj/packages/
//! ├── 3f9a…c1-foo_1.0_all.deb     a finished download: sha256(URL) (first 32 hex digits), then its file name
//! ├── .3f9a…c1.lock               flock while one process downloads that URL (removed after)
//! └── .3f9a…c1.partialXXXXXX      a download in progress, renamed into place when complete
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::catalog::PackageManager;
use super::check::error_line;
use racker::progress::{Progress, ProgressReader};

/// Where downloaded packages are kept unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/postroj/packages";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("package file {path} does not exist; give a .deb, .rpm or Arch package file, or an http(s) URL")]
    NotFound { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("downloading {url} failed: the server answered {status}")]
    HttpStatus { url: String, status: String },
    #[error("downloading {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "{path} is not a package postroj can install: its content is neither a Debian (.deb), \
         an RPM (.rpm) nor an Arch package (.pkg.tar.* with a .PKGINFO)"
    )]
    UnknownKind { path: PathBuf },
    #[error(
        "{name} is {kind} package, but the image installs {format} packages with {}; \
         pick images of the package's distribution family",
        format!("{manager:?}").to_lowercase()
    )]
    WrongKind { name: String, kind: PackageKind, format: &'static str, manager: PackageManager },
}

pub type Result<T, E = PackageError> = std::result::Result<T, E>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PackageError + 'a {
    move |source| PackageError::Io { action, path: path.to_owned(), source }
}

/// A package format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Deb,
    Rpm,
    /// An Arch Linux package: a compressed tar with a `.PKGINFO`.
    Arch,
}

impl std::fmt::Display for PackageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackageKind::Deb => "a Debian (.deb)",
            PackageKind::Rpm => "an RPM (.rpm)",
            PackageKind::Arch => "an Arch (.pkg.tar.*)",
        })
    }
}

impl PackageKind {
    /// What the file's first bytes say, then its name when the bytes cannot tell (an
    /// Arch package compressed with something other than zstd, xz or gzip). A name alone
    /// never makes a `.deb` or `.rpm`: their headers are always there to read.
    pub fn detect(path: &Path) -> Result<PackageKind> {
        let mut head = Vec::with_capacity(4096);
        File::open(path)
            .and_then(|f| f.take(4096).read_to_end(&mut head))
            .map_err(io_err("reading the package", path))?;
        if let Some(kind) = PackageKind::from_magic(&head) {
            return Ok(kind);
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match arch_by_content(&head, path) {
            Some(true) => Ok(PackageKind::Arch),
            None if name.ends_with(".pkg.tar") || name.contains(".pkg.tar.") => Ok(PackageKind::Arch),
            _ => Err(PackageError::UnknownKind { path: path.to_owned() }),
        }
    }

    /// A `.deb` is an `ar` archive that starts with `debian-binary`; an RPM starts with
    /// its lead magic `ED AB EE DB`.
    fn from_magic(head: &[u8]) -> Option<PackageKind> {
        if head.starts_with(b"!<arch>\n") && head.get(8..21) == Some(b"debian-binary".as_slice()) {
            Some(PackageKind::Deb)
        } else if head.starts_with(&[0xED, 0xAB, 0xEE, 0xDB]) {
            Some(PackageKind::Rpm)
        } else {
            None
        }
    }

    /// The file name ending the package managers expect (`dnf install` takes only
    /// names ending in `.rpm` as files).
    pub fn extension(self) -> &'static str {
        match self {
            PackageKind::Deb => ".deb",
            PackageKind::Rpm => ".rpm",
            PackageKind::Arch => ".pkg.tar.zst",
        }
    }

    /// Whether `manager` installs packages of this kind.
    pub fn installs_with(self, manager: PackageManager) -> bool {
        let format = manager.package_format();
        match self {
            PackageKind::Deb => format == "deb",
            PackageKind::Rpm => format == "rpm",
            PackageKind::Arch => format.starts_with("pkg.tar"),
        }
    }
}

/// For a tar (plain, zstd, xz or gzip): whether its first entries hold a `.PKGINFO`.
/// `None` for anything else, which the content cannot tell.
fn arch_by_content(head: &[u8], path: &Path) -> Option<bool> {
    let open = || File::open(path).ok();
    let reader: Box<dyn Read> = if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Box::new(zstd::Decoder::new(open()?).ok()?)
    } else if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(liblzma::read::XzDecoder::new(open()?))
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Box::new(flate2::read::GzDecoder::new(open()?))
    } else if head.get(257..262) == Some(b"ustar".as_slice()) {
        Box::new(open()?)
    } else {
        return None;
    };
    let mut archive = tar::Archive::new(reader);
    let Ok(entries) = archive.entries() else { return Some(false) };
    // makepkg writes the metadata files first; a few entries are enough to look at.
    Some(entries.take(8).map_while(|e| e.ok()).any(|e| e.path().is_ok_and(|p| p.as_os_str() == ".PKGINFO")))
}

/// A package ready to be copied into containers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Package {
    /// The file on the host (in the cache, for a URL).
    pub path: PathBuf,
    /// A name to give it inside the container: the original name, with the extension
    /// its package manager needs.
    pub file_name: String,
    pub kind: PackageKind,
    /// What the user gave: the URL or path.
    pub source: String,
}

impl Package {
    /// The error for probing this package on an image that uses `manager`, if any.
    pub fn ensure_installable_with(&self, manager: PackageManager) -> Result<()> {
        if self.kind.installs_with(manager) {
            return Ok(());
        }
        Err(PackageError::WrongKind {
            name: self.file_name.clone(),
            kind: self.kind,
            format: manager.package_format(),
            manager,
        })
    }
}

/// `--package URL|PATH`: downloads a URL through `cache` (once), or takes a local file;
/// then detects its kind.
pub fn resolve(arg: &str, cache: &PackageCache, progress: &dyn Progress) -> Result<Package> {
    let (path, name) = if arg.starts_with("http://") || arg.starts_with("https://") {
        let path = cache.fetch(arg, progress)?;
        (path, url_file_name(arg))
    } else {
        let path = PathBuf::from(arg);
        let meta = fs::metadata(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => PackageError::NotFound { path: path.clone() },
            _ => PackageError::Io { action: "reading the package", path: path.clone(), source },
        })?;
        if !meta.is_file() {
            return Err(PackageError::Io {
                action: "reading the package",
                path,
                source: io::Error::other("not a regular file"),
            });
        }
        let path = fs::canonicalize(&path).map_err(io_err("resolving the package path", &path))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (path, name)
    };
    let kind = PackageKind::detect(&path)?;
    Ok(Package { file_name: container_file_name(&name, kind), path, kind, source: arg.to_owned() })
}

/// The last segment of a URL's path, without query or fragment.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    match path.split_once('/') {
        Some((_, p)) => p.rsplit('/').next().unwrap_or("").to_owned(),
        None => String::new(),
    }
}

/// `name` made safe for a shell-free path in the container (letters, digits and `._+~-`;
/// anything else becomes `_`), ending in the extension its package manager needs.
fn container_file_name(name: &str, kind: PackageKind) -> String {
    let mut safe = safe_name(name);
    let has_extension = match kind {
        PackageKind::Arch => safe.contains(".pkg.tar"),
        _ => safe.ends_with(kind.extension()),
    };
    if !has_extension {
        safe.push_str(kind.extension());
    }
    safe
}

/// `name` with letters, digits and `._+~-` only, not starting with `.` or `-`, at most
/// 200 bytes; `package` if nothing is left.
fn safe_name(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._+~-".contains(c) { c } else { '_' }).collect();
    let mut safe = safe.trim_start_matches(['.', '-']).to_owned();
    safe.truncate(200);
    if safe.is_empty() {
        safe = "package".to_owned();
    }
    safe
}

/// Downloaded packages, by URL, shared by all probes on the host.
#[derive(Clone, Debug)]
pub struct PackageCache {
    dir: PathBuf,
}

impl Default for PackageCache {
    fn default() -> Self {
        PackageCache::new(DEFAULT_CACHE_DIR)
    }
}

impl PackageCache {
    pub fn new(dir: impl Into<PathBuf>) -> PackageCache {
        PackageCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `url`'s download, whether it exists yet or not.
    pub fn path_for(&self, url: &str) -> PathBuf {
        self.dir.join(format!("{}-{}", key(url), safe_name(&url_file_name(url))))
    }

    /// The cached download of `url`, downloading it first if no run has (blocking: call
    /// it from a thread, not from an async task). Parallel
    /// callers (other processes too) download it once: one holds the URL's lock while
    /// the others wait for it and then find the file.
    pub fn fetch(&self, url: &str, progress: &dyn Progress) -> Result<PathBuf> {
        let path = self.path_for(url);
        if path.is_file() {
            return Ok(path);
        }
        fs::create_dir_all(&self.dir).map_err(io_err("creating the package cache", &self.dir))?;
        let lock = self.lock(url)?;
        let result = if path.is_file() {
            Ok(())
        } else {
            self.remove_partials(url);
            self.download(url, &path, progress)
        };
        drop(lock);
        result.map(|()| path)
    }

    /// Removes what a killed download of `url` left; called under the URL's lock, so
    /// no one is writing them.
    fn remove_partials(&self, url: &str) {
        let prefix = format!(".{}.partial", key(url));
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Takes the URL's lock file, making sure the file locked is the one at the path
    /// (a previous holder unlinks it when done).
    fn lock(&self, url: &str) -> Result<UrlLock> {
        let path = self.dir.join(format!(".{}.lock", key(url)));
        loop {
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("creating the download lock", &path))?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| io_err("locking", &path)(e.into()))?;
            let held = file.metadata().map_err(io_err("reading the download lock", &path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(UrlLock { path, _file: file })
                }
                _ => continue,
            }
        }
    }

    /// Downloads `url` to a temporary file beside `dest` and renames it into place when
    /// complete; on any failure the temporary file goes.
    fn download(&self, url: &str, dest: &Path, progress: &dyn Progress) -> Result<()> {
        let failed = |reason: String| PackageError::Download { url: url.to_owned(), reason };
        let client = racker::http::blocking_client_for(url).map_err(failed)?;
        let response = client.get(url).send().map_err(|e| failed(error_line(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PackageError::HttpStatus { url: url.to_owned(), status: status.to_string() });
        }
        let total = response.content_length();
        let id = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let id = id.split_once('-').map_or(id.as_str(), |(_, name)| name).to_owned();
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{}.partial", key(url)))
            .tempfile_in(&self.dir)
            .map_err(io_err("creating a download file in", &self.dir))?;
        progress.begin(&id, "Downloading", total);
        let mut reader = ProgressReader::new(response, id.as_str(), progress);
        let copied = io::copy(&mut reader, temp.as_file_mut());
        let written = match copied {
            Ok(n) => n,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<reqwest::Error>()) => {
                progress.end(&id, "Download failed");
                return Err(failed(error_line(&e)));
            }
            Err(e) => {
                progress.end(&id, "Download failed");
                return Err(io_err("writing", temp.path())(e));
            }
        };
        if let Some(total) = total.filter(|&t| t != written) {
            progress.end(&id, "Download failed");
            return Err(failed(format!("the server announced {total} bytes but sent {written}")));
        }
        temp.as_file_mut().flush().and_then(|()| temp.as_file().sync_all()).map_err(io_err("writing", temp.path()))?;
        temp.persist(dest).map_err(|e| io_err("saving the download as", dest)(e.error))?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        progress.end(&id, "Downloaded");
        Ok(())
    }
}

/// The held lock of one URL's download; released, and its file removed, on drop.
struct UrlLock {
    path: PathBuf,
    _file: File,
}

impl Drop for UrlLock {
    fn drop(&mut self) {
        // Unlinked while still held: a waiter that then gets the old file sees that the
        // path no longer names it and takes the lock again.
        let _ = fs::remove_file(&self.path);
    }
}

/// The cache key of a URL: the first 32 hex digits of its sha256.
fn key(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).expect("writing a test file");
        path
    }

    /// A zstd-compressed tar holding `names` (empty files), as makepkg writes packages.
    fn zstd_tar(names: &[&str]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for name in names {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, io::empty()).expect("appending to a tar");
        }
        zstd::encode_all(tar.into_inner().expect("finishing a tar").as_slice(), 1).expect("compressing")
    }

    #[test]
    fn detects_kinds_by_content_before_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deb =
            write(dir.path(), "x.rpm", b"!<arch>\ndebian-binary   1700000000  0     0     100644  4         `\n2.0\n");
        assert_eq!(PackageKind::detect(&deb).ok(), Some(PackageKind::Deb));
        let rpm = write(dir.path(), "x.bin", &[0xED, 0xAB, 0xEE, 0xDB, 3, 0, 0, 0]);
        assert_eq!(PackageKind::detect(&rpm).ok(), Some(PackageKind::Rpm));
        let arch = write(dir.path(), "download", &zstd_tar(&[".BUILDINFO", ".MTREE", ".PKGINFO", "usr/bin/foo"]));
        assert_eq!(PackageKind::detect(&arch).ok(), Some(PackageKind::Arch));
        // An Arch package compressed with something not read here: its name decides.
        let lz4 = write(dir.path(), "foo-1.0-1-any.pkg.tar.lz4", b"\x04\x22\x4d\x18junk");
        assert_eq!(PackageKind::detect(&lz4).ok(), Some(PackageKind::Arch));
    }

    #[test]
    fn junk_is_no_package_whatever_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["junk.deb", "junk.rpm", "junk", "empty.deb"] {
            let bytes: &[u8] = if name.starts_with("empty") { b"" } else { b"<html>not found</html>" };
            let path = write(dir.path(), name, bytes);
            let err = PackageKind::detect(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(name) && err.contains("not a package"), "{name}: {err}");
        }
        let tar = write(dir.path(), "plain.pkg.tar.zst", &zstd_tar(&["etc/passwd"]));
        assert!(PackageKind::detect(&tar).is_err(), "a tarball without .PKGINFO is no Arch package, whatever its name");
    }

    #[test]
    fn kinds_match_package_managers() {
        assert!(PackageKind::Deb.installs_with(PackageManager::Apt));
        assert!(
            PackageKind::Rpm.installs_with(PackageManager::Dnf)
                && PackageKind::Rpm.installs_with(PackageManager::Zypper)
        );
        assert!(PackageKind::Arch.installs_with(PackageManager::Pacman));
        assert!(!PackageKind::Deb.installs_with(PackageManager::Dnf));
        let package = Package {
            path: "/x".into(),
            file_name: "foo_1.0_all.deb".into(),
            kind: PackageKind::Deb,
            source: "x".into(),
        };
        let err = package.ensure_installable_with(PackageManager::Dnf).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("foo_1.0_all.deb is a Debian (.deb) package") && err.contains("rpm packages with dnf"),
            "{err}"
        );
    }

    #[test]
    fn names_inside_the_container_are_safe_and_keep_the_extension() {
        assert_eq!(url_file_name("https://example.org/pool/foo_1.0_all.deb?sig=1#x"), "foo_1.0_all.deb");
        assert_eq!(url_file_name("https://example.org"), "");
        assert_eq!(container_file_name("foo_1.0_all.deb", PackageKind::Deb), "foo_1.0_all.deb");
        assert_eq!(container_file_name("download.php", PackageKind::Rpm), "download.php.rpm");
        assert_eq!(container_file_name("", PackageKind::Deb), "package.deb");
        assert_eq!(container_file_name("../a b;$(x).deb", PackageKind::Deb), "_a_b___x_.deb");
        assert_eq!(container_file_name("foo-1-1-x86_64.pkg.tar.xz", PackageKind::Arch), "foo-1-1-x86_64.pkg.tar.xz");
    }

    #[test]
    fn cache_paths_are_keyed_by_url() {
        let cache = PackageCache::new("/c");
        let a = cache.path_for("http://h/a/foo.deb");
        assert_eq!(a, cache.path_for("http://h/a/foo.deb"));
        assert_ne!(a, cache.path_for("http://h/b/foo.deb"));
        assert!(a.to_string_lossy().ends_with("-foo.deb"), "{}", a.display());
    }
}
