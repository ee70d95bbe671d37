//! pkgprobe's dependency layers as cache entries: how they are named and labelled in
//! the store, and how `postroj cache` lists and removes them.
//!
//! A dependency layer is an image: a curated image plus one layer holding a resolved
//! dependency set ([`crate::deps`]), made by racker's commit. Its name and labels are
//! the contract between the probe that makes and finds it and this module:
//!
//! ```text
//! localhost/postroj/deps:<DepKey::short>      the tag: the cache entry
//!   org.racker.postroj.deps.key       sha256:<64 hex>, the full DepKey
//!   org.racker.postroj.deps.base      sha256:<64 hex>, the image id it was built on
//!   org.racker.postroj.deps.label     the curated label (debian-bookworm)
//!   org.racker.postroj.deps.packages  name:arch=version ... (the set, space-separated)
//! ```
//!
//! The tag is what keeps an entry: racker's gc never removes an image (tagged or not),
//! only layers and blobs no image uses. Removing an entry removes its tag, and with its
//! last tag the image (as `racker rmi`); the layers then go with the next gc unless
//! another image (a later base, another user's commit) still uses them. An entry is
//! stale when its base is no longer any curated label's current image (a re-pull moved
//! the label): no probe can hit it again.

use std::collections::{BTreeMap, BTreeSet};

use racker::digest::Digest;
use racker::reference::Reference;
use racker::store::{Removal, Store, StoreError};

use crate::catalog;
use crate::deps::{DepKey, DependencySet};

/// The repository of dependency layers; the tag is the key's [`DepKey::short`].
pub const REPOSITORY: &str = "localhost/postroj/deps";
/// Label: the full key, `sha256:<64 hex>`.
pub const LABEL_KEY: &str = "org.racker.postroj.deps.key";
/// Label: the id of the image the layer was built on, `sha256:<64 hex>`.
pub const LABEL_BASE: &str = "org.racker.postroj.deps.base";
/// Label: the curated label of the base (`debian-bookworm`).
pub const LABEL_IMAGE_LABEL: &str = "org.racker.postroj.deps.label";
/// Label: the dependency set, space-separated `name:arch=version` entries.
pub const LABEL_PACKAGES: &str = "org.racker.postroj.deps.packages";

#[derive(Debug, thiserror::Error)]
pub enum DepCacheError {
    #[error("no dependency layer {0:?} in the cache (`postroj cache ls` lists them)")]
    UnknownKey(String),
    #[error("{name:?} matches {count} dependency layers; give more of the key")]
    AmbiguousKey { name: String, count: usize },
    #[error("dependency layer {image}: its config: {reason}")]
    BadConfig { image: Digest, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = DepCacheError> = std::result::Result<T, E>;

/// The entry's name in the store: `localhost/postroj/deps:<short key>`.
pub fn reference(key: &DepKey) -> String {
    format!("{REPOSITORY}:{}", key.short())
}

/// The labels of the layer for `key`, built on the image `base` of the curated `label`.
pub fn labels(key: &DepKey, base: &Digest, label: &str, set: &DependencySet) -> BTreeMap<String, String> {
    let packages: Vec<String> = set.packages().map(|p| p.apt_spec()).collect();
    BTreeMap::from([
        (LABEL_KEY.to_owned(), key.to_string()),
        (LABEL_BASE.to_owned(), base.to_string()),
        (LABEL_IMAGE_LABEL.to_owned(), label.to_owned()),
        (LABEL_PACKAGES.to_owned(), packages.join(" ")),
    ])
}

/// Whether an entry can still be hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseState {
    /// Its base is a curated label's current image.
    Current,
    /// Its base is no curated label's current image any more.
    Stale,
    /// Its labels are missing, malformed or disagree with its tag: no probe trusts it.
    Invalid,
}

/// One dependency layer in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepLayer {
    /// The tag under [`REPOSITORY`]: the key's first 12 hex digits.
    pub tag: String,
    /// The image holding the layer.
    pub image: Digest,
    /// From the labels; `None` when they do not name one that matches the tag.
    pub key: Option<Digest>,
    pub base: Option<Digest>,
    pub label: Option<String>,
    /// `name:arch=version` entries.
    pub packages: Vec<String>,
    /// Unpacked bytes of its own (top) layer.
    pub layer_size: u64,
    pub created: Option<String>,
    pub state: BaseState,
}

impl DepLayer {
    /// The name it is tagged with.
    pub fn reference(&self) -> String {
        format!("{REPOSITORY}:{}", self.tag)
    }

