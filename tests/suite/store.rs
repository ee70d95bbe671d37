//! The image store through the `racker` command line, against the real filesystem and
//! a real SQLite file: imports, dedupe, refusal of bad input, rmi/tag, gc, concurrency.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

use crate::common::diskfull::SmallStore;
use crate::common::{self, fixture, TempStore};
use crate::fixturegen;

const WHITEOUTS_NAME: &str = "racker-fixtures/whiteouts:latest";

fn load(store: &TempStore, archive: &str) -> String {
    store.ok(&["load", "-q", "-i", fixture(archive).to_str().expect("utf-8 path")])
}

fn pull_layout(store: &TempStore, name: &str) -> String {
    store.ok(&["pull", "-q", &format!("oci:{}", fixture(&format!("oci/{name}")).display())])
}

/// An OCI layout's blobs (manifest, config, layers) and its layers' unpacked sizes
/// (the bytes of their regular files), each by blob digest.
type LayoutParts = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// What the layout fixture `name` is made of, read from the layout itself (not through
/// racker): the sizes its descriptors give, and its layer tars' regular files summed.
fn layout_parts(name: &str) -> LayoutParts {
    let dir = fixture(&format!("oci/{name}"));
    let read = |digest: &str| {
        std::fs::read(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).expect("a layout blob")
    };
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).expect("JSON");
    let descriptor =
        |d: &serde_json::Value| (d["digest"].as_str().expect("digest").to_owned(), d["size"].as_u64().expect("size"));
    let index = json(&std::fs::read(dir.join("index.json")).expect("index.json"));
    let (manifest_digest, manifest_size) = descriptor(&index["manifests"][0]);
    let manifest = json(&read(&manifest_digest));
    let mut blobs = BTreeMap::from([(manifest_digest, manifest_size), descriptor(&manifest["config"])]);
    let mut layers = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let (digest, size) = descriptor(layer);
        let bytes = read(&digest);
        let tar: Box<dyn std::io::Read> = match layer["mediaType"].as_str().expect("mediaType") {
            fixturegen::MT_GZIP => Box::new(flate2::read::GzDecoder::new(&bytes[..])),
            fixturegen::MT_ZSTD => Box::new(zstd::stream::read::Decoder::new(&bytes[..]).expect("zstd")),
            _ => Box::new(&bytes[..]),
        };
        let unpacked: u64 = tar::Archive::new(tar)
            .entries()
            .expect("a tar")
            .map(|e| e.expect("a tar entry"))
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.header().size().expect("entry size"))
            .sum();
        blobs.insert(digest.clone(), size);
        layers.insert(digest, unpacked);
    }
    (blobs, layers)
}

#[test]
fn load_of_docker_save_archive_lists_the_tagged_image() {
    let store = TempStore::new();
    let out = load(&store, "archives/whiteouts-docker-save.tar");
    assert_eq!(out, format!("Loaded image: {WHITEOUTS_NAME}\n"));
    let images = store.ok(&["images"]);
    assert!(images.lines().any(|l| l.starts_with("racker-fixtures/whiteouts") && l.contains("latest")), "{images}");
    assert_eq!(store.count("images"), 1);
    assert_eq!(store.count("layers"), 3);

    // Other names the image has here are not what this archive loaded (docker says
    // only the archive's), for either kind of archive.
    store.ok(&["tag", WHITEOUTS_NAME, "elsewhere:1"]);
    assert_eq!(load(&store, "archives/whiteouts-docker-save.tar"), format!("Loaded image: {WHITEOUTS_NAME}\n"));
    assert_eq!(load(&store, "archives/whiteouts-oci-archive.tar"), format!("Loaded image: {WHITEOUTS_NAME}\n"));

    // An archive without names loads an untagged image, shown by its id as docker does,
    // even when the store has names for it.
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = fixturegen::rootfs_tar().expect("tar");
    let layer = fixturegen::Layer { blob: tar.clone(), media_type: fixturegen::MT_TAR, tar: tar.clone() };
    let img = fixturegen::image("untagged", &[layer]);
    let id = format!("sha256:{}", img.config.0);
    let archive = docker_save_archive(&dir.path().join("untagged.tar"), (img, tar), serde_json::Value::Null);
    let archive = archive.to_str().expect("utf-8");
    assert_eq!(store.ok(&["load", "-q", "-i", archive]), format!("Loaded image ID: {id}\n"));
    store.ok(&["tag", &id, "named:1"]);
    assert_eq!(store.ok(&["load", "-q", "-i", archive]), format!("Loaded image ID: {id}\n"));
}

