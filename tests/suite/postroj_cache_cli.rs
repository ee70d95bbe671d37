//! `postroj cache ls|rm|prune` on real stores: dependency layers made as the probe makes
//! them (a container's writes committed by racker with the contract's labels, tagged
//! `localhost/postroj/deps:<short key>`) on busybox images standing in for curated
//! labels, and an apt cache filled through the apt_cache API as probes fill it.

use std::path::{Path, PathBuf};
use std::process::Output;

use postroj::apt_cache::{AptCache, IndexPolicy, ListsAccess, ReleaseKey};
use racker::digest::Digest;

use crate::common::images;
use crate::common::registry::sha256_hex;
use crate::common::{err, out};
use crate::common::{require_root, TempStore};

const BOOKWORM: &str = "localhost/postroj/debian-bookworm:latest";
const TRIXIE: &str = "localhost/postroj/debian-trixie:latest";

/// One dependency layer the test made.
struct Entry {
    key: String,
    short: String,
    image: String,
    /// The directory its own (top) layer is unpacked in.
    layer_dir: PathBuf,
}

struct Fixture {
    store: TempStore,
    _layout: tempfile::TempDir,
    apt: tempfile::TempDir,
    /// The current image of debian-bookworm, and of debian-trixie.
    bookworm: String,
    trixie: String,
}

impl Fixture {
    /// Two curated labels' images: busybox as debian-bookworm, busybox plus a layer as
    /// debian-trixie.
    fn new() -> Fixture {
        require_root();
        let store = TempStore::new();
        let layout = images::add_busybox(&store);
        store.ok(&["tag", "bb", BOOKWORM]);
        store.ok(&["run", "--name", "mk-trixie", "bb", "sh", "-c", "echo trixie > /etc/release-name"]);
        store.ok(&["commit", "-q", "mk-trixie", TRIXIE]);
        store.ok(&["rm", "mk-trixie"]);
        let apt = tempfile::tempdir().expect("tempdir");
        let bookworm = image_id(&store, BOOKWORM);
        let trixie = image_id(&store, TRIXIE);
        Fixture { store, _layout: layout, apt, bookworm, trixie }
    }

    /// A dependency layer on `base` (a reference) for the curated `label`: a container
    /// of it writes `packages.len()` files of random bytes, committed with the labels.
    fn dep_layer(&self, base: &str, label: &str, seed: &str, packages: &[&str]) -> Entry {
        let key = format!("sha256:{}", sha256_hex(seed.as_bytes()));
        let short = key[7..19].to_owned();
        let container = format!("mk-{short}");
        let script = format!(
            "mkdir -p /usr/lib/deps && for p in {}; do head -c 30000 /dev/urandom > /usr/lib/deps/$p; done",
            packages.iter().map(|p| p.split(':').next().unwrap_or("x")).collect::<Vec<_>>().join(" ")
        );
        self.store.ok(&["run", "--name", &container, base, "sh", "-c", &script]);
        let base_id = image_id(&self.store, base);
        let reference = format!("localhost/postroj/deps:{short}");
        let labels = [
            format!("LABEL org.racker.postroj.deps.key={key}"),
            format!("LABEL org.racker.postroj.deps.base={base_id}"),
            format!("LABEL org.racker.postroj.deps.label={label}"),
            format!("LABEL org.racker.postroj.deps.packages=\"{}\"", packages.join(" ")),
        ];
        let mut args = vec!["commit", "-q"];
        for label in &labels {
            args.extend(["-c", label.as_str()]);
        }
        args.extend([container.as_str(), reference.as_str()]);
        let image = self.store.ok(&args).trim().to_owned();
        self.store.ok(&["rm", &container]);
        let layer_dir = PathBuf::from(top_layer(&self.store, &image)["Path"].as_str().expect("layer path"));
        assert!(layer_dir.is_dir());
        Entry { key, short, image, layer_dir }
    }

    fn postroj(&self, args: &[&str]) -> Output {
        self.store.postroj().arg("--apt-cache").arg(self.apt.path()).args(args).output().expect("running postroj")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.postroj(args);
        assert!(o.status.success(), "postroj {args:?} failed: {}\n{}", err(&o), out(&o));
        out(&o)
    }

