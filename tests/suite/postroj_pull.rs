//! `postroj pull` and `postroj list-images` against real parts: a local registry (the
//! `docker.io/library/debian` of the catalog rewritten to it through registries.conf)
//! holding a Debian minbase without systemd, the Debian mirror the host's apt sources
//! name, and booted containers of the results.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::images;
use crate::common::registry::{sha256_hex, Registry};
use crate::common::{err, out};
use crate::common::{require_root, TempStore};

const LOCAL: &str = "localhost/postroj/debian-bookworm:latest";

/// postroj on `store`, reading registries.conf from `conf` (if any), never the host's.
fn postroj(store: &TempStore, conf: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postroj"));
    cmd.arg("--root").arg(store.root()).args(args).env("REGISTRY_AUTH_FILE", store.auth_file());
    match conf {
        Some(conf) => cmd.env("CONTAINERS_REGISTRIES_CONF", conf),
        // An empty file: no rewrites, and not the host's configuration.
        None => cmd.env("CONTAINERS_REGISTRIES_CONF", "/dev/null"),
    };
    cmd.output().expect("running postroj")
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "postroj failed: {}\n{}", err(&o), out(&o));
    o
}

/// A registries.conf that sends `docker.io/library/debian` to the test registry.
fn rewrite_conf(dir: &Path, registry: &Registry) -> PathBuf {
    let path = dir.join("registries.conf");
    let text = format!(
        "[[registry]]\nprefix = \"docker.io/library/debian\"\nlocation = \"{}/library/debian\"\n",
        registry.addr()
    );
    std::fs::write(&path, text).expect("writing registries.conf");
    path
}

/// Pushes a one-layer image of `tar` (uncompressed; skopeo compresses it) as `repo_tag`.
fn push_rootfs(registry: &Registry, tar: Vec<u8>, repo_tag: &str) -> String {
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let layer =
        crate::fixturegen::Layer { blob: tar.clone(), media_type: "application/vnd.oci.image.layer.v1.tar", tar };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]});
    images::write_layout(dir.path(), &images::image(&[layer], config));
    registry.skopeo_copy_oci(dir.path(), "latest", repo_tag);
    diff_id
}

fn inspect(store: &TempStore, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect json");
    v[0].clone()
}

fn assert_no_containers(store: &TempStore) {
    assert_eq!(store.ok(&["ps", "-aq"]), "", "a provisioning container was left behind");
    assert!(store.files("snapshots").is_empty(), "snapshots left behind: {:?}", store.files("snapshots"));
    assert!(store.files("ingest").is_empty(), "ingest leftovers: {:?}", store.files("ingest"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&store.root().display().to_string()), "mounts left behind");
}

fn boots(store: &TempStore) {
    let o = store.run(&["run", "--rm", LOCAL, "systemctl", "is-active", "systemd-journald"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "active\n"), "{}", err(&o));
}

