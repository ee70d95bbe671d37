//! `racker image prune`: untagged (dangling) images, or with `all` every image no
//! container uses, narrowed by `until=` and `label=` filters, as docker's. Files go in the
//! store's gc afterwards; an image's tags and row go here.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{PruneFilter, Result};
use crate::digest::Digest;
use crate::store::{Store, StoreError};

/// What `prune_images` removed, in docker's "Deleted Images:" terms.
#[derive(Clone, Debug, Default)]
pub struct ImagePrune {
    /// `untagged: NAME` lines.
    pub untagged: Vec<String>,
    /// `deleted: ID` lines.
    pub deleted: Vec<Digest>,
}

/// Removes dangling images (`all`: every image no container, running or stopped, uses)
/// that `filter` matches. An image a container uses is never removed.
pub fn prune_images(store: &Store, all: bool, filter: &PruneFilter) -> Result<ImagePrune> {
    let used: HashSet<Digest> = store.containers()?.into_iter().map(|c| c.image_id).collect();
    let mut report = ImagePrune::default();
    for image in store.images()? {
        if used.contains(&image.id) || (!all && !image.tags.is_empty()) {
            continue;
        }
        if !matches(store, &image.id, image.created.as_deref(), filter)? {
            continue;
        }
        match store.remove(&image.id.to_string(), true) {
            Ok(removal) => {
                report.untagged.extend(removal.untagged);
                report.deleted.extend(removal.deleted);
            }
            // A container made since the list was read: keep the image, as docker does.
            Err(StoreError::ImageUsedByContainer { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Whether an image passes `until=` (created before) and `label=`/`label!=` (its config's labels).
fn matches(store: &Store, id: &Digest, created: Option<&str>, filter: &PruneFilter) -> Result<bool> {
    if let Some(until) = filter.until {
        let created = created.and_then(|c| DateTime::parse_from_rfc3339(c).ok()).map(|t| t.with_timezone(&Utc));
        if created.is_some_and(|c| c >= until) {
            return Ok(false);
        }
    }
    if filter.labels.is_empty() {
        return Ok(true);
    }
    let record = store.image(id)?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&record.config_digest)?).map_err(|e| {
        StoreError::Invalid { what: format!("image config {}", record.config_digest), reason: e.to_string() }
    })?;
    let labels = &config["config"]["Labels"];
    Ok(filter.labels.iter().all(|l| l.passes(labels.get(&l.key).and_then(|v| v.as_str()))))
}
