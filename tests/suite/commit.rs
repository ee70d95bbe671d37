//! `racker commit` on real containers: a kept busybox container's additions, changes,
//! deletions, replaced directory, hardlink, symlink and FIFO become exactly one new layer
//! that the next container of the new image sees, over base layers the store keeps once.

use std::io::Read;

use crate::common::diskfull::SmallStore;
use crate::common::images;
use crate::common::{self, require_root, TempStore};
use crate::common::{err, out};

/// A store with the busybox image (plus one numbered layer, so there is something to
/// share) as `bb`.
fn busybox_store(store: TempStore) -> (TempStore, tempfile::TempDir) {
    let dir = images::add_busybox(&store);
    (store, dir)
}

fn inspect(store: &TempStore, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect json");
    v[0].clone()
}

/// Entry names and types of a gzip layer blob in the store.
fn layer_entries(store: &TempStore, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let blob = std::fs::read(store.root().join("blobs/sha256").join(hex)).expect("layer blob");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar).expect("gzip");
    let mut archive = tar::Archive::new(&tar[..]);
    archive
        .entries()
        .expect("tar")
        .map(|e| {
            let e = e.expect("entry");
            let kind = match e.header().entry_type() {
                tar::EntryType::Directory => "dir",
                tar::EntryType::Regular => "file",
                tar::EntryType::Link => "hardlink",
                tar::EntryType::Symlink => "symlink",
                tar::EntryType::Fifo => "fifo",
                other => panic!("unexpected entry type {other:?}"),
            };
            format!("{kind} {}", e.path().expect("path").display())
        })
        .collect()
}

/// The suite's leak check (mounts, processes, snapshots), and no container record.
fn assert_clean(store: &TempStore) {
    store.assert_clean();
    assert_eq!(store.ok(&["ps", "-aq"]), "");
}

const CHANGES: &str = "set -e
rm -rf /srv && mkdir /srv && echo fresh > /srv/fresh
echo added > /root/added.txt; chmod 640 /root/added.txt; chown 1000:1000 /root/added.txt
echo changed > /etc/os-release
rm /etc/group
ln /root/added.txt /root/hard.txt
ln -s /root/added.txt /root/sym
mkfifo /root/fifo";

