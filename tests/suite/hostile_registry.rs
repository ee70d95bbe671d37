//! `racker pull` against a hostile registry (tests/suite/common/hostile.rs: a real HTTP server
//! on 127.0.0.1 whose answers the test breaks on purpose). Every case must end within
//! bounded time and space with a one-line error that names the registry and what was
//! wrong, exit non-zero, and leave no image, no blob and nothing in `ingest/`.
//!
//! racker's deadlines are shortened through the environment (see
//! `racker::http::IDLE_TIMEOUT_ENV`); each racker run is also watched by the test
//! itself (time, the store's size, the process's memory), so that a racker that would
//! retry forever or fill the disk fails the test instead of hanging or hurting the host.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::hostile::{Body, Content, Hostile, Reply, Request};
use crate::common::TempStore;
use crate::fixturegen;
use crate::fixturegen::{Image, Layer, MT_GZIP, MT_INDEX, MT_MANIFEST};

/// Seconds without a byte after which racker gives a request up, in these tests.
const IDLE_SECS: u64 = 2;
/// What the test allows a racker run: a hang or a runaway download fails the test.
const WATCHDOG: Duration = Duration::from_secs(90);
const WATCHDOG_STORE_BYTES: u64 = 256 << 20;
const WATCHDOG_RSS_KIB: u64 = 1 << 20;

// --- helpers ----------------------------------------------------------------------------

/// Runs racker on `store` with the short test deadlines and `env`, under the watchdog.
fn racker(store: &TempStore, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out_file = tempfile::NamedTempFile::new().expect("stdout file");
    let err_file = tempfile::NamedTempFile::new().expect("stderr file");
    let mut cmd = store.cmd();
    cmd.args(args)
        .env(racker::http::IDLE_TIMEOUT_ENV, IDLE_SECS.to_string())
        .env(racker::registry::RETRY_DELAY_ENV, "10")
        .stdin(Stdio::null())
        .stdout(out_file.reopen().expect("reopen"))
        .stderr(err_file.reopen().expect("reopen"));
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("spawning racker");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling racker") {
            break status;
        }
        let runaway = if started.elapsed() > WATCHDOG {
            Some(format!("still running after {WATCHDOG:?}"))
        } else if dir_size(store.root()) > WATCHDOG_STORE_BYTES {
            Some(format!("the store grew past {} MiB", WATCHDOG_STORE_BYTES >> 20))
        } else if rss_kib(child.id()) > WATCHDOG_RSS_KIB {
            Some(format!("racker's memory grew past {} MiB", WATCHDOG_RSS_KIB >> 10))
        } else {
            None
        };
        if let Some(why) = runaway {
            let _ = child.kill();
            let _ = child.wait();
            panic!("racker {args:?}: {why}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &tempfile::NamedTempFile| std::fs::read(f.path()).expect("reading racker's output");
    Output { status, stdout: read(&out_file), stderr: read(&err_file) }
}

fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A failed pull of `name`: one `Error:` line (returned) naming each of `mentions`, exit
/// status 1 (not a panic's 101), and a store without image, blob or staging leftovers.
fn pull_fails(store: &TempStore, name: &str, env: &[(&str, &str)], mentions: &[&str]) -> String {
    let out = racker(store, &["pull", "-q", name], env);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "pulling {name} should fail with exit status 1: {stderr}");
    // Retries are announced as warnings before it; the error itself is one line.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(stderr.ends_with(errors[0]), "the error comes last: {stderr}");
    let err = errors[0].to_owned();
    for m in mentions {
        assert!(err.contains(m), "the error should name {m:?}: {err}");
    }
    assert_nothing_kept(store);
    err
}

fn assert_nothing_kept(store: &TempStore) {
    assert_eq!(store.count("images"), 0, "a refused pull left an image");
    assert!(store.files("blobs/sha256").is_empty(), "a refused pull left blobs: {:?}", store.files("blobs/sha256"));
    assert!(store.files("ingest").is_empty(), "a refused pull left {:?} in ingest/", store.files("ingest"));
}

/// A small one-layer image (gzip) and the honest content serving it as `img:latest`.
fn small_image() -> (Image, Content) {
    let tar = fixturegen::build_tar(&[
        fixturegen::dir(b"etc/", 0o755),
        fixturegen::file(b"etc/greeting", 0o644, &fixturegen::random_bytes(7, 64 << 10)),
    ])
    .expect("tar");
    let img = fixturegen::image(
        "hostile",
        &[Layer { blob: fixturegen::gzip_fast(&tar).expect("gzip"), media_type: MT_GZIP, tar }],
    );
    let content = content_of(&img);
    (img, content)
}

