//! `--format` (docker's Go templates, `table TEMPLATE`, `json`) and `--filter` on the
//! listing commands and `inspect`, against one store with a few images and kept
//! containers; podman's template output for the same archive compared field by field.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{err, images, require_root, TempStore};
use crate::fixturegen;

/// The names of the containers a test keeps; each is removed when the test ends,
/// passed or failed.
struct Containers<'a> {
    store: &'a TempStore,
    names: Vec<&'static str>,
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.store.run(&["rm", "-f", name]);
        }
    }
}

/// One line per row, sorted (the order of rows that share a creation second is the id's).
fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Runs racker and expects a usage error: exit 125 and one line on standard error.
fn usage_error(store: &TempStore, args: &[&str]) -> String {
    let out = store.run(args);
    let stderr = err(&out);
    assert_eq!(out.status.code(), Some(125), "racker {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "racker {args:?}: one line:\n{stderr}");
    assert!(out.stdout.is_empty(), "racker {args:?} printed: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// A `docker save` archive of the busybox image (labels `stage=one`), tagged `tag`.
fn docker_archive(path: &Path, tag: &str) {
    let layer = images::busybox_layer();
    let config = json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"stage": "one"}});
    let img = images::image(std::slice::from_ref(&layer), config);
    let layer_id = fixturegen::sha256_hex(&layer.tar);
    let config_name = format!("{}.json", img.config.0);
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": [format!("{layer_id}/layer.tar")]}]);
    let files = vec![
        (config_name, img.config.1.clone()),
        (format!("{layer_id}/layer.tar"), layer.tar.clone()),
        ("manifest.json".to_owned(), serde_json::to_vec(&manifest).expect("JSON")),
    ];
    std::fs::write(path, fixturegen::archive_tar(&files).expect("archive")).expect("writing the archive");
}

