//! Named volumes: a directory per volume under `volumes/<name>/_data`, and a row in
//! the database that says it exists (its creation time and labels). Which containers
//! use a volume is in their specs: the runtime checks that before a volume goes.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::metadata::VolumeRow;
use super::{io_err, Result, Store, StoreError};

/// A named volume as `volume inspect` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    /// The directory bound into containers (`volumes/<name>/_data`).
    pub mountpoint: PathBuf,
}

/// docker's rule for volume names, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: a volume's name is a
/// directory of the store, so nothing that could climb out of it gets in.
pub fn is_valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Store {
    /// The directory of volume `name` (whether or not it exists).
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    fn volume_record(&self, row: VolumeRow) -> VolumeRecord {
        VolumeRecord {
            mountpoint: self.volume_dir(&row.name).join("_data"),
            name: row.name,
            created: row.created,
            labels: row.labels,
        }
    }

    /// Makes volume `name` if it does not exist (an existing one is returned as it is,
    /// as docker does); `true` with it if it was made now. `volumes/<name>` is 0700,
    /// `_data` 0755 until the first container's image or user says otherwise.
    pub fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(VolumeRecord, bool)> {
        if !is_valid_volume_name(name) {
            return Err(StoreError::InvalidVolumeName { name: name.to_owned() });
        }
        let dir = self.volume_dir(name);
        crate::private::dir(&dir).map_err(io_err(&dir))?;
        let data = dir.join("_data");
        match fs::create_dir(&data) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).map_err(io_err(&data))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&data)(e)),
        }
        let made = self.db().insert_volume(name, labels)?;
        Ok((self.volume(name)?, made))
    }

    /// All volumes, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let rows = self.db().volumes()?;
        Ok(rows.into_iter().map(|row| self.volume_record(row)).collect())
    }

    /// One volume by its name.
    pub fn volume(&self, name: &str) -> Result<VolumeRecord> {
        self.volumes()?.into_iter().find(|v| v.name == name).ok_or_else(|| StoreError::VolumeNotFound(name.to_owned()))
    }

    /// Removes volume `name`: its files are moved aside first (to `.NAME.removing`, which
    /// no volume name can be), then its row goes, then the files. A failure on the way
    /// leaves the volume whole or gone, never a row-less directory that a later volume
    /// of that name would quietly take over. The caller checked that no container uses it.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        let dir = self.volume_dir(name);
        let aside = self.root().join("volumes").join(format!(".{name}.removing"));
        let moved = match fs::rename(&dir, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let deleted = self.db().delete_volume(name);
        let gone = match deleted {
            Ok(gone) => gone,
            Err(e) => {
                if moved {
                    let _ = fs::rename(&aside, &dir);
                }
                return Err(e);
            }
        };
        if !gone {
            if moved {
                let _ = fs::rename(&aside, &dir);
            }
            return Err(StoreError::VolumeNotFound(name.to_owned()));
        }
        match fs::remove_dir_all(&aside) {
            Err(e) if moved && e.kind() != std::io::ErrorKind::NotFound => Err(io_err(aside)(e)),
            _ => Ok(()),
        }
    }

    /// The apparent size of a volume's files.
    pub fn volume_size(&self, name: &str) -> u64 {
        super::gc::tree_size(&self.volume_dir(name).join("_data"))
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_volume_name;

    #[test]
    fn volume_names_follow_docker() {
        for good in ["data", "a1", "my_vol.v2-x", "0abc"] {
            assert!(is_valid_volume_name(good), "{good}");
        }
        for bad in ["", "a", "a/b", "..", ".hidden", "-rm", "_x", "x y", "naïve"] {
            assert!(!is_valid_volume_name(bad), "{bad:?}");
        }
    }
}
