//! `racker pull` / `push` / `login` / `logout` against a real registry (CNCF distribution
//! on 127.0.0.1, see tests/suite/common/registry.rs), with skopeo putting images in and
//! `umoci unpack` as the reference for what the composed root must be.
//!
//! Every test starts its own registry and store. Credentials: every racker run gets
//! `REGISTRY_AUTH_FILE` pointing into the store's temporary directory (TempStore does it).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::diskfull::SmallStore;
use crate::common::registry::{sha256_hex, Registry};
use crate::common::{self, fixture, tree, OverlayMount, TempStore};
use crate::fixturegen;

// --- helpers ----------------------------------------------------------------------------

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `racker pull ARGS`, insisting on success.
fn pull(store: &TempStore, args: &[&str]) -> Output {
    let mut all = vec!["pull"];
    all.extend_from_slice(args);
    let out = store.run(&all);
    assert!(out.status.success(), "racker {all:?} failed: {}\n{}", stderr(&out), stdout(&out));
    out
}

/// A non-quiet pull's output as specified: stdout is exactly the full name; stderr ends
/// with the digest and the status line.
fn assert_pull_output(out: &Output, name: &str, digest: &str, status: &str) {
    assert_eq!(stdout(out), format!("{name}\n"), "stdout is the name alone");
    let err = stderr(out);
    assert!(err.lines().any(|l| l.trim() == format!("Digest: {digest}")), "no `Digest: {digest}` in:\n{err}");
    assert!(
        err.lines().any(|l| l.trim() == format!("Status: {status} for {name}")),
        "no `Status: {status} for {name}` in:\n{err}"
    );
}

/// A failed racker run's stderr is exactly one `Error: …` line.
fn assert_one_line_error(err: &str) {
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "the error should be one line: {err}");
    assert!(err.starts_with("Error:"), "{err}");
}

fn inspect(store: &TempStore, name: &str) -> serde_json::Value {
    serde_json::from_str(&store.ok(&["inspect", name])).expect("inspect prints JSON")
}

/// The image's layers composed read-only with overlayfs, as a container gets them.
fn composed_root(store: &TempStore, name: &str) -> OverlayMount {
    let mut lowers: Vec<PathBuf> = inspect(store, name)[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l["Path"].as_str().expect("layer Path").into())
        .collect();
    lowers.reverse(); // overlayfs wants the top layer first
    OverlayMount::new(&lowers)
}

/// The store holds exactly the blobs the image consists of.
fn assert_store_blobs(store: &TempStore, expected: &BTreeSet<String>) {
    let blobs = store.files("blobs/sha256");
    assert_eq!(&blobs, expected, "the store's blobs are not exactly manifest + config + layers");
    assert_eq!(store.count("blobs"), blobs.len() as i64);
}

fn integrity_ok(store: &TempStore) {
    let check: String = store.db().query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
}

/// The store's snapshot without its `ingest:` line.
fn snapshot_without_ingest(store: &TempStore) -> String {
    store.snapshot().lines().filter(|l| !l.starts_with("ingest:")).collect::<Vec<_>>().join("\n")
}

