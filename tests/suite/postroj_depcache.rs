//! pkgprobe's dependency cache on a real Debian bookworm image and the real Debian
//! mirror: dependency layers built once and booted again, package lists kept per image
//! and refreshed by age, downloads kept by hash, shared by parallel probes, and
//! `--offline` with the mirror unreachable for real (a network namespace without it).
//! The packages are built here with dpkg-deb and depend on real packages of the mirror:
//! `hello` (small, no service) and `lighttpd` (a web server, the example).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::postroj::{probe_store, Deb};
use crate::common::{TempStore, HOST_PORT_80};

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Builds `NAME_VERSION_all.deb` in `dir`, depending on `depends` (packages of the mirror).
fn deb(dir: &Path, name: &str, version: &str, depends: &str) -> PathBuf {
    let description = "a package of the dependency cache tests";
    Deb { name, version, description, files: &[], control: &[] }.build_depending_on(dir, depends)
}

/// `postroj pkgprobe --image=debian-bookworm --package=DEB ARGS…`, table report.
fn probe(store: &TempStore, deb: &Path, args: &[&str]) -> Output {
    probe_cmd(store, deb, args).output().expect("running postroj")
}

fn probe_cmd(store: &TempStore, deb: &Path, args: &[&str]) -> Command {
    let mut cmd = store.postroj();
    cmd.env("POSTROJ_PACKAGE_CACHE", store.apt_cache().with_file_name("packages"));
    cmd.args(["pkgprobe", "--image=debian-bookworm", "-q"]).arg(format!("--package={}", deb.display())).args(args);
    cmd
}

/// Runs a probe that must pass; returns its report.
fn passes(store: &TempStore, deb: &Path, args: &[&str]) -> String {
    let o = probe(store, deb, args);
    assert_eq!(o.status.code(), Some(0), "the probe should pass:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The dependency layers in the store (`postroj cache ls -q`).
fn layers(store: &TempStore) -> Vec<String> {
    let o = store.postroj().args(["cache", "ls", "-q"]).output().expect("postroj cache ls");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

/// The one image's package lists directory in the cache, and its generations.
fn lists_dir(store: &TempStore) -> PathBuf {
    let lists = store.apt_cache().join("lists");
    let mut images: Vec<PathBuf> =
        std::fs::read_dir(&lists).expect("lists").map(|e| e.expect("entry").path()).collect();
    assert_eq!(images.len(), 1, "lists of one image: {images:?}");
    images.remove(0)
}

fn entries(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with(prefix));
    names.sort();
    names
}

fn current_generation(store: &TempStore) -> String {
    let link = std::fs::read_link(lists_dir(store).join("current")).expect("current lists");
    link.to_string_lossy().into_owned()
}

/// The detail of the report's `dependencies` row.
fn dependencies_row(report: &str) -> String {
    report
        .lines()
        .find(|l| l.contains(" dependencies "))
        .unwrap_or_else(|| panic!("no dependencies row:\n{report}"))
        .to_owned()
}

#[test]
fn a_second_probe_boots_the_cached_layer_and_installs_only_the_package() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let web = deb(dir.path(), "probe-web", "1.0", "lighttpd");
    let _port = HOST_PORT_80.lock().unwrap_or_else(|e| e.into_inner());
    let checks = ["--check-unit=lighttpd", "--check-network=http://localhost:80/"];

    let first = passes(&store, &web, &checks);
    assert!(dependencies_row(&first).contains("built layer"), "{first}");
    assert!(first.contains("unit lighttpd") && first.contains("HTTP 200"), "{first}");
    assert_eq!(layers(&store).len(), 1);

    let second = passes(&store, &web, &checks);
    let row = dependencies_row(&second);
    assert!(row.contains("cached layer") && row.contains("resolution cached"), "{second}");
    // Only the package was installed: lighttpd came from the layer, not from apt.
    let layer = &layers(&store)[0];
    assert!(row.contains(layer.as_str()), "the layer {layer} is the one booted:\n{second}");

    // A rebuild with the same dependencies hits; one with another set builds another.
    let rebuilt = deb(dir.path(), "probe-web", "1.1", "lighttpd");
    assert!(dependencies_row(&passes(&store, &rebuilt, &checks)).contains("cached layer"));
    let more = deb(dir.path(), "probe-web", "1.2", "lighttpd, hello");
    let report = passes(&store, &more, &checks);
    assert!(dependencies_row(&report).contains("built layer"), "{report}");
    assert_eq!(layers(&store).len(), 2, "a new set, a new layer");

    // --no-cache installs the dependencies in the probe, as apt install ./pkg.deb would.
    let report = passes(&store, &web, &[&checks[..], &["--no-cache"]].concat());
    assert!(!report.contains(" dependencies "), "no dependency layer with --no-cache:\n{report}");
    store.assert_clean();
}

#[test]
fn new_lists_and_a_new_image_are_noticed_and_offline_uses_the_cache_or_says_what_is_missing() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = deb(dir.path(), "probe-hello", "1.0", "hello");
    assert!(dependencies_row(&passes(&store, &hello, &[])).contains("resolved by apt"));
    let generation = current_generation(&store);
    assert!(dependencies_row(&passes(&store, &hello, &[])).contains("resolution cached"));
    assert_eq!(current_generation(&store), generation, "fresh lists are not fetched again");

    // Lists older than --lists-max-age are fetched again: the stamp is aged (time passing
    // is the one thing a test cannot wait for), and the next probe asks apt again.
    std::fs::write(lists_dir(&store).join("stamp"), "0\n").expect("aging the lists");
    let report = passes(&store, &hello, &["--lists-max-age=6h"]);
    assert!(dependencies_row(&report).contains("resolved by apt"), "{report}");
    let refreshed = current_generation(&store);
    assert_ne!(refreshed, generation, "expired lists are replaced");
    let generations = |store: &TempStore| {
        entries(&lists_dir(store), "gen-").into_iter().filter(|n| !n.contains('.')).collect::<Vec<_>>()
    };
    assert_eq!(generations(&store), std::slice::from_ref(&refreshed), "the old generation is gone");
    // --refresh fetches them whatever their age.
    passes(&store, &hello, &["--refresh"]);
    assert_ne!(current_generation(&store), refreshed);

    // With the mirror unreachable (a network namespace with loopback only), --offline
    // probes from the cache.
    let o = offline_with(&store, &hello);
    assert_eq!(o.status.code(), Some(0), "a warm cache probes offline:\n{}", text(&o));
    // A new set whose packages were never downloaded: named, not guessed.
    let other = deb(dir.path(), "probe-hello", "2.0", "hello, figlet");
    let o = offline_with(&store, &other);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("--offline: not in the download cache: figlet_"), "{}", text(&o));

    // Another image (another id) has other lists and another layer.
    let before = layers(&store);
    let old_id = store.ok(&["images", "-q", "--no-trunc", "localhost/postroj/debian-bookworm"]);
    store.ok(&["run", "--name=update", "localhost/postroj/debian-bookworm", "touch", "/etc/updated"]);
    store.ok(&["commit", "update", "localhost/postroj/debian-bookworm:latest"]);
    store.ok(&["rm", "update"]);
    let new_id = store.ok(&["images", "-q", "--no-trunc", "localhost/postroj/debian-bookworm"]);
    assert_ne!(new_id, old_id, "the label names another image");
    let report = passes(&store, &hello, &[]);
    assert!(dependencies_row(&report).contains("built layer"), "a new image id, a new layer:\n{report}");
    assert_eq!(layers(&store).len(), before.len() + 1);
    store.assert_clean();
}

