//! `postroj pkgprobe` and `postroj selftest`.

use racker::store::Store;

#[derive(clap::Args)]
pub struct PkgprobeArgs {}

#[derive(clap::Args)]
pub struct SelftestArgs {}

pub fn pkgprobe(_store: &Store, _args: &PkgprobeArgs) -> anyhow::Result<i32> {
    anyhow::bail!("pkgprobe is being built (issue 5)")
}

pub fn selftest(_store: &Store, _args: &SelftestArgs) -> anyhow::Result<i32> {
    anyhow::bail!("selftest is being built (issue 5)")
}
