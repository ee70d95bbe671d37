//! `racker system df`: docker's summary (images, containers, local volumes: how many,
//! how many in use, their size and what removing the unused would free), then racker's
//! own rows for the store's layers and blobs; `-v` lists each object as docker does.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use racker::reference::familiar_name;
use racker::runtime;
use racker::store::Store;

use crate::format::{human_size, since, table};
use crate::Format;

/// One image, as `df -v` lists it.
struct ImageUsage {
    repository: String,
    tag: String,
    id: String,
    created: Option<String>,
    size: u64,
    /// Bytes of its layers that another image uses too.
    shared: u64,
    containers: usize,
}

/// One container, as `df -v` lists it.
struct ContainerUsage {
    id: String,
    image: String,
    command: String,
    volumes: usize,
    /// What it wrote.
    size: u64,
    created: String,
    status: String,
    name: String,
    running: bool,
}

/// One volume, as `df -v` lists it.
struct VolumeUsage {
    name: String,
    links: usize,
    size: u64,
}

/// A summary row: docker's fields, and racker's exact byte counts beside them.
struct Row {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

impl Row {
    /// docker's `RECLAIMABLE`: the size and its share of the total, `1.2MB (40%)`.
    fn reclaimable_text(&self) -> String {
        match self.size {
            0 => human_size(self.reclaimable),
            size => format!("{} ({}%)", human_size(self.reclaimable), self.reclaimable * 100 / size),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "Type": self.kind,
            "TotalCount": self.total.to_string(),
            "Active": self.active.to_string(),
            "Size": human_size(self.size),
            "Reclaimable": self.reclaimable_text(),
            "SizeBytes": self.size,
            "ReclaimableBytes": self.reclaimable,
        })
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.kind.into(),
            self.total.to_string(),
            self.active.to_string(),
            human_size(self.size),
            self.reclaimable_text(),
        ]
    }
}

