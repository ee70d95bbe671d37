//! The committed fixtures are exactly what `tests/support/fixturegen.rs` generates.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fixturegen;

/// Relative path → bytes of every file below `root`.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn committed_fixtures_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    fixturegen::generate(tmp.path()).unwrap();
    let generated = files(tmp.path());
    let mut committed = files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"));
    committed.remove("README.md");

    let missing: Vec<_> = generated.keys().filter(|k| !committed.contains_key(*k)).collect();
    let extra: Vec<_> = committed.keys().filter(|k| !generated.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "fixtures/ is out of date (regenerate: cargo run --example gen_fixtures -- fixtures)\n\
         missing: {missing:?}\nextra: {extra:?}"
    );
    for (rel, bytes) in &generated {
        assert!(
            committed[rel] == *bytes,
            "fixtures/{rel} differs from what the generator makes \
             (regenerate: cargo run --example gen_fixtures -- fixtures)"
        );
    }
}

#[test]
fn generation_is_deterministic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fixturegen::generate(a.path()).unwrap();
    fixturegen::generate(b.path()).unwrap();
    assert_eq!(files(a.path()), files(b.path()));
}