#[test]
fn registry_pull_provisions_systemd_once_and_reuses_it() {
    require_root();
    let tarball = images::debian_minbase_tarball();
    let registry = Registry::start();
    let base_diff_id =
        push_rootfs(&registry, std::fs::read(&tarball).expect("minbase tarball"), "library/debian:bookworm");
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = rewrite_conf(conf_dir.path(), &registry);
    let store = TempStore::new();

    let o = ok(postroj(&store, Some(&conf), &["pull", "debian-bookworm", "--source", "registry"]));
    assert_eq!(out(&o), format!("{LOCAL}\n"));
    let log = err(&o);
    assert!(log.contains("debian-bookworm: source registry: --source registry"), "{log}");
    assert!(log.contains("has no systemd: provisioning it"), "{log}");
    let image = inspect(&store, LOCAL);
    let layers = image["Layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "the base layer and exactly one provisioning layer");
    assert_eq!(layers[0]["DiffID"], base_diff_id.as_str());
    let base = inspect(&store, "debian:bookworm");
    assert_eq!(base["Layers"].as_array().expect("base layers").len(), 1, "the base is stored under its own name");
    let labels = &image["OciConfig"]["config"]["Labels"];
    assert_eq!(labels["org.racker.postroj.base"], base["Id"]);
    assert!(labels["org.racker.postroj.recipe"].as_str().is_some_and(|r| r.starts_with("sha256:")), "{labels}");
    assert_no_containers(&store);
    boots(&store);

    // A second pull finds the provisioned image by its labels.
    let before = (store.files("blobs/sha256"), store.files("layers"), store.count("layers"), store.count("blobs"));
    let o = ok(postroj(&store, Some(&conf), &["pull", "debian-bookworm", "--source", "registry"]));
    assert!(err(&o).contains("reused the provisioned image"), "{}", err(&o));
    assert_eq!(inspect(&store, LOCAL)["Id"], image["Id"], "the same image");
    let after = (store.files("blobs/sha256"), store.files("layers"), store.count("layers"), store.count("blobs"));
    assert_eq!(after, before, "no new layer or blob");
    // Its alias pulls the same label, and so reuses it too.
    let o = ok(postroj(&store, Some(&conf), &["pull", "-q", "debian-12", "--source", "registry"]));
    assert_eq!(out(&o), format!("{LOCAL}\n"));
    assert_eq!(inspect(&store, LOCAL)["Id"], image["Id"], "the same image");

    let table = out(&ok(postroj(&store, None, &["list-images", "--format", "table"])));
    let row = table.lines().find(|l| l.starts_with("debian-bookworm ")).expect("a debian-bookworm row");
    assert!(row.ends_with("yes"), "{table}");

    // --force provisions again: a new top layer on the same shared base layer.
    let o = ok(postroj(&store, Some(&conf), &["pull", "--force", "-q", "debian-bookworm", "--source", "registry"]));
    assert_eq!(out(&o), format!("{LOCAL}\n"), "-q: only the name, no container output");
    let forced = inspect(&store, LOCAL);
    assert_ne!(forced["Id"], image["Id"]);
    let forced_layers = forced["Layers"].as_array().expect("layers");
    assert_eq!((forced_layers.len(), &forced_layers[0]["Path"]), (2, &layers[0]["Path"]), "the base layer is shared");
    assert_no_containers(&store);
}

#[test]
fn mirror_pull_builds_a_booting_image_with_mmdebstrap() {
    require_root();
    let store = TempStore::new();
    let o = ok(postroj(&store, None, &["pull", "debian-bookworm", "--source", "mirror"]));
    assert_eq!(out(&o), format!("{LOCAL}\n"));
    let log = err(&o);
    assert!(log.contains("source Debian mirror: --source mirror"), "{log}");
    assert!(log.contains("debian-bookworm: I: "), "mmdebstrap's progress is shown: {log}");
    assert!(log.contains("built from the mirror"), "{log}");
    let image = inspect(&store, LOCAL);
    assert_eq!(image["Layers"].as_array().expect("layers").len(), 1);
    boots(&store);
    let o = ok(postroj(&store, None, &["pull", "debian-bookworm", "--source", "mirror"]));
    assert!(err(&o).contains("built from the Debian mirror earlier"), "a second pull reuses the build: {}", err(&o));
    assert_eq!(inspect(&store, LOCAL)["Id"], image["Id"]);
    assert_no_containers(&store);
}

#[test]
fn list_images_prints_json_labels_or_a_table() {
    let store = TempStore::new();
    let json: Vec<String> =
        serde_json::from_str(&out(&ok(postroj(&store, None, &["list-images"])))).expect("a JSON array of labels");
    assert!(json.len() > 20 && json.contains(&"debian-bookworm".to_owned()) && json.contains(&"fedora-41".to_owned()));
    let table = out(&ok(postroj(&store, None, &["list-images", "--format", "table"])));
    let mut lines = table.lines();
    let header: Vec<&str> =
        lines.next().expect("header").split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["LABEL", "ALIASES", "SOURCE", "FAMILY", "IN STORE"]);
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with("debian-bookworm ")).expect("row").split_whitespace().collect();
    assert_eq!(row, ["debian-bookworm", "debian-12", "docker.io/library/debian:bookworm", "debian", "no"]);
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with("ubuntu-jammy ")).expect("row").split_whitespace().collect();
    assert_eq!(row[1], "ubuntu-22.04,ubuntu-22", "{table}");
    let row: Vec<&str> = table.lines().find(|l| l.starts_with("fedora-41 ")).expect("row").split_whitespace().collect();
    assert_eq!(row[1], "-", "no aliases: {table}");
    assert_eq!(lines.count(), json.len());
}