    fn ls_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["cache", "ls", "--format", "json"])).expect("cache ls json")
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.ok(&["cache", "ls", "-q"]).lines().map(str::to_owned).collect();
        keys.sort();
        keys
    }

    fn apt_cache(&self) -> AptCache {
        AptCache::open(self.apt.path()).expect("opening the apt cache")
    }

    /// Lists of `image` as a probe's refresh leaves them.
    fn add_lists(&self, image: &str, content: &str) {
        let lists = self.apt_cache().lists(&image.parse::<Digest>().expect("image id")).expect("lists");
        let ListsAccess::Refresh(refresh) = lists.prepare(IndexPolicy::Refresh).expect("prepare") else {
            panic!("a first prepare refreshes")
        };
        std::fs::write(refresh.dir().join("deb_dists_bookworm_main_binary-amd64_Packages"), content).expect("list");
        drop(refresh.publish().expect("publish"));
    }

    /// .debs of `release` as a probe's apt downloads them.
    fn add_debs(&self, release: &str, debs: &[(&str, &[u8])]) {
        let cache = self.apt_cache();
        let archives = cache.archives(&ReleaseKey::new(release).expect("release key")).expect("archives");
        let (workspace, _) = archives.checkout().expect("checkout");
        for (name, content) in debs {
            std::fs::write(workspace.dir().join(name), content).expect("writing a .deb");
        }
        archives.publish(&workspace, &Default::default()).expect("publish");
    }
}

fn image_id(store: &TempStore, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect json");
    v[0]["Id"].as_str().expect("id").to_owned()
}

fn top_layer(store: &TempStore, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect json");
    v[0]["Layers"].as_array().expect("layers").last().expect("a layer").clone()
}

fn images_listed(store: &TempStore) -> String {
    store.ok(&["images", "--no-trunc"])
}

