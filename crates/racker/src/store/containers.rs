//! Container records: which containers exist, from which image, in which state. They
//! live in the store's database so that names are unique across racker processes and
//! an image a container uses cannot be removed under it.

use super::metadata::now;
use super::{Result, Store, StoreError};
use crate::digest::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    /// Ended, and its monitor starts it again after a delay (`--restart`).
    Restarting,
    Exited,
}

impl ContainerState {
    /// How the database spells it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
        }
    }
    pub(super) fn parse(s: &str) -> ContainerState {
        match s {
            "running" => ContainerState::Running,
            "created" => ContainerState::Created,
            "restarting" => ContainerState::Restarting,
            _ => ContainerState::Exited,
        }
    }
}

/// A container's leader (its PID 1 as the host sees it). The pid alone may name a later
/// process once the leader is gone; its start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`, fixed at fork) tells the two apart, from the first instant on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Leader {
    pub pid: i64,
    pub start: i64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ContainerRecord {
    /// 64 hex digits, as docker's container ids.
    pub id: String,
    pub name: String,
    pub image_id: Digest,
    /// The snapshotter that holds its root filesystem.
    pub snapshotter: String,
    /// What to run and how (the runtime's own JSON).
    pub spec: serde_json::Value,
    pub state: ContainerState,
    /// The container's leader while it runs.
    pub leader: Option<Leader>,
    /// The racker process that owns the container while it runs (foreground or monitor).
    pub monitor_pid: Option<i64>,
    pub exit_code: Option<i32>,
    pub created: String,
    pub finished: Option<String>,
    /// How often its monitor started it again after it ended (`--restart`).
    pub restart_count: i64,
}

/// Docker's rule for container names (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`; one character is
/// enough, as in podman): names end up in paths, machine and unit names, so nothing that
/// could climb out of a directory or be mistaken for an option gets in.
pub fn is_valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Store {
    /// Records a new container; fails if the name is taken.
    pub fn create_container(
        &self,
        id: &str,
        name: &str,
        image_id: &Digest,
        snapshotter: &str,
        spec: &serde_json::Value,
    ) -> Result<ContainerRecord> {
        if !is_valid_container_name(name) {
            return Err(StoreError::InvalidContainerName { name: name.to_owned() });
        }
        self.db().insert_container(id, name, image_id, snapshotter, spec, std::process::id())?;
        self.container(id)
    }

    /// Records a state change: the leader while running, the exit code when exited.
    /// The calling process becomes the container's owner (`monitor_pid`).
    pub fn set_container_state(
        &self,
        id: &str,
        state: ContainerState,
        leader: Option<Leader>,
        exit_code: Option<i32>,
    ) -> Result<()> {
        let db = self.db();
        let finished = (state == ContainerState::Exited).then(now);
        db.set_container_state(id, state, leader, std::process::id(), exit_code, finished)
    }

    /// Records that container `id` ended with `exit_code` and that its monitor will start
    /// it again: state `restarting`, its `restarts` since it was last started by the user.
    pub fn note_container_restart(&self, id: &str, exit_code: i32, restarts: u32) -> Result<()> {
        self.db().set_container_restarting(id, exit_code, restarts)
    }

    /// Hands the container to another owner process (`monitor_pid`): the process whose
    /// life is the container's, once the one that started it is gone (a kept probe
    /// container's systemd-nspawn). `gc` leaves a container alone while its owner lives.
    pub fn set_container_owner(&self, id: &str, owner_pid: i64) -> Result<()> {
        self.db().set_container_owner(id, owner_pid)
    }

    /// Stores what the container runs, once it is known.
    pub fn update_container_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        self.db().set_container_spec(id, spec)
    }

    /// All containers, newest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.db().containers()
    }

    /// A container by name, id or unique id prefix.
    pub fn container(&self, name_or_id: &str) -> Result<ContainerRecord> {
        let found = self.db().containers_matching(name_or_id)?;
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::ContainerNotFound(name_or_id.to_owned())),
            _ => found
                .iter()
                .find(|c| c.name == name_or_id || c.id == name_or_id)
                .cloned()
                .ok_or_else(|| StoreError::ContainerNotFound(format!("{name_or_id} (ambiguous id prefix)"))),
        }
    }

    /// Gives container `id` the name `new`; fails if the name is invalid or taken.
    pub fn rename_container(&self, id: &str, new: &str) -> Result<()> {
        if !is_valid_container_name(new) {
            return Err(StoreError::InvalidContainerName { name: new.to_owned() });
        }
        self.db().rename_container(id, new)
    }

    /// Forgets a container (its snapshot is the runtime's to remove first).
    pub fn remove_container(&self, id: &str) -> Result<()> {
        self.db().delete_container(id)
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_container_name;

    #[test]
    fn container_names_follow_docker() {
        for good in ["web", "a", "7", "a1", "my_app.v2-x", "0abc", "A-b"] {
            assert!(is_valid_container_name(good), "{good}");
        }
        for bad in ["", "a/b", "../../x", ".hidden", "-rm", "_x", "x y", "naïve", "x\n"] {
            assert!(!is_valid_container_name(bad), "{bad:?}");
        }
    }
}