fn content_of(img: &Image) -> Content {
    let mut content = Content::default();
    content.manifest("latest", MT_MANIFEST, img.manifest.1.clone());
    content.blob(img.config.1.clone());
    for (_, blob) in &img.layers {
        content.blob(blob.clone());
    }
    content
}

/// A server answering honestly except where `broken` returns an answer.
fn serve(content: Content, broken: impl Fn(&Request) -> Option<Reply> + Send + Sync + 'static) -> Hostile {
    Hostile::start(move |r| broken(r).unwrap_or_else(|| content.answer(r)))
}

fn is_blob(r: &Request, hex: &str) -> bool {
    r.path.ends_with(&format!("/blobs/sha256:{hex}"))
}

fn manifest_json(config: (&str, u64), layers: &[(&str, &str, u64)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": fixturegen::MT_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(mt, digest, size)| json!({"mediaType": mt, "digest": digest, "size": size})).collect::<Vec<_>>(),
    }))
    .expect("JSON")
}

// --- blobs: short, long, endless, wrong --------------------------------------------------

/// The issue's case: fewer bytes than declared (so the wrong ones), from a server that
/// ignores `Range`; without Content-Length the short body looks like a dropped
/// connection, so racker retries, but only a few times. With an honest Content-Length it
/// stops at once.
#[test]
fn a_short_blob_ends_the_pull_after_a_few_attempts() {
    let (img, content) = small_image();
    let layer = img.layers[0].0.clone();
    let short = img.layers[0].1[..img.layers[0].1.len() / 2].to_vec();
    for announce_length in [false, true] {
        let (short, hex) = (short.clone(), layer.clone());
        let reg = serve(content.clone(), move |r| {
            is_blob(r, &hex).then(|| Reply {
                status: 200,
                headers: vec![],
                content_length: announce_length.then_some(short.len() as u64),
                body: Body::Bytes(short.clone()),
            })
        });
        let store = TempStore::new();
        let name = format!("{}/img:latest", reg.addr());
        let err = pull_fails(&store, &name, &[], &[&reg.addr(), &layer]);
        let gets = reg.count(&format!("/blobs/sha256:{layer}"));
        if announce_length {
            assert!(err.contains("announces"), "{err}");
            assert_eq!(gets, 1, "a blob announced shorter than declared is not asked for again");
        } else {
            assert!(err.contains("5 attempts"), "{err}");
            assert_eq!(gets, 5, "the short blob was asked for {gets} times");
        }
    }
}

/// A registry that sends more than the manifest declares is refused as soon as it does,
/// whether it says so in Content-Length or streams on without end.
#[test]
fn a_blob_longer_than_declared_is_refused() {
    let (img, content) = small_image();
    let layer = img.layers[0].0.clone();
    for announce_length in [false, true] {
        let (blob, hex) = (img.layers[0].1.clone(), layer.clone());
        let reg = serve(content.clone(), move |r| {
            is_blob(r, &hex).then(|| Reply {
                status: 200,
                headers: vec![],
                content_length: announce_length.then_some(1_000_000_000_000),
                body: Body::Endless(blob.clone()),
            })
        });
        let store = TempStore::new();
        let name = format!("{}/img:latest", reg.addr());
        let err = pull_fails(&store, &name, &[], &[&reg.addr(), &layer]);
        let cause = if announce_length { "announces 1000000000000 bytes" } else { "more than the" };
        assert!(err.contains(cause), "{err}");
    }
}

/// The issue's second case: a layer declared gzip, 10^12 bytes, whose stream is not gzip.
/// The first bytes decide; nothing more is downloaded or written (the watchdog stops a
/// racker whose store grows past 256 MiB).
#[test]
fn a_layer_that_is_not_what_its_media_type_says_stops_at_once() {
    let (img, mut content) = small_image();
    let fake_layer = format!("sha256:{}", "ab".repeat(32));
    let manifest = manifest_json(
        (&format!("sha256:{}", img.config.0), img.config.1.len() as u64),
        &[(MT_GZIP, &fake_layer, 1_000_000_000_000)],
    );
    content.manifest("latest", MT_MANIFEST, manifest);
    let hex = fake_layer.trim_start_matches("sha256:").to_owned();
    let reg = serve(content, move |r| {
        is_blob(r, &hex).then(|| Reply {
            status: 200,
            headers: vec![],
            content_length: None,
            body: Body::Endless(fixturegen::random_bytes(3, 1 << 20)),
        })
    });
    let store = TempStore::new();
    let name = format!("{}/img:latest", reg.addr());
    let err = pull_fails(&store, &name, &[], &[&reg.addr(), &fake_layer, "gzip"]);
    assert_eq!(reg.count(&format!("/blobs/{fake_layer}")), 1, "{err}");
}