fn offline_with(store: &TempStore, deb: &Path) -> Output {
    let probe = probe_cmd(store, deb, &["--offline"]);
    Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec \"$@\"", "offline"])
        .arg(probe.get_program())
        .args(probe.get_args())
        .envs(probe.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .expect("unshare")
}

#[test]
fn offline_with_a_cold_cache_says_what_is_missing() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = deb(dir.path(), "probe-hello", "1.0", "hello");
    let o = offline_with(&store, &hello);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no package lists cached for image"), "{}", text(&o));
    assert!(text(&o).contains("without --offline"), "{}", text(&o));
    assert!(layers(&store).is_empty());
    store.assert_clean();
}

#[test]
fn four_parallel_probes_share_one_refresh_and_build_one_layer() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = deb(dir.path(), "probe-hello", "1.0", "hello");
    let children: Vec<_> = (0..4)
        .map(|_| probe_cmd(&store, &hello, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("postroj"))
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
    }
    let built = outputs.iter().filter(|o| dependencies_row(&text(o)).contains("built layer")).count();
    assert_eq!(built, 1, "one probe builds, the others find its layer");
    assert_eq!(layers(&store).len(), 1);
    let generations = entries(&lists_dir(&store), "gen-").into_iter().filter(|n| !n.contains('.')).count();
    assert_eq!(generations, 1, "one refresh");
    assert!(entries(&lists_dir(&store), "staging-").is_empty());
    store.assert_clean();
}

#[test]
fn a_corrupted_download_is_found_by_its_hash_and_fetched_again() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = deb(dir.path(), "probe-hello", "1.0", "hello");
    passes(&store, &hello, &[]);
    let archives = store.apt_cache().join("archives/debian-bookworm-amd64");
    let name = entries(&archives.join("names"), "hello_").pop().expect("hello's .deb is kept");
    let blob = std::fs::canonicalize(archives.join("names").join(&name)).expect("pool file");
    std::fs::write(&blob, b"not a deb").expect("corrupting the pool file");

    // The layer is removed, so the next probe must install hello again, from the cache.
    let o = store.postroj().args(["cache", "rm", "--all"]).output().expect("cache rm");
    assert!(o.status.success(), "{}", text(&o));
    let report = passes(&store, &hello, &[]);
    assert!(dependencies_row(&report).contains("built layer"), "{report}");
    let blob = std::fs::canonicalize(archives.join("names").join(&name)).expect("fetched again");
    let bytes = std::fs::read(&blob).expect("pool file");
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(blob.file_name().and_then(|n| n.to_str()), Some(hex.as_str()), "the pool file is its hash again");
    store.assert_clean();
}

#[test]
fn a_full_disk_while_filling_the_cache_leaves_nothing_half_written() {
    let store = probe_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = deb(dir.path(), "probe-hello", "1.0", "hello");
    // The cache on a file system too small for bookworm's package lists.
    let fs = crate::common::diskfull::Tmpfs::new(8);
    let cache = fs.path().join("apt");
    let o = probe_cmd(&store, &hello, &[]).env("POSTROJ_APT_CACHE", &cache).output().expect("postroj");
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("fetching the package lists was stopped: the file system of"), "{}", text(&o));
    assert!(text(&o).contains("is full"), "{}", text(&o));
    let lists =
        std::fs::read_dir(cache.join("lists")).expect("lists").next().expect("an image's lists").expect("entry").path();
    assert!(entries(&lists, "staging-").is_empty() && entries(&lists, "gen-").is_empty(), "{:?}", entries(&lists, ""));
    assert!(!lists.join("current").exists(), "no lists were published");
    assert!(layers(&store).is_empty());

    fs.resize(600);
    let o = probe_cmd(&store, &hello, &[]).env("POSTROJ_APT_CACHE", &cache).output().expect("postroj");
    assert_eq!(o.status.code(), Some(0), "with room, the same cache works:\n{}", text(&o));
    store.assert_clean();
}