#[test]
fn an_unknown_label_fails_with_one_line_naming_close_labels() {
    let store = TempStore::new();
    let o = postroj(&store, None, &["pull", "debian-potato"]);
    assert!(!o.status.success());
    let e = err(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("debian-potato") && e.contains("debian-bookworm") && e.contains("list-images"), "{e}");
    assert_eq!(store.count("images"), 0);
}

#[test]
fn a_failed_provisioning_leaves_no_image_and_no_container() {
    require_root();
    // A "debian" image without apt: the provisioning script fails.
    let registry = Registry::start();
    let tar = images::busybox_layer().tar;
    push_rootfs(&registry, tar, "library/debian:trixie");
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = rewrite_conf(conf_dir.path(), &registry);
    let store = TempStore::new();
    let o = postroj(&store, Some(&conf), &["pull", "-q", "debian-trixie", "--source", "registry"]);
    assert!(!o.status.success(), "{}", out(&o));
    let e = err(&o);
    let error_lines: Vec<&str> = e.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(error_lines.len(), 1, "{e}");
    assert!(error_lines[0].contains("provisioning failed") && error_lines[0].contains("127"), "{e}");
    assert!(
        !store.run(&["inspect", "localhost/postroj/debian-trixie:latest"]).status.success(),
        "no provisioned image"
    );
    assert_eq!(store.count("images"), 1, "only the pulled base, as after racker pull");
    assert_eq!(store.count("layers"), 1);
    assert_no_containers(&store);
}

/// Also the cold probe cycle: pkgprobe pulls what the store lacks before probing.
#[test]
fn auto_falls_back_to_the_mirror_when_the_registry_is_unreachable() {
    require_root();
    // Nothing listens on port 1: the rewritten docker.io refuses connections.
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        "[[registry]]\nprefix = \"docker.io/library/debian\"\nlocation = \"127.0.0.1:1/library/debian\"\n",
    )
    .expect("writing registries.conf");
    let store = TempStore::new();
    let o = ok(postroj(&store, Some(&conf), &["pkgprobe", "--image=debian-bookworm", "--check-unit=systemd-journald"]));
    let log = err(&o);
    assert!(log.contains("not in the store yet, pulling: debian-bookworm"), "{log}");
    assert!(out(&o).contains("unit systemd-journald") && out(&o).contains("passed"), "{}", out(&o));
    // The pull is the cold cycle's first phase, timed in the report.
    let table = out(&o);
    let pull = table.lines().find(|l| l.split_whitespace().take(2).eq(["debian-bookworm", "pull"]));
    assert!(pull.is_some_and(|l| l.contains("passed")), "{table}");
    assert!(table.contains("debian-bookworm phases: pull "), "{table}");
    assert!(
        log.contains("source registry: docker.io/library/debian:bookworm (--source auto tries the registry first)"),
        "{log}"
    );
    assert!(log.contains("source Debian mirror: 127.0.0.1:1 is unreachable"), "{log}");
    assert!(log.contains("building bookworm from the Debian mirror instead"), "{log}");
    assert_eq!(inspect(&store, LOCAL)["Layers"].as_array().expect("layers").len(), 1);
    assert_no_containers(&store);
}

/// README: `--source auto` (the default) tries the registry first. When the registry
/// answers, the label comes from it (the pushed layer, not a mirror build), and postroj
/// says which source it used and why.
#[test]
fn auto_takes_the_registry_when_it_answers() {
    require_root();
    let registry = Registry::start();
    let tarball = images::debian_rootfs_tarball();
    let diff_id = push_rootfs(&registry, std::fs::read(&tarball).expect("tarball"), "library/debian:bookworm");
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = rewrite_conf(conf_dir.path(), &registry);
    let store = TempStore::new();

    let o = ok(postroj(&store, Some(&conf), &["pull", "debian-bookworm"]));
    assert_eq!(out(&o), format!("{LOCAL}\n"));
    let log = err(&o);
    assert!(
        log.contains("debian-bookworm: source registry: docker.io/library/debian:bookworm (--source auto tries the registry first)"),
        "{log}"
    );
    assert!(!log.contains("source Debian mirror"), "no mirror build: {log}");
    assert!(log.contains("has systemd: no provisioning needed"), "{log}");
    assert!(registry.manifest_gets("library/debian") >= 1, "the registry was asked");
    let layers = inspect(&store, LOCAL)["Layers"].as_array().expect("layers").clone();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["DiffID"], diff_id.as_str(), "the registry's layer");
    boots(&store);
    assert_no_containers(&store);
}

