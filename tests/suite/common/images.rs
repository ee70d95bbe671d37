#![allow(dead_code)]
//! Test images for the runtime: a busybox image built from Debian's static busybox with
//! a chosen image config, and a Debian bookworm root with systemd built by mmdebstrap
//! from the configured mirror (cached across runs).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::fixturegen::{build_tar, dir, file, gzip, layout_files, sha256_hex, symlink, Image, Layer};

const BUSYBOX: &str = "/bin/busybox";
const MT_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer with the static busybox, its applets, and passwd/group files.
pub fn busybox_layer() -> Layer {
    let binary = std::fs::read(BUSYBOX).expect("Debian's busybox-static is installed (scripts/prerequisites)");
    let list = Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_owned).collect();
    let links: Vec<Vec<u8>> =
        applets.iter().filter(|a| *a != "busybox").map(|a| format!("bin/{a}").into_bytes()).collect();
    let mut entries = vec![
        dir(b"bin/", 0o755),
        file(b"bin/busybox", 0o755, &binary),
        dir(b"etc/", 0o755),
        file(b"etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
        file(b"etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\n"),
        file(b"etc/os-release", 0o644, b"ID=busybox\nNAME=busybox\n"),
        // An init that never tells systemd-nspawn it is ready.
        dir(b"sbin/", 0o755),
        symlink(b"sbin/init", b"/bin/busybox"),
        dir(b"root/", 0o700),
        dir(b"tmp/", 0o1777),
        dir(b"srv/", 0o755),
        file(b"srv/data.txt", 0o644, b"from the image\n"),
        file(b"srv/not-executable", 0o644, b"#!/bin/sh\necho no\n"),
    ];
    entries.extend(links.iter().map(|l| symlink(l, b"busybox")));
    let tar = build_tar(&entries).expect("building the busybox layer");
    Layer { blob: gzip(&tar).expect("gzip"), media_type: MT_GZIP, tar }
}

/// A layer that adds one small file, `layers/NNN`.
pub fn numbered_layer(n: usize) -> Layer {
    let path = format!("layers/{n:03}");
    let tar = build_tar(&[dir(b"layers/", 0o755), file(path.as_bytes(), 0o644, path.as_bytes())]).expect("tar");
    Layer { blob: gzip(&tar).expect("gzip"), media_type: MT_GZIP, tar }
}

/// An image of `layers` whose config section is `config` (Env, Entrypoint, Cmd, ...).
pub fn image(layers: &[Layer], config: Value) -> Image {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256_hex(&l.tar))).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("JSON");
    let config_hex = sha256_hex(&config);
    let layer_blobs: Vec<(String, Vec<u8>)> = layers.iter().map(|l| (sha256_hex(&l.blob), l.blob.clone())).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": layers.iter().zip(&layer_blobs).map(|(l, (hex, blob))| json!({
            "mediaType": l.media_type, "digest": format!("sha256:{hex}"), "size": blob.len(),
        })).collect::<Vec<_>>(),
    }))
    .expect("JSON");
    Image { config: (config_hex, config), manifest: (sha256_hex(&manifest), manifest), layers: layer_blobs }
}

/// Writes `img` as an OCI layout under `dir` (ref name `latest`) and returns `oci:DIR:latest`.
pub fn write_layout(dir: &Path, img: &Image) -> String {
    for (rel, bytes) in layout_files(img, &[("org.opencontainers.image.ref.name", "latest")]) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write layout");
    }
    format!("oci:{}:latest", dir.display())
}

/// Adds the busybox image (plus one numbered layer, so there is something to share) to
/// `store` as `bb`; the returned directory holds the layout it came from.
pub fn add_busybox(store: &crate::common::TempStore) -> tempfile::TempDir {
    add_busybox_with(store, busybox_config(), &[busybox_layer(), numbered_layer(1)])
}

/// The busybox image with `config` and `layers`, pulled into `store` and tagged `bb`.
pub fn add_busybox_with(store: &crate::common::TempStore, config: Value, layers: &[Layer]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = write_layout(dir.path(), &image(layers, config));
    store.ok(&["pull", "-q", &location]);
    let row: serde_json::Value =
        serde_json::from_str(store.ok(&["images", "--format", "json"]).lines().next().expect("an image"))
            .expect("json");
    let full = format!("{}:{}", row["Repository"].as_str().expect("repo"), row["Tag"].as_str().expect("tag"));
    store.ok(&["tag", &full, "bb"]);
    dir
}

/// The default busybox image config: a shell, docker's PATH.
pub fn busybox_config() -> Value {
    json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})
}

/// Builds a Debian bookworm minbase root tarball with mmdebstrap from the host's
/// configured mirror once, cached at `$env_var` or `default` (`--include` packages);
/// concurrent tests wait on one lock instead of building twice.
fn cached_debian_tarball(env_var: &str, default: &str, include: Option<&str>) -> PathBuf {
    let tarball = std::env::var_os(env_var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    let dir = tarball.parent().expect("cache dir").to_owned();
    std::fs::create_dir_all(&dir).expect("creating the cache dir");
    let lock = std::fs::File::create(dir.join(".build.lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    if !tarball.exists() {
        let partial = tarball.with_extension("partial.tar");
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--quiet", "--format=tar", "--variant=minbase"]);
        if let Some(include) = include {
            cmd.arg(format!("--include={include}"));
        }
        let status =
            cmd.arg("bookworm").arg(&partial).status().expect("running mmdebstrap (scripts/prerequisites installs it)");
        assert!(status.success(), "mmdebstrap failed to build {}", tarball.display());
        std::fs::rename(&partial, &tarball).expect("publishing the tarball");
    }
    tarball
}

/// Debian bookworm with systemd (`RACKER_TEST_DEBIAN` to use another tarball).
pub fn debian_rootfs_tarball() -> PathBuf {
    cached_debian_tarball(
        "RACKER_TEST_DEBIAN",
        "/var/cache/racker-test/bookworm-systemd.tar",
        Some("systemd,systemd-sysv,dbus"),
    )
}

/// Debian bookworm minbase without systemd, as the registry's official images are
/// (`RACKER_TEST_DEBIAN_MINBASE` to use another tarball).
pub fn debian_minbase_tarball() -> PathBuf {
    cached_debian_tarball("RACKER_TEST_DEBIAN_MINBASE", "/var/cache/racker-test/bookworm-minbase.tar", None)
}

/// A systemd host: Debian bookworm with systemd, machined (systemd-container) and what
/// racker drives on a host (`RACKER_TEST_SYSTEMD_HOST` to use another tarball).
pub fn debian_systemd_host_tarball() -> PathBuf {
    cached_debian_tarball(
        "RACKER_TEST_SYSTEMD_HOST",
        "/var/cache/racker-test/bookworm-systemd-host.tar",
        Some("systemd,systemd-sysv,dbus,systemd-container,ca-certificates,iproute2,nftables,procps"),
    )
}