#[test]
fn importing_twice_stores_each_blob_and_layer_once() {
    let store = TempStore::new();
    load(&store, "archives/whiteouts-docker-save.tar");
    let first = store.snapshot();
    load(&store, "archives/whiteouts-docker-save.tar");
    assert_eq!(store.snapshot(), first, "a second load changed the store");
}

#[test]
fn docker_save_and_oci_archive_of_one_image_share_its_layers() {
    let store = TempStore::new();
    load(&store, "archives/whiteouts-docker-save.tar");
    load(&store, "archives/whiteouts-oci-archive.tar");
    // Same config, so the same image; the unpacked layers (by diff_id) exist once.
    assert_eq!(store.count("images"), 1);
    assert_eq!(store.count("layers"), 3);
    assert_eq!(store.files("layers").len(), 3);
}

#[test]
fn images_sharing_a_layer_store_it_once_and_df_shows_the_sharing() {
    let store = TempStore::new();
    pull_layout(&store, "whiteouts");
    pull_layout(&store, "shared");
    assert_eq!(store.count("images"), 2);
    // whiteouts has 3 layers, shared has base + 1 own: 4 distinct.
    assert_eq!(store.count("layers"), 4);
    assert_eq!(store.files("layers").len(), 4);
    let blob_files = store.files("blobs/sha256").len() as i64;
    assert_eq!(blob_files, store.count("blobs"));
    // docker's rows, one JSON object a line; racker's exact figures on its Layers row.
    let rows: BTreeMap<String, serde_json::Value> = store
        .ok(&["system", "df", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("df prints JSON lines"))
        .map(|row| (row["Type"].as_str().expect("a Type").to_owned(), row))
        .collect();
    assert_eq!(rows["Images"]["TotalCount"], "2");
    assert_eq!(rows["Layers"]["TotalCount"], "4");
    let df = serde_json::json!({
        "images_size": rows["Layers"]["ImagesLogicalBytes"], "layers_size": rows["Layers"]["SizeBytes"],
        "blobs_size": rows["Blobs"]["SizeBytes"], "shared_size": rows["Layers"]["SharedBytes"],
        "dedupe_ratio": rows["Layers"]["DedupeRatio"],
    });
    // What the two layouts are made of implies the figures: each image counts all its
    // blobs and unpacked layers, the store holds each once.
    let parts = [layout_parts("whiteouts"), layout_parts("shared")];
    let logical: u64 = parts.iter().flat_map(|(blobs, layers)| blobs.values().chain(layers.values())).sum();
    let stored = |of: fn(&LayoutParts) -> &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        parts.iter().flat_map(|p| of(p).clone()).collect()
    };
    let (blobs, layers) = (stored(|p| &p.0), stored(|p| &p.1));
    let physical: u64 = blobs.values().chain(layers.values()).sum();
    let in_both = |of: fn(&LayoutParts) -> &BTreeMap<String, u64>| -> u64 {
        of(&parts[0]).iter().filter(|(d, _)| of(&parts[1]).contains_key(*d)).map(|(_, size)| size).sum()
    };
    let shared = in_both(|p| &p.0) + in_both(|p| &p.1);
    assert!(shared > 0 && logical > physical, "the layouts share a layer: {logical} B over {physical} B");
    let images_size: u64 = parts.iter().flat_map(|(_, layers)| layers.values()).sum();
    let sizes = ["images_size", "layers_size", "blobs_size", "shared_size"].map(|k| df[k].as_u64());
    let expected = [images_size, layers.values().sum(), blobs.values().sum(), shared].map(Some);
    assert_eq!(sizes, expected, "{df}");
    // The same quotient; JSON parsing may round its last bit.
    let ratio = logical as f64 / physical as f64;
    let reported = df["dedupe_ratio"].as_f64().expect("dedupe_ratio");
    assert!((reported - ratio).abs() <= ratio * f64::EPSILON, "{df}: {logical} B of images over {physical} B stored");
    let table = store.ok(&["system", "df"]);
    assert!(table.contains(&format!("Dedupe ratio: {ratio:.2}x")), "{table}");
}

