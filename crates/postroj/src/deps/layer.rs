//! Dependency layers: what a probed package needs from the image's repositories,
//! installed once per image and set, stored as a layer on the image, and booted under
//! every later probe that needs the same set, so that a probe installs only the package.
//!
//! ```text
//! lists (apt cache: TTL, --refresh, --offline)
//!   ─> resolution: cached for (image, lists generation, the package's relations),
//!      or apt's simulation in a throw-away container
//!   ─> DepKey ─> localhost/postroj/deps:<key> in the store?  boot it
//!                else: install the set in a command-mode container, commit, tag
//! ```
//!
//! Nothing is stale: another image has another id, new lists (a refresh) another
//! generation, another set another key. A layer is built under a lock of its key, so
//! parallel probes that need it wait for one build instead of making four.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use racker::digest::Digest;
use racker::reference::Reference;
use racker::runtime::{Bind, CommitError, CommitOptions, RuntimeError};
use racker::store::{Store, StoreError};
use rustix::fs::FlockOperation;

use super::{DepKey, DependencySet, DepsError};
use crate::apt_cache::{self, AptCache, AptCacheError, ArchiveWorkspace, IndexPolicy, ListsAccess, ListsReader};
use crate::catalog::CuratedImage;
use crate::deb::{self, DebError};
use crate::depcache;
use crate::layer::{Finished, Script};
use crate::package::Package;

/// How much of a failed package manager run an error shows.
const SCRIPT_LINES_SHOWN: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum DepLayerError {
    #[error(transparent)]
    AptCache(#[from] AptCacheError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("storing the dependency layer: {0}")]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reference(#[from] racker::reference::ReferenceError),
    #[error("{what} was stopped: {reason}")]
    Stopped { what: &'static str, reason: String },
    #[error("apt could not simulate the install (exit {code}):\n{output}")]
    Simulation { code: i32, output: String },
    #[error("installing the dependencies ({count} packages) failed (exit {code}):\n{output}")]
    Build { count: usize, code: i32, output: String },
    #[error(
        "--offline: not in the download cache: {}; run once without --offline to fetch them",
        missing.join(", ")
    )]
    OfflineMissing { missing: Vec<String> },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = DepLayerError> = std::result::Result<T, E>;

/// How dependency layers are fed.
#[derive(Clone, Debug)]
pub struct Options {
    /// The apt cache's root (lists and downloaded .debs).
    pub cache_root: PathBuf,
    pub index: IndexPolicy,
    /// Install Recommends with the package (`--install-recommends`). Off by default, as
    /// in piuparts: a package must work with its Depends alone.
    pub recommends: bool,
}

/// How the dependencies were had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The image already has everything: it is booted as it is.
    NotNeeded,
    /// A layer of an earlier probe.
    Cached,
    /// Built by this probe.
    Built,
}

/// What a probe boots, with the cache it binds; the cache stays pinned while this lives.
#[derive(Debug)]
pub struct Prepared {
    /// The image to boot: the dependency layer's id, or the base's.
    pub image: Digest,
    pub key: Option<DepKey>,
    pub set: DependencySet,
    pub outcome: Outcome,
    /// How the set was known: from the package alone, a cached resolution, or apt.
    pub resolution: Resolution,
    /// The package lists, unless apt was not needed at all, and a download workspace,
    /// unless a cached layer made downloads unlikely.
    cache: Option<(ListsReader, Option<Arc<ArchiveWorkspace>>)>,
    /// Moves what a build downloaded into the shared pool while the probe goes on.
    publishing: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(publishing) = self.publishing.take() {
            let _ = publishing.join();
        }
    }
}

/// Where a dependency set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The package declares no dependencies (and nothing is required by name).
    Declared,
    /// An earlier probe's, for the same lists and relations.
    Cached,
    /// apt's simulation, now.
    Simulated,
}

impl Prepared {
    /// The package lists (read-only) and a download workspace, at apt's places: whatever
    /// apt still does in the probe's container works without fetching the lists.
    pub fn binds(&self) -> Vec<Bind> {
        let Some((lists, archives)) = &self.cache else { return Vec::new() };
        std::iter::once(lists.bind()).chain(archives.iter().map(|a| a.bind())).collect()
    }

    /// One line for the report: what was used and why.
    pub fn describe(&self) -> String {
        let count = self.set.packages().count();
        let resolved = match self.resolution {
            Resolution::Declared => "the package declares no dependencies",
            Resolution::Cached => "resolution cached",
            Resolution::Simulated => "resolved by apt",
        };
        match (&self.outcome, &self.key) {
            (Outcome::NotNeeded, _) | (_, None) => format!("nothing to install ({resolved})"),
            (Outcome::Cached, Some(key)) => format!("cached layer {} ({count} packages, {resolved})", key.short()),
            (Outcome::Built, Some(key)) => format!("built layer {} ({count} packages, {resolved})", key.short()),
        }
    }
}

