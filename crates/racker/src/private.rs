//! What racker writes is root's alone: directories 0700, files 0600. Modes are given at
//! creation (a umask can only take bits away) and set again where an older racker left
//! them looser. A store holds images' setuid binaries and device nodes and containers'
//! environments: directories no other user can traverse keep all of it out of reach,
//! as podman's 0700 storage and docker's 0710 data root do. No group needs to traverse
//! (racker maps no user namespace to a group), hence 0700 rather than docker's 0710.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Directories racker makes: searchable by root only.
pub const DIR_MODE: u32 = 0o700;
/// Files racker writes: readable by root only.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir`, and any missing parent, mode 0700; an existing `dir` is tightened.
pub fn dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    tighten(dir, DIR_MODE)
}

/// Sets `path`'s permission bits to `mode` unless they already are. A missing path is
/// fine: there is nothing to protect.
pub fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o7777 != mode => {
            fs::set_permissions(path, Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `path` for writing, created 0600 if missing (`truncate`: emptied), tightened to
/// 0600 if it exists with another mode.
pub fn create_file(path: &Path, truncate: bool) -> io::Result<File> {
    let file = OpenOptions::new().write(true).create(true).truncate(truncate).mode(FILE_MODE).open(path)?;
    if file.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn modes_are_exact_and_looser_ones_are_tightened() {
        // (The umask is process-wide: the integration tests run racker with umask 000.)
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b");
        dir(&nested).unwrap();
        let file = tmp.path().join("a/f");
        create_file(&file, false).unwrap();
        assert_eq!((mode(&tmp.path().join("a")), mode(&nested), mode(&file)), (0o700, 0o700, 0o600));
        fs::set_permissions(&nested, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o666)).unwrap();
        dir(&nested).unwrap();
        create_file(&file, false).unwrap();
        assert_eq!((mode(&nested), mode(&file)), (0o700, 0o600));
        tighten(&tmp.path().join("missing"), DIR_MODE).unwrap();
    }
}
