//! Blobs by digest: `blobs/sha256/<hex>`, written once, verified before they get a name.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{io_err, Result, StoreError};
use crate::digest::{Digest, HashingWriter};

pub(crate) fn path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs").join(Digest::ALGORITHM).join(digest.hex())
}

/// Copies `reader` to a new file at `tmp`, hashing on the way, and checks the result
/// against `expected`. The caller renames the file into place.
pub(crate) fn write_verified(
    reader: &mut dyn Read,
    tmp: &Path,
    what: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, u64)> {
    let file = File::options().write(true).create_new(true).open(tmp).map_err(io_err(tmp))?;
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    io::copy(reader, &mut writer).map_err(io_err(tmp))?;
    let (buffered, digest, size) = writer.finish();
    buffered.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?.flush().map_err(io_err(tmp))?;
    check(what, expected, &digest)?;
    Ok((digest, size))
}

pub(crate) fn check(what: &str, expected: Option<&Digest>, found: &Digest) -> Result<()> {
    match expected {
        Some(expected) if expected != found => {
            Err(StoreError::DigestMismatch { what: what.to_owned(), expected: expected.clone(), found: found.clone() })
        }
        _ => Ok(()),
    }
}

/// Moves a verified staged blob to its final name, unless another operation put the
/// same bytes there first. Blobs are read-only once named.
pub(crate) fn publish(staged: &Path, root: &Path, digest: &Digest) -> Result<()> {
    let target = path(root, digest);
    if target.exists() {
        return fs::remove_file(staged).map_err(io_err(staged));
    }
    fs::set_permissions(staged, fs::Permissions::from_mode(0o444)).map_err(io_err(staged))?;
    fs::rename(staged, &target).map_err(io_err(&target))
}