#[test]
fn commit_makes_one_layer_with_exactly_the_containers_changes() {
    require_root();
    let (store, _dir) = busybox_store(TempStore::new());
    store.ok(&["run", "--name", "box", "bb", "sh", "-c", CHANGES]);
    let id = store.ok(&[
        "commit",
        "-q",
        "-m",
        "my changes",
        "-a",
        "Tester <t@example.com>",
        "-c",
        "ENV COMMITTED=yes",
        "-c",
        "LABEL org.example.k=v",
        "box",
        "committed:1",
    ]);
    assert!(id.trim().starts_with("sha256:") && id.trim().len() == 71, "commit prints the image id: {id}");
    let image = inspect(&store, "committed:1");
    assert_eq!(image["Id"], id.trim());
    let base = inspect(&store, "bb");
    let layers = image["Layers"].as_array().expect("layers");
    let base_layers = base["Layers"].as_array().expect("base layers");
    assert_eq!(layers.len(), base_layers.len() + 1, "exactly one more layer");
    for (a, b) in layers.iter().zip(base_layers) {
        assert_eq!((&a["Digest"], &a["Path"]), (&b["Digest"], &b["Path"]), "base layers are shared");
    }
    let top = layers.last().expect("top layer");
    assert_eq!(top["MediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(
        layer_entries(&store, top["Digest"].as_str().expect("digest")),
        [
            "dir etc/",
            "file etc/.wh.group",
            "file etc/os-release",
            "dir root/",
            "file root/added.txt",
            "fifo root/fifo",
            "hardlink root/hard.txt",
            "symlink root/sym",
            "dir srv/",
            "file srv/.wh..wh..opq",
            "file srv/fresh",
        ],
        "the layer holds the container's changes and nothing the runtime wrote"
    );
    let config = &image["OciConfig"];
    assert_eq!(config["author"], "Tester <t@example.com>");
    assert_eq!(config["config"]["Labels"]["org.example.k"], "v");
    assert!(config["config"]["Env"].as_array().expect("env").iter().any(|e| e == "COMMITTED=yes"));
    let history = config["history"].as_array().expect("history");
    assert_eq!(history.last().expect("entry")["comment"], "my changes");

    // A container of the new image sees exactly those changes.
    let check = "cat /root/added.txt; stat -c '%a %u:%g' /root/added.txt; cat /etc/os-release; \
                 test -e /etc/group && echo still-there; ls /srv; cat /etc/passwd | wc -l; \
                 test $(stat -c %i /root/added.txt) = $(stat -c %i /root/hard.txt) && echo one-inode; \
                 readlink /root/sym; test -p /root/fifo && echo fifo; echo $COMMITTED";
    let o = store.run(&["run", "--rm", "committed:1", "sh", "-c", check]);
    assert_eq!(
        out(&o),
        "added\n640 1000:1000\nchanged\nfresh\n3\none-inode\n/root/added.txt\nfifo\nyes\n",
        "{}",
        err(&o)
    );

    // Layers and blobs of the base are stored once: one layer row and one blob per layer.
    let count = |sql: &str| -> i64 { store.db().query_row(sql, [], |r| r.get(0)).expect("count") };
    assert_eq!(count("SELECT COUNT(*) FROM layers"), 3, "busybox, layer 1, the changes");
    assert_eq!(count("SELECT COUNT(*) FROM image_layers"), 5, "2 + 3 rows name them");
    assert_eq!(count("SELECT COUNT(*) FROM images"), 2);
    // 3 layer blobs + 2 configs + 2 manifests.
    assert_eq!(count("SELECT COUNT(*) FROM blobs"), 7);
    assert_eq!(store.files("blobs/sha256").len(), 7);

    // A committed container stays as it was; a second commit of it stores nothing new.
    let blobs_before = store.files("blobs/sha256");
    let again = store.ok(&["commit", "-q", "box"]);
    assert_ne!(again, id, "a new config (new creation time) makes a new image");
    let new_blobs: Vec<_> = store.files("blobs/sha256").difference(&blobs_before).cloned().collect();
    assert_eq!(new_blobs.len(), 2, "only a config and a manifest: the layer is the same bytes ({new_blobs:?})");
    store.ok(&["rm", "box"]);
    assert_clean(&store);
}

#[test]
fn running_unknown_and_btrfs_containers_are_refused_with_a_reason() {
    require_root();
    let (store, _dir) = busybox_store(TempStore::new());
    store.ok(&["run", "-d", "--name", "busy", "bb", "sleep", "1000"]);
    let e = store.fails(&["commit", "busy"]);
    assert!(e.contains("is running") && e.contains("racker stop busy"), "{e}");
    store.ok(&["rm", "-f", "busy"]);
    let e = store.fails(&["commit", "nobody-here"]);
    assert!(e.contains("No such container: nobody-here") && e.lines().count() == 1, "{e}");
    let before = store.snapshot();
    store.ok(&["run", "--name", "gone", "bb", "true"]);
    let e = store.fails(&["commit", "gone", "bad/UPPER:case"]);
    assert!(e.contains("invalid image name"), "{e}");
    let e = store.fails(&["commit", "-c", "RUN make", "gone"]);
    assert!(e.contains("invalid change \"RUN make\""), "{e}");
    store.ok(&["rm", "gone"]);
    assert_eq!(store.snapshot(), before, "failed commits leave the store as it was");
    assert_clean(&store);

    let fs = common::btrfs::BtrfsLoop::new();
    let _sweep = common::btrfs::MountSweep(vec![fs.path().to_owned()]);
    let (on_btrfs, _dir2) = busybox_store(TempStore::at(fs.path()));
    on_btrfs.ok(&["run", "--name", "sub", "bb", "sh", "-c", "echo x > /srv/x"]);
    let e = on_btrfs.fails(&["commit", "sub"]);
    assert!(e.contains("commit needs the overlay storage driver"), "{e}");
    on_btrfs.ok(&["rm", "sub"]);
    fs.assert_clean(&on_btrfs);
}

#[test]
fn commit_onto_a_full_disk_says_so_and_keeps_the_container() {
    let store = SmallStore::new();
    let _dir = images::add_busybox(&store);
    // 28 MiB of random data: the upper directory holds it, not also its blob and layer.
    store.ok(&["run", "--name", "big", "bb", "sh", "-c", "head -c 29360128 /dev/urandom > /srv/big"]);
    store.assert_runs_out_of_space(&["commit", "big", "big:1"]);
    assert_eq!(store.ok(&["ps", "-aq"]).lines().count(), 1, "the container is kept");
    store.make_room();
    store.ok(&["commit", "big", "big:1"]);
    let o = store.run(&["run", "--rm", "big:1", "sh", "-c", "wc -c < /srv/big"]);
    assert_eq!(out(&o).trim(), "29360128", "{}", err(&o));
    store.ok(&["rm", "big"]);
    assert_clean(&store);
}
