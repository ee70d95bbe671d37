//! Image commands: images, load, import, pull (local layouts), tag, rmi, inspect, gc, system df.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use racker::reference::{familiar_name, Reference};
use racker::source::{self, RootfsInput};
use racker::store::Store;

use crate::filters::{boolean, label_matches, reference_matches, Filters};
use crate::format::{human_size, since as since_text, table};
use crate::template::go_time;
use crate::Format;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag)
    reference: Option<String>,
    /// Show all images (accepted for docker compatibility: racker keeps no intermediate
    /// images, so there is nothing more to show)
    #[arg(short, long)]
    all: bool,
    /// Only show image ids
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Do not truncate ids
    #[arg(long)]
    no_trunc: bool,
    /// reference=PATTERN, dangling=true|false, before=IMAGE, since=IMAGE, label=KEY[=VALUE]
    /// (repeat: the same key is any of, different keys all of)
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// table, json, or a Go template: '{{.Repository}}:{{.Tag}}', 'table {{.ID}}\t{{.Size}}' (see the README)
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

/// docker's `images --filter` keys.
const IMAGE_FILTERS: [&str; 5] = ["before", "dangling", "label", "reference", "since"];

/// docker's column names of the `images` fields, for `--format 'table …'`.
const IMAGE_HEADERS: [(&str, &str); 7] = [
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
];

pub fn list(store: &Store, args: &ImagesArgs) -> Result<()> {
    let filter = args.reference.as_deref().map(Reference::parse).transpose().context("invalid filter")?;
    let filters = Filters::parse(&args.filter, &IMAGE_FILTERS)?;
    // A filter without an explicit tag matches every tag, as in docker.
    let want_tag = filter.as_ref().and_then(Reference::explicit_tag);
    let all = store.images()?;
    // before= and since=: creation times of the images named.
    let created_of = |name: &str| -> Result<Option<chrono::DateTime<chrono::FixedOffset>>> {
        let id = store.resolve(name)?;
        Ok(all.iter().find(|i| i.id == id).and_then(|i| created_time(i.created.as_deref())))
    };
    let before = filters.values("before").iter().map(|n| created_of(n)).collect::<Result<Vec<_>>>()?;
    let since = filters.values("since").iter().map(|n| created_of(n)).collect::<Result<Vec<_>>>()?;
    // A short name also matches localhost/NAME, where imports and loads put it (podman).
    let local_name =
        args.reference.as_deref().and_then(Reference::local_alternative).and_then(Result::ok).map(|r| r.name());
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for image in &all {
        let created = created_time(image.created.as_deref());
        let dangling = image.tags.is_empty();
        let keep = filters.try_pass("dangling", |v| Ok(boolean("dangling", v)? == dangling))?
            && (before.is_empty() || before.iter().any(|b| created.is_some() && created < *b))
            && (since.is_empty() || since.iter().any(|s| created.is_some() && created > *s))
            && (!filters.has("label") || filters.pass("label", |l| label_matches(l, &image_labels(store, image))));
        if !keep {
            continue;
        }
        let id = if args.no_trunc { image.id.to_string() } else { image.id.short().to_owned() };
        let mut names: Vec<(String, String)> = image.tags.clone();
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            if let Some(f) = &filter {
                if (repo != f.name() && Some(&repo) != local_name.as_ref()) || want_tag.is_some_and(|t| t != tag) {
                    continue;
                }
            }
            let repo_shown = if repo == "<none>" { repo.clone() } else { familiar_name(&repo) };
            if filters.has("reference")
                && (dangling || !filters.try_pass("reference", |p| reference_matches(p, &repo_shown, &tag))?)
            {
                continue;
            }
            // Loaded and imported images have no registry's digest: their manifest's, as podman.
            let digest = match image.digests.iter().find(|(r, _)| *r == repo) {
                Some((_, d)) => d.to_string(),
                None => store.image(&image.id)?.manifest_digest.to_string(),
            };
            json.push(serde_json::json!({
                "ID": id, "Repository": repo_shown, "Tag": tag, "Digest": digest,
                "CreatedAt": go_time(image.created.as_deref()), "CreatedSince": since_text(image.created.as_deref()),
                "Size": human_size(image.size), "VirtualSize": human_size(image.size),
                "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A",
            }));
            let mut row = vec![repo_shown, tag];
            if args.digests {
                row.push(digest);
            }
            row.extend([id.clone(), since_text(image.created.as_deref()), human_size(image.size)]);
            rows.push(row);
        }
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for value in &json {
            let id = value["ID"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id.clone()) {
                outln!("{id}")?;
            }
        }
        return Ok(());
    }
    crate::template::print_rows(&args.format, &IMAGE_HEADERS, &json, || {
        let mut header = vec!["REPOSITORY", "TAG"];
        if args.digests {
            header.push("DIGEST");
        }
        header.extend(["IMAGE ID", "CREATED", "SIZE"]);
        table(&header, &rows)
    })
}

