//! Generator of the committed test fixtures in `fixtures/`.
//!
//! Everything is built from hand-made tar headers (fixed mtimes, numeric owners, no
//! host state) and compressed with fixed settings, so the output is byte-for-byte
//! reproducible and needs no root: device nodes are just headers. Used by
//! `examples/gen_fixtures.rs` (`cargo run --example gen_fixtures -- fixtures`) and by
//! `tests/fixtures.rs`, which checks that the committed files are what this produces.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// The mtime of every entry: 2023-11-14T22:13:20Z.
pub const MTIME: u64 = 1_700_000_000;
pub const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MT_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `security.capability` for cap_net_raw+ep: `vfs_cap_data` revision 2, little endian.
pub const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic_etc: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x20, 0x00, 0x00, // permitted[0]: 1 << 13 (CAP_NET_RAW)
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

/// One tar entry, described the way the fixtures need it.
pub struct E<'a> {
    pub path: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub data: &'a [u8],
    pub link: &'a [u8],
    pub dev: (u32, u32),
    pub xattrs: &'a [(&'a str, &'a [u8])],
}

const fn base(path: &[u8], kind: EntryType, mode: u32) -> E<'_> {
    E { path, kind, mode, uid: 0, gid: 0, data: b"", link: b"", dev: (0, 0), xattrs: &[] }
}
pub const fn dir(path: &[u8], mode: u32) -> E<'_> {
    base(path, EntryType::Directory, mode)
}
pub const fn file<'a>(path: &'a [u8], mode: u32, data: &'a [u8]) -> E<'a> {
    E { data, ..base(path, EntryType::Regular, mode) }
}
pub const fn symlink<'a>(path: &'a [u8], target: &'a [u8]) -> E<'a> {
    E { link: target, ..base(path, EntryType::Symlink, 0o777) }
}
pub const fn hardlink<'a>(path: &'a [u8], target: &'a [u8]) -> E<'a> {
    E { link: target, ..base(path, EntryType::Link, 0o644) }
}
pub const fn node(path: &[u8], kind: EntryType, mode: u32, dev: (u32, u32)) -> E<'_> {
    E { dev, ..base(path, kind, mode) }
}
impl<'a> E<'a> {
    pub const fn owner(self, uid: u64, gid: u64) -> Self {
        E { uid, gid, ..self }
    }
    pub const fn xattrs(self, xattrs: &'a [(&'a str, &'a [u8])]) -> Self {
        E { xattrs, ..self }
    }
}

/// A ustar archive of `entries`, paths and link names written verbatim into the header
/// (no normalisation: the malicious fixtures need `..` and leading `/`).
pub fn build_tar(entries: &[E]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = Header::new_ustar();
        let name = &mut h.as_old_mut().name;
        if e.path.len() >= name.len() {
            return Err(io::Error::other("fixture path too long for a ustar name"));
        }
        name[..e.path.len()].copy_from_slice(e.path);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        h.set_size(e.data.len() as u64);
        if !e.link.is_empty() {
            h.set_link_name_literal(e.link)?;
        }
        if matches!(e.kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
            h.set_device_major(e.dev.0)?;
            h.set_device_minor(e.dev.1)?;
        }
        h.set_cksum();
        b.append(&h, e.data)?;
    }
    b.into_inner()
}

pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(6));
    e.write_all(data)?;
    e.finish()
}

pub fn zstd(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3)?;
    e.write_all(data)?;
    e.finish()
}

pub fn xz(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data)?;
    e.finish()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// --- layers -----------------------------------------------------------------------------

