//! Regenerates the committed test fixtures: `cargo run --example gen_fixtures -- fixtures`.

#[path = "../tests/support/fixturegen.rs"]
mod fixturegen;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "fixtures".into()));
    // Start from scratch so that fixtures the generator no longer makes disappear;
    // fixtures/README.md is written by hand and kept.
    for sub in ["layers", "oci", "archives", "rootfs"] {
        let dir = out.join(sub);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    fixturegen::generate(&out)?;
    println!("fixtures written to {}", out.display());
    Ok(())
}