#[test]
fn ls_shows_dependency_layers_and_the_apt_cache_as_table_json_and_keys() {
    let f = Fixture::new();
    let empty = f.ok(&["cache", "ls"]);
    assert!(empty.starts_with("KEY"), "{empty}");
    let a = f.dep_layer(BOOKWORM, "debian-bookworm", "a", &["lighttpd:amd64=1.4.69-1", "spawn-fcgi:amd64=1.6.4-2"]);
    let b = f.dep_layer(TRIXIE, "debian-trixie", "b", &["nginx:amd64=1.22.1-9"]);
    let gone = Digest::of(b"an image no longer in the store");
    f.add_lists(&f.bookworm, "Package: x\n");
    f.add_lists(&gone.to_string(), "Package: y\n");
    f.add_debs("debian-bookworm-amd64", &[("lighttpd_1.4.69-1_amd64.deb", b"0123456789"), ("x_1_all.deb", b"xyz")]);

    let table = f.ok(&["cache", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["KEY", "IMAGE", "BASE", "PACKAGES", "SIZE", "CREATED"], "{table}");
    let row = |short: &str| lines.iter().find(|l| l.starts_with(short)).copied().unwrap_or_else(|| panic!("{table}"));
    let row_a: Vec<&str> = row(&a.short).split_whitespace().collect();
    assert_eq!(row_a[..5], [a.short.as_str(), "debian-bookworm", &f.bookworm[7..19], "(current)", "2"], "{table}");
    assert!(row_a[5].ends_with("kB"), "the layer's size (60 kB of files): {table}");
    assert!(row(&b.short).contains("debian-trixie") && row(&b.short).contains(&f.trixie[7..19]), "{table}");
    let lists_at = lines.iter().position(|l| l.starts_with("APT PACKAGE LISTS")).expect("lists section");
    assert!(lines[lists_at].contains(&f.apt.path().display().to_string()), "{table}");
    let bookworm_lists = lines.iter().find(|l| l.starts_with(&f.bookworm[7..19])).expect("bookworm's lists");
    assert!(bookworm_lists.contains("debian-bookworm") && bookworm_lists.contains("yes"), "{bookworm_lists}");
    assert!(bookworm_lists.contains(" second") || bookworm_lists.contains("Less than"), "{bookworm_lists}");
    let gone_lists = lines.iter().find(|l| l.starts_with(gone.short())).expect("the gone image's lists");
    assert!(gone_lists.contains("<none>") && gone_lists.contains(" no "), "{gone_lists}");
    let release = lines.iter().find(|l| l.starts_with("debian-bookworm-amd64")).expect("release row");
    assert_eq!(release.split_whitespace().take(3).collect::<Vec<_>>(), ["debian-bookworm-amd64", "2", "13B"]);

    let json = f.ls_json();
    let layers = json["DependencyLayers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    let ja = layers.iter().find(|l| l["ShortKey"] == a.short.as_str()).expect("a in json");
    assert_eq!(ja["Key"], a.key.as_str());
    assert_eq!(ja["Image"], a.image.as_str());
    assert_eq!(ja["Base"], f.bookworm.as_str());
    assert_eq!(ja["BaseState"], "current");
    assert_eq!(ja["Label"], "debian-bookworm");
    assert_eq!(ja["Reference"], format!("localhost/postroj/deps:{}", a.short));
    assert_eq!(ja["Packages"], serde_json::json!(["lighttpd:amd64=1.4.69-1", "spawn-fcgi:amd64=1.6.4-2"]));
    assert_eq!(ja["Size"], top_layer(&f.store, &a.image)["UnpackedSize"]);
    assert!(ja["Size"].as_u64().expect("size") >= 60_000);
    let lists = json["AptLists"].as_array().expect("lists");
    assert_eq!(lists.len(), 2);
    let jl = lists.iter().find(|l| l["Image"] == f.bookworm.as_str()).expect("bookworm lists in json");
    assert_eq!((&jl["InStore"], &jl["Label"]), (&serde_json::json!(true), &serde_json::json!("debian-bookworm")));
    assert!(jl["RefreshedAt"].is_string() && jl["Size"].as_u64() > Some(10));
    assert_eq!(json["AptArchives"][0]["Packages"], 2);
    assert_eq!(json["AptArchives"][0]["Size"], 13);

    let mut expected = vec![a.short.clone(), b.short.clone()];
    expected.sort();
    assert_eq!(f.keys(), expected);
    let full: Vec<String> = f.ok(&["cache", "ls", "-q", "--no-trunc"]).lines().map(str::to_owned).collect();
    assert!(full.contains(&a.key) && full.contains(&b.key), "{full:?}");

    // The apt cache's root comes from POSTROJ_APT_CACHE too; a missing one is not made.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let missing = elsewhere.path().join("apt");
    let o = f.store.postroj().args(["cache", "ls", "--format", "json"]).env("POSTROJ_APT_CACHE", &missing).output();
    let o = o.expect("running postroj");
    assert!(o.status.success(), "{}", err(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(doc["AptCache"], missing.display().to_string());
    assert_eq!(doc["AptLists"], serde_json::json!([]));
    assert!(!missing.exists(), "listing made the apt cache");
}

#[test]
fn rm_by_short_key_removes_the_entry_and_frees_its_layer() {
    let f = Fixture::new();
    let a = f.dep_layer(BOOKWORM, "debian-bookworm", "a", &["lighttpd:amd64=1.4.69-1"]);
    let b = f.dep_layer(BOOKWORM, "debian-bookworm", "b", &["nginx:amd64=1.22.1-9"]);
    // Not while a container uses it.
    f.store.ok(&["run", "--name", "holder", &format!("localhost/postroj/deps:{}", a.short), "true"]);
    let o = f.postroj(&["cache", "rm", &a.short]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("container holder uses it"), "{}", err(&o));
    assert!(a.layer_dir.is_dir() && f.keys().contains(&a.short));
    f.store.ok(&["rm", "holder"]);
    let o = f.ok(&["cache", "rm", &a.short]);
    assert_eq!(o, format!("Deleted dependency layer {}\n", a.short));
    assert_eq!(f.keys(), [b.short.as_str()]);
    assert!(!images_listed(&f.store).contains(&a.image), "the image went with its tag");
    assert!(!a.layer_dir.exists(), "its layer was freed (nothing else uses it)");
    assert!(b.layer_dir.is_dir(), "another entry's layer stays");
    // The base is untouched and still boots.
    assert_eq!(image_id(&f.store, BOOKWORM), f.bookworm);
    assert_eq!(f.store.ok(&["run", "--rm", BOOKWORM, "echo", "ok"]), "ok\n");

    // By full key and by reference; --all takes what is left.
    let c = f.dep_layer(TRIXIE, "debian-trixie", "c", &["curl:amd64=7.88.1-10"]);
    f.ok(&["cache", "rm", &b.key, &format!("localhost/postroj/deps:{}", c.short)]);
    assert!(f.keys().is_empty());
    let d = f.dep_layer(TRIXIE, "debian-trixie", "d", &["curl:amd64=7.88.1-10"]);
    f.ok(&["cache", "rm", "--all"]);
    assert!(f.keys().is_empty() && !d.layer_dir.exists());
}

#[test]
fn rm_of_an_unknown_key_fails_in_one_line_and_removes_nothing() {
    let f = Fixture::new();
    let a = f.dep_layer(BOOKWORM, "debian-bookworm", "a", &["lighttpd:amd64=1.4.69-1"]);
    let before = f.store.snapshot();
    for names in [vec!["0123456789ab"], vec![a.short.as_str(), "0123456789ab"], vec!["localhost/postroj/deps:nope"]] {
        let mut args = vec!["cache", "rm"];
        args.extend(&names);
        let o = f.postroj(&args);
        assert_eq!(o.status.code(), Some(2), "{names:?}: {}", out(&o));
        let unknown = names.last().expect("a name");
        assert_eq!(
            err(&o),
            format!("Error: no dependency layer {unknown:?} in the cache (`postroj cache ls` lists them)\n"),
            "{names:?}"
        );
        assert_eq!(out(&o), "");
        assert_eq!(f.store.snapshot(), before, "{names:?} changed the store");
    }
    assert_eq!(f.keys(), [a.short.as_str()]);
    let o = f.postroj(&["cache", "rm"]);
    assert!(!o.status.success(), "rm without keys or --all");
}

#[test]
fn prune_removes_stale_entries_and_unused_apt_data_and_gc_frees_only_unshared_layers() {
    let f = Fixture::new();
    let current = f.dep_layer(BOOKWORM, "debian-bookworm", "current", &["lighttpd:amd64=1.4.69-1"]);
    let stale = f.dep_layer(TRIXIE, "debian-trixie", "stale", &["nginx:amd64=1.22.1-9"]);
    let shared = f.dep_layer(TRIXIE, "debian-trixie", "shared", &["curl:amd64=7.88.1-10"]);
    // Someone's image on top of the "shared" entry: it uses that entry's layer.
    f.store.ok(&["run", "--name", "mine", &format!("localhost/postroj/deps:{}", shared.short), "touch", "/mine"]);
    f.store.ok(&["commit", "-q", "mine", "mine:1"]);
    f.store.ok(&["rm", "mine"]);
    f.add_lists(&f.bookworm, "Package: x\n");
    f.add_lists(&f.trixie, "Package: y\n");
    f.add_debs("debian-trixie-amd64", &[("nginx_1.22.1-9_amd64.deb", b"nginx")]);

    // Nothing is stale yet: prune keeps every entry and every recent package.
    let o = f.ok(&["cache", "prune"]);
    assert_eq!(o, "Total reclaimed space: 0B\n");
    assert_eq!(f.keys().len(), 3);

    // A re-pull moves debian-trixie to another image: the entries on the old one are stale.
    f.store.ok(&["run", "--name", "repull", "bb", "sh", "-c", "echo trixie2 > /etc/release-name"]);
    f.store.ok(&["commit", "-q", "repull", TRIXIE]);
    f.store.ok(&["rm", "repull"]);
    let json = f.ls_json();
    let states: Vec<(String, String)> = json["DependencyLayers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| (l["ShortKey"].as_str().unwrap_or("").to_owned(), l["BaseState"].as_str().unwrap_or("").to_owned()))
        .collect();
    for (entry, state) in [(&current, "current"), (&stale, "stale"), (&shared, "stale")] {
        assert!(states.contains(&(entry.short.clone(), state.to_owned())), "{states:?}");
    }
    // The old trixie image, untagged by the re-pull, is removed: its lists are now of an
    // image not in the store (the entries built on it keep its layers).
    f.store.ok(&["rmi", &f.trixie]);
    assert!(!images_listed(&f.store).contains(&f.trixie));

    // An entry a container uses is kept, said on standard error; the others go.
    f.store.ok(&["run", "--name", "holder", &format!("localhost/postroj/deps:{}", stale.short), "true"]);
    let held = f.postroj(&["cache", "prune"]);
    assert!(held.status.success(), "{}", err(&held));
    assert!(err(&held).contains(&format!("Kept dependency layer {}", stale.short)), "{}", err(&held));
    assert!(err(&held).contains("container holder uses it"), "{}", err(&held));
    assert!(out(&held).contains(&format!("Deleted dependency layer {}", shared.short)), "{}", out(&held));
    let lists_gone = format!("Deleted apt package lists of image {}", &f.trixie[7..19]);
    assert!(out(&held).contains(&lists_gone), "{}", out(&held));
    assert!(stale.layer_dir.is_dir());
    f.store.ok(&["rm", "holder"]);

    let o = f.ok(&["cache", "prune"]);
    assert!(
        o.contains(&format!("Deleted dependency layer {} (stale: its base {}", stale.short, &f.trixie[7..19])),
        "{o}"
    );
    assert!(!o.contains(&current.short) && !o.contains(&f.bookworm[7..19]), "{o}");
    assert!(!o.contains("downloaded packages"), "a package used just now stays: {o}");
    assert_eq!(f.keys(), [current.short.as_str()]);

    // racker gc: the stale entry's layer is freed; the one that mine:1 uses stays.
    f.store.ok(&["gc"]);
    assert!(!stale.layer_dir.exists(), "the stale entry's layer was not freed");
    assert!(shared.layer_dir.is_dir(), "a layer another image uses was freed");
    assert!(current.layer_dir.is_dir());
    assert_eq!(f.store.ok(&["run", "--rm", "mine:1", "ls", "/usr/lib/deps"]), "curl\n");
    // Untagged images stay through gc, as before: the store's own rule, not the cache's.
    f.store.ok(&["run", "--name", "untagged", "bb", "true"]);
    let untagged = f.store.ok(&["commit", "-q", "untagged"]).trim().to_owned();
    f.store.ok(&["rm", "untagged"]);
    f.ok(&["cache", "prune"]);
    f.store.ok(&["gc"]);
    assert!(images_listed(&f.store).contains(&untagged), "gc removed an untagged image");

    // Lists of images in the store stay; --all takes every downloaded package.
    let lists: Vec<String> = f.ls_json()["AptLists"]
        .as_array()
        .expect("lists")
        .iter()
        .map(|l| l["Image"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(lists, [f.bookworm.as_str()]);
    let o = f.ok(&["cache", "prune", "--all"]);
    assert!(o.contains("Deleted 1 downloaded packages of debian-trixie-amd64 (5B)"), "{o}");
    assert_eq!(f.ls_json()["AptArchives"][0]["Packages"], 0);
    assert!(!pool_has_files(&f.apt.path().join("archives/debian-trixie-amd64/pool")));
}

#[test]
fn an_entry_without_the_labels_is_invalid_and_pruned_by_its_tag_alone() {
    let f = Fixture::new();
    // Someone tags a curated image into the repository: no labels, another name.
    f.store.ok(&["tag", BOOKWORM, "localhost/postroj/deps:000000000000"]);
    let json = f.ls_json();
    let layer = &json["DependencyLayers"][0];
    assert_eq!((&layer["ShortKey"], &layer["BaseState"]), (&"000000000000".into(), &"invalid".into()), "{json}");
    assert_eq!(layer["Key"], serde_json::Value::Null);
    let o = f.ok(&["cache", "prune"]);
    assert!(
        o.starts_with("Untagged dependency layer 000000000000 (invalid labels); its image stays: it has other names\n"),
        "{o}"
    );
    assert!(f.keys().is_empty());
    assert_eq!(image_id(&f.store, BOOKWORM), f.bookworm);
    assert_eq!(f.store.ok(&["run", "--rm", BOOKWORM, "echo", "ok"]), "ok\n");
}

fn pool_has_files(pool: &Path) -> bool {
    std::fs::read_dir(pool).map(|mut d| d.next().is_some()).unwrap_or(false)
}
