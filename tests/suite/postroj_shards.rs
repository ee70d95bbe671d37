//! pkgprobe matrices split into shards (`--shard K/N`) and joined again (`report merge`),
//! on the real Debian image under two labels with two packages built here: the merged
//! report says what the whole run says; a missing shard and a duplicate are named. And
//! curated images shared through a registry (`push`, `--from-registry`).

use std::path::Path;

use serde_json::Value;

use crate::common::postroj::{err, matrix_packages, out, postroj, probe_store, verdicts};

fn json_file(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shards_of_a_matrix_merge_into_the_verdicts_of_the_whole_run() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("dir");
    let [good, bad] = matrix_packages(dir.path());
    let (good, bad) = (format!("--package={}", good.display()), format!("--package={}", bad.display()));
    let matrix = ["pkgprobe", "-q", "--image=debian-bookworm", "--image=debian-trixie", &good, &bad];

    let whole = postroj(&store, cache.path(), &[&matrix[..], &["--format=json"]].concat());
    assert_eq!(whole.status.code(), Some(1), "a failing cell fails the run: {}", err(&whole));
    let whole: Value = serde_json::from_slice(&whole.stdout).expect("JSON report");
    let expected = verdicts(&whole);
    assert_eq!(expected.len(), 4, "2 images × 2 packages: {expected:?}");
    assert!(expected.iter().any(|(t, cases)| t.contains("racker-bad") && cases.iter().any(|(_, r)| r == "failed")));

    // Three shards of four cells: one shard runs two.
    let mut files = Vec::new();
    let mut ran = 0;
    for k in 1..=3 {
        let file = dir.path().join(format!("shard-{k}.json"));
        let shard = format!("--shard={k}/3");
        let output = format!("--output={}", file.display());
        let o = postroj(&store, cache.path(), &[&matrix[..], &[&shard, "--format=json", &output]].concat());
        let report = json_file(&file);
        let cells = report["suites"].as_array().map_or(0, Vec::len);
        ran += cells;
        let failing = report["suites"].to_string().contains("racker-bad");
        assert_eq!(o.status.code(), Some(i32::from(failing)), "shard {k}: {}", err(&o));
        assert_eq!(report["shard"], serde_json::json!({"index": k, "count": 3}));
        assert!((1..=2).contains(&cells), "shard {k} ran {cells} cells");
        files.push(file.display().to_string());
    }
    assert_eq!(ran, 4, "the shards ran the matrix once");

    let merge = |args: &[&str]| postroj(&store, cache.path(), &[&["report", "merge"], args].concat());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let merged = merge(&[&["--format=json"], &files[..]].concat());
    assert_eq!(merged.status.code(), Some(1), "the merged verdict fails as the whole run's: {}", err(&merged));
    assert!(err(&merged).is_empty(), "nothing missing, nothing twice: {}", err(&merged));
    let report: Value = serde_json::from_slice(&merged.stdout).expect("merged JSON");
    assert_eq!(verdicts(&report), expected);
    assert_eq!(report["passed"], false);

    let junit = merge(&[&["--format=junit"], &files[..]].concat());
    let xml = out(&junit);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    let suites: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("testsuite")).filter_map(|n| n.attribute("name")).collect();
    assert_eq!(suites.len(), 4, "{suites:?}");
    assert!(
        suites.iter().all(|s| s.contains("racker-good") || s.contains("racker-bad")),
        "titles name the package: {suites:?}"
    );
    let failures = doc.descendants().filter(|n| n.has_tag_name("failure") || n.has_tag_name("error")).count();
    assert!(failures >= 2, "the bad package fails on both images:\n{xml}");

    // Shard 2 lost: its cells are errors; the merge says so and fails.
    let lost = merge(&["--shards=3", "--format=json", files[0], files[2]]);
    assert_eq!(lost.status.code(), Some(1));
    assert!(err(&lost).contains("shard 2/3: no report"), "{}", err(&lost));
    let report: Value = serde_json::from_slice(&lost.stdout).expect("merged JSON");
    let missing: Vec<(String, Vec<(String, String)>)> = verdicts(&report)
        .into_iter()
        .filter(|(_, cases)| cases == &[("shard".to_owned(), "error".to_owned())])
        .collect();
    let shard2 = json_file(Path::new(files[1]))["suites"].as_array().map_or(0, Vec::len);
    assert_eq!(missing.len(), shard2, "each cell of shard 2 is reported not run");
    assert_eq!(verdicts(&report).len(), 4, "still the whole matrix");

    // The same shard twice: named, and counted once.
    let twice = merge(&["--format=json", files[0], files[0], files[1], files[2]]);
    assert!(err(&twice).contains("given twice"), "{}", err(&twice));
    let report: Value = serde_json::from_slice(&twice.stdout).expect("merged JSON");
    assert_eq!(verdicts(&report), expected);

    // What is not a report is refused with the file's name.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}").expect("junk");
    let o = merge(&[junk.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("junk.json"), "{}", err(&o));
    store.assert_clean();
}

#[test]
fn workers_pull_pushed_curated_images_instead_of_building_them() {
    let built = probe_store();
    let registry = crate::common::registry::Registry::start();
    let addr = registry.addr();
    let o =
        built.postroj().args(["push", "-q", "debian-bookworm", "debian-trixie", &addr]).output().expect("postroj push");
    assert!(o.status.success(), "push: {}", err(&o));
    assert_eq!(out(&o).lines().count(), 2, "one pushed reference per label: {}", out(&o));
    assert!(out(&o).starts_with(&format!("{addr}/postroj/debian-bookworm:latest@sha256:")), "{}", out(&o));
    let id =
        |store: &crate::common::TempStore, name: &str| store.ok(&["image", "inspect", "--format", "{{.Id}}", name]);
    // A worker's empty store: pkgprobe pulls what it lacks from the shared registry.
    let worker = crate::common::TempStore::new();
    let cache = tempfile::tempdir().expect("cache");
    let o = worker
        .postroj()
        .env("POSTROJ_PACKAGE_CACHE", cache.path())
        .env("POSTROJ_REGISTRY", &addr)
        .args(["pkgprobe", "--image=debian-trixie", "--check-unit=systemd-journald", "--format=json"])
        .output()
        .expect("postroj pkgprobe");
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    assert!(err(&o).contains(&format!("pulled from {addr}/postroj/debian-trixie:latest")), "{}", err(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(report["suites"][0]["cases"][0]["name"], "pull", "the pull is the probe's first case");
    let trixie = "localhost/postroj/debian-trixie:latest";
    assert_eq!(id(&worker, trixie), id(&built, trixie), "the same image, not a rebuilt one");
    // And `postroj pull --from-registry`, which names what it pulled.
    let o = worker.postroj().args(["pull", "-q", "--from-registry", &addr, "debian-bookworm"]).output().expect("pull");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "localhost/postroj/debian-bookworm:latest\n");
    // An image the registry does not have is an error naming it.
    let o = worker.postroj().args(["pull", "--from-registry", &addr, "ubuntu-noble"]).output().expect("pull");
    assert!(!o.status.success());
    assert!(err(&o).contains("postroj/ubuntu-noble"), "{}", err(&o));
    worker.assert_clean();
    built.assert_clean();
}
