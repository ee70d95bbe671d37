//! The snapshotters, privileged: one conformance suite run by every backend (overlay on the
//! test store's own file system, overlay through its fallback for kernels without
//! `lowerdir+`, btrfs on a loop-mounted file system made here), each check
//! a test of its own, and images of many layers. Every mount and loop device is undone by
//! guards, even on panic.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use racker::digest::Digest;
use racker::snapshot::{
    self, Driver, ImageLayers, MountStep, Mounter, OverlaySnapshotter, Snapshot, SnapshotError, Snapshotter, SysMounter,
};
use racker::store::Store;

use crate::common::btrfs::{mounts_under, BtrfsLoop, MountSweep};
use crate::common::{self, fixture, tree, TempStore};
use crate::fixturegen;

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// One backend under test, with everything it needs; fields drop in order: snapshotter,
/// leftover mounts, store, runtime dir, then the btrfs file system under them.
struct Env {
    snap: Box<dyn Snapshotter>,
    /// How this backend's snapshotter is opened (again, for `reopen`).
    open: Opener,
    _sweep: MountSweep,
    store: TempStore,
    runtime: tempfile::TempDir,
    _btrfs: Option<BtrfsLoop>,
}

impl Env {
    fn new(store: TempStore, btrfs: Option<BtrfsLoop>, open: Opener) -> Env {
        let runtime = tempfile::Builder::new().prefix("racker-run-").tempdir().expect("runtime dir");
        let sweep = MountSweep(vec![store.root().to_owned(), runtime.path().to_owned()]);
        let snap = open(&open_store(&store), runtime.path());
        Env { snap, open, _sweep: sweep, store, runtime, _btrfs: btrfs }
    }

    /// Another snapshotter on the same store, as a second racker process would open.
    fn reopen(&self) -> Box<dyn Snapshotter> {
        (self.open)(&open_store(&self.store), self.runtime.path())
    }

    fn pull_layout(&self, layout: &Path) -> ImageLayers {
        self.store.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
        let name = format!("localhost/{}", layout.file_name().expect("layout name").to_string_lossy());
        let store = open_store(&self.store);
        let record = store.image(&store.resolve(&name).expect("resolving the pulled image")).expect("image record");
        ImageLayers::of(&store, &record)
    }

    /// The directories that hold the image's stored content: its layer directories, and
    /// for btrfs its materialised subvolume (if made yet).
    fn image_dirs(&self, image: &ImageLayers) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = image.layers.iter().map(|l| l.dir.clone()).collect();
        let materialised = self.store.root().join("btrfs/images").join(image.id.hex());
        if materialised.exists() {
            dirs.push(materialised);
        }
        dirs
    }
}

/// The image's unpacked layer directories, top first, as overlayfs stacks them.
fn lowers(image: &ImageLayers) -> Vec<PathBuf> {
    image.layers.iter().rev().map(|l| l.dir.clone()).collect()
}

fn open_store(store: &TempStore) -> Store {
    Store::open(store.root()).expect("opening the store")
}

/// Opens a backend's snapshotter on a store, with ephemeral snapshots under a directory.
type Opener = Box<dyn Fn(&Store, &Path) -> Box<dyn Snapshotter>>;

fn open_driver(driver: Option<Driver>) -> Opener {
    Box::new(move |store, runtime| snapshot::open_with(store, driver, runtime).expect("opening the snapshotter"))
}

fn overlay_env() -> Env {
    Env::new(TempStore::new(), None, open_driver(Some(Driver::Overlay)))
}

/// Fault injection in front of the real kernel: `lowerdir+` is refused with EINVAL, as
/// Linux before 6.8 refuses it (a fault this host's kernel cannot produce); every other
/// call is [`SysMounter`]'s, so the overlay snapshotter's fallback, the classic
/// `lowerdir=a:b:c` string, mounts for real. It counts the classic mounts it passed on.
struct KernelWithoutLowerdirPlus {
    classic_mounts: Arc<AtomicUsize>,
}