/// The store: `localhost/fmt/base:1` (loaded, 2024, labelled), `localhost/fmt/imported:v1`
/// (imported now) and an untagged import (dangling, the newest).
fn store_with_images(dir: &Path) -> TempStore {
    require_root();
    let store = TempStore::new();
    docker_archive(&dir.join("base.tar"), "localhost/fmt/base:1");
    store.ok(&["load", "-q", "-i", dir.join("base.tar").to_str().expect("utf-8")]);
    let rootfs = dir.join("rootfs.tar");
    std::fs::write(&rootfs, images::busybox_layer().tar).expect("writing the rootfs");
    let rootfs = rootfs.to_str().expect("utf-8");
    store.ok(&["import", "-q", rootfs, "localhost/fmt/imported:v1"]);
    // Creation times are to the second: the dangling image is the newest by a second.
    let second = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let imported = second();
    while second() == imported {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    store.ok(&["import", "-q", rootfs]);
    store
}

#[test]
fn image_templates_and_filters_print_as_dockers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_images(dir.path());
    let names = |args: &[&str]| {
        let mut all = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        all.extend(args);
        lines(&store.ok(&all))
    };
    assert_eq!(names(&[]), ["<none>:<none>", "localhost/fmt/base:1", "localhost/fmt/imported:v1"]);
    assert_eq!(names(&["-a"]), names(&[]), "-a: racker keeps no intermediate images");
    // reference= globs as docker's: `*` stops at a slash; a name alone matches every tag.
    assert_eq!(names(&["--filter", "reference=localhost/fmt/base"]), ["localhost/fmt/base:1"]);
    assert_eq!(names(&["-f", "reference=localhost/*"]), Vec::<String>::new());
    assert_eq!(names(&["-f", "reference=localhost/*/*:v?"]), ["localhost/fmt/imported:v1"]);
    assert_eq!(
        names(&["-f", "reference=*/*/base", "-f", "reference=*/*/imported"]),
        ["localhost/fmt/base:1", "localhost/fmt/imported:v1"],
        "the same key twice: either"
    );
    assert_eq!(names(&["-f", "dangling=true"]), ["<none>:<none>"]);
    assert_eq!(names(&["-f", "dangling=false"]), ["localhost/fmt/base:1", "localhost/fmt/imported:v1"]);
    assert_eq!(names(&["-f", "before=localhost/fmt/imported:v1"]), ["localhost/fmt/base:1"]);
    assert_eq!(names(&["-f", "since=localhost/fmt/base:1"]), ["<none>:<none>", "localhost/fmt/imported:v1"]);
    assert_eq!(names(&["-f", "since=localhost/fmt/imported:v1"]), ["<none>:<none>"]);
    assert_eq!(names(&["-f", "label=stage"]), ["localhost/fmt/base:1"]);
    assert_eq!(names(&["-f", "label=stage=one"]), ["localhost/fmt/base:1"]);
    assert_eq!(names(&["-f", "label=stage=two"]), Vec::<String>::new());
    assert_eq!(
        names(&["-f", "dangling=false", "-f", "since=localhost/fmt/base:1"]),
        ["localhost/fmt/imported:v1"],
        "different keys: both"
    );

    // A row per image: docker's fields, and Go's way of printing them.
    let id = store.ok(&["images", "-q", "localhost/fmt/base"]).trim().to_owned();
    let row = store.ok(&["images", "--format", "{{.ID}}|{{.CreatedAt}}|{{.Size}}|{{.Digest}}", "localhost/fmt/base"]);
    let size = store.ok(&["images", "--format", "json", "localhost/fmt/base"]);
    let size: Value = serde_json::from_str(size.trim()).expect("a JSON line");
    // .Digest is the manifest's whether or not --digests is given, as docker's.
    let digest = store.ok(&["images", "--digests", "--format", "{{.Digest}}", "localhost/fmt/base"]);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let expected = format!("{id}|2024-01-01 00:00:00 +0000 UTC|{}|{digest}", size["Size"].as_str().expect("size"));
    assert_eq!(row, expected);
    assert_eq!(store.ok(&["images", "--format", "{{upper .Tag}} {{lower \"AB\"}}", "localhost/fmt/base"]), "1 ab\n");
    let json_row = store.ok(&["images", "--format", "{{json .}}", "localhost/fmt/base"]);
    assert_eq!(serde_json::from_str::<Value>(json_row.trim()).expect("JSON"), size, "{{{{json .}}}} is --format json");

    // table TEMPLATE: docker's headers over the columns asked for.
    let table = store.ok(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}", "localhost/fmt/base"]);
    let header = "REPOSITORY           TAG   IMAGE ID";
    assert_eq!(table, format!("{header}\nlocalhost/fmt/base   1     {id}\n"));
    let empty = store.ok(&["images", "--format", "table {{.ID}}\\t{{.CreatedSince}}", "-f", "label=none"]);
    assert_eq!(empty, "IMAGE ID   CREATED\n", "a table without rows still has its header");

    // Errors: one line, racker's own status.
    let bad = usage_error(&store, &["images", "--format", "{{.Repository"]);
    assert!(bad.starts_with("Error: invalid format template \"{{.Repository\": template:"), "{bad}");
    let unknown = usage_error(&store, &["images", "--format", "{{.Colour}}"]);
    assert!(unknown.contains("Colour"), "{unknown}");
    let key = usage_error(&store, &["images", "-f", "colour=red"]);
    assert_eq!(key, "Error: invalid filter 'colour': valid filters are before, dangling, label, reference, since\n");
    let dangling = usage_error(&store, &["images", "-f", "dangling=maybe"]);
    assert!(dangling.contains("dangling=maybe"), "{dangling}");
}

