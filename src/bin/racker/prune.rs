//! `racker image prune` and `racker system prune`: docker's questions, lists and totals
//! over the library's prunes, then the store's gc, which frees the files.

use anyhow::{anyhow, Result};
use racker::runtime::{self, ImagePrune, PruneFilter};
use racker::store::Store;

use crate::format::human_size;

#[derive(clap::Args)]
pub struct ImagePruneArgs {
    /// Remove every image no container uses, not only untagged (dangling) ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct SystemPruneArgs {
    /// Remove every image no container uses, not only untagged (dangling) ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// Remove volumes no container uses too
    #[arg(long)]
    volumes: bool,
}

/// docker's question on standard output; the answer on standard input. Anything but
/// yes, and the end of input, is no.
pub fn confirmed(warning: &str) -> Result<bool> {
    crate::cli::print(&format!("{warning}\nAre you sure you want to continue? [y/N] "))?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| anyhow!("reading the answer: {e}"))?;
    if answer.is_empty() {
        crate::cli::print("\n")?;
    }
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn images_text(pruned: &ImagePrune) -> String {
    if pruned.untagged.is_empty() && pruned.deleted.is_empty() {
        return String::new();
    }
    let mut text = String::from("Deleted Images:\n");
    for name in &pruned.untagged {
        text.push_str(&format!("untagged: {name}\n"));
    }
    for id in &pruned.deleted {
        text.push_str(&format!("deleted: {id}\n"));
    }
    text.push('\n');
    text
}

/// Frees what the prunes left unreferenced; returns the bytes freed.
fn collect(store: &Store) -> Result<u64> {
    runtime::collect(store)?;
    Ok(store.gc(false)?.reclaimed_bytes)
}

pub fn image_prune(store: &Store, args: &ImagePruneArgs) -> Result<()> {
    let filter = PruneFilter::parse(&args.filters, chrono::Utc::now())?;
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirmed(warning)? {
        return Ok(());
    }
    let pruned = runtime::prune_images(store, args.all, &filter)?;
    let reclaimed = collect(store)?;
    crate::cli::print(&format!("{}Total reclaimed space: {}\n", images_text(&pruned), human_size(reclaimed)))?;
    Ok(())
}

pub fn system_prune(store: &Store, args: &SystemPruneArgs) -> Result<()> {
    if !args.force {
        let mut warning = String::from(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
        );
        if args.volumes {
            warning.push_str("  - all volumes not used by at least one container\n");
        }
        warning.push_str(if args.all {
            "  - all images without at least one container associated to them\n"
        } else {
            "  - all dangling images\n"
        });
        if !confirmed(&warning)? {
            return Ok(());
        }
    }
    let mut text = String::new();
    let containers = runtime::prune(store, &PruneFilter::default())?;
    let mut reclaimed: u64 = containers.iter().map(|(_, size)| size).sum();
    if !containers.is_empty() {
        text.push_str("Deleted Containers:\n");
        for (id, _) in &containers {
            text.push_str(&format!("{id}\n"));
        }
        text.push('\n');
    }
    let networks = runtime::network::prune(store)?;
    if !networks.is_empty() {
        text.push_str("Deleted Networks:\n");
        for name in &networks {
            text.push_str(&format!("{name}\n"));
        }
        text.push('\n');
    }
    if args.volumes {
        let volumes = runtime::prune_volumes(store)?;
        reclaimed += volumes.iter().map(|(_, size)| size).sum::<u64>();
        if !volumes.is_empty() {
            text.push_str("Deleted Volumes:\n");
            for (volume, _) in &volumes {
                text.push_str(&format!("{}\n", volume.name));
            }
            text.push('\n');
        }
    }
    let images = runtime::prune_images(store, args.all, &PruneFilter::default())?;
    text.push_str(&images_text(&images));
    reclaimed += collect(store)?;
    text.push_str(&format!("Total reclaimed space: {}\n", human_size(reclaimed)));
    crate::cli::print(&text)?;
    Ok(())
}