impl Mounter for KernelWithoutLowerdirPlus {
    fn mount_fs(&self, fstype: &str, params: &[(&str, &str)], target: &Path) -> Result<(), (MountStep, io::Error)> {
        if let Some((key, value)) = params.iter().find(|(key, _)| *key == "lowerdir+") {
            let step = MountStep::Config { key: (*key).to_owned(), value: (*value).to_owned() };
            return Err((step, io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error())));
        }
        SysMounter.mount_fs(fstype, params, target)
    }

    fn mount_classic(&self, fstype: &str, data: &str, target: &Path) -> io::Result<()> {
        SysMounter.mount_classic(fstype, data, target)?;
        self.classic_mounts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        SysMounter.unmount(target)
    }
}

/// The overlay snapshotter on a kernel without `lowerdir+` (see
/// [`KernelWithoutLowerdirPlus`]), and the count of its classic mounts.
fn overlay_fallback_env() -> (Env, Arc<AtomicUsize>) {
    let classic_mounts = Arc::new(AtomicUsize::new(0));
    let counter = classic_mounts.clone();
    let open: Opener = Box::new(move |store, runtime| {
        let kernel = KernelWithoutLowerdirPlus { classic_mounts: counter.clone() };
        Box::new(OverlaySnapshotter::new(store.root(), runtime, Box::new(kernel)).expect("opening the snapshotter"))
    });
    (Env::new(TempStore::new(), None, open), classic_mounts)
}

/// btrfs chosen by detection, not by force: the store root is on btrfs.
fn btrfs_env() -> Env {
    common::require_root();
    let fs = BtrfsLoop::new();
    let store = TempStore::at(fs.path());
    let env = Env::new(store, Some(fs), open_driver(None));
    assert_eq!(env.snap.driver(), Driver::Btrfs, "a store on btrfs did not get the btrfs snapshotter");
    env
}

/// Removes a snapshot on drop, so a failing assertion leaves nothing mounted.
struct Prepared<'a> {
    snap: &'a dyn Snapshotter,
    s: Snapshot,
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        let _ = self.snap.remove(&self.s.key);
    }
}

fn prepare<'a>(snap: &'a dyn Snapshotter, key: &str, image: &ImageLayers, ephemeral: bool) -> Prepared<'a> {
    let s = snap.prepare(key, image, ephemeral).unwrap_or_else(|e| panic!("prepare {key}: {e}"));
    assert_eq!((s.key.as_str(), s.ephemeral, s.driver), (key, ephemeral, snap.driver()));
    Prepared { snap, s }
}

/// A fingerprint of trees: every entry's type, mode, owner, contents, xattrs, links.
fn fingerprint(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| {
            let t = tree::scan(d);
            format!("{}: {:?} {:?}\n", d.display(), t.entries, t.hardlinks)
        })
        .collect()
}

/// The container's writes: a new file, a modified lower file, a deleted lower file, a
/// deleted lower directory, a metadata change.
fn write_into(root: &Path, tag: &str) {
    std::fs::write(root.join("new-file"), tag).expect("creating a file");
    std::fs::write(root.join("etc/hostname"), tag).expect("modifying a lower file");
    std::fs::remove_file(root.join("usr/share/doc/readme")).expect("deleting a lower file");
    std::fs::remove_dir_all(root.join("var/lib/app")).expect("deleting a lower directory");
    rustix::fs::chown(root.join("etc/added"), Some(rustix::fs::Uid::from_raw(42)), None).expect("chown");
}

fn assert_written(root: &Path, tag: &str) {
    assert_eq!(std::fs::read_to_string(root.join("new-file")).expect("new file"), tag);
    assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).expect("hostname"), tag);
    assert!(!root.join("usr/share/doc/readme").exists() && !root.join("var/lib/app").exists());
    assert_eq!(std::fs::metadata(root.join("etc/added")).expect("added").uid(), 42);
}

fn list(snap: &dyn Snapshotter) -> Vec<String> {
    snap.list().expect("listing snapshots")
}

/// The whiteouts fixture pulled, and a kept and an ephemeral container of it: where most
/// checks start.
fn kept_and_eph(env: &Env) -> (ImageLayers, Prepared<'_>, Prepared<'_>) {
    let snap = &*env.snap;
    let image = env.pull_layout(&fixture("oci/whiteouts"));
    assert!(list(snap).is_empty());
    let kept = prepare(snap, "kept", &image, false);
    let eph = prepare(snap, "eph", &image, true);
    (image, kept, eph)
}