#[test]
fn inspect_templates_render_against_the_inspect_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_images(dir.path());
    let full = store.ok(&["images", "-q", "--no-trunc", "localhost/fmt/base"]).trim().to_owned();
    let inspect = |args: &[&str]| {
        let mut all = vec!["inspect"];
        all.extend(args);
        all.push("localhost/fmt/base:1");
        store.ok(&all)
    };
    assert_eq!(inspect(&["-f", "{{.Id}}"]), format!("{full}\n"));
    assert_eq!(inspect(&["--format", "{{.Config.Cmd}} {{.Config.Env}}"]), "[sh] [PATH=/bin]\n");
    assert_eq!(inspect(&["-f", "{{json .Config.Labels}}"]), "{\"stage\":\"one\"}\n");
    assert_eq!(inspect(&["-f", "{{index .Config.Labels \"stage\"}} {{.Os}}/{{.Architecture}}"]), "one linux/amd64\n");
    assert_eq!(inspect(&["-f", "{{range .RepoTags}}{{.}} {{end}}"]), "localhost/fmt/base:1 \n");
    let json_config: Value =
        serde_json::from_str(&inspect(&["-f", "{{json .Config}}"])).expect("{{json .Config}} is JSON");
    assert_eq!(json_config["Cmd"], json!(["sh"]));
    let default: Value = serde_json::from_str(&inspect(&["-f", "json"])).expect("-f json: the JSON array");
    assert_eq!(default[0]["Id"], full);
    let image = store.ok(&["image", "inspect", "-f", "{{.Id}} {{len .Layers}}", "localhost/fmt/base:1"]);
    assert_eq!(image, format!("{full} 1\n"));
    // An image without a command still has docker's Config keys: empty, not missing.
    let unset = store.ok(&[
        "inspect",
        "-f",
        "{{.Config.Cmd}}|{{.Config.Entrypoint}}|{{.Config.WorkingDir}}|",
        "localhost/fmt/imported:v1",
    ]);
    assert_eq!(unset, "[]|[]||\n");
    let bad = usage_error(&store, &["inspect", "-f", "{{.Config", "localhost/fmt/base:1"]);
    assert!(bad.contains("invalid format template \"{{.Config\""), "{bad}");
    let bad = usage_error(&store, &["image", "inspect", "-f", "{{if}}", "localhost/fmt/base:1"]);
    assert!(bad.contains("\"{{if}}\""), "{bad}");
}

