//! postroj's curated images by label in `racker run` and `create`: the original Racker's
//! `racker run -it --rm debian-bullseye bash` habit. postroj stores them as
//! `localhost/postroj/LABEL:latest`; a label is tried only when no image in the store
//! has the name as given, so a user's own `debian-bullseye` image still wins.

use anyhow::{bail, Result};
use racker::store::Store;

/// The store's name for `image` when it is a curated label (or alias) the store holds;
/// `None` when it is no label. A label the store lacks is an error naming the pull.
pub fn resolve(store: &Store, image: &str) -> Result<Option<String>> {
    if store.resolve(image).is_ok() {
        return Ok(None);
    }
    let Ok(curated) = postroj::catalog::find(image) else { return Ok(None) };
    let name = curated.local_name();
    if store.resolve(&name).is_err() {
        bail!("{image} is a curated postroj image the store does not have: run `postroj pull {}` first", curated.label);
    }
    tracing::debug!("{image}: the curated image {name}");
    Ok(Some(name))
}