/// sha256 hex and size of the regular files below `dir` whose size `want_size` accepts
/// (tolerating files that vanish or grow while a racker works there).
fn file_hashes(dir: &Path, want_size: impl Fn(u64) -> bool) -> Vec<(String, u64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.metadata().is_ok_and(|m| want_size(m.len())))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((sha256_hex(&bytes), bytes.len() as u64))
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn auth_json(entries: &[(&str, &str, &str)]) -> String {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(host, user, pass)| {
            (host.to_string(), serde_json::json!({"auth": base64(format!("{user}:{pass}").as_bytes())}))
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// Pushes a committed OCI layout fixture.
fn push_fixture(reg: &Registry, layout: &str, repo_tag: &str) {
    reg.skopeo_copy_oci(&fixture(&format!("oci/{layout}")), "latest", repo_tag);
}

/// Pull of `repo_tag` into a fresh store: output, blob set and composed root as specified.
/// `platform`: `None` for the default (linux/amd64), or `(flag value, arch, variant)`.
fn pull_and_check(reg: &Registry, repo_tag: &str, platform: Option<(&str, &str, Option<&str>)>) {
    common::require_root();
    let store = TempStore::new();
    let name = reg.name(repo_tag);
    let mut args = vec![];
    if let Some((flag, _, _)) = platform {
        args.extend(["--platform", flag]);
    }
    args.push(&name);
    let out = pull(&store, &args);
    let top_digest = reg.manifest_digest(repo_tag);
    assert_pull_output(&out, &name, &top_digest, "Downloaded newer image");

    let (arch, variant) = platform.map_or(("amd64", None), |(_, a, v)| (a, v));
    let platform_ref = reg.platform_ref(repo_tag, arch);
    let expected = reg.image_blobs(&platform_ref);
    if platform_ref == repo_tag {
        assert_store_blobs(&store, &expected);
    } else {
        // From an index: the platform's manifest, config and layers; the index itself may
        // be kept too (docker keeps it), nothing of another platform.
        let blobs = store.files("blobs/sha256");
        let index = top_digest.trim_start_matches("sha256:").to_owned();
        let extra: BTreeSet<_> = blobs.difference(&expected).cloned().collect();
        assert!(
            expected.is_subset(&blobs) && extra.iter().all(|b| *b == index),
            "store blobs {blobs:?}, expected {expected:?} (+ maybe the index {index})"
        );
    }
    let config = reg.raw_config(&platform_ref);
    let image = inspect(&store, &name);
    assert_eq!(
        image[0]["Id"].as_str(),
        Some(format!("sha256:{}", sha256_hex(&config)).as_str()),
        "the image id is the config digest"
    );
    let root = composed_root(&store, &name);
    let reference = reg.umoci_rootfs_for(repo_tag, arch, variant);
    tree::assert_same_tree(root.path(), &reference);
    integrity_ok(&store);
}

// --- the harness itself (passes without racker's registry client) ----------------------

#[test]
fn harness_registry_push_inspect_access_log_and_corruption() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let manifest = reg.manifest("whiteouts:latest");
    let layers = manifest["layers"].as_array().expect("layers").clone();
    assert_eq!(layers.len(), 3);
    // skopeo gzips the plain tar layer on the way; gzip and zstd layers stay as they are.
    let types: Vec<&str> = layers.iter().map(|l| l["mediaType"].as_str().expect("mediaType")).collect();
    assert_eq!(types, [fixturegen::MT_GZIP, fixturegen::MT_GZIP, fixturegen::MT_ZSTD]);
    let config = reg.raw_config("whiteouts:latest");
    assert_eq!(manifest["config"]["digest"], format!("sha256:{}", sha256_hex(&config)));
    let blobs = reg.image_blobs("whiteouts:latest");
    assert_eq!(blobs.len(), 5);
    for hex in &blobs {
        assert!(reg.blob_path(hex).is_file(), "{hex} not in the storage");
    }

    let layer = layers[1]["digest"].as_str().expect("digest").to_owned();
    assert_eq!(reg.blob_gets(&layer), 0);
    let gets_before = reg.repo_blob_gets("whiteouts"); // raw_config fetched the config
    let rootfs = reg.umoci_rootfs("whiteouts:latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/greeting")).expect("greeting"), "hello from top\n");
    assert!(!rootfs.join("etc/motd").exists(), "umoci applied the whiteout");
    assert_eq!(reg.blob_gets(&layer), 1, "one GET of the layer by skopeo");
    assert_eq!(reg.repo_blob_gets("whiteouts"), gets_before + 4, "config + 3 layers");
    assert!(reg.manifest_gets("whiteouts") >= 1);

    // A corrupted blob is served as is and a verifying client refuses it; flipping the
    // bit back restores it.
    reg.corrupt_blob(&layer);
    let dest = tempfile::tempdir().expect("tempdir");
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", dest.path().join("auth.json"))
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}", reg.name("whiteouts:latest")))
        .arg(format!("oci:{}:x", dest.path().join("l").display()))
        .output()
        .expect("skopeo");
    assert!(!out.status.success(), "skopeo accepted a corrupted blob");
    assert!(stderr(&out).contains("Digest did not match"), "skopeo's complaint: {}", stderr(&out));
    reg.corrupt_blob(&layer);
    reg.umoci_rootfs("whiteouts:latest");
}

#[test]
fn harness_zstd_and_multiarch_pushes() {
    let reg = Registry::start();
    // The same image in gzip first, so that skopeo's blob info cache knows gzip blobs of
    // these layers on this registry: the zstd push must not substitute them.
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    reg.skopeo_copy_oci_zstd(&fixture("oci/whiteouts"), "latest", "whiteouts-zstd:latest");
    assert_eq!(
        reg.raw_config("whiteouts-zstd:latest"),
        reg.raw_config("whiteouts:latest"),
        "recompression keeps the config (same diff_ids)"
    );
    let rootfs = reg.umoci_rootfs("whiteouts-zstd:latest");
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/added")).expect("added"), "added by the whiteouts layer\n");

    push_fixture(&reg, "multiarch", "multiarch:latest");
    let index = reg.manifest("multiarch:latest");
    assert_eq!(index["mediaType"], fixturegen::MT_INDEX);
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let platform_ref = reg.platform_ref("multiarch:latest", arch);
        assert!(platform_ref.starts_with("multiarch@sha256:"), "{platform_ref}");
        let config: serde_json::Value = serde_json::from_slice(&reg.raw_config(&platform_ref)).expect("config JSON");
        assert_eq!(config["architecture"], arch);
        let rootfs = reg.umoci_rootfs_for("multiarch:latest", arch, variant);
        assert_eq!(std::fs::read_to_string(rootfs.join("etc/arch")).expect("etc/arch"), format!("{arch}\n"));
    }
}