#[test]
fn ps_templates_and_filters_print_as_dockers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_images(dir.path());
    let image = "localhost/fmt/base:1";
    let kept = Containers { store: &store, names: vec!["fmt-a", "fmt-b", "fmt-c", "fmt-r"] };
    store.ok(&["run", "--name", "fmt-a", "--label", "tier=web", image, "sh", "-c", "echo hi > /tmp/hi"]);
    let b = store.run(&["run", "--name", "fmt-b", image, "sh", "-c", "exit 3"]);
    assert_eq!(b.status.code(), Some(3), "{}", err(&b));
    store.ok(&["create", "--name", "fmt-c", "--label", "tier=db", image, "true"]);
    store.ok(&["run", "-d", "--name", "fmt-r", "localhost/fmt/imported:v1", "sleep", "1000"]);

    let names = |args: &[&str]| {
        let mut all = vec!["ps", "--format", "{{.Names}}"];
        all.extend(args);
        lines(&store.ok(&all))
    };
    assert_eq!(names(&[]), ["fmt-r"]);
    assert_eq!(names(&["-a"]), ["fmt-a", "fmt-b", "fmt-c", "fmt-r"]);
    let states = lines(&store.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Image}} {{.Command}}"]));
    assert_eq!(
        states,
        [
            "fmt-a exited localhost/fmt/base:1 \"sh -c echo hi > /tm…\"",
            "fmt-b exited localhost/fmt/base:1 \"sh -c exit 3\"",
            "fmt-c created localhost/fmt/base:1 \"true\"",
            "fmt-r running localhost/fmt/imported:v1 \"sleep 1000\"",
        ]
    );
    // status= and exited= look at stopped containers without -a, as docker's.
    assert_eq!(names(&["-f", "status=exited"]), ["fmt-a", "fmt-b"]);
    assert_eq!(names(&["-f", "status=exited", "-f", "status=created"]), ["fmt-a", "fmt-b", "fmt-c"]);
    assert_eq!(names(&["-f", "exited=3"]), ["fmt-b"]);
    assert_eq!(names(&["-f", "exited=0"]), ["fmt-a"]);
    assert_eq!(names(&["-f", "status=running"]), ["fmt-r"]);
    assert_eq!(names(&["-a", "-f", "name=fmt-[ab]"]), ["fmt-a", "fmt-b"]);
    assert_eq!(names(&["-a", "-f", "name=^fmt-a$", "-f", "name=r"]), ["fmt-a", "fmt-r"]);
    assert_eq!(names(&["-a", "-f", "label=tier"]), ["fmt-a", "fmt-c"]);
    assert_eq!(names(&["-a", "-f", "label=tier=db"]), ["fmt-c"]);
    assert_eq!(names(&["-a", "-f", "ancestor=localhost/fmt/imported:v1"]), ["fmt-r"]);
    let base_id = store.ok(&["images", "-q", "localhost/fmt/base"]);
    assert_eq!(names(&["-a", "-f", &format!("ancestor={}", base_id.trim())]), ["fmt-a", "fmt-b", "fmt-c"]);
    assert_eq!(names(&["-a", "-f", "status=exited", "-f", "label=tier"]), ["fmt-a"], "different keys: both");
    let id = store.ok(&["ps", "-a", "-q", "-f", "name=^fmt-c$"]);
    assert_eq!(names(&["-a", "-f", &format!("id={}", &id.trim()[..6])]), ["fmt-c"]);
    // -l and -n: the latest created, in any state.
    assert_eq!(names(&["-l"]), ["fmt-r"]);
    assert_eq!(names(&["-n", "2"]), ["fmt-c", "fmt-r"]);
    assert_eq!(names(&["-n", "2", "-f", "status=exited"]), ["fmt-a", "fmt-b"]);

    // Labels, a Go template's functions, table TEMPLATE and json.
    assert_eq!(
        store.ok(&["ps", "-a", "-f", "name=fmt-a", "--format", "{{.Labels}}|{{upper .State}}"]),
        "tier=web|EXITED\n"
    );
    let table = store.ok(&["ps", "-a", "-f", "name=fmt-c", "--format", "table {{.ID}}\\t{{.Names}}"]);
    assert_eq!(table, format!("CONTAINER ID   NAMES\n{}   fmt-c\n", id.trim()));
    let json_line = store.ok(&["ps", "-f", "name=fmt-r", "--format", "json"]);
    let row: Value = serde_json::from_str(json_line.trim()).expect("a JSON line");
    assert_eq!((row["Names"].as_str(), row["State"].as_str()), (Some("fmt-r"), Some("running")), "{row}");
    assert!(row["Status"].as_str().is_some_and(|s| s.starts_with("Up ")), "{row}");
    assert!(row["RunningFor"].as_str().is_some_and(|s| s.ends_with(" ago")), "{row}");

    // -s: what the container wrote, and with its image.
    let sized = store.ok(&["ps", "-a", "-s", "-f", "name=fmt-a"]);
    let header = sized.lines().next().expect("a header");
    assert!(header.ends_with("NAMES   SIZE"), "{sized}");
    assert!(sized.lines().nth(1).is_some_and(|row| row.contains(" (virtual ")), "{sized}");
    let size = store.ok(&["ps", "-a", "-f", "name=fmt-a", "--format", "{{.Size}}"]);
    let image_size = store.ok(&["images", "--format", "{{.Size}}", "localhost/fmt/base"]);
    let (writes, virt) = size.trim().split_once(" (virtual ").expect("docker's `2B (virtual 5MB)`");
    assert!(writes.ends_with('B') && writes != "0B", "fmt-a wrote /tmp/hi: {size}");
    assert!(virt.ends_with(')') && !image_size.trim().is_empty(), "{size}");

    let key = usage_error(&store, &["ps", "-f", "colour=red"]);
    assert_eq!(key, "Error: invalid filter 'colour': valid filters are ancestor, before, exited, expose, id, label, name, network, publish, since, status, volume\n");
    let status = usage_error(&store, &["ps", "-f", "status=sleeping"]);
    assert!(status.contains("status=sleeping"), "{status}");
    usage_error(&store, &["ps", "--format", "{{.Names"]);

    // stats: docker's fields, and table TEMPLATE with its headers.
    let stats = store.ok(&["stats", "--no-stream", "--format", "{{.Name}} {{len .CPUPerc}}", "fmt-r"]);
    assert!(stats.starts_with("fmt-r ") && stats.lines().count() == 1, "{stats}");
    let stats = store.ok(&["stats", "--no-stream", "--format", "table {{.Name}}\\t{{.PIDs}}", "fmt-r"]);
    assert!(stats.starts_with("NAME    PIDS\nfmt-r   "), "{stats}");

    // inspect -f of containers.
    assert_eq!(store.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "fmt-b"]), "exited 3\n");
    assert_eq!(store.ok(&["container", "inspect", "-f", "{{.State.Status}}", "fmt-r"]), "running\n");
    assert_eq!(store.ok(&["inspect", "-f", "{{json .Config.Labels}}", "fmt-a"]), "{\"tier\":\"web\"}\n");

    drop(kept);
    store.assert_clean();
}

