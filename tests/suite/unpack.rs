//! The layer unpacker against the committed fixtures, on the real file system.
//!
//! Most of these need root (device nodes, chown, `trusted.*` xattrs, overlay mounts).
//! They fail, loudly, when not run as root: CI runs them as root, and a skipped
//! security test is worse than a failed one.

use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use racker::digest::Digest;
use racker::unpack::{apply_tar, decompress, Compression, UnpackError, UnpackOptions, UnpackStats, WhiteoutMode};

use crate::fixturegen;

const OVERLAY: UnpackOptions =
    UnpackOptions { whiteouts: WhiteoutMode::Overlay, allow_devices: true, objects: None, reflink: false };
const DELETE: UnpackOptions =
    UnpackOptions { whiteouts: WhiteoutMode::Delete, allow_devices: true, objects: None, reflink: false };

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test must run as root (it creates device nodes, chowns, sets trusted.* xattrs \
         and mounts overlayfs); run `sudo cargo test`"
    );
}

fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel);
    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn media_type(rel: &str) -> &'static str {
    if rel.ends_with(".gz") {
        fixturegen::MT_GZIP
    } else if rel.ends_with(".zst") {
        fixturegen::MT_ZSTD
    } else {
        fixturegen::MT_TAR
    }
}

/// The decompressed tar of a fixture layer, independently of the unpacker.
fn plain_tar(rel: &str) -> Vec<u8> {
    let bytes = fixture(rel);
    let mut out = Vec::new();
    if rel.ends_with(".gz") {
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
    } else if rel.ends_with(".zst") {
        out = zstd::decode_all(&bytes[..]).unwrap();
    } else {
        out = bytes;
    }
    out
}

/// Unpacks `layers/<name>` as the store does: media type → decompress → apply.
fn unpack(name: &str, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let rel = format!("layers/{name}");
    let bytes = fixture(&rel);
    let compression = Compression::from_media_type(media_type(&rel))?;
    let tar = decompress(BufReader::new(&bytes[..]), compression)?;
    apply_tar(tar, dest, opts)
}

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("getxattr {name} on {}: {e}", p.display()),
    }
}

fn assert_whiteout(p: &Path) {
    let m = meta(p);
    assert!(m.file_type().is_char_device(), "{} is not a whiteout device", p.display());
    assert_eq!(m.rdev(), 0, "{}: whiteout must be device 0/0", p.display());
    assert_eq!(m.mode() & 0o7777, 0, "{}: whiteout must be mode 0000", p.display());
}

#[test]
fn base_layer_keeps_all_metadata() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let stats = unpack("base.tar", root, &OVERLAY).unwrap();

    let tar = fixture("layers/base.tar");
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);
    let (mut files, mut size) = (0, 0);
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        if &*e.path_bytes() != b"./" {
            files += 1;
        }
        if e.header().entry_type() == tar::EntryType::Regular {
            size += e.size();
        }
    }
    assert_eq!((stats.files, stats.size), (files, size));

    let mode = |rel: &str| meta(&root.join(rel)).mode() & 0o7777;
    let owner = |rel: &str| {
        let m = meta(&root.join(rel));
        (m.uid(), m.gid())
    };
    assert_eq!(mode("bin/su-ish"), 0o4755, "setuid survives chown");
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("var/mail"), 0o2775);
    assert_eq!(owner("var/mail"), (0, 8));
    assert_eq!(mode("etc/shadow"), 0o640);
    assert_eq!(owner("etc/shadow"), (0, 42));
    assert_eq!(mode("home/user"), 0o700);
    assert_eq!(owner("home/user"), (1000, 1000));
    assert_eq!(owner("home/user/notes.txt"), (1000, 1000));
    assert_eq!(mode("home/user/notes.txt"), 0o600);
    assert_eq!(owner("bin/su-ish"), (0, 0));
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"racker\n");

    // Every entry, directories, symlinks and the root included, has the tar's mtime.
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let m = meta(e.path());
        assert_eq!(m.mtime(), fixturegen::MTIME as i64, "mtime of {}", e.path().display());
    }

    assert_eq!(fs::read_link(root.join("bin/sh-link")).unwrap(), Path::new("su-ish"));
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC"),
        "symlink targets are stored verbatim"
    );

    let (tool, link) = (meta(&root.join("usr/bin/tool")), meta(&root.join("usr/bin/tool-link")));
    assert_eq!((tool.dev(), tool.ino()), (link.dev(), link.ino()), "hardlink pair");
    assert_eq!(tool.nlink(), 2);

    let fifo = meta(&root.join("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o644);

    let dev = meta(&root.join("dev/null-ish"));
    assert!(dev.file_type().is_char_device());
    assert_eq!((rustix::fs::major(dev.rdev()), rustix::fs::minor(dev.rdev())), (1, 3));
    assert_eq!(dev.mode() & 0o7777, 0o666);

    let ping = root.join("bin/ping-ish");
    assert_eq!(xattr(&ping, "security.capability").unwrap(), fixturegen::CAP_NET_RAW_EP);
    assert_eq!(xattr(&ping, "user.racker").unwrap(), b"fixture");
    assert_eq!(mode("bin/ping-ish"), 0o755);
}

#[test]
fn devices_are_refused_unless_allowed() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let opts = UnpackOptions { whiteouts: WhiteoutMode::Overlay, allow_devices: false, objects: None, reflink: false };
    let err = unpack("base.tar", tmp.path(), &opts).unwrap_err();
    assert!(matches!(&err, UnpackError::DeviceNotAllowed { entry } if entry == "dev/null-ish"), "{err}");
}

