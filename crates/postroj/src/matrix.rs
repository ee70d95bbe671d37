//! The pkgprobe matrix, one cell per image × package × mode, and its split into shards
//! that many machines run apart (Slurm array tasks, CI matrix jobs) and `report merge`
//! joins again.
//!
//! A shard is `K/N`. Cells are dealt round-robin in the order of their keys, not of the
//! arguments: every machine given the same matrix, in any order, splits it alike; the
//! shards are disjoint, their union is the matrix whatever N, and their sizes differ by
//! at most one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One probe of the matrix: an image, the package installed in it (by file name) and
/// how (`install`, `purge`, …). Without a package, a probe boots and checks only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Cell {
    /// Its image, and its package and mode where asked for (where a matrix has several):
    /// `debian-bookworm foo_1.0_all.deb (purge)`.
    pub fn title(&self, package: bool, mode: bool) -> String {
        let mut title = self.image.clone();
        if let (true, Some(name)) = (package, &self.package) {
            title = format!("{title} {name}");
        }
        if let (true, Some(name)) = (mode, &self.mode) {
            title = format!("{title} ({name})");
        }
        title
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.title(true, true))
    }
}

/// Shard `index` of `count` (`K/N`, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `--shard` that is not `K/N` with 1 ≤ K ≤ N.
#[derive(Debug, thiserror::Error)]
#[error("shard {0:?}: give K/N with 1 ≤ K ≤ N, such as 2/4")]
pub struct BadShard(String);

impl FromStr for Shard {
    type Err = BadShard;

    fn from_str(text: &str) -> Result<Shard, BadShard> {
        let bad = || BadShard(text.to_owned());
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (k.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The shard of each cell of `matrix` (in its order) when it is split in `count`.
    pub fn assign(matrix: &[Cell], count: u32) -> Vec<Shard> {
        let mut by_key: Vec<usize> = (0..matrix.len()).collect();
        by_key.sort_by(|&a, &b| matrix[a].cmp(&matrix[b]));
        let mut shards = vec![Shard { index: 1, count }; matrix.len()];
        for (rank, &cell) in by_key.iter().enumerate() {
            shards[cell].index = (rank as u64 % u64::from(count.max(1))) as u32 + 1;
        }
        shards
    }

    /// Which cells of `matrix` this shard runs (their indices, in matrix order).
    pub fn cells(&self, matrix: &[Cell]) -> Vec<usize> {
        Shard::assign(matrix, self.count)
            .iter()
            .enumerate()
            .filter(|(_, shard)| shard.index == self.index)
            .map(|(cell, _)| cell)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(images: &[&str], packages: &[&str], modes: &[&str]) -> Vec<Cell> {
        let mut cells = Vec::new();
        for image in images {
            for package in packages {
                for mode in modes {
                    cells.push(Cell {
                        image: (*image).into(),
                        package: Some((*package).into()),
                        mode: Some((*mode).into()),
                    });
                }
            }
        }
        cells
    }

    #[test]
    fn shards_are_disjoint_and_complete_and_balanced_whatever_n() {
        let cells =
            matrix(&["debian-bookworm", "debian-trixie", "ubuntu-noble"], &["a.deb", "b.deb"], &["install", "purge"]);
        for count in 1..=15 {
            let mut seen = vec![0; cells.len()];
            let mut sizes = Vec::new();
            for index in 1..=count {
                let mine = Shard { index, count }.cells(&cells);
                sizes.push(mine.len());
                for cell in mine {
                    seen[cell] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "N={count}: every cell in exactly one shard: {seen:?}");
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "N={count}: sizes {sizes:?}");
        }
    }

    #[test]
    fn the_split_does_not_depend_on_the_order_of_the_arguments() {
        let given = matrix(&["debian-trixie", "debian-bookworm"], &["b.deb", "a.deb"], &["install"]);
        let mut reordered = given.clone();
        reordered.reverse();
        for count in 1..=5 {
            let shard_of = |cells: &[Cell]| {
                let shards = Shard::assign(cells, count);
                let mut pairs: Vec<(Cell, u32)> = cells.iter().cloned().zip(shards.iter().map(|s| s.index)).collect();
                pairs.sort();
                pairs
            };
            assert_eq!(shard_of(&given), shard_of(&reordered), "N={count}");
            // And the same matrix splits the same way on every call (every machine).
            assert_eq!(Shard::assign(&given, count), Shard::assign(&given, count));
        }
    }

    #[test]
    fn shards_parse_as_k_of_n() {
        assert_eq!("2/4".parse::<Shard>().ok(), Some(Shard { index: 2, count: 4 }));
        assert_eq!("1/1".parse::<Shard>().ok(), Some(Shard { index: 1, count: 1 }));
        for bad in ["0/4", "5/4", "2", "a/b", "2/0", "-1/4", ""] {
            let err = bad.parse::<Shard>().expect_err(bad).to_string();
            assert!(err.contains("K/N"), "{bad}: {err}");
        }
    }
}