pub fn base_tar() -> io::Result<Vec<u8>> {
    use EntryType::{Char, Fifo};
    build_tar(&[
        dir(b"./", 0o755),
        dir(b"bin/", 0o755),
        file(b"bin/su-ish", 0o4755, b"#!/bin/sh\necho setuid\n"),
        file(b"bin/ping-ish", 0o755, b"#!/bin/sh\necho ping\n")
            .xattrs(&[("security.capability", &CAP_NET_RAW_EP), ("user.racker", b"fixture")]),
        symlink(b"bin/sh-link", b"su-ish"),
        dir(b"dev/", 0o755),
        node(b"dev/null-ish", Char, 0o666, (1, 3)),
        dir(b"etc/", 0o755),
        file(b"etc/hostname", 0o644, b"racker\n"),
        file(b"etc/shadow", 0o640, b"root:*:19000:0:99999:7:::\n").owner(0, 42),
        file(b"etc/motd", 0o644, b"base motd\n"),
        file(b"etc/greeting", 0o644, b"hello from base\n"),
        symlink(b"etc/localtime", b"/usr/share/zoneinfo/UTC"),
        dir(b"home/", 0o755),
        dir(b"home/user/", 0o700).owner(1000, 1000),
        file(b"home/user/notes.txt", 0o600, b"user notes\n").owner(1000, 1000),
        dir(b"run/", 0o755),
        node(b"run/fifo", Fifo, 0o644, (0, 0)),
        dir(b"tmp/", 0o1777),
        dir(b"usr/", 0o755),
        dir(b"usr/bin/", 0o755),
        file(b"usr/bin/tool", 0o755, b"tool v1\n"),
        hardlink(b"usr/bin/tool-link", b"usr/bin/tool"),
        dir(b"usr/share/", 0o755),
        dir(b"usr/share/doc/", 0o755),
        file(b"usr/share/doc/readme", 0o644, b"base readme\n"),
        dir(b"usr/share/doc/old/", 0o755),
        file(b"usr/share/doc/old/a", 0o644, b"old a\n"),
        dir(b"var/", 0o755),
        dir(b"var/lib/", 0o755),
        dir(b"var/lib/app/", 0o755),
        file(b"var/lib/app/state", 0o644, b"old state\n"),
        file(b"var/lib/app/cache", 0o644, b"old cache\n"),
        dir(b"var/mail/", 0o2775).owner(0, 8),
    ])
}

pub fn whiteouts_tar() -> io::Result<Vec<u8>> {
    build_tar(&[
        dir(b"etc/", 0o755),
        file(b"etc/.wh.motd", 0o644, b""),
        file(b"etc/added", 0o644, b"added by the whiteouts layer\n"),
        dir(b"usr/", 0o755),
        dir(b"usr/share/", 0o755),
        dir(b"usr/share/doc/", 0o755),
        file(b"usr/share/doc/.wh.old", 0o644, b""),
        dir(b"var/", 0o755),
        dir(b"var/lib/", 0o755),
        dir(b"var/lib/app/", 0o755),
        file(b"var/lib/app/.wh..wh..opq", 0o644, b""),
        file(b"var/lib/app/fresh", 0o644, b"fresh state\n"),
    ])
}

pub fn top_tar() -> io::Result<Vec<u8>> {
    build_tar(&[dir(b"etc/", 0o755), file(b"etc/greeting", 0o644, b"hello from top\n")])
}

pub fn shared_extra_tar() -> io::Result<Vec<u8>> {
    build_tar(&[dir(b"srv/", 0o755), file(b"srv/shared.txt", 0o644, b"only in the shared image\n")])
}

/// The malicious layers: (name, tar). Each is otherwise harmless.
pub fn evil_tars() -> io::Result<Vec<(&'static str, Vec<u8>)>> {
    Ok(vec![
        ("evil-dotdot", build_tar(&[file(b"ok", 0o644, b"ok\n"), file(b"../racker-escape", 0o644, b"escaped\n")])?),
        ("evil-absolute", build_tar(&[file(b"ok", 0o644, b"ok\n"), file(b"/etc/racker-escape", 0o644, b"escaped\n")])?),
        ("evil-symlink", build_tar(&[symlink(b"link", b"/tmp"), file(b"link/racker-escape", 0o644, b"escaped\n")])?),
        ("evil-hardlink", build_tar(&[hardlink(b"h", b"../../etc/passwd")])?),
        ("evil-hardlink-symlink", build_tar(&[symlink(b"l", b"/etc"), hardlink(b"h", b"l/passwd")])?),
    ])
}

pub fn rootfs_tar() -> io::Result<Vec<u8>> {
    build_tar(&[
        dir(b"./", 0o755),
        dir(b"bin/", 0o755),
        file(b"bin/hello", 0o755, b"#!/bin/sh\necho hello from the racker rootfs\n"),
        dir(b"etc/", 0o755),
        file(
            b"etc/os-release",
            0o644,
            b"NAME=\"Racker Fixture\"\nID=racker-fixture\nVERSION_ID=1\nPRETTY_NAME=\"Racker Fixture 1\"\n",
        ),
        file(b"etc/hostname", 0o644, b"fixture\n"),
        dir(b"root/", 0o700),
        dir(b"tmp/", 0o1777),
        dir(b"usr/", 0o755),
        dir(b"usr/lib/", 0o755),
        dir(b"var/", 0o755),
    ])
}