#[test]
fn harness_auth_registry_wants_credentials() {
    let reg = Registry::start_with_auth("tester", "s3cret");
    push_fixture(&reg, "shared", "shared:latest"); // with --dest-creds
    assert_eq!(reg.manifest("shared:latest")["layers"].as_array().map(Vec::len), Some(2));
    let nocreds = tempfile::tempdir().expect("tempdir");
    let out = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", nocreds.path().join("auth.json"))
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", reg.name("shared:latest")))
        .output()
        .expect("skopeo");
    assert!(!out.status.success(), "the registry served without credentials");
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
}

#[test]
fn harness_tree_comparison_matches_a_layout_pull_and_catches_differences() {
    // racker's existing `pull oci:` against umoci: validates the comparison itself.
    common::require_root();
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let reference = reg.umoci_rootfs("whiteouts:latest");
    let store = TempStore::new();
    store.ok(&["pull", "-q", &format!("oci:{}", fixture("oci/whiteouts").display())]);
    let root = composed_root(&store, "localhost/whiteouts");
    tree::assert_same_tree(root.path(), &reference);
    let scanned = tree::scan(root.path());
    assert_eq!(scanned.hardlinks.len(), 1, "usr/bin/tool and tool-link: {:?}", scanned.hardlinks);
    assert!(scanned.entries[Path::new("bin/ping-ish")].xattrs.contains_key("security.capability"));

    let copy = tempfile::tempdir().expect("tempdir");
    let changed = copy.path().join("rootfs");
    let status = Command::new("cp").arg("-a").arg(&reference).arg(&changed).status().expect("cp");
    assert!(status.success());
    assert!(tree::diff(&changed, &reference).is_empty(), "cp -a is faithful");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(changed.join("etc/hostname"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(changed.join("etc/added"), "other\n").expect("write");
    std::fs::remove_file(changed.join("etc/greeting")).expect("rm");
    std::os::unix::fs::lchown(changed.join("etc/localtime"), Some(1), None).expect("chown");
    let differences = tree::diff(&changed, &reference);
    assert_eq!(differences.len(), 4, "{differences:#?}");
    for path in ["etc/hostname", "etc/added", "etc/greeting", "etc/localtime"] {
        assert!(differences.iter().any(|d| d.contains(path)), "{path} not reported: {differences:#?}");
    }
}

// --- pulls --------------------------------------------------------------------------------

#[test]
fn pull_of_a_gzip_image_with_a_shared_base_layer() {
    common::require_root();
    let reg = Registry::start();
    push_fixture(&reg, "shared", "shared:latest");
    pull_and_check(&reg, "shared:latest", None);
    // Also: the docker:// prefix is accepted; the name printed is without the transport.
    let store = TempStore::new();
    let name = reg.name("shared:latest");
    let out = pull(&store, &[&format!("docker://{name}")]);
    assert_eq!(stdout(&out), format!("{name}\n"));
    assert_eq!(store.count("images"), 1);
}

#[test]
fn tls_verify_false_pulls_and_pushes_through_a_self_signed_certificate() {
    let reg = Registry::start_tls();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let store = TempStore::new();
    let before = store.snapshot();
    let name = reg.name("whiteouts:latest");
    // Checked, the certificate has no issuer the host trusts: refused, and said so.
    let refused = |verb: &str, name: &str| {
        let out = store.run(&[verb, "-q", "--tls-verify=true", name]);
        assert!(!out.status.success(), "{verb} with certificate checks succeeded");
        let err = stderr(&out);
        assert_one_line_error(&err);
        assert!(err.contains(&reg.addr()) && err.to_lowercase().contains("certificate"), "{verb}: {err}");
    };
    refused("pull", &name);
    assert_eq!(store.snapshot(), before, "a refused pull changed the store");
    // Unchecked: the same registry, over HTTPS, the only thing it speaks.
    let out = pull(&store, &["--tls-verify=false", &name]);
    assert_pull_output(&out, &name, &reg.manifest_digest("whiteouts:latest"), "Downloaded newer image");
    assert_store_blobs(&store, &reg.image_blobs("whiteouts:latest"));
    // Without the flag a loopback registry needs no valid certificate (as in docker).
    pull(&store, &["-q", &name]);

    let id = store.ok(&["images", "-q", "--no-trunc"]).trim().to_owned();
    let pushed = reg.name("pushed:1");
    store.ok(&["tag", &name, &pushed]);
    refused("push", &pushed);
    store.ok(&["push", "-q", "--tls-verify=false", &pushed]);
    assert_eq!(format!("sha256:{}", sha256_hex(&reg.raw_config("pushed:1"))), id, "the pushed image is the same");
}

#[test]
fn pull_of_a_multi_layer_image_with_whiteouts_gzip_and_zstd_layers() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    pull_and_check(&reg, "whiteouts:latest", None);
}

#[test]
fn pull_of_an_all_zstd_image() {
    let reg = Registry::start();
    reg.skopeo_copy_oci_zstd(&fixture("oci/whiteouts"), "latest", "zstd:latest");
    pull_and_check(&reg, "zstd:latest", None);
}

#[test]
fn pull_of_a_multiarch_index_picks_the_platform() {
    let reg = Registry::start();
    push_fixture(&reg, "multiarch", "multiarch:latest");
    pull_and_check(&reg, "multiarch:latest", None);
    pull_and_check(&reg, "multiarch:latest", Some(("linux/arm64", "arm64", Some("v8"))));
    // The default is linux/amd64 on this host; what each store got says so.
    for (args, arch) in [
        (vec![], "amd64"),
        (vec!["--platform", "linux/arm64"], "arm64"),
        (vec!["--platform", "linux/arm64/v8"], "arm64"),
    ] {
        let store = TempStore::new();
        let name = reg.name("multiarch:latest");
        let mut all = vec!["-q"];
        all.extend(args);
        all.push(&name);
        pull(&store, &all);
        let image = inspect(&store, &name);
        assert_eq!(image[0]["Architecture"], arch, "{all:?}");
        let layer = PathBuf::from(image[0]["Layers"][0]["Path"].as_str().expect("Path"));
        assert_eq!(std::fs::read_to_string(layer.join("etc/arch")).expect("etc/arch"), format!("{arch}\n"), "{all:?}");
    }
}

#[test]
fn a_repeat_pull_is_up_to_date_and_fetches_no_blob() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let store = TempStore::new();
    let name = reg.name("whiteouts:latest");
    let digest = reg.manifest_digest("whiteouts:latest");
    let out = pull(&store, &[&name]);
    assert_pull_output(&out, &name, &digest, "Downloaded newer image");
    let state = store.snapshot();
    let blob_gets = reg.repo_blob_gets("whiteouts");
    let manifest_gets = reg.manifest_gets("whiteouts");
    assert_eq!(blob_gets, 4, "the first pull fetched config + 3 layers once each");

    let out = pull(&store, &[&name]);
    assert_pull_output(&out, &name, &digest, "Image is up to date");
    assert_eq!(reg.repo_blob_gets("whiteouts"), blob_gets, "a blob was fetched again");
    assert_eq!(reg.manifest_gets("whiteouts"), manifest_gets + 1, "a repeat pull fetches the manifest exactly once");
    assert_eq!(store.snapshot(), state, "an up-to-date pull changed the store");
}

