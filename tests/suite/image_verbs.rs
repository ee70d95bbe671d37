//! The image verbs docker and podman users script against: `save` and `load` round
//! trips (docker and OCI archives, standard input), what podman reads from racker's
//! archives, `history`, `image prune` and `system prune`, `import -c/-m`, and the
//! fields of `image inspect`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::common::images::{busybox_config, busybox_layer, numbered_layer, write_layout};
use crate::common::{self, fixture, TempStore};
use crate::fixturegen::{self, sha256_hex, Layer};

/// An image of `layers` with `config` and a build `history`, as a builder writes it.
fn image_with_history(layers: &[Layer], config: Value, history: Value) -> fixturegen::Image {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256_hex(&l.tar))).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z", "author": "racker tests",
        "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history,
    }))
    .expect("JSON");
    let layer_blobs: Vec<(String, Vec<u8>)> = layers.iter().map(|l| (sha256_hex(&l.blob), l.blob.clone())).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": layers.iter().zip(&layer_blobs).map(|(l, (hex, blob))| json!({
            "mediaType": l.media_type, "digest": format!("sha256:{hex}"), "size": blob.len(),
        })).collect::<Vec<_>>(),
    }))
    .expect("JSON");
    fixturegen::Image {
        config: (sha256_hex(&config), config),
        manifest: (sha256_hex(&manifest), manifest),
        layers: layer_blobs,
    }
}

/// The history of a two-layer image built from busybox: a step per layer and a
/// configuration step between them that made no layer.
fn two_step_history() -> Value {
    json!([
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:busybox in / "},
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true},
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c echo a very long command line that docker truncates", "comment": "second"},
    ])
}

/// Pulls `img` from a layout into `store` and tags it `tag`; returns its id.
fn add(store: &TempStore, img: &fixturegen::Image, tag: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = write_layout(dir.path(), img);
    store.ok(&["pull", "-q", &location]);
    let id = format!("sha256:{}", img.config.0);
    // Only `tag` names it: the layout's default name (localhost/DIR) goes.
    let pulled = inspect(store, &id)["RepoTags"].as_array().cloned().unwrap_or_default();
    store.ok(&["tag", &id, tag]);
    for name in pulled {
        store.ok(&["rmi", name.as_str().expect("a name")]);
    }
    id
}

/// Two images sharing the busybox layer: `a:1` (with a history) and `b:1`.
fn two_images(store: &TempStore) -> (String, String) {
    let busybox = busybox_layer();
    let copy = Layer { blob: busybox.blob.clone(), media_type: busybox.media_type, tar: busybox.tar.clone() };
    let a = add(store, &image_with_history(&[copy, numbered_layer(1)], busybox_config(), two_step_history()), "a:1");
    let b = add(store, &crate::common::images::image(&[busybox, numbered_layer(2)], busybox_config()), "b:1");
    (a, b)
}

/// The regular files of a tar archive, by name, with their sizes; each name once.
fn members(archive: &Path) -> Vec<(String, u64)> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("the archive"));
    tar.entries()
        .expect("a tar")
        .map(|e| e.expect("an entry"))
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| (e.path().expect("a path").display().to_string(), e.size()))
        .collect()
}

fn member(archive: &Path, name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("the archive"));
    for entry in tar.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").to_str() == Some(name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("reading a member");
            return bytes;
        }
    }
    panic!("{name} is not in {}", archive.display());
}

fn ids(store: &TempStore) -> BTreeSet<String> {
    store.ok(&["images", "-q", "--no-trunc"]).lines().map(str::to_owned).collect()
}

fn inspect(store: &TempStore, name: &str) -> Value {
    let text = store.ok(&["image", "inspect", name]);
    serde_json::from_str::<Value>(&text).expect("inspect prints JSON")[0].clone()
}

/// Runs racker with `stdin` as its standard input.
fn with_stdin(store: &TempStore, args: &[&str], stdin: &Path) -> std::process::Output {
    store.cmd().args(args).stdin(std::fs::File::open(stdin).expect("the input file")).output().expect("running racker")
}

