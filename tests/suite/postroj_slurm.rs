//! `postroj submit slurm` on a real one-node Slurm cluster (common/slurm.rs): a matrix
//! of two images × two packages as a job array of shards and a merge job, whose merged
//! JUnit says what the same matrix run here without shards says; a cancelled shard is
//! reported missing and fails the verdict.

use std::path::Path;

use serde_json::Value;

use crate::common::postroj::{err, matrix_packages, out, postroj, probe_store};
use crate::common::slurm::Slurm;
use crate::common::TempStore;

/// A JUnit report's verdicts without times: each testsuite's name with each testcase's
/// name and outcome (`passed`, `failure`, `error`, `skipped`).
fn junit_verdicts(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    let mut suites: Vec<(String, Vec<(String, String)>)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .map(|suite| {
            let cases = suite
                .children()
                .filter(|n| n.has_tag_name("testcase"))
                .map(|case| {
                    let outcome = case
                        .children()
                        .find(|n| ["failure", "error", "skipped"].iter().any(|t| n.has_tag_name(*t)))
                        .map_or("passed", |n| n.tag_name().name());
                    (case.attribute("name").unwrap_or_default().to_owned(), outcome.to_owned())
                })
                .collect();
            (suite.attribute("name").unwrap_or_default().to_owned(), cases)
        })
        .collect();
    suites.sort();
    suites
}

/// postroj on `store` as a client of `slurm`, with its package cache in `cache`.
fn submit(store: &TempStore, slurm: &Slurm, cache: &Path, args: &[&str]) -> std::process::Output {
    store.postroj().env("POSTROJ_PACKAGE_CACHE", cache).envs(slurm.env()).args(args).output().expect("postroj")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_matrix_on_slurm_merges_into_the_local_verdicts_and_a_cancelled_shard_is_missing() {
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let dir = tempfile::tempdir().expect("dir");
    let [good, bad] = matrix_packages(dir.path());
    let (good, bad) = (format!("--package={}", good.display()), format!("--package={}", bad.display()));
    let matrix = ["--image=debian-bookworm", "--image=debian-trixie", &good, &bad];

    let local = postroj(&store, cache.path(), &[&["pkgprobe", "-q", "--format=junit"], &matrix[..]].concat());
    assert_eq!(local.status.code(), Some(1), "racker-bad fails: {}", err(&local));
    let expected = junit_verdicts(&out(&local));
    assert_eq!(expected.len(), 4, "{expected:?}");

    let slurm = Slurm::start();
    let jobs = dir.path().join("jobs");
    let job_dir = format!("--job-dir={}", jobs.display());
    let o = submit(
        &store,
        &slurm,
        cache.path(),
        &[&["submit", "slurm", "--shards=3", "--time=20", &job_dir, "--"], &matrix[..]].concat(),
    );
    assert!(o.status.success(), "submit: {}\n{}", err(&o), slurm.logs());
    assert_eq!(out(&o).trim(), jobs.display().to_string(), "the job directory on standard output");
    assert!(read(&jobs.join("pkgprobe.sbatch")).contains("#SBATCH --array=1-3"));
    let wait = submit(&store, &slurm, cache.path(), &["submit", "wait", "--timeout=10m", &jobs.display().to_string()]);
    assert_eq!(
        wait.status.code(),
        Some(1),
        "a failing cell fails the merged verdict: {}\n{}",
        err(&wait),
        slurm.logs()
    );
    assert!(out(&wait).contains("racker-bad"), "wait prints the merged report: {}", out(&wait));
    assert_eq!(
        junit_verdicts(&read(&jobs.join("report.xml"))),
        expected,
        "the merged JUnit says what the local run says"
    );
    let merged: Value = serde_json::from_str(&read(&jobs.join("report.json"))).expect("report.json");
    assert_eq!(merged["passed"], false);
    for k in 1..=3 {
        assert!(jobs.join(format!("shard-{k}.json")).exists(), "shard {k} reported");
    }
    let status =
        submit(&store, &slurm, cache.path(), &["submit", "status", "--format=json", &jobs.display().to_string()]);
    let rows: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&status)));
    let states: Vec<&str> = rows.as_array().expect("rows").iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(states.len(), 4, "three shards and the merge: {states:?}");
    assert_eq!(states[3], "ended: failed", "{states:?}");
    assert!(states.iter().all(|s| s.starts_with("ended: ")), "{states:?}");

    // A passing matrix, held; one shard's task cancelled before it runs.
    let held = dir.path().join("held");
    let job_dir = format!("--job-dir={}", held.display());
    let o = submit(
        &store,
        &slurm,
        cache.path(),
        &[&["submit", "slurm", "--shards=2", "--hold", &job_dir, "--"], &matrix[..3]].concat(),
    );
    assert!(o.status.success(), "submit: {}", err(&o));
    let ids: Value = serde_json::from_str(&read(&held.join("jobs.json"))).expect("jobs.json");
    let (array, merge) = (ids["array"].as_str().expect("array id"), ids["merge"].as_str().expect("merge id"));
    slurm.ok("scancel", &[&format!("{array}_2")]);
    slurm.ok("scontrol", &["release", array]);
    slurm.ok("scontrol", &["release", merge]);
    let wait =
        submit(&store, &slurm, cache.path(), &["submit", "wait", "-q", "--timeout=10m", &held.display().to_string()]);
    assert_eq!(wait.status.code(), Some(1), "a missing shard fails the verdict: {}", err(&wait));
    assert!(read(&held.join("merge.out")).contains("shard 2/2: no report"), "{}", read(&held.join("merge.out")));
    assert!(!held.join("shard-2.json").exists());
    let merged: Value = serde_json::from_str(&read(&held.join("report.json"))).expect("report.json");
    let suites = merged["suites"].as_array().expect("suites");
    assert_eq!(suites.len(), 2, "the whole matrix: {merged}");
    let not_run: Vec<&Value> = suites.iter().filter(|s| s["cases"][0]["name"] == "shard").collect();
    assert_eq!(not_run.len(), 1, "shard 2's cell is reported not run: {merged}");
    assert!(suites.iter().any(|s| s["passed"] == true), "shard 1's cell passed: {merged}");
    drop(slurm);
    store.assert_clean();
}