// --- OCI --------------------------------------------------------------------------------

pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    /// The uncompressed tar, whose sha256 is the diff_id.
    pub tar: Vec<u8>,
}

/// An image's blobs: (hex digest, bytes) of config, manifest and layers.
pub struct Image {
    pub config: (String, Vec<u8>),
    pub manifest: (String, Vec<u8>),
    pub layers: Vec<(String, Vec<u8>)>,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    // serde_json's map is a BTreeMap here: keys come out sorted, hence deterministic.
    serde_json::to_vec(v).expect("serialising a JSON value cannot fail")
}

pub fn image(name: &str, layers: &[Layer]) -> Image {
    image_for(name, "amd64", layers)
}

/// An image whose config says `architecture` = `arch` (`os` is always `linux`).
pub fn image_for(name: &str, arch: &str, layers: &[Layer]) -> Image {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256_hex(&l.tar))).collect();
    let history: Vec<Value> = (0..layers.len())
        .map(|i| json!({"created": CREATED, "created_by": format!("racker fixture {name}, layer {i}")}))
        .collect();
    let config = json_bytes(&json!({
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }));
    let config_hex = sha256_hex(&config);
    let layer_blobs: Vec<(String, Vec<u8>)> = layers.iter().map(|l| (sha256_hex(&l.blob), l.blob.clone())).collect();
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": layers.iter().zip(&layer_blobs).map(|(l, (hex, blob))| json!({
            "mediaType": l.media_type, "digest": format!("sha256:{hex}"), "size": blob.len(),
        })).collect::<Vec<_>>(),
    }));
    Image { config: (config_hex, config), manifest: (sha256_hex(&manifest), manifest), layers: layer_blobs }
}

/// `index.json` naming `img`'s manifest, with the given annotations.
pub fn index_json(img: &Image, annotations: &[(&str, &str)]) -> Vec<u8> {
    let ann: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": format!("sha256:{}", img.manifest.0),
            "size": img.manifest.1.len(),
            "annotations": ann,
        }],
    }))
}

/// An OCI image index blob naming each image's manifest with its platform
/// (`(image, architecture, variant)`; `os` is always `linux`).
pub fn image_index(images: &[(&Image, &str, Option<&str>)]) -> (String, Vec<u8>) {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(img, arch, variant)| {
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = Value::from(*v);
            }
            json!({
                "mediaType": MT_MANIFEST,
                "digest": format!("sha256:{}", img.manifest.0),
                "size": img.manifest.1.len(),
                "platform": platform,
            })
        })
        .collect();
    let index = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": manifests,
    }));
    (sha256_hex(&index), index)
}

/// The files of an OCI image layout whose `index.json` names one image index (`latest`)
/// that lists `images`: (relative path, bytes), sorted.
pub fn multiarch_layout_files(images: &[(&Image, &str, Option<&str>)]) -> Vec<(String, Vec<u8>)> {
    let (index_hex, index) = image_index(images);
    let top = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_INDEX,
            "digest": format!("sha256:{index_hex}"),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    }));
    let mut files = vec![
        ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
        ("index.json".to_string(), top),
        (format!("blobs/sha256/{index_hex}"), index),
    ];
    for (img, _, _) in images {
        for (hex, bytes) in std::iter::once(&img.config).chain([&img.manifest]).chain(&img.layers) {
            files.push((format!("blobs/sha256/{hex}"), bytes.clone()));
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    files
}

/// The one layer of the `multiarch` image for `arch`: `etc/arch` says which one it is.
pub fn arch_tar(arch: &str) -> io::Result<Vec<u8>> {
    let arch_line = format!("{arch}\n");
    let motd = format!("multiarch fixture, {arch} flavour\n");
    build_tar(&[
        dir(b"./", 0o755),
        dir(b"etc/", 0o755),
        file(b"etc/arch", 0o644, arch_line.as_bytes()),
        file(b"etc/motd", 0o644, motd.as_bytes()),
        dir(b"usr/", 0o755),
        dir(b"usr/bin/", 0o755),
        file(b"usr/bin/hello", 0o755, b"#!/bin/sh\necho hello\n"),
    ])
}

/// `len` pseudo-random (incompressible) bytes from a fixed seed (splitmix64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn gzip_fast(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() + data.len() / 64), flate2::Compression::new(1));
    e.write_all(data)?;
    e.finish()
}