#[test]
fn a_flipped_byte_in_a_blob_is_refused_and_leaves_nothing() {
    let store = TempStore::new();
    let before = store.snapshot();
    let copy = tempfile::tempdir().expect("tempdir");
    let layout = copy.path().join("whiteouts");
    let status =
        std::process::Command::new("cp").arg("-a").arg(fixture("oci/whiteouts")).arg(&layout).status().expect("cp");
    assert!(status.success());
    // Flip one byte in the largest blob (a layer).
    let largest = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob");
    let mut bytes = std::fs::read(&largest).expect("read blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&largest, bytes).expect("write blob");

    let err = store.fails(&["pull", "-q", &format!("oci:{}", layout.display())]);
    assert!(err.contains("digest mismatch") || err.contains("corrupt"), "unexpected error: {err}");
    assert_eq!(err.trim().lines().count(), 1, "error should be one line: {err}");
    assert_eq!(store.snapshot(), before, "a refused import changed the store");
}

#[test]
fn malicious_layers_are_refused_and_leave_nothing() {
    common::require_root();
    for name in ["evil-dotdot", "evil-absolute", "evil-symlink", "evil-hardlink", "evil-hardlink-symlink"] {
        let store = TempStore::new();
        let before = store.snapshot();
        let err = store.fails(&["pull", "-q", &format!("oci:{}", fixture(&format!("oci/{name}")).display())]);
        assert_eq!(err.trim().lines().count(), 1, "{name}: error should be one line: {err}");
        assert!(err.contains("layer"), "{name}: error should name the layer: {err}");
        assert_eq!(store.snapshot(), before, "{name}: a refused layer changed the store");
        for escaped in ["/tmp/racker-escape", "/etc/racker-escape", "/racker-escape"] {
            assert!(!std::path::Path::new(escaped).exists(), "{name}: {escaped} was written outside the layer");
        }
    }
}

#[test]
fn rootfs_tarballs_import_in_every_compression_with_one_layer() {
    let store = TempStore::new();
    let mut diff_ids = Vec::new();
    for (file, name) in [
        ("rootfs.tar", "rootfs:plain"),
        ("rootfs.tar.gz", "rootfs:gz"),
        ("rootfs.tar.xz", "rootfs:xz"),
        ("rootfs.tar.zst", "rootfs:zst"),
    ] {
        let id = store.ok(&["import", "-q", fixture(&format!("rootfs/{file}")).to_str().expect("utf-8"), name]);
        let inspect: serde_json::Value =
            serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect prints JSON");
        assert_eq!(inspect[0]["Id"].as_str(), Some(id.trim()));
        let layers = inspect[0]["RootFS"]["Layers"].as_array().expect("layers").clone();
        assert_eq!(layers.len(), 1, "{file}: one layer");
        diff_ids.push(layers[0].clone());
        let media_type = inspect[0]["Layers"][0]["MediaType"].as_str().expect("media type").to_owned();
        let expected = match file {
            "rootfs.tar.gz" => "application/vnd.oci.image.layer.v1.tar+gzip",
            "rootfs.tar.zst" => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar", // xz is stored uncompressed
        };
        assert_eq!(media_type, expected, "{file}");
    }
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]), "all compressions hold the same tar: {diff_ids:?}");
    assert_eq!(store.count("layers"), 1, "the one tar is unpacked once");
    let images = store.ok(&["images", "rootfs"]);
    assert_eq!(images.lines().count(), 5, "{images}");
}