#[test]
fn whiteouts_layer_in_overlay_notation() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let stats = unpack("whiteouts.tar.gz", root, &OVERLAY).unwrap();
    let tar = plain_tar("layers/whiteouts.tar.gz");
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);

    assert_whiteout(&root.join("etc/motd"));
    assert_whiteout(&root.join("usr/share/doc/old"));
    assert_eq!(xattr(&root.join("var/lib/app"), "trusted.overlay.opaque").unwrap(), b"y");
    assert_eq!(xattr(&root.join("etc"), "trusted.overlay.opaque"), None);
    assert_eq!(fs::read(root.join("var/lib/app/fresh")).unwrap(), b"fresh state\n");
    for e in walkdir::WalkDir::new(root) {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".wh."), "{name} left in the layer directory");
    }
}

#[test]
fn top_layer_zstd() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let stats = unpack("top.tar.zst", tmp.path(), &OVERLAY).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&plain_tar("layers/top.tar.zst")));
    assert_eq!(fs::read(tmp.path().join("etc/greeting")).unwrap(), b"hello from top\n");
}

#[test]
fn overlay_xattrs_in_the_tar_are_dropped() {
    require_root();
    use fixturegen::{dir, file};
    let tar = fixturegen::build_tar(&[
        dir(b"d/", 0o755).xattrs(&[("trusted.overlay.opaque", b"y"), ("user.keep", b"1")]),
        file(b"d/f", 0o644, b"x").xattrs(&[("trusted.overlay.redirect", b"/etc")]),
    ])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    apply_tar(&tar[..], tmp.path(), &OVERLAY).unwrap();
    let d = tmp.path().join("d");
    assert_eq!(xattr(&d, "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&d, "user.keep").unwrap(), b"1");
    assert_eq!(xattr(&d.join("f"), "trusted.overlay.redirect"), None);
}

/// Binary xattr values may hold a newline byte (journald's `user.crtime_usec`, file
/// capabilities): PAX records are read by their length, so the layer unpacks and the
/// values arrive byte for byte.
#[test]
fn xattr_values_holding_newlines_arrive_intact() {
    require_root();
    use fixturegen::file;
    const CAP: &[u8] = &[1, 0, 0, 2, 2, 0, b'\n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const CRTIME: &[u8] = &[b'\n', 0x1f, 0x0a, 0x33, 0, 0, 0, 0];
    let tar = fixturegen::build_tar(&[
        file(b"ping", 0o755, b"x").xattrs(&[("security.capability", CAP), ("user.crtime_usec", CRTIME)]),
        file(b"after", 0o644, b"y"),
    ])
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    apply_tar(&tar[..], tmp.path(), &OVERLAY).unwrap();
    assert_eq!(xattr(&tmp.path().join("ping"), "security.capability").unwrap(), CAP);
    assert_eq!(xattr(&tmp.path().join("ping"), "user.crtime_usec").unwrap(), CRTIME);
    assert_eq!(fs::read(tmp.path().join("after")).unwrap(), b"y");
}

/// A record hidden inside another record's value (`\n22 linkpath=…\n`) is not a record:
/// the symlink points where its header says, as Go's archive/tar (docker) reads it.
#[test]
fn a_pax_record_hidden_in_a_value_is_not_applied() {
    require_root();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("comment", &b"x\n27 linkpath=/etc/passwd\n"[..])]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_path("link").unwrap();
    h.set_link_name("harmless").unwrap();
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    apply_tar(&tar[..], tmp.path(), &OVERLAY).unwrap();
    assert_eq!(fs::read_link(tmp.path().join("link")).unwrap(), Path::new("harmless"));
}

/// A PAX header that lies about its records is refused, naming it.
#[test]
fn a_malformed_pax_header_is_refused() {
    require_root();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/f").unwrap();
    h.set_size(12);
    h.set_cksum();
    b.append(&h, &b"99 path=abc\n"[..]).unwrap();
    b.append_data(&mut tar::Header::new_ustar(), "f", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = apply_tar(&tar[..], tmp.path(), &OVERLAY).unwrap_err();
    assert!(err.to_string().contains("malformed pax record"), "{err}");
}

/// Applies a malicious layer into `<tmp>/dest` and returns the error.
fn refuse(name: &str) -> (UnpackError, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = unpack(&format!("{name}.tar"), &dest, &OVERLAY)
        .err()
        .unwrap_or_else(|| panic!("{name}.tar was unpacked, not refused"));
    (err, tmp)
}

fn assert_absent(p: &str) {
    assert!(!Path::new(p).exists(), "{p} exists: written outside the layer (or left over: remove it)");
}

#[test]
fn refuses_dotdot() {
    require_root();
    let (err, tmp) = refuse("evil-dotdot");
    assert!(matches!(&err, UnpackError::UnsafePath { entry, .. } if entry == "../racker-escape"), "{err}");
    assert!(!tmp.path().join("racker-escape").exists());
}

#[test]
fn refuses_absolute() {
    require_root();
    assert_absent("/etc/racker-escape");
    let (err, tmp) = refuse("evil-absolute");
    assert!(matches!(&err, UnpackError::UnsafePath { entry, .. } if entry == "/etc/racker-escape"), "{err}");
    assert_absent("/etc/racker-escape");
    assert!(!tmp.path().join("dest/etc").exists());
}

#[test]
fn refuses_symlink_escape() {
    require_root();
    assert_absent("/tmp/racker-escape");
    let (err, _tmp) = refuse("evil-symlink");
    assert!(matches!(&err, UnpackError::UnsafePath { entry, .. } if entry == "link/racker-escape"), "{err}");
    assert_eq!(
        err.to_string(),
        r#"layer entry "link/racker-escape": path passes through a symlink out of the layer root"#
    );
    assert_absent("/tmp/racker-escape");
}

fn passwd_state() -> (Vec<u8>, u64, u64) {
    let m = fs::metadata("/etc/passwd").unwrap();
    (fs::read("/etc/passwd").unwrap(), m.ino(), m.nlink())
}

#[test]
fn refuses_hardlink_escape() {
    require_root();
    let before = passwd_state();
    let (err, tmp) = refuse("evil-hardlink");
    assert!(
        matches!(&err, UnpackError::HardlinkTarget { entry, target, .. }
            if entry == "h" && target == "../../etc/passwd"),
        "{err}"
    );
    assert!(!tmp.path().join("dest/h").exists());
    assert_eq!(passwd_state(), before, "/etc/passwd changed");
}

#[test]
fn refuses_hardlink_through_symlink() {
    require_root();
    let before = passwd_state();
    let (err, tmp) = refuse("evil-hardlink-symlink");
    assert!(
        matches!(&err, UnpackError::HardlinkTarget { entry, target, reason }
            if entry == "h" && target == "l/passwd" && reason.contains("symlink")),
        "{err}"
    );
    assert!(!tmp.path().join("dest/h").exists());
    assert_eq!(passwd_state(), before, "/etc/passwd changed");
}

#[test]
fn missing_hardlink_target_is_refused() {
    require_root();
    let tar = fixturegen::build_tar(&[fixturegen::hardlink(b"h", b"nowhere")]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = apply_tar(&tar[..], tmp.path(), &OVERLAY).unwrap_err();
    assert!(matches!(&err, UnpackError::HardlinkTarget { reason, .. } if reason.contains("does not exist")), "{err}");
}

#[test]
fn compression_mismatch_is_a_clear_error() {
    let zst = fixture("layers/top.tar.zst");
    let err = decompress(BufReader::new(&zst[..]), Compression::Gzip).err().unwrap();
    assert!(matches!(err, UnpackError::CompressionMismatch { expected: Compression::Gzip, found: Compression::Zstd }));
    assert_eq!(err.to_string(), "layer declared as gzip but its data is zstd");

    // A gzip layer labelled as a plain docker tar is sniffed and accepted.
    let gz = fixture("layers/whiteouts.tar.gz");
    let c = Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar").unwrap();
    let mut out = Vec::new();
    decompress(BufReader::new(&gz[..]), c).unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, plain_tar("layers/whiteouts.tar.gz"));
}

#[test]
fn rootfs_tarballs_all_decompress_to_the_same_tar() {
    let plain = fixture("rootfs/rootfs.tar");
    for name in ["rootfs.tar", "rootfs.tar.gz", "rootfs.tar.xz", "rootfs.tar.zst"] {
        let bytes = fixture(&format!("rootfs/{name}"));
        let c = Compression::sniff(&bytes);
        let mut out = Vec::new();
        decompress(BufReader::new(&bytes[..]), c).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, plain, "{name}");
    }
}

#[test]
fn rootfs_unpacks() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = fixture("rootfs/rootfs.tar.xz");
    let tar = decompress(BufReader::new(&bytes[..]), Compression::Xz).unwrap();
    let stats = apply_tar(tar, tmp.path(), &OVERLAY).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&fixture("rootfs/rootfs.tar")));
    let os_release = fs::read_to_string(tmp.path().join("etc/os-release")).unwrap();
    assert!(os_release.contains("ID=racker-fixture"));
}

