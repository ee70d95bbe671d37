//! File objects: identical files of different layers and images are one inode in the
//! store (objects/), a container's write never reaches it, `system df` shows the
//! sharing, `export` writes each name as a file of its own, and gc removes objects no
//! layer links. Real images pulled from OCI layouts into real stores.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::common::btrfs::{BtrfsLoop, MountSweep};
use crate::common::diskfull::SmallStore;
use crate::common::{images, TempStore};
use crate::fixturegen::{build_tar, dir, file, gzip, gzip_fast, random_bytes, sha256_hex, Layer, MT_GZIP};

/// 8 KiB that both images carry at `srv/shared.dat`, with the same mode and owner.
fn shared_bytes() -> Vec<u8> {
    (0..8192u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A layer with the shared file (twice, under two names), a copy of it under another
/// mode, a small file, an empty one, and `marker` to make each layer its own.
fn layer(marker: &[u8]) -> Layer {
    let shared = shared_bytes();
    let tar = build_tar(&[
        dir(b"srv/", 0o755),
        file(b"srv/shared.dat", 0o644, &shared),
        file(b"srv/copy.dat", 0o644, &shared),
        file(b"srv/private.dat", 0o600, &shared),
        file(b"srv/small", 0o644, b"twenty bytes of data"),
        file(b"srv/empty", 0o644, b""),
        file(b"srv/marker", 0o644, marker),
    ])
    .expect("tar");
    Layer { blob: gzip(&tar).expect("gzip"), media_type: MT_GZIP, tar }
}

/// Pulls an image of busybox and `top` into `store` as `name`.
fn add(store: &TempStore, name: &str, top: Layer) -> tempfile::TempDir {
    add_with(store, name, top, "on")
}

/// [`add`], with `RACKER_FILE_OBJECTS` set to `objects` for the pull.
fn add_with(store: &TempStore, name: &str, top: Layer, objects: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let location =
        images::write_layout(dir.path(), &images::image(&[images::busybox_layer(), top], images::busybox_config()));
    let names = || -> BTreeSet<String> {
        store.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).lines().map(str::to_owned).collect()
    };
    let before = names();
    let pull = store.cmd().env("RACKER_FILE_OBJECTS", objects).args(["pull", "-q", &location]).output().expect("pull");
    assert!(pull.status.success(), "pull: {}", String::from_utf8_lossy(&pull.stderr));
    let pulled = names().difference(&before).next().expect("the pulled image's name").clone();
    store.ok(&["tag", &pulled, name]);
    store.ok(&["rmi", &pulled]);
    dir
}

/// Every `srv/NAME` of the store's layer directories.
fn layer_files(store: &TempStore, name: &str) -> Vec<PathBuf> {
    let layers = store.root().join("layers");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&layers)
        .expect("layers/")
        .flatten()
        .map(|e| e.path().join("srv").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.nlink())
}

