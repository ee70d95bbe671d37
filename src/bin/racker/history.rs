//! `racker history`: an image's build steps from its config's history, newest first,
//! with the size of the layer each step made, in docker's columns.

use anyhow::{Context as _, Result};
use racker::store::Store;

use crate::format::{human_size, since, table};
use crate::template::{go_time, print_rows};
use crate::Format;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Image, by name or id
    image: String,
    /// Do not truncate ids and commands
    #[arg(long)]
    no_trunc: bool,
    /// Only show image ids (`<missing>` for steps below the top, as docker)
    #[arg(short, long)]
    quiet: bool,
    /// Sizes and dates for people (`-H=false`: bytes and RFC 3339 times, as docker)
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    human: bool,
    /// table, json, or a Go template: '{{.ID}}', 'table {{.CreatedBy}}\t{{.Size}}' (see the README)
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

/// One step of an image's history.
struct Step {
    created: Option<String>,
    created_by: String,
    comment: String,
    size: u64,
}

/// The history's steps, oldest first; a step that made a layer gets that layer's size.
/// An image without history (some imports) gets one step per layer, as docker shows it.
fn steps(config: &serde_json::Value, layer_sizes: &[u64]) -> Vec<Step> {
    let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    let history = config.get("history").and_then(|h| h.as_array()).cloned().unwrap_or_default();
    if history.is_empty() {
        return layer_sizes
            .iter()
            .map(|&size| Step {
                created: text(config, "created"),
                created_by: String::new(),
                comment: String::new(),
                size,
            })
            .collect();
    }
    let mut layers = layer_sizes.iter();
    history
        .iter()
        .map(|entry| {
            let empty = entry.get("empty_layer").and_then(|e| e.as_bool()).unwrap_or(false);
            Step {
                created: text(entry, "created"),
                created_by: text(entry, "created_by").unwrap_or_default(),
                comment: text(entry, "comment").unwrap_or_default(),
                size: if empty { 0 } else { layers.next().copied().unwrap_or(0) },
            }
        })
        .collect()
}

/// docker's `Ellipsis`: at most `width` characters, the last one `…` when cut.
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

pub fn history(store: &Store, args: &HistoryArgs) -> Result<()> {
    let id = store.resolve(&args.image)?;
    let image = store.image(&id)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&image.config_digest)?).context("reading the image config")?;
    let sizes: Vec<u64> = image.layers.iter().map(|l| l.size).collect();
    let mut steps = steps(&config, &sizes);
    steps.reverse();
    let top = if args.no_trunc { id.to_string() } else { id.short().to_owned() };
    let ids = (0..steps.len()).map(|i| if i == 0 { top.clone() } else { "<missing>".to_owned() });
    if args.quiet {
        for id in ids {
            outln!("{id}")?;
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for (id, step) in ids.zip(&steps) {
        let created_by = step.created_by.replace('\t', " ");
        let shown = if args.no_trunc { created_by.clone() } else { ellipsis(&created_by, 45) };
        let (created, size) = match args.human {
            true => (since(step.created.as_deref()), human_size(step.size)),
            false => (step.created.clone().unwrap_or_default(), step.size.to_string()),
        };
        cells.push(vec![id.clone(), created, shown, size, step.comment.clone()]);
        rows.push(serde_json::json!({
            "ID": id, "CreatedAt": go_time(step.created.as_deref()), "CreatedSince": since(step.created.as_deref()),
            "CreatedBy": created_by, "Size": human_size(step.size), "Comment": step.comment,
        }));
    }
    print_rows(&args.format, &HISTORY_HEADERS, &rows, || {
        table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &cells)
    })
}

/// docker's column names of the `history` fields, for `--format 'table …'`.
const HISTORY_HEADERS: [(&str, &str); 6] = [
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_get_the_sizes_of_the_layers_they_made() {
        let config = serde_json::json!({"history": [
            {"created_by": "ADD rootfs"},
            {"created_by": "ENV A=b", "empty_layer": true},
            {"created_by": "RUN x"},
        ]});
        let sizes: Vec<u64> = steps(&config, &[100, 7]).iter().map(|s| s.size).collect();
        assert_eq!(sizes, [100, 0, 7]);
        assert_eq!(steps(&serde_json::json!({}), &[5, 6]).len(), 2, "no history: one step per layer");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}
