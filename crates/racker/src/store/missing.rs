//! Docker's rule for `run`, which postroj's probes follow too: an image the store has is
//! used as it is, however old; only one it lacks is pulled first.

use super::{Store, StoreError};
use crate::digest::Digest;

impl Store {
    /// The ids `names` resolve to, after `pull` brought the images the store has none for.
    ///
    /// `pull` is called once, only if something is missing, with the indices (into
    /// `names`) of every missing name, so that a front end can say what it pulls before
    /// it starts; it returns their ids in the same order. How an image is pulled is the
    /// caller's: from its registry (`racker run`), or provisioned (`postroj pkgprobe`).
    pub fn resolve_or_pull<E: From<StoreError>>(
        &self,
        names: &[&str],
        pull: impl FnOnce(&[usize]) -> Result<Vec<Digest>, E>,
    ) -> Result<Vec<Digest>, E> {
        let mut ids = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match self.resolve(name) {
                Ok(id) => ids.push(Some(id)),
                Err(StoreError::ImageNotFound(_)) => {
                    missing.push(index);
                    ids.push(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !missing.is_empty() {
            let pulled = pull(&missing)?;
            for (index, id) in missing.into_iter().zip(pulled) {
                ids[index] = Some(id);
            }
        }
        // A pull that returned fewer ids than it was asked for left those unresolved.
        ids.into_iter()
            .zip(names)
            .map(|(id, name)| id.ok_or_else(|| StoreError::ImageNotFound((*name).to_owned()).into()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::digest::Digest;
    use crate::store::{Store, StoreError};

    #[test]
    fn pulls_only_what_is_missing_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pulled = Digest::of(b"pulled");
        let mut asked = Vec::new();
        let ids = store
            .resolve_or_pull(&["a", "b"], |missing| {
                asked.extend_from_slice(missing);
                Ok::<_, StoreError>(vec![pulled.clone(); missing.len()])
            })
            .unwrap();
        assert_eq!(asked, [0, 1]);
        assert_eq!(ids, [pulled.clone(), pulled]);
    }

    #[test]
    fn a_pull_that_brings_too_little_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.resolve_or_pull(&["a"], |_| Ok::<_, StoreError>(vec![])).unwrap_err();
        assert!(matches!(&err, StoreError::ImageNotFound(name) if name == "a"), "{err}");
    }
}