/// A container sees the image composed: exactly what an overlay of the layers shows.
fn composes_the_image(env: Env) {
    let (image, kept, eph) = kept_and_eph(&env);
    let reference = common::OverlayMount::new(&lowers(&image));
    for p in [&kept, &eph] {
        common::assert_whiteouts_view(&p.s.rootfs);
        tree::assert_same_tree(&p.s.rootfs, reference.path());
    }
    drop(reference);
    assert_eq!(list(&*env.snap), ["eph", "kept"]);
}

/// A key is taken until removed, whichever kind of snapshot holds it.
fn refuses_a_taken_key(env: Env) {
    let (image, kept, _eph) = kept_and_eph(&env);
    for ephemeral in [false, true] {
        let err = env.snap.prepare("kept", &image, ephemeral).expect_err("preparing a taken key");
        assert!(matches!(err, SnapshotError::AlreadyExists { .. }), "{err}");
    }
    common::assert_whiteouts_view(&kept.s.rootfs);
}

/// Writes stay in the container: not in the store, not in the other container.
fn keeps_writes_in_their_container(env: Env) {
    let (image, kept, eph) = kept_and_eph(&env);
    let stored = fingerprint(&env.image_dirs(&image));
    write_into(&kept.s.rootfs, "kept's own");
    assert_written(&kept.s.rootfs, "kept's own");
    common::assert_whiteouts_view(&eph.s.rootfs);
    write_into(&eph.s.rootfs, "eph's own");
    assert_written(&kept.s.rootfs, "kept's own");
    assert_written(&eph.s.rootfs, "eph's own");
    assert_eq!(fingerprint(&env.image_dirs(&image)), stored, "a container's writes reached the stored image");
}

/// Ephemeral writes live in memory; kept ones on disk, seen by another process too.
fn keeps_ephemeral_writes_in_memory_and_kept_ones_on_disk(env: Env) {
    let (_image, kept, eph) = kept_and_eph(&env);
    write_into(&kept.s.rootfs, "kept's own");
    write_into(&eph.s.rootfs, "eph's own");
    if env.snap.driver() == Driver::Overlay {
        let upper = env.runtime.path().join("eph/upper");
        assert_eq!(rustix::fs::statfs(&upper).expect("statfs").f_type as i64, TMPFS_MAGIC);
        let upper = env.store.root().join("snapshots/kept/upper");
        assert_eq!(std::fs::read_to_string(upper.join("new-file")).expect("kept's upper"), "kept's own");
    }
    let other = env.reopen();
    assert_eq!(list(&*other), ["eph", "kept"]);
    assert_written(&kept.s.rootfs, "kept's own");
}

/// Two prepares of one image at once (in two snapshotters, as two processes) are
/// independent.
fn prepares_one_image_twice_at_once(env: Env) {
    let snap = &*env.snap;
    let (image, _kept, _eph) = kept_and_eph(&env);
    let other = env.reopen();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| prepare(snap, "par-a", &image, false));
        let b = s.spawn(|| prepare(&*other, "par-b", &image, true));
        (a.join().expect("prepare a"), b.join().expect("prepare b"))
    });
    common::assert_whiteouts_view(&a.s.rootfs);
    write_into(&a.s.rootfs, "a");
    common::assert_whiteouts_view(&b.s.rootfs);
    assert_eq!(list(snap), ["eph", "kept", "par-a", "par-b"]);
}

