//! Named volumes in containers: `--mount` and `-v NAME:/path` parsed, a container's
//! volumes made (on first use, as docker does) and bound in with the `-v` binds, and
//! volumes removed only while no container, running or stopped, uses them.

use std::collections::BTreeMap;
use std::path::Path;

use super::flags::{parse_size, Tmpfs};
use super::spec::{spec_of, Bind, RunSpec};
use super::{Result, RuntimeError};
use crate::store::{is_valid_volume_name, Store, VolumeRecord};

/// A named volume mounted into a container, as stored with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub target: String,
    pub read_only: bool,
}

/// One `--mount` (or `-v`) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountArg {
    Bind(Bind),
    Tmpfs(Tmpfs),
    Volume(VolumeMount),
}

fn invalid(flag: &str, value: &str, fix: &str) -> String {
    format!("invalid {flag} {value:?}: {fix}")
}

/// `--mount type=bind|tmpfs|volume,source=…,target=…[,readonly][,tmpfs-size=…][,tmpfs-mode=…]`
/// (docker's keys and their aliases `src`, `dst`/`destination`, `ro`).
pub fn parse_mount(flag: &str, value: &str) -> std::result::Result<MountArg, String> {
    let (mut kind, mut source, mut target, mut read_only) = ("volume", None, None, false);
    let (mut size, mut mode) = (None, None);
    for field in value.split(',') {
        let (key, val) = field.split_once('=').map_or((field, None), |(k, v)| (k, Some(v)));
        match (key, val) {
            ("type", Some(v)) => kind = v,
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("tmpfs-size", Some(v)) => size = Some(parse_size(flag, v)?),
            ("tmpfs-mode", Some(v)) => {
                mode = Some(
                    u32::from_str_radix(v, 8).map_err(|_| invalid(flag, value, "tmpfs-mode is octal, such as 1777"))?,
                )
            }
            _ => {
                return Err(invalid(
                    flag,
                    value,
                    &format!(
                    "unknown or incomplete field {field:?}: use type, source, target, readonly, tmpfs-size, tmpfs-mode"
                ),
                ))
            }
        }
    }
    let target = match target {
        Some(t) if t.starts_with('/') && t != "/" && !t.contains(':') => t.to_owned(),
        _ => return Err(invalid(flag, value, "target=PATH is required: an absolute path in the container, not /")),
    };
    match kind {
        "bind" => {
            let source = source
                .filter(|s| s.starts_with('/') && !s.contains(':'))
                .ok_or_else(|| invalid(flag, value, "a bind needs source=PATH, an absolute host path"))?;
            Ok(MountArg::Bind(Bind { source: source.into(), target, read_only }))
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(invalid(flag, value, "a tmpfs has no source"));
            }
            let mut options = vec![format!("mode={:o}", mode.unwrap_or(0o1777)), "nosuid".into(), "nodev".into()];
            if let Some(size) = size {
                options.push(format!("size={size}"));
            }
            Ok(MountArg::Tmpfs(Tmpfs { path: target, options: options.join(",") }))
        }
        "volume" => {
            let name = source.ok_or_else(|| {
                invalid(flag, value, "a volume needs source=NAME (anonymous volumes are not supported)")
            })?;
            volume_name(flag, value, name)?;
            Ok(MountArg::Volume(VolumeMount { name: name.to_owned(), target, read_only }))
        }
        other => Err(invalid(flag, value, &format!("type {other:?} is not supported: use bind, tmpfs or volume"))),
    }
}

fn volume_name(flag: &str, value: &str, name: &str) -> std::result::Result<(), String> {
    match is_valid_volume_name(name) {
        true => Ok(()),
        false => Err(invalid(flag, value, &format!("{name:?} is not a volume name: [a-zA-Z0-9][a-zA-Z0-9_.-]+"))),
    }
}