/// Whether `image`'s package manager gets dependency layers (apt images do).
pub fn supported(image: &CuratedImage) -> bool {
    super::simulate_script(image.package_manager).is_some()
        && super::install_set_script(image.package_manager).is_some()
}

/// What a probe needs: the package (with its path in the container) and names from the
/// image's repositories, on the curated `image` whose id is `base`.
#[derive(Clone, Copy, Debug)]
pub struct Needs<'a> {
    pub image: &'a CuratedImage,
    pub base: &'a Digest,
    pub package: Option<(&'a Package, &'a str)>,
    pub requires: &'a [String],
}

/// Resolves what `needs` asks for and finds or builds the layer holding it.
pub fn prepare(store: &Store, needs: Needs<'_>, opts: &Options) -> Result<Prepared> {
    let control = match needs.package {
        Some((package, _)) => Some(deb::control(&package.path)?),
        None => None,
    };
    if needs.requires.is_empty() && !control.as_ref().is_some_and(|c| declares_dependencies(c, opts.recommends)) {
        return Ok(Prepared {
            image: needs.base.clone(),
            key: None,
            set: DependencySet::new(),
            outcome: Outcome::NotNeeded,
            resolution: Resolution::Declared,
            cache: None,
            publishing: None,
        });
    }
    let cache = AptCache::open(&opts.cache_root)?;
    let access = cache.lists(needs.base)?.prepare(opts.index)?;
    let key_text = resolution_text(&needs, control.as_ref(), opts.recommends);
    // The warm loop: a resolution of these lists and relations whose layer is stored. No
    // download workspace is checked out (and no pool file linked) for it.
    if let ListsAccess::Ready(lists) = &access {
        if let Some(set) = cached_resolution(lists, &key_text)?.filter(|set| !set.is_empty()) {
            let key = DepKey::new(needs.base, &set);
            if let Some(id) = find_layer(store, &depcache::reference(&key), &key)? {
                let ListsAccess::Ready(lists) = access else { unreachable!("matched above") };
                return Ok(Prepared {
                    image: id,
                    key: Some(key),
                    set,
                    outcome: Outcome::Cached,
                    resolution: Resolution::Cached,
                    cache: Some((lists, None)),
                    publishing: None,
                });
            }
        }
    }
    let archives = cache.archives(&release_key(needs.image)?)?;
    let (workspace, corrupt) = archives.checkout()?;
    for entry in corrupt {
        tracing::warn!(
            "download cache: {} did not match its hash ({} instead of {}): removed, to be fetched again",
            entry.name,
            entry.found,
            entry.expected
        );
    }
    let workspace = Arc::new(workspace);
    let (lists, set, resolution, speculative) =
        resolve(store, &needs, control.as_ref(), &key_text, access, &workspace, opts)?;
    let prepared = |image, key, outcome, set, lists, workspace, publishing| Prepared {
        image,
        key,
        set,
        outcome,
        resolution,
        cache: Some((lists, Some(workspace))),
        publishing,
    };
    if set.is_empty() {
        return Ok(prepared(needs.base.clone(), None, Outcome::NotNeeded, set, lists, workspace, None));
    }
    let key = DepKey::new(needs.base, &set);
    let name = depcache::reference(&key);
    let mut found = find_layer(store, &name, &key)?;
    // One build per key: whoever waited for the lock finds the layer made.
    let _building = if found.is_none() {
        let lock = lock_key(cache.root(), &key)?;
        found = find_layer(store, &name, &key)?;
        Some(lock)
    } else {
        None
    };
    if let Some(id) = found {
        return Ok(prepared(id, Some(key), Outcome::Cached, set, lists, workspace, None));
    }
    let manager = needs.image.package_manager;
    let mut wanted = set.install_args(manager);
    wanted.sort();
    let finished = match speculative {
        Some(finished) if finished.success() && super::installed_after_simulation(&finished.output) == Some(wanted) => {
            finished
        }
        _ => install_set(store, &needs, &key, &set, &lists, &workspace, opts)?,
    };
    let id = commit_layer(&finished, &needs, &key, &name, &set)?;
    drop(finished);
    let publishing = {
        let (archives, workspace, lists) = (archives.clone(), Arc::clone(&workspace), lists.dir().to_owned());
        std::thread::spawn(move || publish_downloads(&archives, &workspace, &lists))
    };
    Ok(prepared(id, Some(key), Outcome::Built, set, lists, workspace, Some(publishing)))
}

/// Whether the control file names anything that could need installing.
fn declares_dependencies(control: &deb::Control, recommends: bool) -> bool {
    let declared = |field: &str| control.get(field).is_some_and(|v| !v.trim().is_empty());
    declared("Depends") || declared("Pre-Depends") || (recommends && declared("Recommends"))
}