    /// The short key (the tag), what `postroj cache ls -q` prints.
    pub fn short(&self) -> &str {
        &self.tag
    }
}

/// The ids of the curated labels' current images (`localhost/postroj/LABEL:latest`),
/// with the labels that point at each.
pub fn current_images(store: &Store) -> Result<BTreeMap<Digest, Vec<&'static str>>> {
    let mut current: BTreeMap<Digest, Vec<&'static str>> = BTreeMap::new();
    for image in catalog::all() {
        match store.resolve(&image.local_name()) {
            Ok(id) => current.entry(id).or_default().push(image.label),
            Err(StoreError::ImageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(current)
}

/// Every dependency layer in the store, newest first.
pub fn list(store: &Store) -> Result<Vec<DepLayer>> {
    let current = current_images(store)?;
    let mut layers = Vec::new();
    for image in store.images()? {
        for (repository, tag) in &image.tags {
            if repository == REPOSITORY {
                layers.push(entry(store, &image.id, tag, &current)?);
            }
        }
    }
    Ok(layers)
}

fn entry(store: &Store, id: &Digest, tag: &str, current: &BTreeMap<Digest, Vec<&'static str>>) -> Result<DepLayer> {
    let record = store.image(id)?;
    let bad = |reason: String| DepCacheError::BadConfig { image: id.clone(), reason };
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&record.config_digest)?).map_err(|e| bad(e.to_string()))?;
    let labels = &config["config"]["Labels"];
    let text = |name: &str| labels[name].as_str().map(str::to_owned);
    let key = text(LABEL_KEY).and_then(|k| k.parse::<Digest>().ok()).filter(|k| k.short() == tag);
    let base = text(LABEL_BASE).and_then(|b| b.parse::<Digest>().ok());
    let label = text(LABEL_IMAGE_LABEL);
    let state = match (&key, &base, &label) {
        (Some(_), Some(base), Some(_)) if current.contains_key(base) => BaseState::Current,
        (Some(_), Some(_), Some(_)) => BaseState::Stale,
        _ => BaseState::Invalid,
    };
    Ok(DepLayer {
        tag: tag.to_owned(),
        image: id.clone(),
        key,
        base,
        label,
        packages: text(LABEL_PACKAGES).map(|p| p.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
        layer_size: record.layers.last().map_or(0, |l| l.size),
        created: record.summary.created,
        state,
    })
}

/// The entries `names` designate, each once, in the order given; any name that matches
/// none (or several) fails the whole selection, so that nothing is removed for a typo.
/// A name is a key (full, `sha256:` or not, or a prefix of its hex such as the short
/// key) or the entry's image reference (`localhost/postroj/deps:<short>`).
pub fn select<'a>(entries: &'a [DepLayer], names: &[String]) -> Result<Vec<&'a DepLayer>> {
    let mut chosen: Vec<&DepLayer> = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        let found = matches(entries, name);
        let entry = match found.as_slice() {
            [one] => *one,
            [] => return Err(DepCacheError::UnknownKey(name.clone())),
            many => return Err(DepCacheError::AmbiguousKey { name: name.clone(), count: many.len() }),
        };
        if seen.insert(&entry.tag) {
            chosen.push(entry);
        }
    }
    Ok(chosen)
}

fn matches<'a>(entries: &'a [DepLayer], name: &str) -> Vec<&'a DepLayer> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        let by_key: Vec<_> = entries
            .iter()
            .filter(|e| match &e.key {
                Some(key) => key.hex().starts_with(hex),
                // Without a key the tag is all there is to go by.
                None => hex.len() <= e.tag.len() && e.tag.starts_with(hex),
            })
            .collect();
        if !by_key.is_empty() {
            return by_key;
        }
    }
    match Reference::parse(name) {
        Ok(r) if r.name() == REPOSITORY => entries.iter().filter(|e| r.tag() == Some(e.tag.as_str())).collect(),
        _ => Vec::new(),
    }
}

/// Removes the entry's tag; the image goes with its last tag (another tag someone gave
/// it keeps it, as for `racker rmi`). Files stay until a gc ([`Store::try_gc`] after a
/// batch, or `racker gc`), which frees the layer unless another image uses it. Fails,
/// changing nothing, when a container uses the image.
pub fn remove(store: &Store, entry: &DepLayer) -> Result<Removal> {
    Ok(store.remove(&entry.reference(), false)?)
}