#[test]
fn save_and_load_round_trip_keeps_ids_and_writes_shared_layers_once() {
    common::require_root();
    let store = TempStore::new();
    let (a, b) = two_images(&store);
    let dir = tempfile::tempdir().expect("tempdir");

    for format in ["docker-archive", "oci-archive"] {
        let archive = dir.path().join(format!("{format}.tar"));
        store.ok(&["save", "--format", format, "-o", archive.to_str().expect("utf-8"), "a:1", "b:1"]);
        let names: Vec<String> = members(&archive).into_iter().map(|(n, _)| n).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{format}: a member written twice: {names:?}");
        let busybox_blob = format!("blobs/sha256/{}", sha256_hex(&busybox_layer().blob));
        assert!(names.contains(&busybox_blob), "{format}: the shared layer is missing: {names:?}");

        let other = TempStore::new();
        let loaded = other.ok(&["load", "-q", "-i", archive.to_str().expect("utf-8")]);
        assert_eq!(loaded, "Loaded image: a:1\nLoaded image: b:1\n", "{format}");
        assert_eq!(ids(&other), BTreeSet::from([a.clone(), b.clone()]), "{format}: other ids after the round trip");
        for name in ["a:1", "b:1"] {
            let (before, after) = (inspect(&store, name), inspect(&other, name));
            for field in ["Id", "RootFS", "Config", "History", "Created", "Architecture", "Os", "Author"] {
                assert_eq!(before[field], after[field], "{format} {name}: {field} changed");
            }
        }
        // The files themselves: the busybox layer's content came through.
        let content = other.ok(&["run", "--rm", "a:1", "cat", "/srv/data.txt"]);
        assert_eq!(content, "from the image\n", "{format}: the layer's files");
        other.assert_clean();
    }

    // docker's manifest.json: config and layers by digest, the tags given.
    let manifest: Value =
        serde_json::from_slice(&member(&dir.path().join("docker-archive.tar"), "manifest.json")).expect("JSON");
    assert_eq!(manifest[0]["RepoTags"], json!(["a:1"]));
    assert_eq!(manifest[0]["Config"], json!(format!("blobs/sha256/{}", &a["sha256:".len()..])));
    assert_eq!(manifest[1]["Layers"].as_array().map(Vec::len), Some(2));
    // The OCI index names each manifest as podman reads it.
    let index: Value =
        serde_json::from_slice(&member(&dir.path().join("oci-archive.tar"), "index.json")).expect("JSON");
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "docker.io/library/a:1");

    // Saved by id: no name in the archive, and loaded by id, as docker.
    let by_id = dir.path().join("by-id.tar");
    store.ok(&["save", "-o", by_id.to_str().expect("utf-8"), &b]);
    let other = TempStore::new();
    assert_eq!(other.ok(&["load", "-q", "-i", by_id.to_str().expect("utf-8")]), format!("Loaded image ID: {b}\n"));
    store.assert_clean();
}

