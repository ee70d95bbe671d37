//! `postroj list-images` and `postroj pull`.

use racker::store::Store;

#[derive(clap::Args)]
pub struct ListArgs {}

#[derive(clap::Args)]
pub struct PullArgs {}

pub fn list(_store: &Store, _args: &ListArgs) -> anyhow::Result<()> {
    anyhow::bail!("list-images is being built (issue 5)")
}

pub fn pull(_store: &Store, _args: &PullArgs) -> anyhow::Result<()> {
    anyhow::bail!("pull is being built (issue 5)")
}