#[test]
fn pull_by_digest_records_the_repo_digest() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let digest = reg.manifest_digest("whiteouts:latest");
    let store = TempStore::new();
    let by_digest = reg.name(&format!("whiteouts@{digest}"));
    let out = pull(&store, &["-q", &by_digest]);
    assert_eq!(stdout(&out), format!("{by_digest}\n"));
    let image = inspect(&store, &by_digest);
    let repo_digests: Vec<&str> = image[0]["RepoDigests"]
        .as_array()
        .expect("RepoDigests")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert!(repo_digests.contains(&by_digest.as_str()), "{repo_digests:?}");
    assert_store_blobs(&store, &reg.image_blobs("whiteouts:latest"));
    // A tag pull of the same manifest afterwards fetches no blob.
    let before = reg.repo_blob_gets("whiteouts");
    pull(&store, &["-q", &reg.name("whiteouts:latest")]);
    assert_eq!(reg.repo_blob_gets("whiteouts"), before);
}

// --- failures -----------------------------------------------------------------------------

#[test]
fn unknown_repository_and_tag_fail_with_one_line_naming_the_reference() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let store = TempStore::new();
    let before = store.snapshot();
    for (reference, mentions) in [
        ("nosuchrepo:latest", "nosuchrepo"),
        ("whiteouts:nosuchtag", "whiteouts:nosuchtag"),
        (&format!("whiteouts@sha256:{}", "0".repeat(64)) as &str, "0000000000"),
    ] {
        let name = reg.name(reference);
        let out = store.run(&["pull", "-q", &name]);
        assert!(!out.status.success(), "pulling {name} succeeded");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
        let err = stderr(&out);
        assert_one_line_error(&err);
        assert!(err.contains(mentions), "the error should name {mentions}: {err}");
        let lower = err.to_lowercase();
        assert!(
            ["not found", "unknown", "does not exist", "denied"].iter().any(|w| lower.contains(w)),
            "the error should say that it is not there: {err}"
        );
        assert_eq!(store.snapshot(), before, "a failed pull of {name} changed the store");
    }
}

