//! The migration to file objects: layers unpacked before racker had them (or with
//! `RACKER_FILE_OBJECTS=off`) hold every file in place. `racker system dedupe` makes each
//! regular file of at least [`objects::MIN_SIZE`] that only its layer holds an object, or
//! a link to the object that exists, as an unpack today would have.

use std::fs;
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use rustix::fs::FlockOperation;

use super::{io_err, Result, Store};
use crate::objects::{self, Linked, Objects};

/// What `dedupe` did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DedupeReport {
    /// Layer directories walked.
    pub layers: u64,
    /// Files that became objects or links to one.
    pub files: u64,
    /// Of those, the files replaced by an object that existed.
    pub shared: u64,
    /// The bytes those freed.
    pub reclaimed_bytes: u64,
}

impl Store {
    /// Stores the files of every layer as file objects, holding the store alone (as gc).
    /// A running container keeps seeing the same bytes: a file is only ever replaced by
    /// an object with the same content and metadata.
    pub fn dedupe(&self) -> Result<DedupeReport> {
        let _lock = self.lock(FlockOperation::LockExclusive)?;
        let dir = self.root.join(objects::DIR);
        let objects = Objects::open(&dir).map_err(io_err(&dir))?;
        let layers = self.root.join("layers");
        let mut report = DedupeReport::default();
        for entry in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            if entry.file_type().map_err(io_err(entry.path()))?.is_dir() {
                adopt_tree(&objects, &entry.path(), &mut report).map_err(io_err(entry.path()))?;
                report.layers += 1;
            }
        }
        Ok(report)
    }
}

fn adopt_tree(objects: &Objects, dir: &Path, report: &mut DedupeReport) -> io::Result<()> {
    let parent = fs::File::open(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            adopt_tree(objects, &entry.path(), report)?;
            continue;
        }
        let meta = entry.metadata()?;
        // More than one link: an object already, or a hard link the image made (kept).
        if !kind.is_file() || meta.nlink() != 1 || meta.len() < objects::MIN_SIZE {
            continue;
        }
        let object = objects::rehash(&entry.path())?;
        let linked = objects.link(parent.as_fd(), entry.file_name().as_bytes(), &object)?;
        report.files += u64::from(matches!(linked, Linked::Stored | Linked::Shared));
        if linked == Linked::Shared {
            report.shared += 1;
            report.reclaimed_bytes += meta.len();
        }
    }
    Ok(())
}