/// Remove leaves no mount and no directory, of kept and ephemeral snapshots, written to
/// or not; twice is fine; list follows; the stored image is as it was.
fn removes_without_a_trace(env: Env) {
    let snap = &*env.snap;
    let (image, kept, eph) = kept_and_eph(&env);
    let stored = fingerprint(&env.image_dirs(&image));
    let (a, b) = (prepare(snap, "par-a", &image, false), prepare(snap, "par-b", &image, true));
    write_into(&kept.s.rootfs, "kept's own");
    write_into(&eph.s.rootfs, "eph's own");
    write_into(&a.s.rootfs, "a");
    let rootfs: Vec<PathBuf> = [&kept, &eph, &a, &b].iter().map(|p| p.s.rootfs.clone()).collect();
    for key in ["kept", "eph", "par-a", "par-b"] {
        snap.remove(key).unwrap_or_else(|e| panic!("remove {key}: {e}"));
        snap.remove(key).unwrap_or_else(|e| panic!("second remove {key}: {e}"));
    }
    drop((kept, eph, a, b));
    for r in &rootfs {
        assert!(!r.exists(), "{} is still there", r.display());
    }
    for dir in [env.store.root(), env.runtime.path()] {
        assert_eq!(mounts_under(dir), Vec::<PathBuf>::new(), "mounts left below {}", dir.display());
    }
    let leftovers: BTreeSet<String> = ["snapshots", "btrfs/containers"]
        .iter()
        .flat_map(|area| env.store.files(area))
        .chain(std::fs::read_dir(env.runtime.path()).into_iter().flatten().map(|e| {
            let e = e.expect("runtime entry");
            e.file_name().to_string_lossy().into_owned()
        }))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(list(snap).is_empty());
    assert_eq!(fingerprint(&env.image_dirs(&image)), stored, "the stored image changed");
    snap.remove("never-existed").expect("removing a missing snapshot");
}

/// prune keeps what live images need and drops the rest (overlay keeps nothing per
/// image); a container outlives its image's pruned data, and a new one brings it back.
fn prunes_only_what_no_live_image_needs(env: Env) {
    let snap = &*env.snap;
    let (image, kept, eph) = kept_and_eph(&env);
    drop((kept, eph));
    assert!(list(snap).is_empty());
    let id = image.id.clone();
    assert_eq!(snap.prune(std::slice::from_ref(&id)).expect("prune"), Vec::<Digest>::new());
    let held = prepare(snap, "held", &image, false);
    let pruned = snap.prune(&[]).expect("prune");
    match snap.driver() {
        Driver::Btrfs => {
            assert_eq!(pruned, std::slice::from_ref(&id));
            assert!(!env.store.root().join("btrfs/images").join(id.hex()).exists());
            assert!(env.store.files("btrfs/images").is_empty(), "{:?}", env.store.files("btrfs/images"));
        }
        Driver::Overlay => assert!(pruned.is_empty()),
    }
    common::assert_whiteouts_view(&held.s.rootfs);
    let again = prepare(snap, "again", &image, false);
    common::assert_whiteouts_view(&again.s.rootfs);
    drop((held, again));
    assert!(list(snap).is_empty());
}

/// A stopped container's snapshot holds no mount: `unmount` releases it with its writes
/// kept, `mount` gives the same root back (twice is fine), and a missing key is NotFound.
fn unmounts_and_mounts_again_with_the_writes(env: Env) {
    let (image, kept, eph) = kept_and_eph(&env);
    let snap = &*env.snap;
    write_into(&kept.s.rootfs, "kept's own");
    write_into(&eph.s.rootfs, "eph's own");
    for (p, tag) in [(&kept, "kept's own"), (&eph, "eph's own")] {
        snap.unmount(&p.s.key).expect("unmount");
        snap.unmount(&p.s.key).expect("unmounting twice");
        if snap.driver() == Driver::Overlay {
            assert!(!is_mounted(&p.s.rootfs), "{} is still mounted", p.s.rootfs.display());
        }
        let root = snap.mount(&p.s.key, &image).expect("mount");
        assert_eq!(root, p.s.rootfs);
        assert_eq!(snap.mount(&p.s.key, &image).expect("mounting twice"), root);
        assert_written(&root, tag);
    }
    assert!(matches!(snap.unmount("nothing"), Err(SnapshotError::NotFound { .. })));
    assert!(matches!(snap.mount("nothing", &image), Err(SnapshotError::NotFound { .. })));
}

