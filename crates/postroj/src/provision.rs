//! `postroj pull`: a curated label becomes an image that boots, tagged
//! [`CuratedImage::local_name`].
//!
//! Two sources:
//!
//! - **registry**: the label's [`CuratedImage::source`] is pulled as `racker pull` does
//!   (registries.conf rewrites apply). An image with systemd is tagged as it is. One
//!   without (the official distribution images) is provisioned: its package manager's
//!   [`provision_script`](super::catalog::PackageManager::provision_script) runs with
//!   `sh -c` in a command-mode container of it (host network), and the container's
//!   writes are committed as one more layer ([`racker::runtime::commit`]) labelled
//!   [`LABEL_BASE`] (the base image id) and [`LABEL_RECIPE`] (the script's sha256). A
//!   later pull that finds an image with the same two labels reuses it: the same base
//!   and the same recipe make the same image, so provisioning runs once per base.
//! - **mirror**: labels with a Debian suite are built by mmdebstrap from the host's
//!   Debian mirror with systemd included ([`super::mirror`]). A build in the store is
//!   reused; `--force` builds again.
//!
//! `auto` tries the registry first, because a pull of a small official image plus one
//! provisioning layer is faster than a full mmdebstrap build and shares its base with
//! other users of that image; when the registry cannot be reached at all (an offline
//! host or a blocked registry: [`RegistryError::Unreachable`]) and the label has a
//! Debian suite, it builds from the mirror instead. Any other registry failure (not
//! found, unauthorized) is reported as it is: building something else would hide it.
//!
//! A failed provisioning leaves no image and no container behind; the pulled base stays,
//! as after a `racker pull`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::catalog::CuratedImage;
use super::layer::Script;
use super::mirror::{self, MirrorError};
use racker::digest::Digest;
use racker::progress::Progress;
use racker::reference::Reference;
use racker::registry::{self, RegistryError};
use racker::runtime::{self, CommitError, RuntimeError};
use racker::snapshot::{self, Driver, SnapshotError};
use racker::store::{Store, StoreError};

/// Label of a provisioned image: the id of the image it was provisioned from.
pub const LABEL_BASE: &str = "org.racker.postroj.base";
/// Label of a provisioned image: the sha256 of the provisioning script.
pub const LABEL_RECIPE: &str = "org.racker.postroj.recipe";

/// Where `postroj pull` gets an image from (`--source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceChoice {
    /// The registry, falling back to the mirror when the registry is unreachable.
    #[default]
    Auto,
    Registry,
    Mirror,
}

/// The source that was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Used {
    Registry,
    Mirror,
}

/// How the label's image came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The registry's image has systemd: tagged as it is.
    AsPulled,
    /// A provisioning layer was made now.
    Provisioned,
    /// An image provisioned earlier from the same base with the same recipe was found.
    Reused,
    /// Built from the Debian mirror.
    Built,
}

/// What [`pull`] did.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub label: &'static str,
    pub image: Digest,
    /// The tag it got (`localhost/postroj/LABEL:latest`).
    pub name: String,
    pub source: Used,
    pub outcome: Outcome,
}

/// What happens along the way, for the front end to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// Which source is used, and why.
    Source { used: Used, reason: String },
    /// A step, one line.
    Step(String),
    /// A line of mmdebstrap's output.
    Mirror(&'a str),
}

pub struct PullOptions {
    pub source: SourceChoice,
    /// Provision again even when an image with the same base and recipe exists.
    pub force: bool,
    pub registry: registry::PullOptions,
    pub progress: Arc<dyn Progress>,
    /// Where the provisioning container's output goes.
    pub output: runtime::Console,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{label}: {reference} is not a valid reference: {reason}")]
    BadSource { label: String, reference: String, reason: String },
    #[error("{label}: pulling {reference}: {source}")]
    Registry { label: String, reference: String, source: Box<RegistryError> },
    #[error("{label} cannot be built from a Debian mirror (it is not a Debian release): use --source registry")]
    NoMirror { label: String },
    #[error("{label}: provisioning failed: `sh -c <{manager} provisioning script>` exited with status {code} in a container of {base}; no image was made")]
    ScriptFailed { label: String, manager: String, base: String, code: i32 },
    #[error("{label}: provisioning: {source}")]
    Runtime { label: String, source: Box<RuntimeError> },
    #[error("{label}: committing the provisioning layer: {source}")]
    Commit { label: String, source: Box<CommitError> },
    #[error("{label}: {source}")]
    Mirror { label: String, source: Box<MirrorError> },
    #[error("{label}: {source}")]
    Snapshot { label: String, source: Box<SnapshotError> },
    #[error("{label}: {source}")]
    Store { label: String, source: Box<StoreError> },
}

