//! `postroj cache ls|rm|prune`: pkgprobe's dependency layers (images in the store) and
//! the host's apt cache (package lists per image, downloaded .debs per release).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use postroj::apt_cache::{AptCache, ArchivePrune, ArchivesInfo, ListsInfo};
use postroj::depcache::{self, BaseState, DepLayer};
use racker::digest::Digest;
use racker::store::Store;

use crate::format::{human_size, since, table};

#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// List the dependency layers and the apt cache (package lists, downloaded packages)
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove dependency layers by key (short or full) or image reference
    Rm(RmArgs),
    /// Remove stale dependency layers, package lists of images no longer in the store,
    /// and downloaded packages no probe used for a while
    Prune(PruneArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// Only show the keys of the dependency layers
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate keys and ids
    #[arg(long)]
    no_trunc: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Keys (the 12-digit short key, any unique prefix, the full sha256:…) or references
    /// (localhost/postroj/deps:KEY)
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    keys: Vec<String>,
    /// Remove every dependency layer
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Remove downloaded packages that no probe used for this many days
    #[arg(long, value_name = "DAYS", default_value_t = 30, conflicts_with = "all")]
    unused_for: u64,
    /// Remove every downloaded package, however recently used
    #[arg(long)]
    all: bool,
}

pub fn run(store: &Store, apt_root: &Path, command: &CacheCommand) -> Result<()> {
    match command {
        CacheCommand::Ls(args) => list(store, apt_root, args),
        CacheCommand::Rm(args) => remove(store, args),
        CacheCommand::Prune(args) => prune(store, apt_root, args),
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn since_time(t: Option<SystemTime>) -> String {
    since(t.map(rfc3339).as_deref())
}

fn short_or_full(digest: &Digest, no_trunc: bool) -> String {
    if no_trunc {
        digest.to_string()
    } else {
        digest.short().to_owned()
    }
}

fn state_name(state: BaseState) -> &'static str {
    match state {
        BaseState::Current => "current",
        BaseState::Stale => "stale",
        BaseState::Invalid => "invalid",
    }
}

fn list(store: &Store, apt_root: &Path, args: &LsArgs) -> Result<()> {
    let layers = depcache::list(store)?;
    if args.quiet {
        for layer in &layers {
            match (&layer.key, args.no_trunc) {
                (Some(key), true) => outln!("{key}")?,
                _ => outln!("{}", layer.short())?,
            }
        }
        return Ok(());
    }
    let cache = AptCache::existing(apt_root)?;
    let lists = cache.as_ref().map(AptCache::image_lists).transpose()?.unwrap_or_default();
    let releases = cache.as_ref().map(AptCache::releases).transpose()?.unwrap_or_default();
    let in_store: std::collections::BTreeSet<Digest> = store.images()?.into_iter().map(|i| i.id).collect();
    let current = depcache::current_images(store)?;
    let labels_of = |image: &Digest| current.get(image).map(|labels| labels.join(","));
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "DependencyLayers": layers.iter().map(layer_json).collect::<Vec<_>>(),
                "AptCache": apt_root,
                "AptLists": lists.iter().map(|l| serde_json::json!({
                    "Image": l.image, "Label": labels_of(&l.image), "InStore": in_store.contains(&l.image),
                    "RefreshedAt": l.refreshed_at.map(rfc3339), "Size": l.size,
                })).collect::<Vec<_>>(),
                "AptArchives": releases.iter().map(|r| serde_json::json!({
                    "Release": r.release, "Packages": r.packages, "Size": r.size,
                    "LastUsedAt": r.last_used.map(rfc3339),
                })).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = layers
                .iter()
                .map(|l| {
                    let key = match (&l.key, args.no_trunc) {
                        (Some(key), true) => key.to_string(),
                        _ => l.short().to_owned(),
                    };
                    let base = match &l.base {
                        Some(base) => format!("{} ({})", short_or_full(base, args.no_trunc), state_name(l.state)),
                        None => format!("<none> ({})", state_name(l.state)),
                    };
                    vec![
                        key,
                        l.label.clone().unwrap_or_else(|| "<none>".into()),
                        base,
                        l.packages.len().to_string(),
                        human_size(l.layer_size),
                        since(l.created.as_deref()),
                    ]
                })
                .collect();
            out!("{}", table(&["KEY", "IMAGE", "BASE", "PACKAGES", "SIZE", "CREATED"], &rows))?;
            outln!("\nAPT PACKAGE LISTS ({})", apt_root.display())?;
            out!("{}", lists_table(&lists, &in_store, &labels_of, args.no_trunc))?;
            outln!("\nAPT DOWNLOADED PACKAGES ({})", apt_root.display())?;
            out!("{}", archives_table(&releases))?;
        }
    }
    Ok(())
}