pub fn disk_usage(store: &Store, format: &Format, verbose: bool) -> Result<()> {
    let du = store.disk_usage()?;
    let containers = racker::runtime::list(store, true)?;

    // Images: which layers each uses, and how many images use each layer.
    let mut image_layers: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    let mut layer_users: BTreeMap<i64, usize> = BTreeMap::new();
    let summaries = store.images()?;
    for summary in &summaries {
        let image = store.image(&summary.id)?;
        let layers: Vec<(i64, u64)> = image.layers.iter().map(|l| (l.layer_id, l.size)).collect();
        for (id, _) in layers.iter().collect::<BTreeSet<_>>() {
            *layer_users.entry(*id).or_default() += 1;
        }
        image_layers.insert(summary.id.to_string(), layers);
    }
    let mut images = Vec::new();
    for summary in &summaries {
        let layers = &image_layers[&summary.id.to_string()];
        let (repository, tag) = summary
            .tags
            .first()
            .map_or(("<none>".to_owned(), "<none>".to_owned()), |(r, t)| (familiar_name(r), t.clone()));
        images.push(ImageUsage {
            repository,
            tag,
            id: summary.id.short().to_owned(),
            created: summary.created.clone(),
            size: summary.size,
            shared: layers.iter().filter(|(id, _)| layer_users[id] > 1).map(|(_, size)| size).sum(),
            containers: containers.iter().filter(|c| c.record.image_id == summary.id).count(),
        });
    }
    // Each layer counted once: what the images' layers hold, and the part in-use images need.
    let used_layers: BTreeMap<i64, u64> = summaries
        .iter()
        .zip(&images)
        .filter(|(_, usage)| usage.containers > 0)
        .flat_map(|(s, _)| image_layers[&s.id.to_string()].iter().copied())
        .collect();

    let mut container_rows = Vec::new();
    for c in &containers {
        let r = &c.record;
        let spec = runtime::spec_of(r).unwrap_or_default();
        let image = summaries
            .iter()
            .find(|s| s.id == r.image_id)
            .and_then(|s| s.tags.first().map(|(repo, t)| format!("{}:{t}", familiar_name(repo))))
            .unwrap_or_else(|| r.image_id.short().to_owned());
        container_rows.push(ContainerUsage {
            id: r.id.chars().take(12).collect(),
            image,
            command: format!("\"{}\"", spec.command_line()),
            volumes: spec.flags.volumes.len(),
            size: runtime::writes_size(store, &r.id).unwrap_or(0),
            created: since(Some(&r.created)),
            status: crate::containers::status_text(c),
            name: r.name.clone(),
            running: c.running,
        });
    }

    let mut volumes = Vec::new();
    for v in store.volumes()? {
        let links = runtime::volume_users(store, &v.name)?.len();
        volumes.push(VolumeUsage { size: store.volume_size(&v.name), links, name: v.name });
    }

    let rows = [
        Row {
            kind: "Images",
            total: images.len(),
            active: images.iter().filter(|i| i.containers > 0).count(),
            size: du.layers_size,
            reclaimable: du.layers_size.saturating_sub(used_layers.values().sum()),
        },
        Row {
            kind: "Containers",
            total: container_rows.len(),
            active: container_rows.iter().filter(|c| c.running).count(),
            size: container_rows.iter().map(|c| c.size).sum(),
            reclaimable: container_rows.iter().filter(|c| !c.running).map(|c| c.size).sum(),
        },
        Row {
            kind: "Local Volumes",
            total: volumes.len(),
            active: volumes.iter().filter(|v| v.links > 0).count(),
            size: volumes.iter().map(|v| v.size).sum(),
            reclaimable: volumes.iter().filter(|v| v.links == 0).map(|v| v.size).sum(),
        },
        // racker's own: the unpacked layers and the blobs (archives, manifests,
        // configs) they came from; what no image uses is what `racker gc` frees.
        Row {
            kind: "Layers",
            total: du.layers as usize,
            active: du.layers.saturating_sub(du.unused_layers) as usize,
            size: du.layers_size,
            reclaimable: du.unused_layers_size,
        },
        Row {
            kind: "Blobs",
            total: du.blobs as usize,
            active: du.blobs.saturating_sub(du.unused_blobs) as usize,
            size: du.blobs_size,
            reclaimable: du.unused_blobs_size,
        },
    ];
    let headers = [("Type", "TYPE"), ("TotalCount", "TOTAL"), ("Active", "ACTIVE")];
    if verbose {
        return verbose_report(format, &rows, &images, &container_rows, &volumes, &du);
    }
    let mut json: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
    // racker's store figures, exact, on its Layers row.
    json[3]["SharedBytes"] = du.shared_size.into();
    json[3]["ImagesLogicalBytes"] = du.images_size.into();
    json[3]["DedupeRatio"] = du.dedupe_ratio.into();
    let objects = &du.objects;
    json[3]["FileObjects"] = objects.objects.into();
    json[3]["FileObjectsStoredBytes"] = objects.stored.into();
    json[3]["FileObjectsLogicalBytes"] = objects.logical.into();
    json[3]["SharedFiles"] =
        objects.top.iter().map(|o| serde_json::json!({"Object": o.name, "Size": o.size, "Links": o.links})).collect();
    crate::template::print_rows(format, &headers, &json, || {
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        let mut text = table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &cells);
        text.push_str(&footer(&du));
        text
    })
}

/// racker's lines under the table: what the store shares and how well it dedupes.
fn footer(du: &racker::store::DiskUsage) -> String {
    let o = &du.objects;
    let files_ratio = if o.stored == 0 { 1.0 } else { o.logical as f64 / o.stored as f64 };
    let mut text = format!(
        "\nShared between images: {}\nReclaimable by gc: {}\nDedupe ratio: {:.2}x (images' logical size per byte stored)\n\
         File objects: {} files, {} in layers stored as {} ({files_ratio:.2}x)\n",
        human_size(du.shared_size),
        human_size(du.reclaimable_size),
        du.dedupe_ratio,
        o.objects,
        human_size(o.logical),
        human_size(o.stored),
    );
    for shared in o.top.iter().take(5) {
        let saved = shared.size * shared.links.saturating_sub(1);
        text.push_str(&format!(
            "  {} {} in {} layer files ({} saved)\n",
            &shared.name[..12.min(shared.name.len())],
            human_size(shared.size),
            shared.links,
            human_size(saved)
        ));
    }
    text
}

