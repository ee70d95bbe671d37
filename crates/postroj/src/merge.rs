//! `report merge`: one report from the reports of a matrix's shards, as if one run had
//! produced it. Cells keep their verdicts and timings and come in matrix order; the
//! cells of a shard that reported nothing (a cancelled task, a lost file) are errors of
//! their own, so that the merged verdict fails and CI shows what did not run.

use std::time::Duration;

use super::matrix::{Cell, Shard};
use super::report::{Case, Report, Suite};

/// Reports that cannot be one matrix's shards.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no report to merge{0}")]
    Nothing(&'static str),
    #[error("{name} is shard {shard}, not one of {count}: merge the reports of one split")]
    Splits { name: String, shard: Shard, count: u32 },
    #[error("{first} and {second} are shards of different matrices: merge the reports of one pkgprobe command")]
    Matrices { first: String, second: String },
    #[error("{0} is a whole run's report, not a shard's: merge shard reports (pkgprobe --shard K/N)")]
    NotAShard(String),
}

/// A merged report, and what was wrong with its parts (duplicates, missing shards).
pub struct Merged {
    pub report: Report,
    pub problems: Vec<String>,
}

/// Merges `reports` (each named by where it came from), which must be shards of one
/// matrix; `count` is how many shards there are, when known beyond the reports (a
/// shard whose report is unreadable or absent is then reported missing too).
pub fn merge(reports: Vec<(String, Report)>, count: Option<u32>) -> Result<Merged, MergeError> {
    let mut problems = Vec::new();
    let Some((first_name, first)) = reports.first() else {
        return Err(MergeError::Nothing(if count.is_some() { "" } else { ": give the shard reports" }));
    };
    let (first_name, matrix) = (first_name.clone(), first.matrix.clone());
    let count = match (count, first.shard) {
        (Some(n), _) => n,
        (None, Some(shard)) => shard.count,
        (None, None) => return Err(MergeError::NotAShard(first_name)),
    };
    let mut kept: Vec<(Shard, String, Report)> = Vec::new();
    for (name, report) in reports {
        let shard = report.shard.ok_or_else(|| MergeError::NotAShard(name.clone()))?;
        if shard.count != count {
            return Err(MergeError::Splits { name, shard, count });
        }
        if report.matrix != matrix {
            return Err(MergeError::Matrices { first: first_name.clone(), second: name });
        }
        match kept.iter().find(|(s, _, _)| *s == shard) {
            Some((_, earlier, _)) => {
                problems.push(format!("shard {shard}: given twice ({earlier} and {name}): the first is kept"))
            }
            None => kept.push((shard, name, report)),
        }
    }
    let present: Vec<u32> = kept.iter().map(|(s, _, _)| s.index).collect();
    for index in (1..=count).filter(|i| !present.contains(i)) {
        problems.push(format!("shard {index}/{count}: no report (its task was cancelled, failed or is still running)"));
    }
    let mut merged = Report::new();
    merged.timestamp = kept.iter().map(|(_, _, r)| r.timestamp).min().unwrap_or(merged.timestamp);
    let hosts: Vec<&str> = kept.iter().map(|(_, _, r)| r.hostname.as_str()).collect();
    if let Some(host) = hosts.first().filter(|h| hosts.iter().all(|o| o == *h)) {
        merged.hostname = (*host).to_owned();
    }
    let assigned = Shard::assign(&matrix, count);
    let mut suites: Vec<Suite> = Vec::new();
    for (shard, name, report) in &kept {
        for suite in &report.suites {
            let mut suite = suite.clone();
            if report.hostname != merged.hostname {
                suite.hostname.get_or_insert_with(|| report.hostname.clone());
            }
            if !matrix.is_empty() && !matrix.contains(&suite.cell()) {
                problems.push(format!("{name} (shard {shard}): {} is not in the matrix", suite.cell()));
            }
            suites.push(suite);
        }
    }
    // Matrix order, with a case for every cell that did not run.
    let ran: std::collections::HashSet<Cell> = suites.iter().map(Suite::cell).collect();
    for (cell, shard) in matrix.iter().zip(&assigned) {
        if ran.contains(cell) {
            continue;
        }
        let why = match present.contains(&shard.index) {
            true => format!("not run: shard {shard}'s report has no result for it"),
            false => format!("not run: shard {shard} reported nothing"),
        };
        suites.push(missing(cell, why));
    }
    let position: std::collections::HashMap<&Cell, usize> = matrix.iter().enumerate().map(|(i, c)| (c, i)).collect();
    suites.sort_by_cached_key(|suite| position.get(&suite.cell()).copied().unwrap_or(usize::MAX));
    merged.suites = suites;
    Ok(Merged { report: merged, problems })
}