/// What a container sees below `root`: one line per path, sorted, with type, mode,
/// owner and contents (or symlink target, or device numbers).
fn visible_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = meta(e.path());
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            format!("file {:?}", String::from_utf8_lossy(&fs::read(e.path()).unwrap()))
        } else if ft.is_char_device() {
            format!("chr {}:{}", rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()))
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        out.push(format!("{rel} {:o} {}:{} {what}", m.mode() & 0o7777, m.uid(), m.gid()));
    }
    out
}

/// The merged view of base + whiteouts + top, whichever way it was made.
fn check_visible(root: &Path) {
    let tree = visible_tree(root);
    let has = |p: &str| tree.iter().any(|l| l.starts_with(&format!("{p} ")));
    assert!(!has("etc/motd"), "whited-out file visible");
    assert!(!has("usr/share/doc/old"), "whited-out directory visible");
    assert!(!has("usr/share/doc/old/a"), "whited-out directory's file visible");
    assert!(has("usr/share/doc/readme"));
    assert!(has("etc/hostname"));
    assert!(has("etc/added"));
    let app: Vec<_> = fs::read_dir(root.join("var/lib/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(app, ["fresh"], "opaque directory shows only the new layer's file");
    assert_eq!(fs::read(root.join("etc/greeting")).unwrap(), b"hello from top\n");
    assert_eq!(meta(&root.join("bin/su-ish")).mode() & 0o7777, 0o4755);
}

/// Unmounts on drop, panics included.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            eprintln!("warning: could not unmount {}", self.0.display());
        }
    }
}