/// Pulls (and provisions, or builds) the label `image` into `store` and tags it
/// [`CuratedImage::local_name`].
pub fn pull(
    store: &Store,
    image: &CuratedImage,
    opts: &PullOptions,
    report: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pulled, ProvisionError> {
    let label = image.label;
    match (opts.source, image.mirror_suite) {
        (SourceChoice::Mirror, None) => Err(ProvisionError::NoMirror { label: label.to_owned() }),
        (SourceChoice::Mirror, Some(suite)) => {
            report(Event::Source { used: Used::Mirror, reason: format!("--source mirror: mmdebstrap {suite}") });
            from_mirror(store, image, suite, opts, report)
        }
        (SourceChoice::Registry, _) => {
            report(Event::Source { used: Used::Registry, reason: format!("--source registry: {}", image.source) });
            from_registry(store, image, opts, report)
        }
        (SourceChoice::Auto, suite) => {
            report(Event::Source {
                used: Used::Registry,
                reason: format!("{} (--source auto tries the registry first)", image.source),
            });
            match (from_registry(store, image, opts, report), suite) {
                (Err(ProvisionError::Registry { source, .. }), Some(suite))
                    if matches!(*source, RegistryError::Unreachable { .. }) =>
                {
                    let RegistryError::Unreachable { registry, detail } = *source else {
                        unreachable!("matched above")
                    };
                    report(Event::Source {
                        used: Used::Mirror,
                        reason: format!(
                            "{registry} is unreachable ({detail}); building {suite} from the Debian mirror instead"
                        ),
                    });
                    from_mirror(store, image, suite, opts, report)
                }
                (result, _) => result,
            }
        }
    }
}

fn store_err(label: &str) -> impl FnOnce(StoreError) -> ProvisionError + '_ {
    move |source| ProvisionError::Store { label: label.to_owned(), source: Box::new(source) }
}

fn local_reference(image: &CuratedImage) -> Result<Reference, ProvisionError> {
    Reference::parse(&image.local_name()).map_err(|e| ProvisionError::BadSource {
        label: image.label.to_owned(),
        reference: image.local_name(),
        reason: e.to_string(),
    })
}