#[test]
fn import_from_stdin_and_bad_input_errors() {
    let store = TempStore::new();
    let mut child = store
        .cmd()
        .args(["import", "-q", "-", "stdin:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let bytes = std::fs::read(fixture("rootfs/rootfs.tar.gz")).expect("fixture");
    child.stdin.take().expect("stdin").write_all(&bytes).expect("write");
    assert!(child.wait_with_output().expect("wait").status.success());
    store.ok(&["inspect", "stdin:1"]);

    let err = store.fails(&["import", "/nonexistent.tar", "x"]);
    assert!(err.contains("/nonexistent.tar"), "{err}");
    let err = store.fails(&["import", fixture("rootfs/rootfs.tar").to_str().expect("utf-8"), "Bad:Name"]);
    assert!(err.contains("lowercase"), "{err}");
    let err = store.fails(&["load", "-i", fixture("rootfs/rootfs.tar").to_str().expect("utf-8")]);
    assert!(err.contains("racker import"), "a rootfs given to load names the fix: {err}");
    let err = store.fails(&["inspect", "nosuchimage"]);
    assert!(err.contains("No such object: nosuchimage"), "{err}");
    let err = store.fails(&["image", "inspect", "nosuchimage"]);
    assert!(err.contains("No such image: nosuchimage"), "{err}");
}

#[test]
fn tag_and_rmi_follow_docker() {
    let store = TempStore::new();
    load(&store, "archives/whiteouts-docker-save.tar");
    store.ok(&["tag", "racker-fixtures/whiteouts", "mine:v1"]);
    store.ok(&["tag", "mine:v1", "localhost:5000/other/name:v2"]);
    let images = store.ok(&["images"]);
    assert!(images.contains("mine") && images.contains("localhost:5000/other/name"), "{images}");
    let id = store.ok(&["images", "-q"]);
    assert_eq!(id.lines().count(), 1, "one image, three names: {id}");

    // An id with several names needs -f.
    let err = store.fails(&["rmi", id.trim()]);
    assert!(err.contains("must be forced"), "{err}");
    // Untagging keeps the image while other names remain.
    let out = store.ok(&["rmi", "mine:v1"]);
    assert_eq!(out.trim(), "Untagged: mine:v1");
    assert_eq!(store.count("images"), 1);
    let out = store.ok(&["rmi", "-f", id.trim()]);
    assert!(out.contains("Untagged: racker-fixtures/whiteouts:latest") && out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(store.count("images"), 0);
    // rmi collects right away when nothing else holds the store.
    assert!(store.files("blobs/sha256").is_empty(), "{:?}", store.files("blobs/sha256"));
    assert!(store.files("layers").is_empty());
    assert_eq!(store.count("blobs") + store.count("layers"), 0);
}

#[test]
fn gc_removes_leftovers_of_crashed_operations_and_keeps_images() {
    let store = TempStore::new();
    pull_layout(&store, "whiteouts");
    store.ok(&["gc"]); // settles the new layers (a row change), so the baseline is stable
    let keep = store.snapshot();
    // What a crash can leave: a staging dir, a named blob without a row, a layer dir without a row.
    std::fs::create_dir_all(store.root().join("ingest/1234-deadbeef/layer-0/etc")).expect("mkdir");
    std::fs::write(store.root().join("blobs/sha256").join("ab".repeat(32)), b"orphan").expect("write");
    std::fs::create_dir_all(store.root().join("layers/999/usr")).expect("mkdir");
    let out = store.ok(&["gc", "--dry-run"]);
    assert!(out.contains("Would remove leftover: layers/999"), "{out}");
    assert!(store.root().join("layers/999").exists(), "dry run removed something");
    let out = store.ok(&["gc"]);
    for leftover in ["ingest/1234-deadbeef", "layers/999", &format!("blobs/sha256/{}", "ab".repeat(32))] {
        assert!(out.contains(&format!("Deleted leftover: {leftover}")), "{leftover} not reported: {out}");
    }
    assert!(out.contains("Total reclaimed space: 6B"), "{out}");
    assert_eq!(store.snapshot(), keep, "gc touched what images use");
}

#[test]
fn a_killed_import_leaves_only_garbage_that_gc_removes() {
    let store = TempStore::new();
    let before = store.snapshot();
    let mut child = store.cmd().args(["import", "-q", "-", "killed:1"]).stdin(Stdio::piped()).spawn().expect("spawn");
    let bytes = std::fs::read(fixture("rootfs/rootfs.tar")).expect("fixture");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&bytes[..bytes.len() / 2]).expect("write half");
    stdin.flush().expect("flush");
    // Wait until the import is staging, then kill it without warning.
    common::wait_until(30, "the import never started staging", || !store.files("ingest").is_empty());
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    drop(stdin);
    assert_eq!(store.count("images"), 0);
    assert!(store.files("blobs/sha256").is_empty() && store.files("layers").is_empty());
    assert!(store.ok(&["images", "-q"]).is_empty());
    store.ok(&["gc"]);
    assert_eq!(store.snapshot(), before);
}

#[test]
fn concurrent_loads_of_one_image_end_with_one_copy_of_everything() {
    let store = TempStore::new();
    let archive = fixture("archives/whiteouts-oci-archive.tar");
    let children: Vec<_> = (0..6)
        .map(|_| {
            store
                .cmd()
                .args(["load", "-q", "-i"])
                .arg(&archive)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn racker load")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "a concurrent load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(store.count("images"), 1);
    assert_eq!(store.count("layers"), 3);
    assert_eq!(store.files("layers").len(), 3);
    assert_eq!(store.files("blobs/sha256").len() as i64, store.count("blobs"));
    assert!(store.files("ingest").is_empty(), "{:?}", store.files("ingest"));
    let check: String = store.db().query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
    let fk: Vec<String> = {
        let db = store.db();
        let mut stmt = db.prepare("PRAGMA foreign_key_check").expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0)).expect("query").map(|r| r.expect("row")).collect()
    };
    assert!(fk.is_empty(), "dangling references: {fk:?}");
}

#[test]
fn gc_waits_for_a_running_import_and_never_breaks_it() {
    let store = TempStore::new();
    let lock = store.root().join("lock");
    let tar = std::fs::read(fixture("rootfs/rootfs.tar")).expect("fixture");
    // The import reads from a pipe the test holds: it stays in progress, holding the
    // store's lock shared, until the test writes the rest.
    let mut import = store
        .cmd()
        .args(["import", "-q", "-", "held:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn racker import");
    let mut stdin = import.stdin.take().expect("stdin");
    stdin.write_all(&tar[..tar.len() / 2]).expect("write half");
    stdin.flush().expect("flush");
    common::wait_until(30, "the import never took the store's lock", || {
        common::locks::holds(&lock, import.id(), "READ")
    });
    let mut gc = store.cmd().args(["gc"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn gc");
    common::wait_until(30, "gc never waited for the store's lock", || common::locks::waits(&lock, gc.id(), "WRITE"));
    assert!(gc.try_wait().expect("polling gc").is_none(), "gc finished while an import held the store");
    assert_eq!(store.files("ingest").len(), 1, "the import's staging directory is there, untouched");

    stdin.write_all(&tar[tar.len() / 2..]).expect("write the rest");
    drop(stdin);
    let imported = import.wait_with_output().expect("wait for the import");
    assert!(imported.status.success(), "the import failed beside gc: {}", String::from_utf8_lossy(&imported.stderr));
    let collected = gc.wait_with_output().expect("wait for gc");
    assert!(collected.status.success(), "gc failed beside the import: {}", String::from_utf8_lossy(&collected.stderr));
    // gc ran after the import had committed: nothing of it was garbage.
    assert_eq!(String::from_utf8_lossy(&collected.stdout), "Total reclaimed space: 0B\n");
    let id = String::from_utf8_lossy(&imported.stdout).trim().to_owned();
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "held:1"])).expect("inspect JSON");
    assert_eq!(inspect[0]["Id"].as_str(), Some(id.as_str()), "the imported image survived gc");
    assert_eq!((store.count("layers"), store.files("layers").len()), (1, 1), "its layer is there");
    assert!(store.files("ingest").is_empty(), "{:?}", store.files("ingest"));
}

#[test]
fn images_output_formats() {
    let store = TempStore::new();
    load(&store, "archives/whiteouts-docker-save.tar");
    let table = store.ok(&["images", "--digests"]);
    let header = table.lines().next().expect("header");
    for column in ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let json = store.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(json.lines().next().expect("a line")).expect("JSON line");
    assert_eq!(row["Repository"], "racker-fixtures/whiteouts");
    assert_eq!(row["Tag"], "latest");
    let full = store.ok(&["images", "-q", "--no-trunc"]);
    assert!(full.trim().starts_with("sha256:") && full.trim().len() == 71, "{full}");
    let by_prefix = store.ok(&["inspect", &full.trim()[7..19]]);
    let inspect: serde_json::Value = serde_json::from_str(&by_prefix).expect("inspect JSON");
    assert_eq!(inspect[0]["Id"], full.trim());
    assert_eq!(inspect[0]["Layers"].as_array().map(Vec::len), Some(3));
    assert!(inspect[0]["Config"].is_object(), "the OCI config's config section: {inspect}");
}

#[test]
fn the_stored_layers_of_the_whiteout_image_compose_with_overlayfs() {
    common::require_root();
    let store = TempStore::new();
    pull_layout(&store, "whiteouts");
    let inspect: serde_json::Value =
        serde_json::from_str(&store.ok(&["inspect", "localhost/whiteouts"])).expect("inspect JSON");
    let mut lowers: Vec<std::path::PathBuf> = inspect[0]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["Path"].as_str().expect("layer path").into())
        .collect();
    lowers.reverse(); // overlayfs wants the top layer first
    let mount = common::OverlayMount::new(&lowers);
    common::assert_whiteouts_view(mount.path());
}

#[test]
fn a_blob_from_before_an_unclean_reboot_is_checked_before_it_is_trusted() {
    let store = TempStore::new();
    pull_layout(&store, "whiteouts");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let unsynced: i64 = store
        .db()
        .query_row("SELECT COUNT(*) FROM blobs WHERE unsynced_boot = ?1", [boot.trim()], |r| r.get(0))
        .expect("count");
    assert_eq!(unsynced, store.count("blobs"), "new blobs are marked as written in this boot");
    // FAULT INJECTION (a power loss cannot be caused here): the rows claim an earlier
    // boot, and one blob lost the half that never reached the disk.
    store.db().execute("UPDATE blobs SET unsynced_boot = 'an-earlier-boot'", []).expect("update");
    let largest = std::fs::read_dir(store.root().join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob");
    let bytes = std::fs::read(&largest).expect("read");
    std::fs::write(&largest, &bytes[..bytes.len() / 2]).expect("truncate");
    // The same image again: the damaged blob is noticed and stored anew, not trusted.
    pull_layout(&store, "whiteouts");
    let name = largest.file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(
        racker::digest::Digest::of(&std::fs::read(&largest).expect("read")).hex(),
        name,
        "the blob was restored"
    );
    let left: i64 = store
        .db()
        .query_row("SELECT COUNT(*) FROM blobs WHERE unsynced_boot = 'an-earlier-boot'", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "checked blobs count as durable");
}

#[test]
fn docker_schema_1_manifests_are_refused_with_the_fix() {
    let store = TempStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest =
        serde_json::json!({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": [], "history": []}).to_string();
    let hex = racker::digest::Digest::of(manifest.as_bytes()).hex().to_owned();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
    std::fs::write(dir.path().join("blobs/sha256").join(&hex), &manifest).expect("write");
    std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{hex}"), "size": manifest.len()}]});
    std::fs::write(dir.path().join("index.json"), index.to_string()).expect("write");
    let before = store.snapshot();
    let err = store.fails(&["pull", "-q", &format!("oci:{}", dir.path().display())]);
    assert!(err.contains("schema 1") && err.contains("push the image again"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(store.snapshot(), before);
}

// --- a full disk ----------------------------------------------------------------------

/// What the disk-full tests add, incompressible: its blob fits on the small store, its
/// blob and unpacked layer together do not (the case that was reported as tampering).
const BIG_BYTES: usize = 28 << 20;
const BIG_NAME: &str = "racker-test/big:latest";

/// A one-layer image holding `len` bytes of random data, its layer a plain tar.
fn big_image(len: usize) -> (fixturegen::Image, Vec<u8>) {
    let random = fixturegen::random_bytes(0x6469_736b_2066_756c, len);
    let tar =
        fixturegen::build_tar(&[fixturegen::dir(b"big/", 0o755), fixturegen::file(b"big/random.bin", 0o644, &random)])
            .expect("building the big layer");
    let layer = fixturegen::Layer { blob: tar.clone(), media_type: fixturegen::MT_TAR, tar: tar.clone() };
    (fixturegen::image("big", &[layer]), tar)
}

/// `docker save` of a one-layer image as docker before 25 writes it (uncompressed
/// layers), with `repo_tags` as its `RepoTags` (null: untagged).
fn docker_save_archive(
    path: &std::path::Path,
    (img, tar): (fixturegen::Image, Vec<u8>),
    repo_tags: serde_json::Value,
) -> std::path::PathBuf {
    let id = fixturegen::sha256_hex(&tar);
    let config = format!("{}.json", img.config.0);
    let manifest = serde_json::json!([{
        "Config": config, "RepoTags": repo_tags, "Layers": [format!("{id}/layer.tar")],
    }]);
    let files = vec![
        (config, img.config.1.clone()),
        (format!("{id}/layer.tar"), tar),
        ("manifest.json".to_owned(), serde_json::to_vec(&manifest).expect("JSON")),
    ];
    std::fs::write(path, fixturegen::archive_tar(&files).expect("archive")).expect("writing the archive");
    path.to_owned()
}

fn big_docker_save_archive(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    docker_save_archive(&dir.join("big-docker-save.tar"), big_image(len), serde_json::json!([BIG_NAME]))
}

/// The big image as an OCI archive (docker 25+, `skopeo copy oci-archive:`).
fn big_oci_archive(dir: &std::path::Path) -> std::path::PathBuf {
    let (img, _) = big_image(BIG_BYTES);
    let files = fixturegen::layout_files(&img, &[("io.containerd.image.name", &format!("docker.io/{BIG_NAME}"))]);
    let path = dir.join("big-oci-archive.tar");
    std::fs::write(&path, fixturegen::archive_tar(&files).expect("archive")).expect("writing the archive");
    path
}

/// `args` runs out of space on a small store and says so, leaving the store as it was;
/// with room made, the same command succeeds and the image is there.
fn fails_for_space_then_works(store: &SmallStore, args: &[&str], name: &str) {
    store.assert_runs_out_of_space(args);
    store.make_room();
    store.ok(args);
    store.ok(&["inspect", name]);
    assert!(store.files("ingest").is_empty(), "ingest/ left behind: {:?}", store.files("ingest"));
}

#[test]
fn load_of_a_docker_save_archive_onto_a_full_disk_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = big_docker_save_archive(dir.path(), BIG_BYTES);
    let store = SmallStore::new();
    fails_for_space_then_works(&store, &["load", "-q", "-i", archive.to_str().expect("utf-8")], BIG_NAME);
}

#[test]
fn load_of_an_oci_archive_onto_a_full_disk_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = big_oci_archive(dir.path());
    let store = SmallStore::new();
    fails_for_space_then_works(&store, &["load", "-q", "-i", archive.to_str().expect("utf-8")], BIG_NAME);
}

#[test]
fn load_of_a_compressed_archive_onto_a_full_disk_says_so() {
    // Decompressed first into ingest/: too big for the disk, it fails there.
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = big_docker_save_archive(dir.path(), 48 << 20);
    let compressed = dir.path().join("big-docker-save.tar.gz");
    let bytes = fixturegen::gzip_fast(&std::fs::read(&plain).expect("archive")).expect("gzip");
    std::fs::write(&compressed, bytes).expect("writing the archive");
    let store = SmallStore::new();
    fails_for_space_then_works(&store, &["load", "-q", "-i", compressed.to_str().expect("utf-8")], BIG_NAME);
}

#[test]
fn import_onto_a_full_disk_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("big-rootfs.tar");
    std::fs::write(&tarball, big_image(BIG_BYTES).1).expect("writing the tarball");
    let store = SmallStore::new();
    fails_for_space_then_works(&store, &["import", tarball.to_str().expect("utf-8"), BIG_NAME], BIG_NAME);
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_as_it_is() {
    let store = TempStore::new();
    load(&store, "archives/whiteouts-docker-save.tar");
    let db = store.root().join("racker.db");
    let known: i64 = store.db().pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
    {
        let conn = store.db();
        conn.pragma_update(None, "user_version", 99).expect("setting user_version");
        // Everything into the main file, so that its bytes are the whole database.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
    }
    let before = std::fs::read(&db).expect("reading the database");
    for args in [&["images"][..], &["rmi", "-f", WHITEOUTS_NAME], &["gc"]] {
        let out = store.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "racker {args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("schema version 99")
                && stderr.contains(&format!("up to {known}"))
                && stderr.contains("upgrade racker"),
            "racker {args:?}: {stderr}"
        );
    }
    assert!(std::fs::read(&db).expect("reading the database") == before, "the newer database was changed");
    assert_eq!(store.db().pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).expect("version"), 99);
}

/// `inspect`'s id and diff ids of `name`: what makes an image the same image.
fn identity(store: &TempStore, name: &str) -> (serde_json::Value, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect prints JSON");
    (v[0]["Id"].clone(), v[0]["RootFS"]["Layers"].clone())
}

/// `racker load -i image.tar.gz` (and `.zst`, `.xz`), for both kinds of archive: each,
/// compressed by the tool a user would use, loads the image the plain archive holds.
#[test]
fn load_of_gzip_zstd_and_xz_archives_gives_the_image_of_the_plain_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    for archive in ["archives/whiteouts-docker-save.tar", "archives/whiteouts-oci-archive.tar"] {
        let plain = TempStore::new();
        load(&plain, archive);
        let expected = identity(&plain, WHITEOUTS_NAME);
        for (tool, suffix) in [("gzip", "gz"), ("zstd", "zst"), ("xz", "xz")] {
            let compressed = dir.path().join(format!("{}.{suffix}", archive.replace('/', "-")));
            let out = std::process::Command::new(tool)
                .arg("-c")
                .arg(fixture(archive))
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {tool}: {e}"));
            assert!(out.status.success(), "{tool} failed");
            std::fs::write(&compressed, &out.stdout).expect("writing the compressed archive");
            let store = TempStore::new();
            let loaded = store.ok(&["load", "-i", compressed.to_str().expect("utf-8")]);
            assert_eq!(loaded, format!("Loaded image: {WHITEOUTS_NAME}\n"), "{archive} through {tool}");
            assert_eq!(identity(&store, WHITEOUTS_NAME), expected, "{archive} through {tool}: another image");
            assert_eq!(store.files("layers"), plain.files("layers"), "{archive} through {tool}");
            assert!(store.files("ingest").is_empty(), "{archive} through {tool}: the decompressed copy stayed");
        }
    }
}

/// `racker import URL NAME`: the tarball a local HTTP server serves becomes the layer the
/// same file makes, fetched once.
#[test]
fn import_from_a_url_gives_the_layer_of_the_file() {
    use crate::common::hostile::{Hostile, Reply};
    let bytes = std::fs::read(fixture("rootfs/rootfs.tar.zst")).expect("fixture");
    let server = Hostile::start(move |r| match r.path.as_str() {
        "/images/rootfs.tar.zst" => Reply::new(200, bytes.clone()),
        _ => Reply::new(404, vec![]),
    });
    let store = TempStore::new();
    let url = format!("http://{}/images/rootfs.tar.zst", server.addr());
    store.ok(&["import", "-q", &url, "from-url:1"]);
    store.ok(&["import", "-q", fixture("rootfs/rootfs.tar.zst").to_str().expect("utf-8"), "from-file:1"]);
    // The configs differ (creation time, history); the layer is the same.
    assert_eq!(identity(&store, "from-url:1").1, identity(&store, "from-file:1").1, "the same root file system");
    assert_eq!(store.count("layers"), 1);
    assert_eq!(server.count("/images/rootfs.tar.zst"), 1, "{:?}", server.requests());

    let missing = format!("http://{}/images/absent.tar", server.addr());
    let err = store.fails(&["import", &missing, "absent:1"]);
    assert!(err.contains("404") && err.contains(&missing), "the error names the URL and the status: {err}");
    assert!(store.run(&["inspect", "absent:1"]).status.code() != Some(0));
}

/// `racker pull oci:DIR:REF`: of a layout with two images, the one whose ref name is REF.
#[test]
fn pull_of_an_oci_layout_takes_the_image_its_ref_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = |text: &[u8]| {
        let tar = fixturegen::build_tar(&[fixturegen::file(b"which", 0o644, text)]).expect("tar");
        fixturegen::Layer { blob: tar.clone(), media_type: fixturegen::MT_TAR, tar }
    };
    let (one, two) = (fixturegen::image("one", &[layer(b"one\n")]), fixturegen::image("two", &[layer(b"two\n")]));
    let mut manifests = Vec::new();
    for (img, ref_name) in [(&one, "v1"), (&two, "v2")] {
        for (rel, bytes) in fixturegen::layout_files(img, &[]) {
            if rel.starts_with("blobs/") || rel == "oci-layout" {
                let path = dir.path().join(rel);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, bytes).expect("writing the layout");
            }
        }
        manifests.push(serde_json::json!({
            "mediaType": fixturegen::MT_MANIFEST,
            "digest": format!("sha256:{}", img.manifest.0),
            "size": img.manifest.1.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": fixturegen::MT_INDEX, "manifests": manifests});
    std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&index).expect("JSON")).expect("index.json");

    let store = TempStore::new();
    let layout = dir.path().display().to_string();
    store.ok(&["pull", "-q", &format!("oci:{layout}:v2")]);
    let images = store.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(images, format!("sha256:{}\n", two.config.0), "only the image named v2");
    let unpacked = store.files("layers");
    assert_eq!(unpacked.len(), 1);
    let layer_dir = store.root().join("layers").join(unpacked.first().expect("a layer"));
    assert_eq!(std::fs::read_to_string(layer_dir.join("which")).expect("the layer's file"), "two\n");

    store.ok(&["pull", "-q", &format!("oci:{layout}:v1")]);
    assert_eq!(store.count("images"), 2);
    assert_eq!(identity(&store, &format!("sha256:{}", one.config.0)).0, format!("sha256:{}", one.config.0).as_str());

    let err = store.fails(&["pull", "-q", &format!("oci:{layout}:v3")]);
    assert!(err.contains("v3") && err.contains("v1") && err.contains("v2"), "names the ref and those there are: {err}");
    assert_eq!(store.count("images"), 2);
}

/// `RACKER_ROOT` chooses the store when `--root` is not given; `--root` wins over it.
#[test]
fn racker_root_chooses_the_store() {
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let racker = |root: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_racker"))
            .env("RACKER_ROOT", root)
            .env("REGISTRY_AUTH_FILE", root.join("auth.json"))
            .args(args)
            .output()
            .expect("running racker");
        assert!(out.status.success(), "racker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (root_a, root_b) = (a.path().join("store"), b.path().join("store"));
    let id = racker(&root_a, &["import", "-q", fixture("rootfs/rootfs.tar").to_str().expect("utf-8"), "in-a:1"]);
    assert!(root_a.join("racker.db").is_file(), "the store was made where RACKER_ROOT says");
    assert_eq!(racker(&root_a, &["images", "-q", "--no-trunc"]), id);
    assert_eq!(racker(&root_b, &["images", "-q"]), "", "another RACKER_ROOT, another (empty) store");
    assert!(root_b.join("racker.db").is_file());
    // --root names the store whatever RACKER_ROOT says.
    let root_a_arg = root_a.to_str().expect("utf-8");
    assert_eq!(racker(&root_b, &["--root", root_a_arg, "images", "-q", "--no-trunc"]), id);
}