/// Bytes that do not match their digest, in a layer, a config and a manifest by digest.
#[test]
fn wrong_digests_are_refused_naming_the_registry() {
    let (img, content) = small_image();
    let layer_hex = img.layers[0].0.clone();
    let config_hex = img.config.0.clone();
    let flipped = |bytes: &[u8]| {
        let mut b = bytes.to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        b
    };
    // A layer whose last byte (the gzip trailer's size field) is off: it unpacks, and
    // its digest is wrong.
    let (bad_layer, hex) = (flipped(&img.layers[0].1), layer_hex.clone());
    let reg = serve(content.clone(), move |r| is_blob(r, &hex).then(|| Reply::new(200, bad_layer.clone())));
    let store = TempStore::new();
    pull_fails(&store, &format!("{}/img:latest", reg.addr()), &[], &[&reg.addr(), &layer_hex]);

    let (bad_config, hex) = (flipped(&img.config.1), config_hex.clone());
    let reg = serve(content.clone(), move |r| is_blob(r, &hex).then(|| Reply::new(200, bad_config.clone())));
    let err = pull_fails(&store, &format!("{}/img:latest", reg.addr()), &[], &[&reg.addr(), "config"]);
    assert!(err.contains("digest mismatch"), "{err}");

    let manifest_digest = format!("sha256:{}", img.manifest.0);
    let bad_manifest =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_MANIFEST, "layers": []})).expect("JSON");
    let reg = serve(content, move |r| {
        r.path
            .contains("/manifests/")
            .then(|| Reply::new(200, bad_manifest.clone()).header("Content-Type", MT_MANIFEST))
    });
    let err = pull_fails(&store, &format!("{}/img@{manifest_digest}", reg.addr()), &[], &[&reg.addr()]);
    assert!(err.contains("digest mismatch") && err.contains(&manifest_digest), "{err}");
}

// --- manifests and configs --------------------------------------------------------------