fn from_mirror(
    store: &Store,
    image: &CuratedImage,
    suite: &str,
    opts: &PullOptions,
    report: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pulled, ProvisionError> {
    let label = image.label;
    let name = local_reference(image)?;
    if !opts.force {
        if let Some(id) = mirror_built(store, image, suite).map_err(store_err(label))? {
            report(Event::Step(format!(
                "reused {} (built from the Debian mirror earlier); --force builds it again",
                id.short()
            )));
            return Ok(Pulled {
                label,
                image: id,
                name: image.local_name(),
                source: Used::Mirror,
                outcome: Outcome::Reused,
            });
        }
    }
    let on_line = |line: &str| report(Event::Mirror(line));
    let id = mirror::build(store, suite, vec![name], &on_line, opts.progress.clone())
        .map_err(|source| ProvisionError::Mirror { label: label.to_owned(), source: Box::new(source) })?;
    Ok(Pulled { label, image: id, name: image.local_name(), source: Used::Mirror, outcome: Outcome::Built })
}

fn from_registry(
    store: &Store,
    image: &CuratedImage,
    opts: &PullOptions,
    report: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pulled, ProvisionError> {
    let label = image.label;
    let reference = Reference::parse(image.source).map_err(|e| ProvisionError::BadSource {
        label: label.to_owned(),
        reference: image.source.to_owned(),
        reason: e.to_string(),
    })?;
    let pulled = registry::pull(store, &reference, &opts.registry, opts.progress.clone()).map_err(|source| {
        ProvisionError::Registry {
            label: label.to_owned(),
            reference: image.source.to_owned(),
            source: Box::new(source),
        }
    })?;
    let base = pulled.id;
    report(Event::Step(format!("pulled {} as {}", image.source, base.short())));
    let done = |image_id: Digest, outcome| -> Result<Pulled, ProvisionError> {
        store.tag(&image_id.to_string(), &image.local_name()).map_err(store_err(label))?;
        Ok(Pulled { label, image: image_id, name: image.local_name(), source: Used::Registry, outcome })
    };
    let record = store.image(&base).map_err(store_err(label))?;
    if has_systemd(store, &record)
        .map_err(|source| ProvisionError::Snapshot { label: label.to_owned(), source: Box::new(source) })?
    {
        report(Event::Step(format!("{} has systemd: no provisioning needed", image.source)));
        return done(base, Outcome::AsPulled);
    }
    let script = image.package_manager.provision_script();
    let recipe = Digest::of(script.as_bytes());
    if !opts.force {
        if let Some(found) = find_provisioned(store, &base, &recipe).map_err(store_err(label))? {
            report(Event::Step(format!(
                "reused the provisioned image {} (same base {}, same recipe {}); --force provisions again",
                found.short(),
                base.short(),
                recipe.short()
            )));
            return done(found, Outcome::Reused);
        }
    }
    report(Event::Step(format!(
        "{} has no systemd: provisioning it with {:?} (recipe {})",
        image.source,
        image.package_manager,
        recipe.short()
    )));
    let id = provision(store, image, &base, script, &recipe, &opts.output)?;
    report(Event::Step(format!("provisioned {} on {}", id.short(), base.short())));
    done(id, Outcome::Provisioned)
}

/// The label's image, if it is a mirror build of `suite` (its last history entry says so).
fn mirror_built(store: &Store, image: &CuratedImage, suite: &str) -> Result<Option<Digest>, StoreError> {
    let id = match store.resolve(&image.local_name()) {
        Ok(id) => id,
        Err(StoreError::ImageNotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let record = store.image(&id)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&record.config_digest)?).unwrap_or_default();
    let last = config["history"].as_array().and_then(|h| h.last()).map(|e| e["created_by"].clone());
    Ok((last == Some(mirror::created_by(suite).into())).then_some(id))
}

/// Whether `image` has systemd, looked up in a throw-away snapshot of it.
fn has_systemd(store: &Store, image: &racker::store::ImageRecord) -> Result<bool, SnapshotError> {
    let snapshotter = snapshot::open(store, Some(Driver::Overlay))?;
    let key = format!("postroj-check-{:016x}", rand::random::<u64>());
    let snap = snapshotter.prepare(&key, &snapshot::ImageLayers::of(store, image), true)?;
    let found = runtime::rootfs::has_systemd(&snap.rootfs);
    snapshotter.remove(&key)?;
    Ok(found)
}

/// An image provisioned from `base` with the recipe `recipe`, if the store has one.
fn find_provisioned(store: &Store, base: &Digest, recipe: &Digest) -> Result<Option<Digest>, StoreError> {
    for summary in store.images()? {
        let record = store.image(&summary.id)?;
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(&store.read_blob(&record.config_digest)?) else {
            continue;
        };
        let labels = &config["config"]["Labels"];
        if labels[LABEL_BASE] == base.to_string() && labels[LABEL_RECIPE] == recipe.to_string() {
            return Ok(Some(summary.id));
        }
    }
    Ok(None)
}

fn provision(
    store: &Store,
    image: &CuratedImage,
    base: &Digest,
    script: &str,
    recipe: &Digest,
    output: &runtime::Console,
) -> Result<Digest, ProvisionError> {
    let label = image.label;
    let name = format!("postroj-provision-{label}");
    let base_id = base.to_string();
    let run = Script { console: Some(output.clone()), ..Script::new(&base_id, &name, script) };
    let finished = run
        .run(store)
        .map_err(|source| ProvisionError::Runtime { label: label.to_owned(), source: Box::new(source) })?;
    if !finished.success() {
        return Err(ProvisionError::ScriptFailed {
            label: label.to_owned(),
            manager: format!("{:?}", image.package_manager).to_lowercase(),
            base: base.short().to_owned(),
            code: finished.exit_code,
        });
    }
    let labels =
        BTreeMap::from([(LABEL_BASE.to_owned(), base.to_string()), (LABEL_RECIPE.to_owned(), recipe.to_string())]);
    let opts = runtime::CommitOptions {
        message: Some(format!("postroj: {label} provisioned with systemd")),
        created_by: Some(format!("/bin/sh -c {script}")),
        labels,
        ..runtime::CommitOptions::default()
    };
    finished
        .commit(&opts)
        .map_err(|source| ProvisionError::Commit { label: label.to_owned(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_without_a_suite_cannot_come_from_the_mirror() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let fedora = crate::catalog::find("fedora-41").unwrap();
        let opts = PullOptions {
            source: SourceChoice::Mirror,
            force: false,
            registry: registry::PullOptions::default(),
            progress: Arc::new(racker::progress::Silent),
            output: runtime::Console::Discard,
        };
        let err = pull(&store, fedora, &opts, &|_| {}).unwrap_err();
        assert!(matches!(err, ProvisionError::NoMirror { .. }), "{err}");
        assert!(err.to_string().contains("--source registry"), "{err}");
    }
}