/// The suite of a cell that did not run: one error case, `shard`.
fn missing(cell: &Cell, why: String) -> Suite {
    let mut suite = Suite::new(&cell.image);
    suite.package = cell.package.clone();
    suite.mode = cell.mode.clone();
    suite.push(Case::error("shard", Duration::ZERO, why, ""));
    suite
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(image: &str, package: &str) -> Cell {
        Cell { image: image.into(), package: Some(package.into()), mode: Some("install".into()) }
    }

    fn matrix() -> Vec<Cell> {
        vec![cell("debian-bookworm", "a.deb"), cell("debian-bookworm", "b.deb"), cell("debian-trixie", "a.deb")]
    }

    /// The report shard `index`/`count` of [`matrix`] would write: each of its cells
    /// passes, but `failing`.
    fn shard(index: u32, count: u32, failing: Option<&Cell>) -> Report {
        let matrix = matrix();
        let shard = Shard { index, count };
        let mut report = Report::new();
        for i in shard.cells(&matrix) {
            let mut suite = Suite::new(&matrix[i].image);
            suite.package = matrix[i].package.clone();
            suite.mode = matrix[i].mode.clone();
            suite.push(match failing == Some(&matrix[i]) {
                true => Case::failed("install", Duration::from_millis(300), "postinst failed", ""),
                false => Case::passed("install", Duration::from_millis(200), ""),
            });
            report.push(suite);
        }
        report.shard = Some(shard);
        report.matrix = matrix;
        report
    }

    fn through_json(report: &Report) -> Report {
        serde_json::from_str(&report.render_json()).expect("a JSON report reads back")
    }

    #[test]
    fn shards_merge_in_matrix_order_with_their_verdicts_and_times() {
        let bad = cell("debian-trixie", "a.deb");
        let parts = (1..=2).map(|k| (format!("shard-{k}.json"), through_json(&shard(k, 2, Some(&bad))))).collect();
        let merged = merge(parts, None).expect("merged");
        assert!(merged.problems.is_empty(), "{:?}", merged.problems);
        let cells: Vec<Cell> = merged.report.suites.iter().map(Suite::cell).collect();
        assert_eq!(cells, matrix());
        assert!(!merged.report.passed(), "a failing cell fails the merged verdict");
        let failed = &merged.report.suites[2];
        assert!(!failed.passed());
        assert_eq!(failed.cases[0].duration, Duration::from_millis(300));
        assert_eq!(merged.report.counts().tests, 3);
    }

    #[test]
    fn a_missing_shard_errs_its_cells_and_a_duplicate_is_named() {
        let parts = vec![
            ("one.json".to_owned(), shard(1, 3, None)),
            ("one-again.json".to_owned(), shard(1, 3, None)),
            ("three.json".to_owned(), shard(3, 3, None)),
        ];
        let merged = merge(parts, None).expect("merged");
        assert_eq!(merged.problems.len(), 2, "{:?}", merged.problems);
        assert!(merged.problems[0].contains("given twice (one.json and one-again.json)"), "{:?}", merged.problems);
        assert!(merged.problems[1].starts_with("shard 2/3: no report"), "{:?}", merged.problems);
        assert!(!merged.report.passed());
        let not_run: Vec<&Suite> = merged.report.suites.iter().filter(|s| !s.passed()).collect();
        assert_eq!(not_run.len(), 1, "one cell per shard of three");
        assert_eq!(
            Shard::assign(&matrix(), 3)[matrix().iter().position(|c| *c == not_run[0].cell()).unwrap_or(9)].index,
            2
        );
        assert_eq!(merged.report.suites.len(), 3, "the merged report has every cell of the matrix");
    }

    #[test]
    fn every_shard_passing_passes_and_a_count_beyond_the_reports_finds_the_lost_ones() {
        let all = merge((1..=2).map(|k| (format!("{k}"), shard(k, 2, None))).collect(), None).expect("merged");
        assert!(all.report.passed() && all.problems.is_empty());
        let lost = merge(vec![("1".into(), shard(1, 2, None))], Some(2)).expect("merged");
        assert!(!lost.report.passed());
        assert!(lost.problems.iter().any(|p| p.starts_with("shard 2/2")), "{:?}", lost.problems);
    }

    #[test]
    fn reports_of_other_splits_or_matrices_or_whole_runs_are_refused() {
        let other_split = merge(vec![("a".into(), shard(1, 2, None)), ("b".into(), shard(1, 3, None))], None);
        assert!(matches!(other_split, Err(MergeError::Splits { .. })));
        let mut other = shard(2, 2, None);
        other.matrix.pop();
        assert!(matches!(
            merge(vec![("a".into(), shard(1, 2, None)), ("b".into(), other)], None),
            Err(MergeError::Matrices { .. })
        ));
        let mut whole = shard(1, 1, None);
        whole.shard = None;
        assert!(matches!(merge(vec![("w".into(), whole)], None), Err(MergeError::NotAShard(_))));
    }
}