/// The entries `postroj cache prune` removes: stale and invalid ones.
pub fn prunable(entries: &[DepLayer]) -> impl Iterator<Item = &DepLayer> {
    entries.iter().filter(|e| e.state != BaseState::Current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deps::ResolvedPackage;

    fn layer(key: &str, state: BaseState) -> DepLayer {
        let key = Digest::of(key.as_bytes());
        DepLayer {
            tag: key.short().to_owned(),
            image: Digest::of(b"image"),
            key: Some(key),
            base: Some(Digest::of(b"base")),
            label: Some("debian-bookworm".into()),
            packages: vec![],
            layer_size: 0,
            created: None,
            state,
        }
    }

    #[test]
    fn reference_and_labels_follow_the_contract() {
        let mut set = DependencySet::new();
        set.insert("test", ResolvedPackage::new("lighttpd", "1.4.69-1", "amd64").unwrap()).unwrap();
        set.insert("test", ResolvedPackage::new("spawn-fcgi", "1.6.4-2", "amd64").unwrap()).unwrap();
        let base = Digest::of(b"base");
        let key = DepKey::new(&base, &set);
        assert_eq!(reference(&key), format!("localhost/postroj/deps:{}", key.short()));
        assert!(Reference::parse(&reference(&key)).is_ok());
        let labels = labels(&key, &base, "debian-bookworm", &set);
        assert_eq!(labels["org.racker.postroj.deps.key"], key.to_string());
        assert_eq!(labels["org.racker.postroj.deps.base"], base.to_string());
        assert_eq!(labels["org.racker.postroj.deps.label"], "debian-bookworm");
        assert_eq!(labels["org.racker.postroj.deps.packages"], "lighttpd:amd64=1.4.69-1 spawn-fcgi:amd64=1.6.4-2");
        assert!(labels["org.racker.postroj.deps.key"].starts_with("sha256:") && labels[LABEL_KEY].len() == 71);
    }

    #[test]
    fn select_by_short_full_prefixed_key_or_reference() {
        let entries = [layer("a", BaseState::Current), layer("b", BaseState::Stale)];
        let a = entries[0].key.clone().unwrap();
        for name in
            [a.short().to_owned(), a.to_string(), a.hex().to_owned(), a.hex()[..6].to_owned(), entries[0].reference()]
        {
            let chosen = select(&entries, std::slice::from_ref(&name)).unwrap();
            assert_eq!(chosen, [&entries[0]], "{name}");
        }
        // Each once, in the order given.
        let names = [entries[1].tag.clone(), a.to_string(), entries[1].reference()];
        assert_eq!(select(&entries, &names).unwrap(), [&entries[1], &entries[0]]);
    }

    #[test]
    fn one_unknown_name_fails_the_whole_selection() {
        let entries = [layer("a", BaseState::Current)];
        let names = [entries[0].tag.clone(), "0123456789ab".to_owned()];
        let err = select(&entries, &names).unwrap_err();
        assert!(matches!(&err, DepCacheError::UnknownKey(n) if n == "0123456789ab"));
        assert!(err.to_string().contains("postroj cache ls"), "{err}");
        for name in ["localhost/postroj/debian-bookworm:latest", "not a key", "", "ABC"] {
            assert!(matches!(select(&entries, &[name.to_owned()]), Err(DepCacheError::UnknownKey(_))), "{name}");
        }
    }

    #[test]
    fn an_ambiguous_prefix_is_refused() {
        // Two keys whose hex starts alike: find a pair by their first digit.
        let mut entries: Vec<DepLayer> = Vec::new();
        for i in 0.. {
            let candidate = layer(&i.to_string(), BaseState::Current);
            if let Some(first) = entries.first() {
                if first.tag[..1] == candidate.tag[..1] {
                    entries.push(candidate);
                    break;
                }
            } else {
                entries.push(candidate);
            }
        }
        let prefix = entries[0].tag[..1].to_owned();
        let err = select(&entries, &[prefix]).unwrap_err();
        assert!(matches!(err, DepCacheError::AmbiguousKey { count: 2, .. }), "{err}");
    }

    #[test]
    fn an_entry_without_a_valid_key_is_selected_by_its_tag_and_pruned() {
        let mut broken = layer("a", BaseState::Invalid);
        broken.key = None;
        let entries = [broken, layer("b", BaseState::Current), layer("c", BaseState::Stale)];
        assert_eq!(select(&entries, std::slice::from_ref(&entries[0].tag)).unwrap(), [&entries[0]]);
        let pruned: Vec<_> = prunable(&entries).map(|e| e.tag.clone()).collect();
        assert_eq!(pruned, [entries[0].tag.clone(), entries[2].tag.clone()]);
    }
}