#[test]
fn auth_registry_login_pull_logout() {
    let reg = Registry::start_with_auth("tester", "s3cret");
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let store = TempStore::new();
    let name = reg.name("whiteouts:latest");
    let host = reg.addr();

    // No credentials at all.
    let err = store.fails(&["pull", "-q", &name]);
    assert_one_line_error(&err);
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");

    // Another registry's entry is there and must survive everything below.
    let other = auth_json(&[("other.example:5000", "someone", "pw")]);
    std::fs::write(store.auth_file(), &other).expect("writing the auth file");

    // Wrong credentials in the file.
    let wrong = auth_json(&[("other.example:5000", "someone", "pw"), (&host, "tester", "wrong")]);
    std::fs::write(store.auth_file(), &wrong).expect("writing the auth file");
    let err = store.fails(&["pull", "-q", &name]);
    assert_one_line_error(&err);
    assert!(err.to_lowercase().contains("unauthorized") && err.contains(&host), "{err}");
    std::fs::write(store.auth_file(), &other).expect("writing the auth file");

    // login with a wrong password fails and writes nothing.
    let err = store.fails(&["login", "-u", "tester", "-p", "wrong", &host]);
    assert!(err.to_lowercase().contains("unauthorized") && err.contains(&host), "{err}");
    assert_eq!(
        std::fs::read_to_string(store.auth_file()).expect("auth file"),
        other,
        "a failed login changed the auth file"
    );
    assert_eq!(store.count("images"), 0);

    // login with the right password (on stdin) stores it next to the other entry.
    let mut child = store
        .cmd()
        .args(["login", "-u", "tester", "--password-stdin", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn racker login");
    child.stdin.take().expect("stdin").write_all(b"s3cret\n").expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    assert!(!stderr(&out).contains("WARNING"), "--password-stdin is the safe way: {}", stderr(&out));
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.auth_file()).expect("auth file")).expect("auth file is JSON");
    assert_eq!(auth["auths"][&host]["auth"], base64(b"tester:s3cret"), "{auth}");
    assert!(auth["auths"]["other.example:5000"].is_object(), "{auth}");

    // The same with -p works too, warning as docker does (other users see argv), and
    // then pull works.
    let out = store.run(&["login", "-u", "tester", "-p", "s3cret", &host]);
    assert!(out.status.success(), "login -p failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "Login Succeeded!\n");
    assert!(
        stderr(&out).contains("WARNING! Using --password via the CLI is insecure. Use --password-stdin."),
        "login -p does not warn: {}",
        stderr(&out)
    );
    let out = pull(&store, &[&name]);
    assert_pull_output(&out, &name, &reg.manifest_digest("whiteouts:latest"), "Downloaded newer image");

    // logout removes only that entry; pulling fails again.
    store.ok(&["logout", &host]);
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.auth_file()).expect("auth file")).expect("auth file is JSON");
    assert!(auth["auths"].get(&host).is_none(), "{auth}");
    assert!(auth["auths"]["other.example:5000"].is_object(), "{auth}");
    let err = store.fails(&["pull", "-q", &name]);
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");
}

/// Decision on `ingest/`: store-format.md says a failed operation removes its
/// `ingest/<op>/`, but issue 3 lets a pull keep *verified* blobs there to resume from.
/// Either is fine; what must hold is that blobs/, layers/ and the database are
/// unchanged, that the corrupted bytes are nowhere in the store, and that gc brings the
/// store back to exactly what it was. So the ingest line is left out of the first
/// comparison, and the full snapshot is compared after gc.
#[test]
fn a_corrupted_blob_is_refused_and_leaves_no_trace() {
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let manifest = reg.manifest("whiteouts:latest");
    let largest =
        manifest["layers"].as_array().expect("layers").iter().max_by_key(|l| l["size"].as_u64()).expect("a layer")
            ["digest"]
            .as_str()
            .expect("digest")
            .to_owned();
    reg.corrupt_blob(&largest);
    let corrupt_hex = sha256_hex(&std::fs::read(reg.blob_path(&largest)).expect("blob"));

    let store = TempStore::new();
    let before = store.snapshot();
    let name = reg.name("whiteouts:latest");
    let err = store.fails(&["pull", "-q", &name]);
    assert_one_line_error(&err);
    assert!(err.contains("digest mismatch") || err.contains("corrupt"), "unexpected error: {err}");
    assert_eq!(
        snapshot_without_ingest(&store),
        before.lines().filter(|l| !l.starts_with("ingest:")).collect::<Vec<_>>().join("\n"),
        "a refused pull changed blobs, layers or the database"
    );
    assert!(
        !file_hashes(&store.root().join("ingest"), |_| true).iter().any(|(h, _)| *h == corrupt_hex),
        "the corrupted bytes were kept in ingest/"
    );
    // Nothing unverified is trusted on the next attempt either.
    let err = store.fails(&["pull", "-q", &name]);
    assert_one_line_error(&err);
    store.ok(&["gc"]);
    assert_eq!(store.snapshot(), before, "gc did not restore the empty store");

    // Repaired, the same pull works.
    reg.corrupt_blob(&largest);
    pull(&store, &["-q", &name]);
    assert_store_blobs(&store, &reg.image_blobs("whiteouts:latest"));
}

// --- resume -------------------------------------------------------------------------------

/// The big layer's size: large enough that on loopback the two small layers are in
/// `ingest/` long before the big one is downloaded, verified and unpacked.
const BIG_LAYER_BYTES: usize = 48 << 20;