#[test]
fn overlay_mount_shows_what_a_container_sees() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layer = |name: &str, file: &str| {
        let dir = tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        unpack(file, &dir, &OVERLAY).unwrap();
        dir
    };
    let base = layer("base", "base.tar");
    let wh = layer("whiteouts", "whiteouts.tar.gz");
    let top = layer("top", "top.tar.zst");
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();

    // Read-only overlay of lowers only: top first.
    let opts = format!("lowerdir={}:{}:{}", top.display(), wh.display(), base.display());
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t overlay failed: {status}");
    let guard = MountGuard(merged.clone());

    check_visible(&merged);
    let overlay_tree = visible_tree(&merged);
    drop(guard);

    // The same layers applied in place with delete-mode whiteouts agree exactly.
    let flat = tmp.path().join("flat");
    fs::create_dir(&flat).unwrap();
    for name in ["base.tar", "whiteouts.tar.gz", "top.tar.zst"] {
        unpack(name, &flat, &DELETE).unwrap();
    }
    assert_eq!(visible_tree(&flat), overlay_tree);
}

#[test]
fn delete_mode_gives_the_merged_tree() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    unpack("base.tar", tmp.path(), &DELETE).unwrap();
    let stats = unpack("whiteouts.tar.gz", tmp.path(), &DELETE).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&plain_tar("layers/whiteouts.tar.gz")));
    // No overlay notation in delete mode.
    assert_eq!(xattr(&tmp.path().join("var/lib/app"), "trusted.overlay.opaque"), None);
    unpack("top.tar.zst", tmp.path(), &DELETE).unwrap();
    check_visible(tmp.path());
}
