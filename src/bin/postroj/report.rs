//! `postroj report merge`: one report from the JSON reports of a matrix's shards.

use std::path::PathBuf;

use anyhow::{Context, Result};
use postroj::report::Report;

use crate::probe::{write_report, ReportFormat};

#[derive(clap::Subcommand)]
pub enum ReportCommand {
    /// Merge the JSON reports of pkgprobe --shard K/N runs into one report, as if one run
    /// had made it; exits 1 when a probe failed or a shard is missing
    Merge(MergeArgs),
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The shard reports (pkgprobe --shard K/N --format json)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// How many shards the matrix was split into: shards without a readable report are
    /// then reported missing even when no other report says N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    shards: Option<u32>,
    /// Report format
    #[arg(long, value_enum, default_value_t)]
    format: ReportFormat,
    /// Write the report to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(command: &ReportCommand) -> Result<i32> {
    match command {
        ReportCommand::Merge(args) => merge(args),
    }
}

fn merge(args: &MergeArgs) -> Result<i32> {
    let mut reports = Vec::new();
    let mut unread = Vec::new();
    for file in &args.files {
        let name = file.display().to_string();
        let parsed = std::fs::read(file).map_err(|e| e.to_string()).and_then(|bytes| {
            serde_json::from_slice::<Report>(&bytes).map_err(|e| format!("not a pkgprobe JSON report: {e}"))
        });
        match parsed {
            Ok(report) => reports.push((name, report)),
            Err(e) => unread.push(format!("{name}: {e}")),
        }
    }
    if reports.is_empty() && args.shards.is_none() {
        anyhow::bail!("no shard report could be read ({}): give --shards N to report them missing", unread.join("; "));
    }
    let merged = postroj::merge::merge(reports, args.shards).context("merging the shard reports")?;
    for problem in unread.iter().chain(&merged.problems) {
        errln!("warning: {problem}");
    }
    write_report(&merged.report, args.format, args.output.as_deref())?;
    Ok(if merged.report.passed() { 0 } else { 1 })
}