#[test]
fn a_killed_pull_resumes_without_fetching_finished_blobs_again() {
    let reg = Registry::start();
    let layout = tempfile::tempdir().expect("tempdir");
    fixturegen::write_big_layout(layout.path(), BIG_LAYER_BYTES).expect("big layout");
    reg.skopeo_copy_oci(layout.path(), "latest", "big:latest");
    let manifest = reg.manifest("big:latest");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 3);
    let small: Vec<(String, u64)> = layers[..2]
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").trim_start_matches("sha256:").to_owned(),
                l["size"].as_u64().expect("size"),
            )
        })
        .collect();
    let big = layers[2]["digest"].as_str().expect("digest").to_owned();
    assert!(layers[2]["size"].as_u64().expect("size") > (BIG_LAYER_BYTES as u64));

    let store = TempStore::new();
    let name = reg.name("big:latest");
    let log = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = store
        .cmd()
        .args(["pull", "-q", &name])
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("reopen"))
        .spawn()
        .expect("spawn racker pull");
    let ingest = store.root().join("ingest");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Only files of a small layer's size are read: not the big one while it grows.
        let present = file_hashes(&ingest, |len| small.iter().any(|(_, size)| *size == len));
        if small.iter().all(|s| present.contains(s)) {
            break;
        }
        if let Some(status) = child.try_wait().expect("polling racker") {
            let mut err = String::new();
            log.reopen().expect("reopen").read_to_string(&mut err).expect("read");
            panic!(
                "racker pull ended ({status}) before both small layers showed up in \
                 ingest/ (a completed pull means BIG_LAYER_BYTES must grow):\n{err}"
            );
        }
        assert!(Instant::now() < deadline, "the small layers did not show up verified in ingest/ within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        store.ok(&["images", "-q"]).trim().is_empty(),
        "the pull completed before it was killed: make BIG_LAYER_BYTES bigger"
    );
    for (hex, _) in &small {
        assert_eq!(reg.blob_gets(hex), 1);
    }

    let out = pull(&store, &[&name]);
    assert_eq!(stdout(&out), format!("{name}\n"));
    inspect(&store, &name);
    integrity_ok(&store);
    for (hex, _) in &small {
        assert_eq!(reg.blob_gets(hex), 1, "the small layer {hex} was downloaded again instead of adopted from ingest/");
    }
    assert!(reg.blob_gets(&big) >= 1);
    assert_store_blobs(&store, &reg.image_blobs("big:latest"));
    assert!(store.files("ingest").is_empty(), "a completed pull left {:?} in ingest/", store.files("ingest"));
}

// --- push ---------------------------------------------------------------------------------

#[test]
fn push_round_trip_keeps_the_image_id() {
    common::require_root();
    let reg = Registry::start();
    let store = TempStore::new();
    store.ok(&["load", "-q", "-i", fixture("archives/whiteouts-oci-archive.tar").to_str().expect("utf-8")]);
    let id = store.ok(&["images", "-q", "--no-trunc"]).trim().to_owned();
    let name = reg.name("roundtrip:1");
    store.ok(&["tag", "racker-fixtures/whiteouts:latest", &name]);
    store.ok(&["push", "-q", &name]);

    // skopeo sees it, with the same config.
    let config = reg.raw_config("roundtrip:1");
    assert_eq!(format!("sha256:{}", sha256_hex(&config)), id);
    assert_eq!(reg.manifest("roundtrip:1")["layers"].as_array().map(Vec::len), Some(3));

    // Gone locally, pulled back: the same image.
    store.ok(&["rmi", "-f", &id]);
    store.ok(&["gc"]);
    assert!(store.ok(&["images", "-q"]).trim().is_empty());
    assert!(store.files("blobs/sha256").is_empty());
    pull(&store, &["-q", &name]);
    assert_eq!(inspect(&store, &name)[0]["Id"].as_str(), Some(id.as_str()));
    assert_store_blobs(&store, &reg.image_blobs("roundtrip:1"));

    // And what was pushed unpacks (umoci) to what racker composes.
    let root = composed_root(&store, &name);
    tree::assert_same_tree(root.path(), &reg.umoci_rootfs("roundtrip:1"));
    // Pushing again uploads no blob: the registry has every one.
    let uploads = reg.blob_uploads("roundtrip");
    assert!(uploads >= 4, "config + 3 layers were uploaded: {uploads}");
    store.ok(&["push", "-q", &name]);
    assert_eq!(reg.blob_uploads("roundtrip"), uploads);
}

// --- a full disk ------------------------------------------------------------------------

#[test]
fn pull_onto_a_full_disk_says_so_and_a_retry_with_room_works() {
    let reg = Registry::start();
    let layout = tempfile::tempdir().expect("tempdir");
    // The big layer's blob fits on the small store; its blob and unpacked tree do not.
    fixturegen::write_big_layout(layout.path(), 28 << 20).expect("big layout");
    reg.skopeo_copy_oci(layout.path(), "latest", "big:latest");
    let name = reg.name("big:latest");
    let store = SmallStore::new();
    store.assert_runs_out_of_space(&["pull", "-q", &name]);
    store.make_room();
    pull(&store, &["-q", &name]);
    assert_store_blobs(&store, &reg.image_blobs("big:latest"));
    assert!(store.files("ingest").is_empty(), "ingest/ left behind: {:?}", store.files("ingest"));
}