#[test]
fn save_streams_to_a_pipe_and_refuses_a_terminal_and_load_reads_standard_input() {
    common::require_root();
    let store = TempStore::new();
    let (a, _) = two_images(&store);
    let dir = tempfile::tempdir().expect("tempdir");

    // `racker save a:1 > FILE`, `racker load < FILE`, `racker load -i -`.
    let archive = dir.path().join("a.tar");
    let status = store
        .cmd()
        .args(["save", "--format", "oci-archive", "a:1"])
        .stdout(std::fs::File::create(&archive).expect("create"))
        .status()
        .expect("racker save");
    assert!(status.success());
    for args in [&["load"][..], &["load", "-i", "-"]] {
        let other = TempStore::new();
        let out = with_stdin(&other, args, &archive);
        assert!(out.status.success(), "{args:?}: {}", common::err(&out));
        assert_eq!(common::out(&out), "Loaded image: a:1\n", "{args:?}");
        assert_eq!(ids(&other), BTreeSet::from([a.clone()]));
        // The archive's manifest digest, as podman shows it for a loaded image.
        let digests = other.ok(&["images", "--digests"]);
        let manifest = inspect(&store, "a:1")["Digest"].as_str().expect("a digest").to_owned();
        assert!(digests.contains(&manifest) && !digests.contains("<none>"), "{digests}");
    }

    // Not an archive on standard input: the same one-line error as for a file.
    let other = TempStore::new();
    let out = with_stdin(&other, &["load"], &fixture("rootfs/rootfs.tar"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        common::err(&out),
        "Error: loading from standard input: not a docker save archive or an OCI archive (it has neither manifest.json nor index.json); for a plain root filesystem tarball use `racker import`\n"
    );

    // A terminal on standard output: refused before anything is written, as docker does.
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY).expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let slave =
        rustix::pty::ioctl_tiocgptpeer(&master, rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .expect("the terminal");
    let out = store.cmd().args(["save", "a:1"]).stdout(Stdio::from(slave)).output().expect("racker save");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(common::err(&out), "Error: cowardly refusing to save to a terminal. Use the -o flag or redirect\n");

    // Unknown images and formats: docker's words.
    assert_eq!(store.fails(&["save", "-o", "/dev/null", "nosuch:1"]), "Error: No such image: nosuch:1\n");
    let err = store.fails(&["save", "--format", "tarball", "a:1"]);
    assert!(err.contains("invalid value 'tarball' for '--format <FORMAT>'"), "{err}");
    store.assert_clean();
}

#[test]
fn load_names_an_oci_archive_by_its_ref_name_as_podman() {
    common::require_root();
    let store = TempStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = crate::common::images::image(&[numbered_layer(7)], busybox_config());
    for (annotation, loaded, shown) in [
        ("foo:1", "localhost/foo:1", "localhost/foo"),
        ("bar", "localhost/bar:latest", "localhost/bar"),
        ("quay.io/x/baz:2", "quay.io/x/baz:2", "quay.io/x/baz"),
    ] {
        let files = fixturegen::layout_files(&img, &[("org.opencontainers.image.ref.name", annotation)]);
        let archive = dir.path().join("named.tar");
        std::fs::write(&archive, fixturegen::archive_tar(&files).expect("tar")).expect("write");
        let out = store.ok(&["load", "-q", "-i", archive.to_str().expect("utf-8")]);
        assert_eq!(out, format!("Loaded image: {loaded}\n"), "ref name {annotation}");
        assert!(store.ok(&["images"]).contains(shown), "{annotation}");
    }
    // A short name finds the localhost/ image, as podman's does.
    assert_eq!(inspect(&store, "foo:1")["Id"], json!(format!("sha256:{}", img.config.0)));
}

#[test]
fn history_shows_the_configs_steps_with_layer_sizes_in_dockers_columns() {
    common::require_root();
    let store = TempStore::new();
    let (a, _) = two_images(&store);
    let short = &a["sha256:".len().."sha256:".len() + 12];
    let table = store.ok(&["history", "a:1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    assert!(lines[1].starts_with(short), "the top step carries the image id: {table}");
    assert!(lines[1].contains("/bin/sh -c echo a very long command line tha…"), "truncated at 45: {table}");
    assert!(lines[1].trim_end().ends_with("second"), "{table}");
    assert!(lines[2].starts_with("<missing>") && lines[2].contains("0B"), "an empty layer's step: {table}");
    assert!(lines[3].starts_with("<missing>") && !lines[3].contains(" 0B "), "the busybox layer has a size: {table}");

    let full = store.ok(&["history", "--no-trunc", "a:1"]);
    assert!(full.contains(&a) && full.contains("echo a very long command line that docker truncates"), "{full}");
    assert_eq!(store.ok(&["history", "-q", "a:1"]), format!("{short}\n<missing>\n<missing>\n"));
    let json: Vec<Value> = store
        .ok(&["history", "--format", "json", "a:1"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(json.len(), 3);
    assert_eq!(json[0]["Comment"], "second");
    assert_eq!(json[1]["Size"], "0B");
    assert_eq!(json[2]["CreatedBy"], "/bin/sh -c #(nop) ADD file:busybox in / ");

    // -H=false: sizes in bytes, as docker's.
    let raw = store.ok(&["history", "-H=false", "a:1"]);
    assert!(raw.lines().nth(2).is_some_and(|l| l.split_whitespace().any(|c| c == "0")), "{raw}");
    assert!(!raw.contains("0B") && !raw.contains("ago"), "{raw}");
    assert_eq!(store.fails(&["history", "nosuch"]), "Error: No such image: nosuch\n");
}

#[test]
fn podman_loads_rackers_archives_and_agrees_on_inspect_and_history() {
    common::require_root();
    let store = TempStore::new();
    let (a, _) = two_images(&store);
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = inspect(&store, "a:1");
    let our_history: Vec<Value> = store
        .ok(&["history", "--no-trunc", "--format", "json", "a:1"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    // podman names a docker archive's short names localhost/, an OCI ref name as given.
    for (format, name) in [("docker-archive", "localhost/a:1"), ("oci-archive", "docker.io/library/a:1")] {
        let archive = dir.path().join(format!("{format}.tar"));
        store.ok(&["save", "--format", format, "-o", archive.to_str().expect("utf-8"), "a:1"]);
        let podman = Podman::new();
        assert_eq!(
            podman.ok(&["load", "-q", "-i", archive.to_str().expect("utf-8")]),
            format!("Loaded image: {name}\n")
        );
        let theirs: Value =
            serde_json::from_str::<Value>(&podman.ok(&["image", "inspect", name])).expect("JSON")[0].clone();
        assert_eq!(format!("sha256:{}", theirs["Id"].as_str().expect("an id")), a, "{format}: Id");
        for field in ["Architecture", "Os", "Author", "History"] {
            assert_eq!(theirs[field], ours[field], "{format}: {field}");
        }
        assert_eq!(theirs["RootFS"]["Layers"], ours["RootFS"]["Layers"], "{format}: RootFS");
        assert_eq!(theirs["Config"]["Cmd"], ours["Config"]["Cmd"], "{format}: Config.Cmd");
        assert_eq!(theirs["Config"]["Env"], ours["Config"]["Env"], "{format}: Config.Env");
        assert_eq!(theirs["RepoTags"], json!([name]), "{format}: RepoTags");
        let history: Vec<Value> =
            serde_json::from_str(&podman.ok(&["history", "--no-trunc", "--format", "json", name]))
                .expect("podman history JSON");
        assert_eq!(history.len(), our_history.len(), "{format}: steps");
        for (theirs, ours) in history.iter().zip(&our_history) {
            // podman leaves out empty fields.
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            assert_eq!(text(&theirs["CreatedBy"]), text(&ours["CreatedBy"]), "{format}: created by");
            assert_eq!(text(&theirs["comment"]), text(&ours["Comment"]), "{format}: comment");
        }
        // skopeo reads them too.
        let transport = format!("{format}:{}", archive.display());
        let out = Command::new("skopeo").args(["inspect", "--raw", "--config", &transport]).output().expect("skopeo");
        assert!(out.status.success(), "skopeo {transport}: {}", common::err(&out));
        assert_eq!(format!("sha256:{}", sha256_hex(&out.stdout)), a, "{format}: skopeo's config");
    }
}

/// A podman with a throw-away store (vfs: nothing mounted), removed on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman { dir: tempfile::Builder::new().prefix("racker-test-podman-").tempdir().expect("tempdir") }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new("podman")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("podman is installed (scripts/prerequisites)");
        assert!(out.status.success(), "podman {args:?}: {}", common::err(&out));
        common::out(&out)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .args(["--storage-driver", "vfs", "system", "reset", "-f"])
            .output();
    }
}

#[test]
fn image_prune_removes_dangling_then_unused_images_and_keeps_what_containers_use() {
    common::require_root();
    let store = TempStore::new();
    let (a, b) = two_images(&store);
    let c = add(&store, &crate::common::images::image(&[numbered_layer(3)], busybox_config()), "c:1");
    // c:1 moves to a: c is left dangling.
    store.ok(&["tag", "a:1", "c:1"]);
    let container = store.ok(&["create", "--name", "user-of-a", "a:1", "true"]).trim().to_owned();
    let _guard = RemoveContainer(&store, container);

    // Without -f it asks; no answer is no.
    let out = store.cmd().args(["image", "prune"]).stdin(Stdio::null()).output().expect("racker");
    assert!(out.status.success());
    assert_eq!(
        common::out(&out),
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] \n"
    );
    assert_eq!(ids(&store).len(), 3);

    let out = store.ok(&["image", "prune", "-f"]);
    assert!(out.starts_with(&format!("Deleted Images:\ndeleted: {c}\n\nTotal reclaimed space: ")), "{out}");
    assert!(!out.ends_with("space: 0B\n"), "the dangling image's files were freed: {out}");
    assert_eq!(ids(&store), BTreeSet::from([a.clone(), b.clone()]));

    // -a: b goes, a stays (a container uses it, even a stopped one).
    let out = store.ok(&["image", "prune", "-a", "-f", "--filter", "label=keep"]);
    assert_eq!(out, "Total reclaimed space: 0B\n", "label=keep: neither image has the label");
    let mut answer = store
        .cmd()
        .args(["image", "prune", "-a"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("racker");
    answer.stdin.take().expect("stdin").write_all(b"y\n").expect("answering");
    let out = answer.wait_with_output().expect("racker");
    let text = common::out(&out);
    assert!(text.starts_with("WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue? [y/N] Deleted Images:\nuntagged: b:1\n"), "{text}");
    assert!(text.contains(&format!("deleted: {b}\n")), "{text}");
    assert_eq!(ids(&store), BTreeSet::from([a.clone()]));

    let err = store.fails(&["image", "prune", "-f", "--filter", "colour=red"]);
    assert_eq!(err, "Error: invalid filter \"colour=red\": prune filters by until=… or label=…\n");
    drop(_guard);
    store.assert_clean();
}

/// Removes a container when the test ends, passed or failed.
struct RemoveContainer<'s>(&'s TempStore, String);

impl Drop for RemoveContainer<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", &self.1]);
    }
}

#[test]
fn system_prune_removes_stopped_containers_unused_networks_volumes_and_images() {
    common::require_root();
    let store = TempStore::new();
    let (a, b) = two_images(&store);
    store.ok(&["tag", "a:1", "b:1"]); // b is dangling
    store.ok(&["network", "create", "prunenet"]);
    store.ok(&["volume", "create", "prunevol"]);
    let stopped =
        store.ok(&["create", "--name", "stopped-one", "-v", "prunevol:/data", "a:1", "true"]).trim().to_owned();
    let _guard = RemoveContainer(&store, stopped.clone());

    let out = store.cmd().args(["system", "prune", "--volumes"]).stdin(Stdio::null()).output().expect("racker");
    assert_eq!(
        common::out(&out),
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all volumes not used by at least one container\n  - all dangling images\n\nAre you sure you want to continue? [y/N] \n"
    );
    assert!(store.ok(&["network", "ls"]).contains("prunenet"), "nothing goes without an answer");
    // `network prune` alone keeps what a container is on.
    store.ok(&["network", "create", "usednet"]);
    let on_net = store.ok(&["create", "--name", "on-usednet", "--network", "usednet", "a:1", "true"]).trim().to_owned();
    let on_net_guard = RemoveContainer(&store, on_net);
    store.ok(&["network", "create", "othernet"]);
    assert_eq!(store.ok(&["network", "prune", "-f"]), "Deleted Networks:\nothernet\nprunenet\n");
    store.ok(&["network", "create", "prunenet"]);
    drop(on_net_guard);
    store.ok(&["network", "rm", "usednet"]);

    let out = store.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.starts_with(&format!("Deleted Containers:\n{stopped}\n\nDeleted Networks:\nprunenet\n\nDeleted Volumes:\nprunevol\n\nDeleted Images:\ndeleted: {b}\n\nTotal reclaimed space: ")), "{out}");
    assert_eq!(store.ok(&["ps", "-a", "-q"]), "");
    assert!(!store.ok(&["network", "ls"]).contains("prunenet"));
    assert_eq!(store.ok(&["volume", "ls", "-q"]), "");
    assert_eq!(ids(&store), BTreeSet::from([a.clone()]), "a is tagged: only -a takes it");

    let out = store.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Images:\nuntagged: "), "{out}");
    assert!(
        out.contains("untagged: a:1\n") && out.contains("untagged: b:1\n") && out.contains(&format!("deleted: {a}\n")),
        "{out}"
    );
    assert!(ids(&store).is_empty());
    assert!(store.files("layers").is_empty(), "gc ran: {:?}", store.files("layers"));
    drop(_guard);
    store.assert_clean();
}

#[test]
fn import_takes_changes_and_a_message_and_names_like_podman() {
    common::require_root();
    let store = TempStore::new();
    let rootfs = fixture("rootfs/rootfs.tar");
    let rootfs = rootfs.to_str().expect("utf-8");
    let id = store.ok(&[
        "import",
        "-q",
        "-c",
        r#"CMD ["/bin/true"]"#,
        "--change",
        "ENV A=b",
        "-c",
        "WORKDIR /srv",
        "-c",
        "LABEL k=v",
        "-c",
        "USER 1000",
        "-c",
        "EXPOSE 80",
        "-c",
        r#"ENTRYPOINT ["/bin/env"]"#,
        "-m",
        "made by a test",
        rootfs,
        "imp:1",
    ]);
    let image = inspect(&store, "imp:1");
    assert_eq!(image["Id"], json!(id.trim()));
    assert_eq!(image["RepoTags"], json!(["localhost/imp:1"]));
    assert_eq!(image["Config"]["Cmd"], json!(["/bin/true"]));
    assert_eq!(image["Config"]["Entrypoint"], json!(["/bin/env"]));
    assert_eq!(image["Config"]["Env"], json!(["A=b"]));
    assert_eq!(image["Config"]["WorkingDir"], "/srv");
    assert_eq!(image["Config"]["User"], "1000");
    assert_eq!(image["Config"]["ExposedPorts"], json!({"80/tcp": {}}));
    assert_eq!(image["Labels"], json!({"k": "v"}));
    assert_eq!(image["Comment"], "made by a test");
    assert_eq!(image["History"][0]["comment"], "made by a test");
    let digest = image["Digest"].as_str().expect("a digest").to_owned();
    assert_eq!(image["RepoDigests"], json!([format!("localhost/imp@{digest}")]));
    let layer = image["GraphDriver"]["Data"]["UpperDir"].as_str().expect("the layer's directory");
    assert!(
        Path::new(layer).join("etc").exists() && layer.starts_with(store.root().to_str().expect("utf-8")),
        "{layer}"
    );
    assert!(store.ok(&["images", "--digests"]).contains(&digest));
    // A second name, then the short name untags rather than deletes.
    store.ok(&["tag", "imp:1", "localhost/imp:2"]);
    assert_eq!(store.ok(&["rmi", "imp:2"]), "Untagged: localhost/imp:2\n");
    let history = store.ok(&["history", "imp:1"]);
    assert!(history.contains("racker import") && history.contains("made by a test"), "{history}");

    let err = store.fails(&["import", "-c", "RUN make", rootfs, "bad:1"]);
    assert_eq!(
        err,
        "Error: invalid change \"RUN make\": supported: ENV, LABEL, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, ONBUILD\n"
    );
    assert_eq!(ids(&store).len(), 1, "a refused change imports nothing");
}