/// Writes (at test time, not committed) an OCI layout `latest` with two small gzip
/// layers and then one big layer holding `big_len` incompressible bytes (gzip level 1).
/// Returns the image (its `layers[0..2]` are the small ones, `layers[2]` the big one).
pub fn write_big_layout(out_dir: &Path, big_len: usize) -> io::Result<Image> {
    let small_a = build_tar(&[dir(b"small-a/", 0o755), file(b"small-a/one", 0o644, b"the first small layer\n")])?;
    let small_b = build_tar(&[dir(b"small-b/", 0o755), file(b"small-b/two", 0o644, b"the second small layer\n")])?;
    let random = random_bytes(0x7261_636b_6572, big_len);
    let big = build_tar(&[dir(b"big/", 0o755), file(b"big/random.bin", 0o644, &random)])?;
    drop(random);
    let layers: Vec<Layer> = [small_a, small_b]
        .into_iter()
        .map(|tar| -> io::Result<Layer> { Ok(Layer { blob: gzip(&tar)?, media_type: MT_GZIP, tar }) })
        .chain(std::iter::once(Ok(Layer { blob: gzip_fast(&big)?, media_type: MT_GZIP, tar: big })))
        .collect::<io::Result<_>>()?;
    let img = image("big", &layers);
    for (rel, bytes) in layout_files(&img, &[("org.opencontainers.image.ref.name", "latest")]) {
        write(out_dir, &rel, &bytes)?;
    }
    Ok(img)
}

/// Writes (at test time, not committed) an OCI layout `latest` of `n` plain-tar layers:
/// layer `i` adds only the file `f/NNN` (`i`, three digits or more) holding `i` and a
/// newline. For the many-layers snapshot tests.
pub fn write_many_layers_layout(out_dir: &Path, n: usize) -> io::Result<Image> {
    let layers: Vec<Layer> = (0..n)
        .map(|i| -> io::Result<Layer> {
            let (path, data) = (format!("f/{i:03}"), format!("{i}\n"));
            let tar = build_tar(&[dir(b"f/", 0o755), file(path.as_bytes(), 0o644, data.as_bytes())])?;
            Ok(Layer { blob: tar.clone(), media_type: MT_TAR, tar })
        })
        .collect::<io::Result<_>>()?;
    let img = image("many", &layers);
    for (rel, bytes) in layout_files(&img, &[("org.opencontainers.image.ref.name", "latest")]) {
        write(out_dir, &rel, &bytes)?;
    }
    Ok(img)
}

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The files of an OCI image layout: (relative path, bytes), sorted.
pub fn layout_files(img: &Image, annotations: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut files =
        vec![("oci-layout".to_string(), OCI_LAYOUT.to_vec()), ("index.json".to_string(), index_json(img, annotations))];
    for (hex, bytes) in std::iter::once(&img.config).chain([&img.manifest]).chain(&img.layers) {
        files.push((format!("blobs/sha256/{hex}"), bytes.clone()));
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    files
}

/// A tar of plain files (and their parent directories), as image archives are.
pub fn archive_tar(files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut dirs: Vec<&str> = Vec::new();
    let mut owned: Vec<(&[u8], bool, &[u8])> = Vec::new();
    for (path, data) in files {
        for (i, _) in path.match_indices('/') {
            let prefix = &path[..=i];
            if !dirs.contains(&prefix) {
                dirs.push(prefix);
                owned.push((prefix.as_bytes(), true, b""));
            }
        }
        owned.push((path.as_bytes(), false, data));
    }
    let entries: Vec<E> =
        owned.iter().map(|(p, is_dir, data)| if *is_dir { dir(p, 0o755) } else { file(p, 0o644, data) }).collect();
    build_tar(&entries)
}

fn write(out: &Path, rel: &str, bytes: &[u8]) -> io::Result<()> {
    let path = out.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes)
}