// --- the host's configuration: default auth files, registries.conf ------------------------

/// racker on `store` with the host's default credentials lookup: no `REGISTRY_AUTH_FILE`,
/// `HOME` and `XDG_RUNTIME_DIR` in `home` and `runtime` (temporary, never the host's).
fn with_default_auth_files(store: &TempStore, home: &Path, runtime: &Path, args: &[&str]) -> Output {
    store
        .cmd()
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .args(args)
        .output()
        .expect("running racker")
}

/// README: credentials are shared with podman and docker. Without `REGISTRY_AUTH_FILE`,
/// racker finds them in podman's `${XDG_RUNTIME_DIR}/containers/auth.json` and in docker's
/// `~/.docker/config.json`, podman's first, as podman does.
#[test]
fn credentials_in_podmans_and_dockers_default_auth_files_are_found() {
    let reg = Registry::start_with_auth("tester", "s3cret");
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let name = reg.name("whiteouts:latest");
    let host = reg.addr();
    let (home, runtime) = (tempfile::tempdir().expect("home"), tempfile::tempdir().expect("runtime"));
    let docker = home.path().join(".docker/config.json");
    let podman = runtime.path().join("containers/auth.json");
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("writing an auth file");
    };
    let pull = |what: &str| {
        let store = TempStore::new();
        let out = with_default_auth_files(&store, home.path(), runtime.path(), &["pull", "-q", &name]);
        (out.status.success(), format!("{what}: {}", stderr(&out)), store)
    };

    let (ok, err, _) = pull("no auth file");
    assert!(!ok && err.to_lowercase().contains("unauthorized"), "{err}");

    write(&docker, &auth_json(&[(&host, "tester", "s3cret")]));
    let (ok, err, store) = pull("docker's config.json");
    assert!(ok, "{err}");
    assert_eq!(inspect(&store, &name)[0]["RepoTags"][0], name.as_str());

    std::fs::remove_file(&docker).expect("rm");
    write(&podman, &auth_json(&[(&host, "tester", "s3cret")]));
    let (ok, err, _) = pull("podman's auth.json");
    assert!(ok, "{err}");

    // Both name the registry: podman's file is asked first, and its entry is the one used.
    write(&podman, &auth_json(&[(&host, "tester", "wrong")]));
    write(&docker, &auth_json(&[(&host, "tester", "s3cret")]));
    let (ok, err, _) = pull("a wrong password in podman's file, the right one in docker's");
    assert!(!ok && err.to_lowercase().contains("unauthorized"), "podman's entry wins: {err}");
    // Its entry for another registry does not hide docker's for this one.
    write(&podman, &auth_json(&[("other.example:5000", "someone", "pw")]));
    let (ok, err, _) = pull("podman's file for another registry, docker's for this one");
    assert!(ok, "{err}");
}

/// A registry name that is not a loopback address (racker treats those as insecure
/// anyway), resolved to 127.0.0.1 by the `/etc/hosts` of [`in_private_etc`].
const NON_LOOPBACK_HOST: &str = "registry.racker.test";

/// Runs racker on `store` in a mount namespace of its own whose `/etc/containers` is
/// `containers` and whose `/etc/hosts` resolves [`NON_LOOPBACK_HOST`]: racker reads the
/// real paths podman reads, and the host's configuration stays untouched.
fn in_private_etc(store: &TempStore, containers: &Path, args: &[&str]) -> Output {
    assert!(Path::new("/etc/containers").is_dir(), "/etc/containers is missing (containers-common, with skopeo)");
    let hosts = containers.with_extension("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {NON_LOOPBACK_HOST}\n")).expect("hosts");
    let racker = store.cmd();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/containers && shift 2 && exec \"$@\"")
        .arg("sh")
        .arg(&hosts)
        .arg(containers)
        .arg(racker.get_program())
        .args(racker.get_args())
        .args(args)
        .env_remove("CONTAINERS_REGISTRIES_CONF");
    for (key, value) in racker.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    cmd.output().expect("running unshare")
}