/// A registries.conf that sends every registry of the catalog to `registry`, under the
/// original host's name (`docker.io/library/debian` → `ADDR/docker.io/library/debian`).
fn rewrite_every_registry(dir: &Path, registry: &Registry, sources: &[String]) -> PathBuf {
    let mut hosts: Vec<&str> = sources.iter().map(|s| s.split('/').next().expect("a host")).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let text: String = hosts
        .iter()
        .map(|h| format!("[[registry]]\nprefix = \"{h}\"\nlocation = \"{}/{h}\"\n", registry.addr()))
        .collect();
    let path = dir.join("registries.conf");
    std::fs::write(&path, text).expect("writing registries.conf");
    path
}

/// The catalog as `list-images --format table` shows it: (label, source).
fn catalog(store: &TempStore) -> Vec<(String, String)> {
    let table = out(&ok(postroj(store, None, &["list-images", "--format", "table"])));
    table
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_owned(), cols[2].to_owned())
        })
        .collect()
}

/// README: `postroj pull LABEL LABEL…` and `postroj pull --all` pull each label as
/// `localhost/postroj/LABEL:latest` and print exactly those names. Every source of the
/// catalog is served by one local registry (rewrites in registries.conf), each with the
/// Debian systemd image, so that nothing needs provisioning.
#[test]
fn several_labels_and_all_are_pulled_each_under_its_name() {
    require_root();
    let store = TempStore::new();
    let catalog = catalog(&store);
    assert!(catalog.len() > 20, "{catalog:?}");
    let registry = Registry::start();
    let tarball = images::debian_rootfs_tarball();
    // In the registry, each source is a repository of the same name (host included).
    let first = catalog[0].1.clone();
    let diff_id = push_rootfs(&registry, std::fs::read(&tarball).expect("tarball"), &first);
    for (_, source) in &catalog[1..] {
        registry.copy_within(&first, source);
    }
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf =
        rewrite_every_registry(conf_dir.path(), &registry, &catalog.iter().map(|c| c.1.clone()).collect::<Vec<_>>());
    let local = |label: &str| format!("localhost/postroj/{label}:latest");

    // What the copies asked already is not the pulls' doing.
    let asked_before = |repo: &str| registry.manifest_gets(repo);
    let (ubuntu, fedora) =
        (asked_before("docker.io/library/ubuntu"), asked_before("registry.fedoraproject.org/fedora"));
    let o = ok(postroj(&store, Some(&conf), &["pull", "debian-bookworm", "ubuntu-noble"]));
    assert_eq!(out(&o), format!("{}\n{}\n", local("debian-bookworm"), local("ubuntu-noble")), "{}", err(&o));
    for label in ["debian-bookworm", "ubuntu-noble"] {
        assert_eq!(inspect(&store, &local(label))["Layers"][0]["DiffID"], diff_id.as_str(), "{label}");
    }
    assert_eq!(registry.manifest_gets("docker.io/library/ubuntu"), ubuntu + 1, "ubuntu-noble came from its source");
    assert_eq!(registry.manifest_gets("registry.fedoraproject.org/fedora"), fedora, "no other label was pulled");
    let in_store: Vec<String> = catalog
        .iter()
        .filter(|(l, _)| store.run(&["inspect", &local(l)]).status.success())
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(in_store, ["debian-bookworm", "ubuntu-noble"]);

    let before: Vec<usize> = catalog
        .iter()
        .map(|(_, source)| registry.manifest_gets(source.rsplit_once(':').expect("repo:tag").0))
        .collect();
    let o = ok(postroj(&store, Some(&conf), &["pull", "--all", "-q"]));
    let names: String = catalog.iter().map(|(label, _)| format!("{}\n", local(label))).collect();
    assert_eq!(out(&o), names, "every label's name, in catalog order");
    for ((label, source), before) in catalog.iter().zip(before) {
        let repo = source.rsplit_once(':').expect("repo:tag").0;
        assert!(registry.manifest_gets(repo) > before, "{label}: --all never asked {repo}");
    }
    let table = out(&ok(postroj(&store, None, &["list-images", "--format", "table"])));
    assert!(table.lines().skip(1).all(|l| l.ends_with("yes")), "every label is in the store:\n{table}");
    assert_eq!(store.count("layers"), 1, "one layer shared by all");
    assert_no_containers(&store);
}