/// `df -v`: docker's three sections, or one JSON document of them.
fn verbose_report(
    format: &Format,
    rows: &[Row],
    images: &[ImageUsage],
    containers: &[ContainerUsage],
    volumes: &[VolumeUsage],
    du: &racker::store::DiskUsage,
) -> Result<()> {
    let image_json: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({"Repository": i.repository, "Tag": i.tag, "ID": i.id,
                "CreatedSince": since(i.created.as_deref()), "Size": human_size(i.size),
                "SharedSize": human_size(i.shared), "UniqueSize": human_size(i.size.saturating_sub(i.shared)),
                "Containers": i.containers.to_string()})
        })
        .collect();
    let container_json: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            serde_json::json!({"ID": c.id, "Image": c.image, "Command": c.command,
                "LocalVolumes": c.volumes.to_string(), "Size": human_size(c.size), "RunningFor": c.created,
                "Status": c.status, "Names": c.name})
        })
        .collect();
    let volume_json: Vec<serde_json::Value> = volumes
        .iter()
        .map(|v| serde_json::json!({"Name": v.name, "Links": v.links.to_string(), "Size": human_size(v.size)}))
        .collect();
    match format {
        Format::Json => {
            let all = serde_json::json!({"Images": image_json, "Containers": container_json,
                "Volumes": volume_json, "BuildCache": []});
            outln!("{all}")?;
        }
        Format::Template { .. } => {
            let json: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
            crate::template::print_rows(format, &[], &json, String::new)?;
        }
        Format::Table => {
            let image_cells: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    vec![
                        i.repository.clone(),
                        i.tag.clone(),
                        i.id.clone(),
                        since(i.created.as_deref()),
                        human_size(i.size),
                        human_size(i.shared),
                        human_size(i.size.saturating_sub(i.shared)),
                        i.containers.to_string(),
                    ]
                })
                .collect();
            let container_cells: Vec<Vec<String>> = containers
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        c.image.clone(),
                        c.command.clone(),
                        c.volumes.to_string(),
                        human_size(c.size),
                        c.created.clone(),
                        c.status.clone(),
                        c.name.clone(),
                    ]
                })
                .collect();
            let volume_cells: Vec<Vec<String>> =
                volumes.iter().map(|v| vec![v.name.clone(), v.links.to_string(), human_size(v.size)]).collect();
            let images_header =
                ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"];
            let containers_header =
                ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"];
            let text = format!(
                "Images space usage:\n\n{}\nContainers space usage:\n\n{}\nLocal Volumes space usage:\n\n{}{}",
                table(&images_header, &image_cells),
                table(&containers_header, &container_cells),
                table(&["VOLUME NAME", "LINKS", "SIZE"], &volume_cells),
                footer(du),
            );
            out!("{text}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(size: u64, reclaimable: u64) -> Row {
        Row { kind: "Images", total: 1, active: 0, size, reclaimable }
    }

    #[test]
    fn reclaimable_carries_dockers_share_in_percent() {
        assert_eq!(row(0, 0).reclaimable_text(), "0B");
        assert_eq!(row(1000, 400).reclaimable_text(), "400B (40%)");
        assert_eq!(row(3000, 1000).reclaimable_text(), "1kB (33%)");
        assert_eq!(row(5000, 5000).reclaimable_text(), "5kB (100%)");
        let json = row(1000, 0).json();
        assert_eq!(json["TotalCount"], "1");
        assert_eq!(json["Active"], "0");
        assert_eq!(json["Size"], "1kB");
        assert_eq!(json["Reclaimable"], "0B (0%)");
    }
}