/// Writes every fixture below `out_dir` (`layers/`, `oci/`, `archives/`, `rootfs/`).
pub fn generate(out_dir: &Path) -> io::Result<()> {
    let base = base_tar()?;
    let wh = whiteouts_tar()?;
    let top = top_tar()?;
    let extra = shared_extra_tar()?;
    let wh_gz = gzip(&wh)?;
    let top_zst = zstd(&top)?;
    let extra_gz = gzip(&extra)?;

    write(out_dir, "layers/base.tar", &base)?;
    write(out_dir, "layers/whiteouts.tar.gz", &wh_gz)?;
    write(out_dir, "layers/top.tar.zst", &top_zst)?;
    write(out_dir, "layers/shared-extra.tar.gz", &extra_gz)?;

    let base_layer = || Layer { blob: base.clone(), media_type: MT_TAR, tar: base.clone() };
    let wh_layers = [
        base_layer(),
        Layer { blob: wh_gz.clone(), media_type: MT_GZIP, tar: wh.clone() },
        Layer { blob: top_zst.clone(), media_type: MT_ZSTD, tar: top.clone() },
    ];
    let whiteouts = image("whiteouts", &wh_layers);
    let latest = [("org.opencontainers.image.ref.name", "latest")];
    for (rel, bytes) in layout_files(&whiteouts, &latest) {
        write(out_dir, &format!("oci/whiteouts/{rel}"), &bytes)?;
    }

    let shared = image("shared", &[base_layer(), Layer { blob: extra_gz.clone(), media_type: MT_GZIP, tar: extra }]);
    for (rel, bytes) in layout_files(&shared, &latest) {
        write(out_dir, &format!("oci/shared/{rel}"), &bytes)?;
    }

    for (name, tar) in evil_tars()? {
        write(out_dir, &format!("layers/{name}.tar"), &tar)?;
        let img = image(name, &[Layer { blob: tar.clone(), media_type: MT_TAR, tar }]);
        for (rel, bytes) in layout_files(&img, &latest) {
            write(out_dir, &format!("oci/{name}/{rel}"), &bytes)?;
        }
    }

    // One index, two platforms; the arm64 entry carries the variant v8 as docker's do.
    let per_arch: Vec<(&str, Option<&str>, Image)> = [("amd64", None), ("arm64", Some("v8"))]
        .into_iter()
        .map(|(arch, variant)| -> io::Result<_> {
            let tar = arch_tar(arch)?;
            let layer = Layer { blob: gzip(&tar)?, media_type: MT_GZIP, tar };
            Ok((arch, variant, image_for(&format!("multiarch-{arch}"), arch, &[layer])))
        })
        .collect::<io::Result<_>>()?;
    let entries: Vec<(&Image, &str, Option<&str>)> = per_arch.iter().map(|(a, v, img)| (img, *a, *v)).collect();
    for (rel, bytes) in multiarch_layout_files(&entries) {
        write(out_dir, &format!("oci/multiarch/{rel}"), &bytes)?;
    }

    // docker save before docker 25: manifest.json, <config hex>.json, <id>/layer.tar
    // (uncompressed), repositories.
    let mut files = Vec::new();
    let mut layer_paths = Vec::new();
    for l in &wh_layers {
        let id = sha256_hex(&l.tar);
        files.push((format!("{id}/VERSION"), b"1.0".to_vec()));
        files.push((format!("{id}/layer.tar"), l.tar.clone()));
        layer_paths.push(format!("{id}/layer.tar"));
    }
    let last_id = sha256_hex(&top);
    files.push((format!("{}.json", whiteouts.config.0), whiteouts.config.1.clone()));
    files.push((
        "manifest.json".into(),
        json_bytes(&json!([{
            "Config": format!("{}.json", whiteouts.config.0),
            "RepoTags": ["racker-fixtures/whiteouts:latest"],
            "Layers": layer_paths,
        }])),
    ));
    files.push(("repositories".into(), json_bytes(&json!({"racker-fixtures/whiteouts": {"latest": last_id}}))));
    write(out_dir, "archives/whiteouts-docker-save.tar", &archive_tar(&files)?)?;

    // docker 25+ / containerd: the OCI layout itself, named by annotations.
    let oci_files = layout_files(
        &whiteouts,
        &[
            ("io.containerd.image.name", "docker.io/racker-fixtures/whiteouts:latest"),
            ("org.opencontainers.image.ref.name", "latest"),
        ],
    );
    write(out_dir, "archives/whiteouts-oci-archive.tar", &archive_tar(&oci_files)?)?;

    let rootfs = rootfs_tar()?;
    write(out_dir, "rootfs/rootfs.tar", &rootfs)?;
    write(out_dir, "rootfs/rootfs.tar.gz", &gzip(&rootfs)?)?;
    write(out_dir, "rootfs/rootfs.tar.xz", &xz(&rootfs)?)?;
    write(out_dir, "rootfs/rootfs.tar.zst", &zstd(&rootfs)?)?;
    Ok(())
}