/// `create` (for `racker create`) makes a kept snapshot that holds no mount: `mount`
/// gives its root at the path it named, the image's view, and writes kept over
/// `unmount`; the key is taken as by `prepare`, and `remove` leaves nothing.
fn creates_a_snapshot_without_mounting_it(env: Env) {
    let snap = &*env.snap;
    let image = env.pull_layout(&fixture("oci/whiteouts"));
    let made = Prepared { snap, s: snap.create("made", &image).expect("create") };
    assert_eq!((made.s.key.as_str(), made.s.ephemeral, made.s.driver), ("made", false, snap.driver()));
    assert_eq!(list(snap), ["made"]);
    assert!(!is_mounted(&made.s.rootfs), "{} is mounted", made.s.rootfs.display());
    assert!(matches!(snap.create("made", &image), Err(SnapshotError::AlreadyExists { .. })));
    assert!(matches!(snap.prepare("made", &image, true), Err(SnapshotError::AlreadyExists { .. })));
    let root = snap.mount("made", &image).expect("mount");
    assert_eq!(root, made.s.rootfs);
    common::assert_whiteouts_view(&root);
    write_into(&root, "made's own");
    snap.unmount("made").expect("unmount");
    assert_written(&snap.mount("made", &image).expect("mount again"), "made's own");
    drop(made);
    assert!(list(snap).is_empty());
}

fn is_mounted(p: &Path) -> bool {
    let at = format!(" {} ", p.display());
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().any(|l| l.contains(&at))
}

/// The conformance suite: every check a test of its own for each backend
/// (`overlay::<check>`, `overlay_fallback::<check>`, `btrfs::<check>`), on a store of its
/// own, so that one failure hides none of the others. `overlay_fallback` is overlay on a
/// kernel without `lowerdir+`: each check must also have mounted through the fallback.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod overlay {
            $(
                #[test]
                fn $check() {
                    super::common::require_root();
                    super::$check(super::overlay_env());
                }
            )*
        }
        mod overlay_fallback {
            $(
                #[test]
                fn $check() {
                    super::common::require_root();
                    let (env, classic_mounts) = super::overlay_fallback_env();
                    super::$check(env);
                    let n = classic_mounts.load(std::sync::atomic::Ordering::SeqCst);
                    assert!(n > 0, "no snapshot was mounted through the classic fallback");
                }
            )*
        }
        mod btrfs {
            $(
                #[test]
                fn $check() {
                    super::common::require_root();
                    super::$check(super::btrfs_env());
                }
            )*
        }
    };
}

conformance!(
    composes_the_image,
    refuses_a_taken_key,
    keeps_writes_in_their_container,
    keeps_ephemeral_writes_in_memory_and_kept_ones_on_disk,
    prepares_one_image_twice_at_once,
    removes_without_a_trace,
    prunes_only_what_no_live_image_needs,
    unmounts_and_mounts_again_with_the_writes,
    creates_a_snapshot_without_mounting_it,
);

/// An image of 120 layers, each adding one file: all 120 are visible.
fn many_layers(env: Env) {
    let layout = tempfile::Builder::new().prefix("racker-many-").tempdir().expect("layout dir");
    let layout_dir = layout.path().join("many");
    fixturegen::write_many_layers_layout(&layout_dir, 120).expect("writing the layout");
    let image = env.pull_layout(&layout_dir);
    assert_eq!(image.layers.len(), 120);
    let p = prepare(&*env.snap, "many", &image, false);
    let names: Vec<String> = std::fs::read_dir(p.s.rootfs.join("f"))
        .expect("f/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let want: Vec<String> = (0..120).map(|i| format!("{i:03}")).collect();
    assert_eq!(names, want);
    assert_eq!(std::fs::read_to_string(p.s.rootfs.join("f/119")).expect("f/119"), "119\n");
    let eph = prepare(&*env.snap, "many-eph", &image, true);
    assert_eq!(std::fs::read_dir(eph.s.rootfs.join("f")).expect("f/").count(), 120);
}

#[test]
fn overlay_mounts_an_image_of_120_layers() {
    common::require_root();
    many_layers(overlay_env());
}

#[test]
fn btrfs_materialises_an_image_of_120_layers() {
    common::require_root();
    many_layers(btrfs_env());
}

#[test]
fn btrfs_on_a_store_not_on_btrfs_is_refused_with_the_fix() {
    common::require_root();
    let store = TempStore::new();
    let err = snapshot::open(&open_store(&store), Some(Driver::Btrfs)).err().expect("btrfs on a non-btrfs store");
    assert!(matches!(err, SnapshotError::NotBtrfs { .. }), "{err}");
    assert!(err.to_string().contains("--storage-driver overlay"), "{err}");
    let auto = snapshot::open(&open_store(&store), None).expect("detecting");
    assert_eq!(auto.driver(), Driver::Overlay);
}