/// A manifest is read whole into memory: an endless one is cut off at the bound, one
/// announced too large is not read at all (the watchdog stops a racker past 1 GiB).
#[test]
fn an_endless_or_oversized_manifest_is_refused() {
    let (_, content) = small_image();
    for announce_length in [false, true] {
        let reg = serve(content.clone(), move |r| {
            r.path.contains("/manifests/").then(|| Reply {
                status: 200,
                headers: vec![("Content-Type".into(), MT_MANIFEST.into())],
                content_length: announce_length.then_some(1_000_000_000_000),
                body: Body::Endless(br#"{"schemaVersion": 2, "padding": ""#.to_vec()),
            })
        });
        let store = TempStore::new();
        let name = format!("{}/img:latest", reg.addr());
        pull_fails(&store, &name, &[], &[&reg.addr(), "4 MiB"]);
    }
}

/// A config or platform manifest declared larger than racker holds in memory is refused
/// before it is asked for.
#[test]
fn a_config_or_manifest_declared_too_large_is_not_fetched() {
    let (img, mut content) = small_image();
    let config = format!("sha256:{}", img.config.0);
    let layer = format!("sha256:{}", img.layers[0].0);
    content.manifest(
        "huge-config",
        MT_MANIFEST,
        manifest_json((&config, 1_000_000_000_000), &[(MT_GZIP, &layer, img.layers[0].1.len() as u64)]),
    );
    let platform_manifest = format!("sha256:{}", img.manifest.0);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{"mediaType": MT_MANIFEST, "digest": platform_manifest, "size": 1_000_000_000_000u64,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .expect("JSON");
    content.manifest("huge-manifest", MT_INDEX, index);
    let reg = serve(content, |_| None);
    let store = TempStore::new();
    pull_fails(&store, &format!("{}/img:huge-config", reg.addr()), &[], &[&config, "1000000000000", "4 MiB"]);
    assert_eq!(reg.count(&format!("/blobs/{config}")), 0, "the oversized config was downloaded");
    pull_fails(
        &store,
        &format!("{}/img:huge-manifest", reg.addr()),
        &[],
        &[&platform_manifest, "1000000000000", "4 MiB"],
    );
    assert_eq!(reg.count(&format!("/manifests/{platform_manifest}")), 0, "the oversized manifest was downloaded");
}

// --- silence and loops ------------------------------------------------------------------

/// A server that accepts and never answers (the version check, a manifest), or stops in
/// the middle of a blob: each wait ends after the idle timeout.
#[test]
fn a_registry_that_stops_answering_is_given_up_after_the_idle_timeout() {
    let (img, content) = small_image();
    let layer = img.layers[0].0.clone();
    let half = img.layers[0].1[..img.layers[0].1.len() / 2].to_vec();
    let full = img.layers[0].1.len() as u64;
    type Breaker = Box<dyn Fn(&Request) -> Option<Reply> + Send + Sync>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("/v2/", Box::new(|r: &Request| (r.path == "/v2/").then(Reply::silent))),
        ("manifest", Box::new(|r: &Request| r.path.contains("/manifests/").then(Reply::silent))),
        (
            "blob",
            Box::new(move |r: &Request| {
                is_blob(r, &layer).then(|| Reply {
                    status: 200,
                    headers: vec![],
                    content_length: Some(full),
                    body: Body::Stall(half.clone()),
                })
            }),
        ),
    ];
    for (what, breaker) in cases {
        let reg = serve(content.clone(), breaker);
        let store = TempStore::new();
        let err = pull_fails(&store, &format!("{}/img:latest", reg.addr()), &[], &[&reg.addr()]);
        assert!(err.contains("timed out"), "silence at {what}: {err}");
    }
}

/// Downloads beside registries (`racker import URL`) are bounded alike: silence before the
/// answer or in the middle of the body ends the import after the idle timeout.
#[test]
fn an_import_from_a_server_that_stops_answering_ends_after_the_idle_timeout() {
    let tar = fixturegen::build_tar(&[fixturegen::file(b"big", 0o644, &fixturegen::random_bytes(3, 256 << 10))])
        .expect("tar");
    let half = tar[..tar.len() / 2].to_vec();
    let full = tar.len() as u64;
    let silent = Hostile::start(move |r| {
        if r.path.ends_with("/silent.tar") {
            Reply::silent()
        } else {
            Reply { status: 200, headers: vec![], content_length: Some(full), body: Body::Stall(half.clone()) }
        }
    });
    for file in ["silent.tar", "stalled.tar"] {
        let store = TempStore::new();
        let url = format!("http://{}/{file}", silent.addr());
        let out = racker(&store, &["import", &url, "stalled:1"], &[]);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(&url), "{file}: the error should name the URL: {err}");
        assert_nothing_kept(&store);
    }
}

/// A blob that redirects to itself: the loop is cut by the redirect limit, and not tried
/// again (another attempt would loop the same way).
#[test]
fn a_redirect_loop_ends_without_retries() {
    let (img, content) = small_image();
    let layer = img.layers[0].0.clone();
    let hex = layer.clone();
    let reg = serve(content, move |r| is_blob(r, &hex).then(|| Reply::redirect(&r.path)));
    let store = TempStore::new();
    let err = pull_fails(&store, &format!("{}/img:latest", reg.addr()), &[], &[&reg.addr(), "redirect"]);
    let gets = reg.count(&format!("/blobs/sha256:{layer}"));
    assert!(gets <= 11, "the redirect loop was followed {gets} times: {err}");
}

// --- credentials --------------------------------------------------------------------------

