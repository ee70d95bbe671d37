//! `racker volume create|ls|inspect|rm|prune`: named volumes, kept in the store (the
//! library's `store::volumes` and `runtime::volumes` do the work).

use std::collections::BTreeMap;

use anyhow::Result;
use racker::runtime;
use racker::store::{Store, VolumeRecord};

use crate::filters::{boolean, label_matches, Filters};
use crate::format::{human_size, table};
use crate::Format;

#[derive(clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name without NAME); prints its name
    Create {
        /// Name of the volume (default: a random one)
        name: Option<String>,
        /// Set a label, KEY=VALUE
        #[arg(short, long, value_name = "KEY=VALUE")]
        label: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only show names
        #[arg(short, long)]
        quiet: bool,
        /// table, json, or a Go template: '{{.ID}}', 'table {{.ID}}\t{{.Name}}' (see the README)
        #[arg(long, default_value = "table", value_name = "FORMAT")]
        format: Format,
        /// name=PART, label=KEY[=VALUE], dangling=true|false (no container uses it),
        /// driver=local (repeat: the same key is any of, different keys all of)
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Show volumes as JSON
    Inspect {
        /// A Go template rendered for each volume ('{{.Mountpoint}}', '{{json .Labels}}')
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
        /// Volumes, by name
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one)
    #[command(alias = "remove")]
    Rm {
        /// Volumes, by name
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Do not fail on volumes that do not exist
        #[arg(short, long)]
        force: bool,
    },
    /// Remove every volume no container uses
    Prune {
        /// Accepted for docker compatibility; prune never asks
        #[arg(short, long)]
        force: bool,
    },
}

pub fn json(v: &VolumeRecord) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": v.created,
        "Driver": "local",
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": {},
        "Scope": "local",
    })
}

/// Runs a volume verb.
pub fn run(store: &Store, command: VolumeCommand) -> Result<()> {
    match command {
        VolumeCommand::Create { name, label } => {
            let labels: BTreeMap<String, String> = label
                .iter()
                .map(|l| runtime::parse_label("--label", l).map_err(anyhow::Error::msg))
                .collect::<Result<_>>()?;
            let name = name.unwrap_or_else(runtime::new_volume_name);
            let (volume, _) = store.create_volume(&name, &labels)?;
            outln!("{}", volume.name)?;
        }
        VolumeCommand::Ls { quiet, format, filter } => {
            let filters = Filters::parse(&filter, &["dangling", "driver", "label", "name"])?;
            let dangling =
                filters.values("dangling").iter().map(|d| boolean("dangling", d)).collect::<Result<Vec<_>, _>>()?;
            let mut volumes = Vec::new();
            for v in store.volumes()? {
                let unused = dangling.is_empty() || runtime::volume_users(store, &v.name)?.is_empty();
                if filters.pass("name", |n| v.name.contains(n))
                    && filters.pass("label", |l| label_matches(l, &v.labels))
                    && filters.pass("driver", |d| d == "local")
                    && (dangling.is_empty() || dangling.contains(&unused))
                {
                    volumes.push(v);
                }
            }
            if quiet {
                for v in &volumes {
                    outln!("{}", v.name)?;
                }
            } else {
                let rows: Vec<serde_json::Value> = volumes.iter().map(json).collect();
                crate::template::print_rows(&format, &[("Name", "VOLUME NAME")], &rows, || {
                    let rows: Vec<Vec<String>> = volumes.iter().map(|v| vec!["local".into(), v.name.clone()]).collect();
                    table(&["DRIVER", "VOLUME NAME"], &rows)
                })?;
            }
        }
        VolumeCommand::Inspect { format, volumes } => {
            let template = crate::template::inspect_template(format.as_deref())?;
            let found: Vec<serde_json::Value> =
                volumes.iter().map(|n| store.volume(n).map(|v| json(&v))).collect::<Result<_, _>>()?;
            crate::template::print_objects(template.as_ref(), &found)?;
        }
        VolumeCommand::Rm { volumes, force } => {
            crate::containers::each_of("volumes", &volumes, |name| runtime::remove_volume(store, name, force))?
        }
        VolumeCommand::Prune { force: _ } => {
            let removed = runtime::prune_volumes(store)?;
            if !removed.is_empty() {
                outln!("Deleted Volumes:")?;
                for (v, _) in &removed {
                    outln!("{}", v.name)?;
                }
                outln!("")?;
            }
            outln!("Total reclaimed space: {}", human_size(removed.iter().map(|(_, s)| s).sum()))?;
        }
    }
    Ok(())
}