fn layer_json(l: &DepLayer) -> serde_json::Value {
    serde_json::json!({
        "Key": l.key, "ShortKey": l.short(), "Reference": l.reference(), "Image": l.image,
        "Label": l.label, "Base": l.base, "BaseState": l.state, "Packages": l.packages,
        "Size": l.layer_size, "CreatedAt": l.created, "CreatedSince": since(l.created.as_deref()),
    })
}

fn lists_table(
    lists: &[ListsInfo],
    in_store: &std::collections::BTreeSet<Digest>,
    labels_of: &dyn Fn(&Digest) -> Option<String>,
    no_trunc: bool,
) -> String {
    let rows: Vec<Vec<String>> = lists
        .iter()
        .map(|l| {
            vec![
                short_or_full(&l.image, no_trunc),
                labels_of(&l.image).unwrap_or_else(|| "<none>".into()),
                if in_store.contains(&l.image) { "yes" } else { "no" }.into(),
                l.refreshed_at.map_or_else(|| "never".into(), |t| since_time(Some(t))),
                human_size(l.size),
            ]
        })
        .collect();
    table(&["IMAGE", "LABEL", "IN STORE", "REFRESHED", "SIZE"], &rows)
}

fn archives_table(releases: &[ArchivesInfo]) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                r.release.clone(),
                r.packages.to_string(),
                human_size(r.size),
                r.last_used.map_or_else(|| "never".into(), |t| since_time(Some(t))),
            ]
        })
        .collect();
    table(&["RELEASE", "PACKAGES", "SIZE", "LAST USED"], &rows)
}

/// Removes one entry, printing what happened; the error if it could not be removed
/// (a container uses it).
fn remove_one(store: &Store, layer: &DepLayer, why: &str) -> Result<Result<(), depcache::DepCacheError>> {
    match depcache::remove(store, layer) {
        Ok(removal) if removal.deleted.is_some() => outln!("Deleted dependency layer {}{why}", layer.short())?,
        Ok(_) => outln!("Untagged dependency layer {}{why}; its image stays: it has other names", layer.short())?,
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(()))
}

fn remove(store: &Store, args: &RmArgs) -> Result<()> {
    let layers = depcache::list(store)?;
    // Every name is checked before anything is removed.
    let chosen = if args.all { layers.iter().collect() } else { depcache::select(&layers, &args.keys)? };
    let mut failed = 0;
    for layer in &chosen {
        if let Err(e) = remove_one(store, layer, "")? {
            errln!("Error: dependency layer {}: {e}", layer.short());
            failed += 1;
        }
    }
    // As racker rmi: files go now if nothing else is using the store, else at the next gc.
    store.try_gc()?;
    if failed > 0 {
        bail!("{failed} of {} dependency layers could not be removed", chosen.len());
    }
    Ok(())
}

fn prune(store: &Store, apt_root: &Path, args: &PruneArgs) -> Result<()> {
    let mut reclaimed = 0;
    let layers = depcache::list(store)?;
    let mut removed_layers = false;
    for layer in depcache::prunable(&layers) {
        let why = match (layer.state, &layer.base) {
            (BaseState::Stale, Some(base)) => {
                format!(" (stale: its base {} is no label's current image)", base.short())
            }
            _ => " (invalid labels)".to_owned(),
        };
        // One in use by a container stays; the others go.
        match remove_one(store, layer, &why)? {
            Ok(()) => removed_layers = true,
            Err(e) => errln!("Kept dependency layer {}: {e}", layer.short()),
        }
    }
    if removed_layers {
        match store.try_gc()? {
            Some(report) => reclaimed += report.reclaimed_bytes,
            None => errln!("the store is busy: racker gc frees the removed layers later"),
        }
    }
    if let Some(cache) = AptCache::existing(apt_root)? {
        let in_store: std::collections::BTreeSet<Digest> = store.images()?.into_iter().map(|i| i.id).collect();
        for lists in cache.image_lists()? {
            if in_store.contains(&lists.image) {
                continue;
            }
            if cache.remove_lists(&lists.image)? {
                outln!("Deleted apt package lists of image {} (not in the store)", lists.image.short())?;
                reclaimed += lists.size;
            } else {
                errln!("apt package lists of image {} are in use: kept", lists.image.short());
            }
        }
        let which = if args.all {
            ArchivePrune::All
        } else {
            let age = Duration::from_secs(args.unused_for.saturating_mul(86400));
            ArchivePrune::UnusedSince(SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
        };
        for (release, report) in cache.prune_archives(which)? {
            if report.files > 0 {
                outln!("Deleted {} downloaded packages of {release} ({})", report.files, human_size(report.bytes))?;
                reclaimed += report.bytes;
            }
        }
    }
    outln!("Total reclaimed space: {}", human_size(reclaimed))?;
    Ok(())
}