/// `-v SRC:DST[:ro|rw]`: a bind where SRC is an absolute path, else a named volume.
pub fn parse_volume_flag(flag: &str, value: &str) -> std::result::Result<MountArg, String> {
    if value.starts_with('/') {
        return value.parse::<Bind>().map(MountArg::Bind);
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (name, target, read_only) = match parts.as_slice() {
        [name, target] => (*name, *target, false),
        [name, target, "ro"] => (*name, *target, true),
        [name, target, "rw"] => (*name, *target, false),
        _ => return Err(invalid(flag, value, "expected SRC:DST[:ro|rw], SRC a host path or a volume name")),
    };
    if !target.starts_with('/') || target == "/" {
        return Err(invalid(flag, value, "the container path must be absolute, and not /"));
    }
    if !is_valid_volume_name(name) {
        return Err(invalid(
            flag,
            value,
            "SRC is a host path, which must be absolute, or a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        ));
    }
    Ok(MountArg::Volume(VolumeMount { name: name.to_owned(), target: target.to_owned(), read_only }))
}

/// Makes the container's volumes that do not exist yet and binds each in as `-v` binds
/// are; [`seed`] fills them once the root is mounted.
pub(crate) fn attach(store: &Store, spec: &mut RunSpec) -> Result<()> {
    for volume in spec.flags.volumes.clone() {
        let (record, _) = store.create_volume(&volume.name, &BTreeMap::new())?;
        spec.binds.push(Bind { source: record.mountpoint, target: volume.target, read_only: volume.read_only });
    }
    Ok(())
}

/// Fills each of the container's volumes that is still empty with what the image has at
/// its mount point, as docker does.
pub(crate) fn seed(store: &Store, spec: &RunSpec, rootfs: &Path) -> Result<()> {
    for volume in &spec.flags.volumes {
        let mountpoint = store.volume(&volume.name)?.mountpoint;
        let empty = std::fs::read_dir(&mountpoint)
            .map_err(|source| RuntimeError::Io { path: mountpoint.clone(), source })?
            .next()
            .is_none();
        if empty {
            super::copy::seed_from_container(rootfs, &volume.target, &mountpoint)?;
        }
    }
    Ok(())
}

/// A name for a volume made without one: 64 hex digits, as docker's.
pub fn new_volume_name() -> String {
    (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect()
}

/// The names of the containers (running or not) that use volume `name`.
pub fn volume_users(store: &Store, name: &str) -> Result<Vec<String>> {
    Ok(store
        .containers()?
        .into_iter()
        .filter(|c| spec_of(c).is_some_and(|s| s.flags.volumes.iter().any(|v| v.name == name)))
        .map(|c| c.name)
        .collect())
}

/// `racker volume rm`: refused while a container uses the volume (with `-f` too, as in
/// docker, where `-f` only lets a missing volume pass).
pub fn remove_volume(store: &Store, name: &str, force: bool) -> Result<()> {
    match store.volume(name) {
        Err(crate::store::StoreError::VolumeNotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let users = volume_users(store, name)?;
    if !users.is_empty() {
        return Err(RuntimeError::Invalid {
            what: format!("volume {name}"),
            reason: format!(
                "it is in use by container {}: remove the container first (racker rm {})",
                users.join(", "),
                users[0]
            ),
        });
    }
    Ok(store.remove_volume(name)?)
}

/// `racker volume prune`: removes every volume no container uses; returns them with
/// the bytes they held.
pub fn prune_volumes(store: &Store) -> Result<Vec<(VolumeRecord, u64)>> {
    let mut removed = Vec::new();
    for volume in store.volumes()? {
        if volume_users(store, &volume.name)?.is_empty() {
            let size = store.volume_size(&volume.name);
            store.remove_volume(&volume.name)?;
            removed.push((volume, size));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_as_docker_takes_them() {
        assert_eq!(
            parse_mount("--mount", "type=bind,source=/srv,target=/data,readonly"),
            Ok(MountArg::Bind(Bind { source: "/srv".into(), target: "/data".into(), read_only: true }))
        );
        assert_eq!(
            parse_mount("--mount", "type=tmpfs,dst=/scratch,tmpfs-size=1m,tmpfs-mode=700"),
            Ok(MountArg::Tmpfs(Tmpfs {
                path: "/scratch".into(),
                options: "mode=700,nosuid,nodev,size=1048576".into()
            }))
        );
        assert_eq!(
            parse_mount("--mount", "source=data,target=/data"),
            Ok(MountArg::Volume(VolumeMount { name: "data".into(), target: "/data".into(), read_only: false }))
        );
        assert!(parse_mount("--mount", "type=bind,source=rel,target=/x").is_err());
        assert!(parse_mount("--mount", "type=volume,source=../x,target=/x").is_err_and(|e| e.contains("volume name")));
        assert!(parse_mount("--mount", "type=tmpfs").is_err_and(|e| e.contains("target")));
        assert!(parse_mount("--mount", "type=nfs,target=/x").is_err());
        assert_eq!(
            parse_volume_flag("-v", "data:/data:ro"),
            Ok(MountArg::Volume(VolumeMount { name: "data".into(), target: "/data".into(), read_only: true }))
        );
        assert!(matches!(parse_volume_flag("-v", "/a:/b"), Ok(MountArg::Bind(_))));
        assert!(parse_volume_flag("-v", "a b:/b").is_err());
    }
}