#[test]
fn volume_network_df_version_and_info_take_templates() {
    require_root();
    let store = TempStore::new();
    struct Cleanup<'a>(&'a TempStore);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["volume", "rm", "-f", "fmt-vol"]);
            let _ = self.0.run(&["network", "rm", "fmt-net"]);
        }
    }
    let cleanup = Cleanup(&store);
    store.ok(&["volume", "create", "fmt-vol"]);
    store.ok(&["network", "create", "--subnet", "10.93.7.0/24", "fmt-net"]);
    let volume = store.ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}} {{.Mountpoint}}"]);
    let (name_driver, mountpoint) = volume.trim().rsplit_once(' ').expect("three fields");
    assert_eq!(name_driver, "fmt-vol local");
    assert!(Path::new(mountpoint).is_dir(), "{volume}");
    assert_eq!(store.ok(&["volume", "ls", "--format", "table {{.Name}}"]), "VOLUME NAME\nfmt-vol\n");
    let network = store.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.ID}}"]);
    let id = store.ok(&["network", "inspect", "fmt-net"]);
    let id: Value = serde_json::from_str(&id).expect("JSON");
    // The default network (`private`) is listed too.
    let line = format!("fmt-net bridge {}", id[0]["Id"].as_str().expect("an id"));
    assert!(network.lines().any(|l| l == line), "{network}");
    let networks = store.ok(&["network", "ls", "-q"]).lines().count();
    let table = store.ok(&["network", "ls", "--format", "table {{.ID}}\\t{{.Name}}"]);
    assert!(table.starts_with("NETWORK ID   NAME\n"), "{table}");

    let df = store.ok(&["system", "df", "--format", "{{.Type}}: {{.TotalCount}}"]);
    assert_eq!(df, "Images: 0\nContainers: 0\nLocal Volumes: 1\nLayers: 0\nBlobs: 0\n");
    let df = store.ok(&["system", "df", "--format", "table {{.Type}}\\t{{.Reclaimable}}"]);
    assert!(df.starts_with("TYPE            RECLAIMABLE\n"), "{df}");
    assert_eq!(store.ok(&["version", "--format", "{{.Version}}"]), format!("{}\n", env!("CARGO_PKG_VERSION")));
    let info = store.ok(&["info", "--format", "{{.Images}} {{.Volumes}} {{.Networks}}"]);
    assert_eq!(info, format!("0 1 {networks}\n"));
    usage_error(&store, &["volume", "ls", "--format", "{{"]);
    usage_error(&store, &["version", "--format", "{{.Version"]);
    drop(cleanup);
    store.assert_clean();
}

/// podman, on a store of its own in `dir`.
fn podman(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
        .args(args)
        .output()
        .expect("running podman (scripts/prerequisites installs it)");
    assert!(out.status.success(), "podman {args:?}: {}", err(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn templates_print_what_podman_prints_for_the_same_archive() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("fmt.tar");
    docker_archive(&archive, "localhost/fmt/podman:1");
    let archive = archive.to_str().expect("utf-8");
    let store = TempStore::new();
    store.ok(&["load", "-q", "-i", archive]);
    podman(dir.path(), &["load", "-q", "-i", archive]);
    for template in ["{{.Repository}}:{{.Tag}}", "{{.ID}}", "{{.CreatedAt}}", "{{.Repository}} {{.CreatedSince}}"] {
        assert_eq!(
            store.ok(&["images", "--format", template]),
            podman(dir.path(), &["images", "--format", template]),
            "images --format {template:?}"
        );
    }
    for template in [
        "{{.Config.Cmd}}",
        "{{.Config.Env}}",
        "{{json .Config.Labels}}",
        "{{.RepoTags}}",
        "{{.Os}} {{.Architecture}}",
        "{{index .Config.Labels \"stage\"}}",
    ] {
        assert_eq!(
            store.ok(&["image", "inspect", "-f", template, "localhost/fmt/podman:1"]),
            podman(dir.path(), &["image", "inspect", "-f", template, "localhost/fmt/podman:1"]),
            "image inspect -f {template:?}"
        );
    }
    // docker's .Id carries the digest's algorithm; podman's is the hex alone.
    let id = store.ok(&["image", "inspect", "-f", "{{.Id}}", "localhost/fmt/podman:1"]);
    let podman_id = podman(dir.path(), &["image", "inspect", "-f", "{{.Id}}", "localhost/fmt/podman:1"]);
    assert_eq!(id.trim_start_matches("sha256:"), podman_id);
}
