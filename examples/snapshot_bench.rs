//! Driver of `benches/snapshot.sh`: times snapshot setup + teardown.
//!
//! ```text
//! snapshot_bench gen-layout DIR BYTES        an OCI layout `latest` whose one big layer
//!                                            (plain tar) holds BYTES of random data
//! snapshot_bench run ROOT IMAGE DRIVER RUNS  prepare+write+remove: first the image's first
//!                                            container on this store (cold: on btrfs it
//!                                            materialises the image), then one untimed
//!                                            warm-up and RUNS timed runs of each mode, kept
//!                                            and ephemeral, interleaved; prints the cold
//!                                            time and each mode's median with its spread
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
    anyhow::ensure!(runs > 0, "RUNS must be at least 1");
    let store = Store::open(root)?;
    let record = store.image(&store.resolve(image)?)?;
    let layers = snapshot::ImageLayers::of(&store, &record);
    let runtime = tempfile::Builder::new().prefix("racker-bench-run-").tempdir_in("/run")?;
    let snap = snapshot::open_with(&store, Some(driver), runtime.path())?;
    // One container's life: what `racker run --rm` (ephemeral) or `run` + `rm` (kept) cost
    // the snapshotter, with one write so that the upper layer is used.
    let cycle = |key: &str, ephemeral: bool| -> anyhow::Result<f64> {
        let t = Instant::now();
        let s = snap.prepare(key, &layers, ephemeral)?;
        std::fs::write(s.rootfs.join("etc/hostname"), "written\n")?;
        snap.remove(key)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    // Reported apart, never folded into the medians: the image's first container pays for
    // whatever the driver does once per image (btrfs: the image's subvolume).
    let cold = cycle("cold", false)?;
    let modes = [false, true];
    for ephemeral in modes {
        cycle("warm-up", ephemeral)?;
    }
    let mut times = [Vec::with_capacity(runs), Vec::with_capacity(runs)];
    for i in 0..runs {
        for (m, ephemeral) in modes.into_iter().enumerate() {
            times[m].push(cycle(&format!("bench-{i}"), ephemeral)?);
        }
    }
    let leftover: Vec<PathBuf> = snap.list()?.into_iter().map(PathBuf::from).collect();
    anyhow::ensure!(leftover.is_empty(), "snapshots left: {leftover:?}");
    let [kept, ephemeral] = times.map(Spread::of);
    println!(
        "{driver} {image}: first container {cold:.1} ms; warm prepare+write+remove, median [min p25 p75 max] ms: \
         kept {kept}, ephemeral {ephemeral}"
    );
    println!("RESULT {cold:.3} {} {}", kept.fields(), ephemeral.fields());
    Ok(())
}

/// A median with its spread (quartiles by nearest rank).
struct Spread {
    median: f64,
    min: f64,
    p25: f64,
    p75: f64,
    max: f64,
}

impl Spread {
    fn of(mut times: Vec<f64>) -> Spread {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
        let rank = |quarters: usize| times[(quarters * n).div_ceil(4) - 1];
        Spread { median, min: times[0], p25: rank(1), p75: rank(3), max: times[n - 1] }
    }

    fn fields(&self) -> String {
        format!("{:.3} {:.3} {:.3} {:.3} {:.3}", self.median, self.min, self.p25, self.p75, self.max)
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} [{:.2} {:.2} {:.2} {:.2}]", self.median, self.min, self.p25, self.p75, self.max)
    }
}
