//! Driver of `benches/snapshot.sh`: times snapshot setup + teardown.
//!
//! ```text
//! snapshot_bench gen-layout DIR BYTES        an OCI layout `latest` whose one big layer
//!                                            (plain tar) holds BYTES of random data
//! snapshot_bench run ROOT IMAGE DRIVER RUNS  prepare+remove RUNS times (after one warm-up,
//!                                            which materialises a btrfs image), kept and
//!                                            ephemeral; prints the medians in ms
//! ```

#[path = "../tests/support/fixturegen.rs"]
mod fixturegen;

use std::path::{Path, PathBuf};
use std::time::Instant;

use racker::snapshot::{self, Driver};
use racker::store::Store;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gen-layout", dir, bytes] => gen_layout(Path::new(dir), bytes.parse()?),
        ["run", root, image, driver, runs] => run(Path::new(root), image, driver.parse()?, runs.parse()?),
        _ => anyhow::bail!("usage: snapshot_bench gen-layout DIR BYTES | run ROOT IMAGE DRIVER RUNS"),
    }
}

fn gen_layout(dir: &Path, bytes: usize) -> anyhow::Result<()> {
    use fixturegen::{build_tar, dir as d, file, image, layout_files, random_bytes, Layer, MT_TAR};
    let base = build_tar(&[d(b"etc/", 0o755), file(b"etc/hostname", 0o644, b"bench\n")])?;
    let data = random_bytes(0x5eed, bytes);
    let big = build_tar(&[d(b"data/", 0o755), file(b"data/random.bin", 0o644, &data)])?;
    drop(data);
    let layers = [base, big].map(|tar| Layer { blob: tar.clone(), media_type: MT_TAR, tar });
    let img = image("bench", &layers);
    drop(layers);
    for (rel, bytes) in layout_files(&img, &[("org.opencontainers.image.ref.name", "latest")]) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

fn run(root: &Path, image: &str, driver: Driver, runs: usize) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let record = store.image(&store.resolve(image)?)?;
    let layers = snapshot::ImageLayers::of(&store, &record);
    let runtime = tempfile::Builder::new().prefix("racker-bench-run-").tempdir_in("/run")?;
    let snap = snapshot::open_with(&store, Some(driver), runtime.path())?;
    let warm = Instant::now();
    snap.prepare("warm-up", &layers, false)?;
    snap.remove("warm-up")?;
    let warm = warm.elapsed();
    let mut medians = Vec::new();
    for ephemeral in [false, true] {
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let key = format!("bench-{i}");
            let t = Instant::now();
            let s = snap.prepare(&key, &layers, ephemeral)?;
            std::fs::write(s.rootfs.join("etc/hostname"), "written\n")?;
            snap.remove(&key)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        medians.push(times[runs / 2]);
    }
    let leftover: Vec<PathBuf> = snap.list()?.into_iter().map(PathBuf::from).collect();
    anyhow::ensure!(leftover.is_empty(), "snapshots left: {leftover:?}");
    println!(
        "{driver} {image}: first prepare+remove {:.1} ms; median prepare+write+remove kept {:.2} ms, ephemeral {:.2} ms",
        warm.as_secs_f64() * 1000.0,
        medians[0],
        medians[1]
    );
    println!("MEDIANS {} {}", medians[0], medians[1]);
    Ok(())
}