/// A registry whose token realm is another server, and whose blobs redirect to a third
/// (a CDN). The password goes to the realm only; the token to the registry only; the
/// CDN gets neither.
#[test]
fn credentials_go_to_the_token_realm_only_never_to_a_redirect_target() {
    let (img, content) = small_image();
    let basic = format!("Basic {}", base64(b"tester:s3cret"));
    let realm = {
        let basic = basic.clone();
        Hostile::start(move |r| {
            if r.header("authorization") == Some(basic.as_str()) {
                Reply::new(200, br#"{"token": "t0ken"}"#.to_vec()).header("Content-Type", "application/json")
            } else {
                Reply::new(401, b"{}".to_vec())
            }
        })
    };
    let cdn = serve(content.clone(), |_| None);
    let cdn_addr = cdn.addr();
    let realm_url = format!("http://{}/token", realm.addr());
    let seen_by_registry: Arc<Mutex<Vec<String>>> = Arc::default();
    let reg = {
        let seen = seen_by_registry.clone();
        Hostile::start(move |r| {
            seen.lock().expect("lock").extend(r.header("authorization").map(str::to_owned));
            if r.header("authorization") != Some("Bearer t0ken") {
                return Reply::new(401, br#"{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}"#.to_vec()).header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="{realm_url}",service="hostile",scope="repository:img:pull""#),
                );
            }
            if r.path.contains("/blobs/") {
                return Reply::redirect(&format!("http://{cdn_addr}{}", r.path));
            }
            content.answer(r)
        })
    };
    let store = TempStore::new();
    let auth = json!({"auths": {reg.addr(): {"auth": base64(b"tester:s3cret")}}});
    std::fs::write(store.auth_file(), auth.to_string()).expect("writing the auth file");
    let out = racker(&store, &["pull", "-q", &format!("{}/img:latest", reg.addr())], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store.count("images"), 1);

    assert!(
        realm.requests().iter().any(|r| r.header("authorization") == Some(basic.as_str())),
        "the realm never got the credentials"
    );
    let to_registry = seen_by_registry.lock().expect("lock").clone();
    assert!(to_registry.iter().all(|a| a == "Bearer t0ken"), "the registry got {to_registry:?}");
    let cdn_requests = cdn.requests();
    assert!(cdn_requests.len() >= 2, "config and layer come from the CDN: {cdn_requests:?}");
    for r in &cdn_requests {
        assert_eq!(r.header("authorization"), None, "the redirect target got credentials: {r:?}");
    }
    drop(img);
}

/// A token that expires in the middle of a pull (Docker Hub's last 5 minutes) is renewed
/// from the realm, once, and the pull goes on.
#[test]
fn an_expired_token_is_renewed() {
    let (_, content) = small_image();
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let realm = {
        let issued = issued.clone();
        Hostile::start(move |_| {
            let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Reply::new(200, format!(r#"{{"token": "t{n}"}}"#).into_bytes())
        })
    };
    let realm_url = format!("http://{}/token", realm.addr());
    let reg = {
        let issued = issued.clone();
        Hostile::start(move |r| {
            // The newest token is good; the first one only until the manifest is read.
            let newest = format!("Bearer t{}", issued.load(std::sync::atomic::Ordering::SeqCst));
            let good = r.header("authorization") == Some(newest.as_str())
                && (r.path.contains("/manifests/") || newest != "Bearer t1");
            if !good {
                return Reply::new(401, br#"{"errors":[{"code":"UNAUTHORIZED","message":"expired"}]}"#.to_vec())
                    .header("WWW-Authenticate", &format!(r#"Bearer realm="{realm_url}",service="hostile""#));
            }
            content.answer(r)
        })
    };
    let store = TempStore::new();
    let out = racker(&store, &["pull", "-q", &format!("{}/img:latest", reg.addr())], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store.count("images"), 1);
    assert_eq!(realm.requests().len(), 2, "one token at the start, one when it expired");
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// --- what the store would hold ----------------------------------------------------------

/// The media type check does not depend on what the store already has: a manifest that
/// gives a stored layer a type racker cannot unpack is refused like any other.
#[test]
fn an_unknown_layer_media_type_is_refused_even_when_the_layer_is_stored() {
    let (img, mut content) = small_image();
    let odd = manifest_json(
        (&format!("sha256:{}", img.config.0), img.config.1.len() as u64),
        &[("application/vnd.example.unknown", &format!("sha256:{}", img.layers[0].0), img.layers[0].1.len() as u64)],
    );
    content.manifest("odd", MT_MANIFEST, odd);
    let reg = serve(content, |_| None);
    let store = TempStore::new();
    for (name, expect_ok) in [("img:odd", false), ("img:latest", true), ("img:odd", false)] {
        let out = racker(&store, &["pull", "-q", &format!("{}/{name}", reg.addr())], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), expect_ok, "pulling {name}: {err}");
        if !expect_ok {
            assert!(err.contains("application/vnd.example.unknown"), "{err}");
        }
    }
    assert_eq!(store.count("images"), 1);
}

/// An image with more layers than overlayfs can stack is refused before its layers are
/// downloaded, from a registry, an OCI layout and a `docker save` archive alike, with the
/// limit named.
#[test]
fn an_image_with_more_layers_than_can_be_mounted_is_refused_before_download() {
    let layout = tempfile::tempdir().expect("tempdir");
    let img = fixturegen::write_many_layers_layout(layout.path(), racker::oci::MAX_LAYERS + 1).expect("layout");
    let reg = serve(content_of(&img), |_| None);
    let store = TempStore::new();
    let limit = racker::oci::MAX_LAYERS.to_string();
    let layers = (racker::oci::MAX_LAYERS + 1).to_string();
    pull_fails(&store, &format!("{}/img:latest", reg.addr()), &[], &[&layers, &limit]);
    let layer_gets = img.layers.iter().map(|(hex, _)| reg.count(&format!("/blobs/sha256:{hex}"))).sum::<usize>();
    assert_eq!(layer_gets, 0, "layers of an image that cannot be mounted were downloaded");

    // The same image as an OCI layout, and as a `docker save` archive.
    let mut docker_save = Vec::new();
    let mut layer_paths = Vec::new();
    for (hex, tar) in &img.layers {
        docker_save.push((format!("{hex}/layer.tar"), tar.clone()));
        layer_paths.push(format!("{hex}/layer.tar"));
    }
    docker_save.push((format!("{}.json", img.config.0), img.config.1.clone()));
    let manifest = json!([{"Config": format!("{}.json", img.config.0), "RepoTags": ["many:1"], "Layers": layer_paths}]);
    docker_save.push(("manifest.json".into(), manifest.to_string().into_bytes()));
    let archive = layout.path().join("docker-save.tar");
    std::fs::write(&archive, fixturegen::archive_tar(&docker_save).expect("archive")).expect("writing the archive");
    let oci = format!("oci:{}", layout.path().display());
    for args in [vec!["pull", "-q", oci.as_str()], vec!["load", "-q", "-i", archive.to_str().expect("utf-8")]] {
        let out = racker(&store, &args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "racker {args:?}: {err}");
        assert!(err.contains(&layers) && err.contains(&limit), "racker {args:?}: {err}");
        assert_nothing_kept(&store);
    }
}

// --- hosts without CA certificates --------------------------------------------------------

/// A host without CA certificates (rustls reads them from SSL_CERT_FILE / SSL_CERT_DIR
/// when set: here an empty file and an empty directory). A plain-HTTP registry needs none
/// and works; an HTTPS one is refused with a message that says what is missing. Neither
/// panics.
#[test]
fn a_host_without_ca_certificates_pulls_over_http_and_explains_https() {
    let (_, content) = small_image();
    let reg = serve(content, |_| None);
    let empty = tempfile::tempdir().expect("tempdir");
    let cert_file = empty.path().join("no-certificates.pem");
    std::fs::write(&cert_file, b"").expect("writing an empty bundle");
    let cert_dir = empty.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("creating an empty directory");
    let env =
        [("SSL_CERT_FILE", cert_file.to_str().expect("utf-8")), ("SSL_CERT_DIR", cert_dir.to_str().expect("utf-8"))];
    let name = format!("{}/img:latest", reg.addr());

    // The issue's case: --tls-verify=false and a plain-HTTP registry.
    let store = TempStore::new();
    let out = racker(&store, &["pull", "-q", "--tls-verify=false", &name], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store.count("images"), 1);

    let store = TempStore::new();
    let out = racker(&store, &["pull", "-q", "--tls-verify=true", &name], &env);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for m in [reg.addr().as_str(), "no CA certificates", "ca-certificates"] {
        assert!(err.contains(m), "the error should name {m:?}: {err}");
    }
    assert_nothing_kept(&store);

    // Downloads beside registries (`racker import URL`, postroj's packages) alike.
    let tar = fixturegen::build_tar(&[fixturegen::file(b"hello", 0o644, b"hi\n")]).expect("tar");
    let files = Hostile::start(move |_| Reply::new(200, tar.clone()));
    let store = TempStore::new();
    let url = format!("http://{}/rootfs.tar", files.addr());
    let out = racker(&store, &["import", &url, "from-http:1"], &env);
    assert!(out.status.success(), "import over plain HTTP: {}", String::from_utf8_lossy(&out.stderr));
    let url = format!("https://{}/rootfs.tar", files.addr());
    let out = racker(&store, &["import", &url, "from-https:1"], &env);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no CA certificates") && err.contains("ca-certificates"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