fn created_time(created: Option<&str>) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
}

/// The labels of an image's config (none when it cannot be read).
fn image_labels(store: &Store, image: &racker::store::ImageSummary) -> std::collections::BTreeMap<String, String> {
    let config = store
        .image(&image.id)
        .ok()
        .and_then(|i| store.read_blob(&i.config_digest).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    config
        .as_ref()
        .and_then(|c| c["config"]["Labels"].as_object())
        .map(|labels| labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// `racker load [-i FILE|-]`: standard input unless a file is given, as docker.
pub fn load(store: &Store, input: Option<&Path>, quiet: bool) -> Result<()> {
    let progress = crate::progress::for_stderr(quiet);
    let loaded = match input.filter(|p| *p != Path::new("-")) {
        Some(path) => {
            source::load_archive(store, path, progress).with_context(|| format!("loading {}", path.display()))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty; give an archive with -i FILE or redirect one (racker load < FILE)");
            }
            source::load_archive_stream(store, std::io::stdin().lock(), Path::new("standard input"), progress)
                .context("loading from standard input")?
        }
    };
    // As docker: the names in the archive, not every name the image has here.
    for image in loaded {
        let tagged = tagged_names(&image.names);
        if tagged.is_empty() {
            outln!("Loaded image ID: {}", image.id)?;
        }
        for (repo, tag) in tagged {
            outln!("Loaded image: {}:{tag}", familiar_name(&repo))?;
        }
    }
    Ok(())
}

/// `(repository, tag)` of the names that carry a tag, each once, in order.
pub fn tagged_names(names: &[Reference]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for name in names {
        if let Some(tag) = name.tag() {
            let pair = (name.name(), tag.to_owned());
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    out
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Root filesystem tarball: a file, an http(s) URL, or - for standard input
    source: String,
    /// Name for the image, NAME[:TAG]; a name without a registry is localhost/NAME (podman)
    reference: Option<String>,
    /// Dockerfile instruction for the image's configuration: CMD, ENTRYPOINT, ENV, LABEL,
    /// USER, WORKDIR, EXPOSE (repeatable)
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Comment for the image and its history
    #[arg(short, long)]
    message: Option<String>,
    /// Suppress the progress output
    #[arg(short, long)]
    quiet: bool,
}

pub fn import(store: &Store, args: &ImportArgs) -> Result<()> {
    let names = args
        .reference
        .as_deref()
        .map(Reference::parse_local)
        .transpose()
        .context("invalid image name")?
        .into_iter()
        .collect();
    // Changes are checked before anything is read.
    let run_config = if args.changes.is_empty() {
        None
    } else {
        let mut section = serde_json::json!({});
        for change in &args.changes {
            racker::runtime::apply_change(&mut section, change)?;
        }
        Some(section)
    };
    let options = source::ImportOptions { run_config, message: args.message.clone() };
    let input = RootfsInput::parse(&args.source);
    let id = source::import_rootfs_with(store, &input, names, &options, crate::progress::for_stderr(args.quiet))
        .with_context(|| format!("importing {}", args.source))?;
    outln!("{id}")?;
    Ok(())
}

pub fn tag(store: &Store, source_name: &str, target: &str) -> Result<()> {
    store.tag(source_name, target).with_context(|| format!("tagging {source_name} as {target}"))?;
    Ok(())
}

pub fn remove(store: &Store, names: &[String], force: bool) -> Result<()> {
    let mut failed = false;
    for name in names {
        match store.remove(name, force) {
            Ok(removal) => {
                for untagged in removal.untagged {
                    outln!("Untagged: {untagged}")?;
                }
                if let Some(id) = removal.deleted {
                    outln!("Deleted: {id}")?;
                }
            }
            Err(e) => {
                errln!("Error: {e}");
                failed = true;
            }
        }
    }
    // Files go now if nothing else is using the store; otherwise the next gc takes them.
    store.try_gc()?;
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

/// `image inspect`: images only, as one JSON array.
pub fn inspect(store: &Store, names: &[String], format: Option<&str>) -> Result<()> {
    let template = crate::template::inspect_template(format)?;
    let out = names.iter().map(|name| image_json(store, name)).collect::<Result<Vec<_>>>()?;
    crate::template::print_objects(template.as_ref(), &out)
}

/// An image's configuration and layers, as `inspect` shows it.
pub fn image_json(store: &Store, name: &str) -> Result<serde_json::Value> {
    let id = store.resolve(name)?;
    let image = store.image(&id)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&image.config_digest)?).context("reading the image config")?;
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "Digest": l.blob_digest, "MediaType": l.media_type, "Size": l.blob_size,
                "DiffID": l.diff_id, "ChainID": l.chain_id, "UnpackedSize": l.size,
                "Path": store.layer_dir(l.layer_id),
            })
        })
        .collect();
    // As podman: each tagged repository with the manifest's digest, beside a registry's.
    let mut repo_digests: Vec<String> =
        image.summary.digests.iter().map(|(r, d)| format!("{}@{d}", familiar_name(r))).collect();
    for (repo, _) in &image.summary.tags {
        let local = format!("{}@{}", familiar_name(repo), image.manifest_digest);
        if !repo_digests.contains(&local) {
            repo_digests.push(local);
        }
    }
    let run_config = docker_config(config.get("config"));
    let text = |key: &str| config.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let lower: Vec<String> =
        image.layers.iter().rev().skip(1).map(|l| store.layer_dir(l.layer_id).display().to_string()).collect();
    let upper = image.layers.last().map(|l| store.layer_dir(l.layer_id).display().to_string());
    Ok(serde_json::json!({
        "Id": image.summary.id,
        "Digest": image.manifest_digest,
        "RepoTags": image.summary.tags.iter().map(|(r, t)| format!("{}:{t}", familiar_name(r))).collect::<Vec<_>>(),
        "RepoDigests": repo_digests,
        "Created": image.summary.created,
        "Author": text("author"),
        "Comment": text("comment"),
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.summary.size,
        "Labels": run_config.get("Labels").cloned().unwrap_or(serde_json::Value::Null),
        "History": config.get("history").cloned().unwrap_or_else(|| serde_json::json!([])),
        // The layers' directories, top first, as overlayfs stacks them.
        "GraphDriver": {
            "Name": "overlay",
            "Data": { "UpperDir": upper, "LowerDir": lower.join(":") },
        },
        "Config": run_config,
        "RootFS": { "Type": "layers", "Layers": image.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() },
        "Manifest": { "Digest": image.manifest_digest, "MediaType": image.manifest_media_type },
        "Layers": layers,
        "OciConfig": config,
    }))
}