fn objects(store: &TempStore) -> usize {
    walkdir::WalkDir::new(store.root().join("objects"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count()
}

#[test]
fn identical_files_of_two_images_are_one_object_that_containers_cannot_change() {
    let store = TempStore::new();
    let _one = add(&store, "one", layer(b"one"));
    let _two = add(&store, "two", layer(b"two"));

    // One inode for the four names (two per image), linked from objects/ too.
    let shared: Vec<(u64, u64)> =
        layer_files(&store, "shared.dat").iter().chain(&layer_files(&store, "copy.dat")).map(|p| inode(p)).collect();
    assert_eq!(shared.len(), 4, "two layers, two names each");
    assert!(shared.iter().all(|i| i.0 == shared[0].0), "one inode: {shared:?}");
    assert_eq!(shared[0].1, 5, "four layer names and the object");
    // Another mode is another object: a shared inode never changes a file's metadata.
    let private: BTreeSet<u64> = layer_files(&store, "private.dat").iter().map(|p| inode(p).0).collect();
    assert_eq!(private.len(), 1);
    assert!(!private.contains(&shared[0].0));
    for path in layer_files(&store, "private.dat") {
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o600);
    }
    // Small files are written as they are.
    // Small files too (each would take a block of its own); empty ones have nothing to share.
    assert!(layer_files(&store, "small").iter().all(|p| inode(p).1 == 3), "two layers and the object");
    assert!(layer_files(&store, "empty").iter().all(|p| inode(p).1 == 1));
    // busybox (one layer, both images) and three objects of the top layers.
    assert_eq!(objects(&store), 11, "busybox's 6 files, shared.dat, private.dat, small, two markers");

    // A container's write is its own: overlayfs copies the file up.
    store.ok(&["run", "--rm", "one", "sh", "-c", "echo changed >> /srv/shared.dat"]);
    store.ok(&["create", "--name", "writer", "one", "sh", "-c", "echo changed >> /srv/shared.dat"]);
    store.ok(&["start", "-a", "writer"]);
    let sum = store.ok(&["run", "--rm", "two", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "image two unchanged: {sum}");
    let sum = store.ok(&["run", "--rm", "one", "sha256sum", "/srv/copy.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "the other name in image one unchanged: {sum}");
    for path in layer_files(&store, "shared.dat") {
        assert_eq!(std::fs::read(&path).expect("read"), shared_bytes(), "{} unchanged", path.display());
    }
    // export writes each name as a file of its own, not as hard links between them.
    let tar = store.cmd().args(["export", "writer"]).output().expect("export").stdout;
    let mut archive = tar::Archive::new(&tar[..]);
    let kinds: Vec<(String, tar::EntryType)> = archive
        .entries()
        .expect("tar")
        .flatten()
        .map(|e| (e.path().expect("path").display().to_string(), e.header().entry_type()))
        .filter(|(p, _)| p.starts_with("srv/"))
        .collect();
    assert!(kinds.iter().filter(|(p, _)| p.ends_with(".dat")).all(|(_, k)| *k == tar::EntryType::Regular), "{kinds:?}");
    store.ok(&["rm", "writer"]);

    // system df: what the objects hold once, and what the layers would hold without them.
    let df: Vec<serde_json::Value> = store
        .ok(&["system", "df", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let layers = df.iter().find(|r| r["Type"] == "Layers").expect("Layers row");
    let stored = layers["FileObjectsStoredBytes"].as_u64().expect("stored");
    let logical = layers["FileObjectsLogicalBytes"].as_u64().expect("logical");
    assert_eq!(layers["FileObjects"], 11);
    assert!(logical >= stored + 3 * 8192, "four names of one 8 KiB object, two of another: {stored} / {logical}");
    assert!(layers["SharedFiles"][0]["Links"].as_u64().is_some_and(|n| n >= 4), "{}", layers["SharedFiles"]);
    assert!(store.ok(&["system", "df"]).contains("File objects: 11 files"));

    // Objects go with the last layer that links them (rmi frees at once, as gc does).
    store.ok(&["rmi", "two"]);
    assert_eq!(objects(&store), 10, "image one links all but image two's marker");
    store.ok(&["rmi", "one"]);
    assert_eq!(objects(&store), 0);
    // What an unpack killed after storing an object leaves (injected: the kill cannot be
    // timed): an object no layer links, which gc removes.
    let fan = store.root().join("objects").join("00");
    std::fs::create_dir_all(&fan).expect("mkdir");
    std::fs::write(fan.join("1".repeat(62)), shared_bytes()).expect("write");
    // And what one killed between its link beside the fan-out directories and the rename.
    std::fs::hard_link(fan.join("1".repeat(62)), store.root().join("objects/.link-99-0")).expect("link");
    let gc = store.ok(&["gc"]);
    assert!(gc.contains("Deleted leftover: objects/.link-99-0"), "{gc}");
    assert!(gc.contains("Deleted 1 file objects no layer links"), "{gc}");
    assert_eq!(objects(&store), 0);
    store.assert_clean();
}

#[test]
fn unpacks_of_one_file_in_parallel_end_with_one_object() {
    let store = TempStore::new();
    // Eight images whose top layers hold the same file, pulled at once.
    let layouts: Vec<(tempfile::TempDir, String)> = (0..8)
        .map(|i| {
            let dir = tempfile::tempdir().expect("tempdir");
            let marker = format!("{i}");
            let location =
                images::write_layout(dir.path(), &images::image(&[layer(marker.as_bytes())], images::busybox_config()));
            (dir, location)
        })
        .collect();
    std::thread::scope(|s| {
        for (_, location) in &layouts {
            s.spawn(|| store.ok(&["pull", "-q", location]));
        }
    });
    let inodes: BTreeSet<u64> = layer_files(&store, "shared.dat").iter().map(|p| inode(p).0).collect();
    assert_eq!(layer_files(&store, "shared.dat").len(), 8);
    assert_eq!(inodes.len(), 1, "one object, whoever stored it first");
    store.assert_clean();
}

/// `racker system fsck` with its exit code and stdout.
fn fsck(store: &TempStore, args: &[&str]) -> (Option<i32>, String) {
    let out = store.run(&[&["system", "fsck"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "fsck {args:?} wrote to stderr: {stderr}");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Flips one byte of `path` in place: bit rot, as the disk would do it.
fn rot(path: &Path) {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(100)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    f.seek(SeekFrom::Start(100)).expect("seek");
    f.write_all(&[byte[0] ^ 0xff]).expect("write");
}

#[test]
fn fsck_finds_damaged_objects_and_repair_rebuilds_the_layers_that_link_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let store = TempStore::new();
    let _one = add(&store, "one", layer(b"one"));
    let _two = add(&store, "two", layer(b"two"));
    let (code, out) = fsck(&store, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no damage"), "{out}");

    // The shared file rots on the disk (through one layer's name: it is the one inode),
    // and someone chmods one layer's private.dat, which is every layer's.
    rot(&layer_files(&store, "shared.dat")[0]);
    let private = &layer_files(&store, "private.dat")[0];
    std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, out) = fsck(&store, &[]);
    assert_eq!(code, Some(1), "damage found: {out}");
    let report: serde_json::Value =
        serde_json::from_str(&fsck(&store, &["--format", "json"]).1).expect("fsck --format json");
    let problems = report["Problems"].as_array().expect("Problems");
    let whats: Vec<&str> = problems.iter().map(|p| p["What"].as_str().expect("What")).collect();
    assert_eq!(whats.iter().filter(|w| w.starts_with("file object ")).count(), 2, "{whats:?}");
    assert_eq!(whats.iter().filter(|w| w.starts_with("layer sha256:")).count(), 2, "both top layers: {whats:?}");
    for layer in problems.iter().filter(|p| p["What"].as_str().is_some_and(|w| w.starts_with("layer"))) {
        let damage = layer["Damage"].as_str().expect("Damage");
        assert!(damage.contains("/srv/shared.dat") && damage.contains("/srv/private.dat"), "{damage}");
        assert_eq!(layer["Images"].as_array().map(Vec::len), Some(1), "{layer}");
    }
    assert!(out.contains("racker system fsck --repair"), "says how to repair: {out}");

    let (code, out) = fsck(&store, &["--repair"]);
    assert_eq!(code, Some(0), "all repaired: {out}");
    assert_eq!(out.matches("repaired: rebuilt from blob sha256:").count(), 2, "{out}");
    assert_eq!(fsck(&store, &[]).0, Some(0));
    for path in layer_files(&store, "shared.dat") {
        assert_eq!(std::fs::read(&path).expect("read"), shared_bytes(), "{} whole again", path.display());
    }
    for path in layer_files(&store, "private.dat") {
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o600, "{}", path.display());
    }
    let shared: BTreeSet<u64> = layer_files(&store, "shared.dat").iter().map(|p| inode(p).0).collect();
    assert_eq!(shared.len(), 1, "the rebuilt layers share the file again");
    let sum = store.ok(&["run", "--rm", "two", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");

    // A layer whose blob is damaged too cannot be rebuilt: fsck says what to do instead.
    let blob = store.root().join("blobs/sha256").join(sha256_hex(&layer(b"one").blob));
    rot(&blob);
    rot(&layer_files(&store, "shared.dat")[0]);
    let (code, out) = fsck(&store, &["--repair"]);
    assert_eq!(code, Some(1), "damage remains: {out}");
    assert!(out.contains(&format!("blob sha256:{}", sha256_hex(&layer(b"one").blob))), "{out}");
    assert_eq!(out.matches("NOT repaired").count(), 1, "image one's layer: {out}");
    assert!(out.contains("racker rmi") && out.contains("racker gc"), "names the way out: {out}");
    assert!(!blob.exists(), "the damaged blob is removed");
    // Which, followed, leaves a whole store.
    store.ok(&["rmi", "one"]);
    store.ok(&["gc"]);
    let _again = add(&store, "one", layer(b"one"));
    assert_eq!(fsck(&store, &[]).0, Some(0));
    let sum = store.ok(&["run", "--rm", "one", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");
    store.assert_clean();
}

/// A layer of `count` distinct files of 4 KiB (objects each) and the shared file.
fn many_files_layer(count: usize, seed: u64) -> Layer {
    let contents: Vec<(Vec<u8>, Vec<u8>)> =
        (0..count).map(|i| (format!("data/{i:05}.bin").into_bytes(), random_bytes(seed + i as u64, 4096))).collect();
    let shared = shared_bytes();
    let mut entries = vec![dir(b"data/", 0o755), file(b"data/shared.dat", 0o644, &shared)];
    entries.extend(contents.iter().map(|(path, bytes)| file(path, 0o644, bytes)));
    let tar = build_tar(&entries).expect("tar");
    Layer { blob: gzip_fast(&tar).expect("gzip"), media_type: MT_GZIP, tar }
}

#[test]
fn a_pull_killed_at_any_point_leaves_no_half_linked_object() {
    let store = TempStore::new();
    let layout = tempfile::tempdir().expect("tempdir");
    let location = images::write_layout(
        layout.path(),
        &images::image(&[images::busybox_layer(), many_files_layer(4000, 1)], images::busybox_config()),
    );
    // How long a whole pull takes here, to spread the kills over it.
    let scratch = TempStore::new();
    let started = std::time::Instant::now();
    scratch.ok(&["pull", "-q", &location]);
    let whole = started.elapsed();
    scratch.assert_clean();
    drop(scratch);

    for k in 1..=6u32 {
        let mut pull = store.cmd().args(["pull", "-q", &location]).spawn().expect("racker pull");
        std::thread::sleep(whole * k / 7);
        let _ = pull.kill(); // SIGKILL; it may have finished
        let _ = pull.wait();
        // Every object there is whole, whatever the kill interrupted.
        let (code, out) = fsck(&store, &[]);
        assert_eq!(code, Some(0), "after a kill at {k}/7 of a pull: {out}");
        store.ok(&["gc"]);
        assert!(store.files("ingest").is_empty(), "gc left ingest/: {:?}", store.files("ingest"));
        let unlinked = walkdir::WalkDir::new(store.root().join("objects"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.metadata().is_ok_and(|m| m.nlink() == 1))
            .count();
        assert_eq!(unlinked, 0, "gc leaves no object that no layer links");
        // A pull the kill missed: removed, so the next one does the work again.
        if let Some(id) = store.ok(&["images", "-q"]).lines().next() {
            store.ok(&["rmi", "-f", id]);
            store.ok(&["gc"]);
        }
    }
    store.ok(&["pull", "-q", &location]);
    assert_eq!(fsck(&store, &[]).0, Some(0));
    let id = store.ok(&["images", "-q"]).lines().next().expect("the image").to_owned();
    let out = store.ok(&["run", "--rm", &id, "sh", "-c", "cat /data/*.bin | wc -c"]);
    assert_eq!(out.trim(), (4000 * 4096).to_string());
    store.assert_clean();
}

#[test]
fn a_full_disk_mid_unpack_takes_back_the_objects_it_stored() {
    // 40 MiB of distinct 4 KiB files: the tar is staged as the blob, then the files fill the disk.
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = dir.path().join("many-files.tar");
    let tar = many_files_layer(10_000, 7).tar;
    std::fs::write(&tarball, &tar).expect("writing the tarball");
    let store = SmallStore::new();
    let args = ["import", tarball.to_str().expect("utf-8"), "many:files"];
    store.assert_runs_out_of_space(&args);
    assert_eq!(fsck(&store, &[]).0, Some(0));
    store.make_room();
    store.ok(&args);
    assert_eq!(fsck(&store, &[]).0, Some(0));
    let objects = objects(&store);
    assert_eq!(objects, 10_001, "each file an object");
    store.assert_clean();
}

#[test]
fn objects_from_before_an_unclean_reboot_are_checked_before_a_new_layer_links_them() {
    let store = TempStore::new();
    let _one = add(&store, "one", layer(b"one"));
    let marker = store.root().join("unsettled-objects");
    assert!(marker.exists(), "the boot of unsettled objects is recorded");
    // What an unclean reboot leaves (injected: a test cannot reboot): image one's layers
    // and the objects were written in an earlier boot that no syncfs settled, and the
    // shared file lost data on the way to the disk.
    std::fs::write(&marker, "an-earlier-boot").expect("marker");
    store.db().execute("UPDATE layers SET unsynced_boot = 'an-earlier-boot'", []).expect("update");
    rot(&layer_files(&store, "shared.dat")[0]);

    // A new image with the same file gets a whole one, not a link to the damaged object.
    let _two = add(&store, "two", layer(b"two"));
    let sum = store.ok(&["run", "--rm", "two", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");
    // Image one's layers are rebuilt from their blobs before they are used.
    let sum = store.ok(&["run", "--rm", "one", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");
    assert_eq!(fsck(&store, &[]).0, Some(0));
    // gc's syncfs settles them all.
    store.ok(&["gc"]);
    assert!(!marker.exists(), "settled: nothing to check after the next reboot");
    store.assert_clean();
}

#[test]
fn dedupe_turns_the_layers_of_a_store_from_before_objects_into_shared_objects() {
    let store = TempStore::new();
    // Layers as a racker before objects unpacked them: every file in place.
    let _one = add_with(&store, "one", layer(b"one"), "off");
    let _two = add_with(&store, "two", layer(b"two"), "off");
    assert_eq!(objects(&store), 0);
    assert!(layer_files(&store, "shared.dat").iter().all(|p| inode(p).1 == 1));

    let out = store.ok(&["system", "dedupe"]);
    assert!(
        out.starts_with("Stored 16 files of 3 layers"),
        "busybox's 6, 2 x (shared, copy, private, small, marker): {out}"
    );
    assert!(out.contains("5 of them shared"), "copy.dat of one, and all but the marker of two: {out}");
    // As if unpacked with objects: one inode for the four names, another for the 0600 copies.
    let shared: Vec<(u64, u64)> =
        layer_files(&store, "shared.dat").iter().chain(&layer_files(&store, "copy.dat")).map(|p| inode(p)).collect();
    assert!(shared.iter().all(|i| *i == (shared[0].0, 5)), "{shared:?}");
    for path in layer_files(&store, "private.dat") {
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), shared_bytes());
    }
    assert!(layer_files(&store, "empty").iter().all(|p| inode(p).1 == 1), "empty files stay");
    assert_eq!(objects(&store), 11);
    assert!(store.ok(&["system", "dedupe"]).starts_with("Stored 0 files"), "nothing left to do");
    assert_eq!(fsck(&store, &[]).0, Some(0));
    let sum = store.ok(&["run", "--rm", "two", "sha256sum", "/srv/private.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");
    store.assert_clean();
}

/// Where the data of `path` lies on its device (`filefrag -v`: the extents' physical
/// offsets): two files that share extents list the same.
fn extents(path: &Path) -> Vec<String> {
    let out = crate::common::btrfs::run(std::process::Command::new("filefrag").arg("-v").arg(path));
    let physical: Vec<String> = out
        .lines()
        .filter(|l| l.trim_start().split(':').next().is_some_and(|n| n.trim().parse::<u32>().is_ok()))
        .filter_map(|l| l.split(':').nth(2).map(|p| p.trim().to_owned()))
        .collect();
    assert!(!physical.is_empty(), "no extents in: {out}");
    physical
}

#[test]
fn a_btrfs_image_subvolume_shares_its_files_extents_with_the_objects() {
    crate::common::require_root();
    let fs = BtrfsLoop::new();
    let _sweep = MountSweep(vec![fs.path().to_owned()]);
    let store = TempStore::at(fs.path());
    let _one = add(&store, "one", layer(b"one"));
    // The image's subvolume is built when a container first needs it.
    let sum = store.ok(&["run", "--rm", "one", "sha256sum", "/srv/shared.dat"]);
    assert!(sum.starts_with(&sha256_hex(&shared_bytes())), "{sum}");
    let id = store.ok(&["images", "-q", "--no-trunc"]).trim().trim_start_matches("sha256:").to_owned();
    let subvolume = store.root().join("btrfs/images").join(&id);
    sync();
    for name in ["shared.dat", "private.dat"] {
        let file = subvolume.join("srv").join(name);
        assert_ne!(inode(&file).0, inode(&layer_files(&store, name)[0]).0, "a file of its own, not a link");
        assert_eq!(extents(&file), extents(&layer_files(&store, name)[0]), "{name}: the object's extents");
    }
    assert_eq!(std::fs::metadata(subvolume.join("srv/private.dat")).expect("stat").mode() & 0o7777, 0o600);
    // A container's write to it is its own (a snapshot of the subvolume: copy on write).
    store.ok(&["run", "--rm", "one", "sh", "-c", "echo changed >> /srv/shared.dat"]);
    assert_eq!(std::fs::read(layer_files(&store, "shared.dat")[0].clone()).expect("read"), shared_bytes());
    assert_eq!(std::fs::read(subvolume.join("srv/shared.dat")).expect("read"), shared_bytes());
    fs.assert_clean(&store);
}

fn sync() {
    let status = std::process::Command::new("sync").status().expect("sync");
    assert!(status.success());
}