/// The dependency set, from the cache of resolutions when the lists and the package's
/// relations are those of an earlier probe, else from apt's simulation (which also
/// refreshes the lists when the policy asks for it). Returns the lists it used, pinned.
fn resolve<'s>(
    store: &'s Store,
    needs: &Needs<'_>,
    control: Option<&deb::Control>,
    key_text: &str,
    access: ListsAccess,
    workspace: &ArchiveWorkspace,
    opts: &Options,
) -> Result<(ListsReader, DependencySet, Resolution, Option<Finished<'s>>)> {
    let under_test = match control {
        Some(control) => control.get("Package").cloned().unwrap_or_default(),
        None => String::new(),
    };
    if let ListsAccess::Ready(lists) = &access {
        if let Some(set) = cached_resolution(lists, key_text)? {
            let ListsAccess::Ready(lists) = access else { unreachable!("matched above") };
            return Ok((lists, set, Resolution::Cached, None));
        }
    }
    let manager = needs.image.package_manager;
    let script = super::simulate_script(manager).ok_or(DepsError::Unsupported { manager })?;
    let refresh = matches!(access, ListsAccess::Refresh(_));
    let base = needs.base.to_string();
    let container = format!("postroj-deps-{}", needs.image.label);
    let mut run = Script::new(&base, &container, script);
    let install = if opts.index == IndexPolicy::Offline { "offline" } else { "online" };
    run.args = vec![
        if refresh { "refresh" } else { "cached" }.to_owned(),
        opts.recommends.to_string(),
        install.to_owned(),
        under_test.clone(),
    ];
    run.binds = vec![access.bind(), workspace.bind()];
    if let Some((package, in_container)) = needs.package {
        run.binds.push(Bind { source: package.path.clone(), target: in_container.to_owned(), read_only: true });
        run.args.push(in_container.to_owned());
    }
    run.args.extend(needs.requires.iter().cloned());
    run.watch_space = Some(opts.cache_root.clone());
    let started = std::time::Instant::now();
    let finished = run.run(store)?;
    tracing::debug!(refresh, "resolution (and speculative install) container: {:?}", started.elapsed());
    if let Some(reason) = finished.stopped.clone() {
        let what = if refresh { "fetching the package lists" } else { "resolving the dependencies" };
        return Err(DepLayerError::Stopped { what, reason });
    }
    // The install after the simulation may fail (offline, say) and be made again alone;
    // the simulation itself must have succeeded.
    let simulated = finished.success() || super::installed_after_simulation(&finished.output).is_some();
    let set = match super::parse_simulation(manager, super::simulation_output(&finished.output), &under_test) {
        Ok(set) if simulated => set,
        Ok(_) | Err(DepsError::Unrecognised { .. }) => {
            return Err(DepLayerError::Simulation {
                code: finished.exit_code,
                output: finished.output_tail(SCRIPT_LINES_SHOWN),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let lists = match access {
        ListsAccess::Ready(lists) => lists,
        ListsAccess::Refresh(refresh) => refresh.publish()?,
    };
    apt_cache::write_atomically(&resolution_path(&lists, key_text)?, set.canonical_text().as_bytes())?;
    Ok((lists, set, Resolution::Simulated, Some(finished)))
}

/// Where the resolution for `key_text` of these lists is kept.
fn resolution_path(lists: &ListsReader, key_text: &str) -> Result<PathBuf> {
    Ok(lists.derived_dir()?.join(format!("resolution-{}", Digest::of(key_text.as_bytes()).hex())))
}

/// An earlier probe's resolution for `key_text` of these lists; one that does not parse
/// is simulated again, not trusted.
fn cached_resolution(lists: &ListsReader, key_text: &str) -> Result<Option<DependencySet>> {
    let text = std::fs::read_to_string(resolution_path(lists, key_text)?).ok();
    Ok(text.and_then(|text| text.parse().ok()))
}

/// What a resolution depends on besides the lists: the image, whether Recommends count,
/// the names required, and the package's relations. Not its version: a package rebuilt
/// with the same relations resolves the same.
fn resolution_text(needs: &Needs<'_>, control: Option<&deb::Control>, recommends: bool) -> String {
    let mut text = format!("postroj-resolution v1\nimage {}\nrecommends {recommends}\n", needs.base);
    for name in needs.requires {
        text.push_str(&format!("require {name}\n"));
    }
    if let Some(control) = control {
        let mut fields =
            vec!["Package", "Architecture", "Depends", "Pre-Depends", "Conflicts", "Breaks", "Provides", "Replaces"];
        if recommends {
            fields.push("Recommends");
        }
        for field in fields {
            let value = control.get(field).map(String::as_str).unwrap_or_default();
            text.push_str(&format!("package {field}: {}\n", value.replace('\n', " ")));
        }
    }
    text
}

/// The dependency layer tagged `name`, if its key is `key` (the tag is a short form).
fn find_layer(store: &Store, name: &str, key: &DepKey) -> Result<Option<Digest>> {
    let id = match store.resolve(name) {
        Ok(id) => id,
        Err(StoreError::ImageNotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let record = store.image(&id)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&record.config_digest)?).unwrap_or_default();
    Ok((config["config"]["Labels"][depcache::LABEL_KEY] == key.to_string()).then_some(id))
}

/// An exclusive lock on building the layer of `key`, held while the guard lives.
fn lock_key(root: &Path, key: &DepKey) -> Result<std::fs::File> {
    let dir = root.join("locks");
    racker::private::dir(&dir).map_err(|source| DepLayerError::Io { path: dir.clone(), source })?;
    let path = dir.join(format!("deps-{}.lock", key.digest().hex()));
    let file = racker::private::create_file(&path, false)
        .map_err(|source| DepLayerError::Io { path: path.clone(), source })?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive)
        .map_err(|e| DepLayerError::Io { path: path.clone(), source: e.into() })?;
    Ok(file)
}

/// Installs `set` in a command-mode container of the base (no services start), for
/// [`commit_layer`].
fn install_set<'s>(
    store: &'s Store,
    needs: &Needs<'_>,
    key: &DepKey,
    set: &DependencySet,
    lists: &ListsReader,
    workspace: &ArchiveWorkspace,
    opts: &Options,
) -> Result<Finished<'s>> {
    let manager = needs.image.package_manager;
    let script = super::install_set_script(manager).ok_or(DepsError::Unsupported { manager })?;
    let install = set.install_args(manager);
    let offline = opts.index == IndexPolicy::Offline;
    if offline {
        let missing: Vec<String> = set
            .packages()
            .map(|p| apt_cache::archive_file_name(p.name(), p.version(), p.arch()))
            .filter(|file| !workspace.dir().join(file).exists())
            .collect();
        if !missing.is_empty() {
            return Err(DepLayerError::OfflineMissing { missing });
        }
    }
    let base = needs.base.to_string();
    let container = format!("postroj-deps-{}", key.short());
    let mut run = Script::new(&base, &container, script);
    run.args =
        std::iter::once(if offline { "offline" } else { "online" }.to_owned()).chain(install.iter().cloned()).collect();
    run.binds = vec![lists.bind(), workspace.bind()];
    run.watch_space = Some(opts.cache_root.clone());
    let started = std::time::Instant::now();
    let finished = run.run(store)?;
    tracing::debug!("build container: {:?}", started.elapsed());
    if let Some(reason) = finished.stopped.clone() {
        return Err(DepLayerError::Stopped { what: "installing the dependencies", reason });
    }
    if !finished.success() {
        return Err(DepLayerError::Build {
            count: install.len(),
            code: finished.exit_code,
            output: finished.output_tail(SCRIPT_LINES_SHOWN),
        });
    }
    Ok(finished)
}

/// Commits the writes of the container that installed `set` as the layer of `key`,
/// tagged `name`.
fn commit_layer(
    finished: &Finished<'_>,
    needs: &Needs<'_>,
    key: &DepKey,
    name: &str,
    set: &DependencySet,
) -> Result<Digest> {
    let install = set.install_args(needs.image.package_manager);
    let opts = CommitOptions {
        message: Some(format!("postroj: dependency layer {} ({} packages)", key.short(), install.len())),
        created_by: Some(format!("apt-get install --no-install-recommends {}", install.join(" "))),
        labels: depcache::labels(key, needs.base, needs.image.label, set),
        tags: vec![Reference::parse(name)?],
        ..CommitOptions::default()
    };
    let started = std::time::Instant::now();
    let id = finished.commit(&opts)?;
    tracing::debug!("commit: {:?}", started.elapsed());
    Ok(id)
}

/// Keeps what apt downloaded into the workspace, each file checked against the package
/// lists' hash; a failure costs only the next probe a download, so it is logged.
fn publish_downloads(archives: &apt_cache::Archives, workspace: &ArchiveWorkspace, lists: &Path) {
    let published = apt_cache::index_hashes(lists).and_then(|hashes| archives.publish(workspace, &hashes));
    match published {
        Ok(report) => {
            for entry in report.rejected {
                tracing::warn!("download cache: {} does not match the package lists' hash: not kept", entry.name);
            }
        }
        Err(e) => tracing::warn!("download cache: keeping the downloads: {e}"),
    }
}

/// The images whose downloaded .debs are interchangeable: one release, one architecture.
fn release_key(image: &CuratedImage) -> Result<apt_cache::ReleaseKey> {
    let arch = racker::oci::Platform::host().architecture;
    Ok(apt_cache::ReleaseKey::new(&format!("{}-{arch}", image.label))?)
}