/// README: `insecure = true` in `/etc/containers/registries.conf` and in
/// `registries.conf.d/` allows a plain-HTTP registry, in a real pull; a later file
/// overrides an earlier one.
#[test]
fn insecure_in_registries_conf_and_its_drop_ins_allows_a_plain_http_registry() {
    common::require_root();
    let reg = Registry::start();
    push_fixture(&reg, "whiteouts", "whiteouts:latest");
    let port = reg.addr().rsplit_once(':').expect("host:port").1.to_owned();
    let location = format!("{NON_LOOPBACK_HOST}:{port}");
    let name = format!("{location}/whiteouts:latest");
    let etc = tempfile::tempdir().expect("tempdir");
    let containers = etc.path().join("containers");
    let drop_ins = containers.join("registries.conf.d");
    std::fs::create_dir_all(&drop_ins).expect("mkdir");
    let entry = |insecure: bool| format!("[[registry]]\nlocation = \"{location}\"\ninsecure = {insecure}\n");
    let pull = |what: &str| {
        let store = TempStore::new();
        let out = in_private_etc(&store, &containers, &["pull", "-q", &name]);
        let ok = out.status.success();
        if ok {
            assert_eq!(inspect(&store, &name)[0]["RepoTags"][0], name.as_str(), "{what}");
        } else {
            assert_eq!(store.count("images"), 0, "{what}: a failed pull stored an image");
        }
        (ok, format!("{what}: {}", stderr(&out)))
    };

    let (ok, err) = pull("no configuration");
    assert!(!ok && err.contains(&location), "HTTPS to a plain-HTTP registry must fail: {err}");
    let manifest_gets = reg.manifest_gets("whiteouts");
    assert_eq!(manifest_gets, 0, "nothing was asked over plain HTTP without the configuration");

    std::fs::write(drop_ins.join("50-racker-test.conf"), entry(true)).expect("drop-in");
    let (ok, err) = pull("insecure = true in registries.conf.d/50-racker-test.conf");
    assert!(ok, "{err}");
    assert!(reg.manifest_gets("whiteouts") > manifest_gets, "the pull went to the plain-HTTP registry");

    std::fs::remove_file(drop_ins.join("50-racker-test.conf")).expect("rm");
    std::fs::write(containers.join("registries.conf"), entry(true)).expect("registries.conf");
    let (ok, err) = pull("insecure = true in registries.conf");
    assert!(ok, "{err}");

    // Drop-ins are read after the main file, in name order: the last word is theirs.
    std::fs::write(drop_ins.join("50-racker-test.conf"), entry(false)).expect("drop-in");
    let (ok, err) = pull("insecure = false in a drop-in after the main file's true");
    assert!(!ok, "{err}");
    std::fs::write(drop_ins.join("60-racker-test.conf"), entry(true)).expect("drop-in");
    let (ok, err) = pull("insecure = true in a drop-in after that");
    assert!(ok, "{err}");
}

/// README: pulls fetch several layers at a time. A registry (scripted, real HTTP) holds
/// back every layer request until two are in flight at once: pulled one after the other,
/// the layers never overlap and the pull fails the assertion below.
#[test]
fn layers_are_downloaded_concurrently() {
    use crate::common::hostile::{Content, Hostile};
    use std::sync::{Arc, Condvar, Mutex};

    let layers: Vec<fixturegen::Layer> = (0..3)
        .map(|i| {
            let tar = fixturegen::build_tar(&[fixturegen::file(format!("layer-{i}").as_bytes(), 0o644, b"x\n")])
                .expect("tar");
            fixturegen::Layer { blob: fixturegen::gzip(&tar).expect("gzip"), media_type: fixturegen::MT_GZIP, tar }
        })
        .collect();
    let img = fixturegen::image("concurrent", &layers);
    let mut content = Content::default();
    content.manifest("latest", fixturegen::MT_MANIFEST, img.manifest.1.clone());
    content.blob(img.config.1.clone());
    let layer_paths: Vec<String> = img
        .layers
        .iter()
        .map(|(hex, blob)| {
            content.blob(blob.clone());
            format!("/blobs/sha256:{hex}")
        })
        .collect();

    /// Layer requests being answered now, and the first moment two were at once.
    #[derive(Default)]
    struct InFlight {
        now: BTreeSet<String>,
        overlap: Option<BTreeSet<String>>,
    }
    let state = Arc::new((Mutex::new(InFlight::default()), Condvar::new()));
    let server = {
        let state = state.clone();
        Hostile::start(move |r| {
            let Some(layer) = layer_paths.iter().find(|p| r.method == "GET" && r.path.ends_with(p.as_str())) else {
                return content.answer(r);
            };
            let (lock, changed) = &*state;
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            s.now.insert(layer.clone());
            if s.now.len() >= 2 && s.overlap.is_none() {
                s.overlap = Some(s.now.clone());
            }
            changed.notify_all();
            // Bounded only so that a sequential pull ends (and the test fails) at all.
            let (mut s, _) = changed
                .wait_timeout_while(s, Duration::from_secs(20), |s| s.overlap.is_none())
                .unwrap_or_else(|p| p.into_inner());
            s.now.remove(layer);
            drop(s);
            content.answer(r)
        })
    };
    let store = TempStore::new();
    let name = format!("{}/concurrent:latest", server.addr());
    pull(&store, &["-q", &name]);
    assert_eq!(inspect(&store, &name)[0]["Layers"].as_array().expect("layers").len(), 3);
    let overlap = state.0.lock().unwrap_or_else(|p| p.into_inner()).overlap.clone();
    let overlap = overlap.expect("no two layer downloads were ever in flight at once");
    assert_eq!(overlap.len(), 2, "two distinct layers at once: {overlap:?}");
}
