//! `racker system fsck`: the store checked against the names it stores things by, and
//! with `--repair` put right (see `racker::store::Store::fsck`); `racker system dedupe`,
//! the migration of older layers to file objects.

use anyhow::Result;
use racker::store::{Repair, Store};

use crate::format::human_size;
use crate::Format;

/// Prints what fsck found; exits 1 while damage remains (found without `--repair`, or
/// beyond repair), as `git fsck` does.
pub fn fsck(store: &Store, repair: bool, format: &Format) -> Result<i32> {
    let report = store.fsck(repair)?;
    let code = i32::from(report.damaged());
    let value = serde_json::to_value(&report)?;
    if crate::template::print_one(format, &value)?.is_some() {
        return Ok(code);
    }
    if matches!(format, Format::Json) {
        outln!("{value}")?;
        return Ok(code);
    }
    outln!(
        "Checked {} blobs, {} file objects, {} layers: {}",
        report.blobs,
        report.objects,
        report.layers,
        match report.problems.len() {
            0 => "no damage".to_owned(),
            n => format!("{n} damaged"),
        }
    )?;
    for problem in &report.problems {
        let images = match problem.images.as_slice() {
            [] => String::new(),
            ids => format!(" (images {})", ids.iter().map(|id| id.short()).collect::<Vec<_>>().join(", ")),
        };
        let outcome = match &problem.repair {
            None => String::new(),
            Some(Repair::Repaired(how)) => format!("; repaired: {how}"),
            Some(Repair::Failed(why)) => format!("; NOT repaired: {why}"),
        };
        outln!("{}: {}{images}{outcome}", problem.what, problem.damage)?;
    }
    if !repair && !report.problems.is_empty() {
        outln!("Run `racker system fsck --repair` to remove what is damaged and rebuild the layers it broke")?;
    }
    Ok(code)
}

/// `racker system dedupe`.
pub fn dedupe(store: &Store) -> Result<()> {
    let report = store.dedupe()?;
    outln!(
        "Stored {} files of {} layers as file objects, {} of them shared with others: {} reclaimed",
        report.files,
        report.layers,
        report.shared,
        human_size(report.reclaimed_bytes)
    )?;
    Ok(())
}