/// The image's run config with every key docker's typed `Config` always has, so that
/// templates such as `{{.Config.Cmd}}` print `[]` for an image without one, as docker's do.
fn docker_config(config: Option<&serde_json::Value>) -> serde_json::Value {
    let mut full = serde_json::json!({
        "User": "", "ExposedPorts": {}, "Env": [], "Entrypoint": [], "Cmd": [], "Volumes": {},
        "WorkingDir": "", "Labels": {}, "StopSignal": "", "OnBuild": [],
    });
    if let (Some(serde_json::Value::Object(given)), serde_json::Value::Object(all)) = (config, &mut full) {
        for (key, value) in given {
            if !value.is_null() {
                all.insert(key.clone(), value.clone());
            }
        }
    }
    full
}

pub fn gc(store: &Store, dry_run: bool) -> Result<()> {
    // Containers first: stale ones and orphan snapshots go, then what no image needs.
    if !dry_run {
        for cleaned in racker::runtime::collect(store)? {
            outln!("Deleted {cleaned}")?;
        }
    }
    let report = store.gc(dry_run)?;
    let verb = if dry_run { "Would remove" } else { "Deleted" };
    for blob in &report.blobs {
        outln!("{verb} blob: {blob}")?;
    }
    for layer in &report.layers {
        outln!("{verb} layer: {layer}")?;
    }
    for leftover in &report.leftovers {
        outln!("{verb} leftover: {leftover}")?;
    }
    if report.objects > 0 {
        outln!("{verb} {} file objects no layer links", report.objects)?;
    }
    outln!("Total reclaimed space: {}", human_size(report.reclaimed_bytes))?;
    Ok(())
}
