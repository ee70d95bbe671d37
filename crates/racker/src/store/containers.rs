//! Container records: which containers exist, from which image, in which state. They
//! live in the store's database so that names are unique across racker processes and
//! an image a container uses cannot be removed under it.

use rusqlite::{params, OptionalExtension};

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
    fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
        }
    }
    fn parse(s: &str) -> ContainerState {
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

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRecord> {
    let image: String = r.get(2)?;
    let spec: String = r.get(4)?;
    let state: String = r.get(5)?;
    Ok(ContainerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        image_id: image
            .parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
        snapshotter: r.get(3)?,
        spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
        state: ContainerState::parse(&state),
        leader: match (r.get(6)?, r.get(11)?) {
            (Some(pid), Some(start)) => Some(Leader { pid, start }),
            _ => None,
        },
        monitor_pid: r.get(7)?,
        exit_code: r.get(8)?,
        created: r.get(9)?,
        finished: r.get(10)?,
        restart_count: r.get(12)?,
    })
}

/// Docker's rule for container names (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`; one character is
/// enough, as in podman): names end up in paths, machine and unit names, so nothing that
/// could climb out of a directory or be mistaken for an option gets in.
pub fn is_valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const COLUMNS: &str =
    "id, name, image_id, snapshotter, spec, state, pid, monitor_pid, exit_code, created, finished, pid_start, restart_count";

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
        let mut db = self.db();
        let tx = db.write()?;
        let path = self.root.join("racker.db");
        let e = |source| StoreError::Database { path: path.clone(), source };
        let taken: Option<String> =
            tx.query_row("SELECT id FROM containers WHERE name = ?1", [name], |r| r.get(0)).optional().map_err(e)?;
        if let Some(other) = taken {
            return Err(StoreError::NameInUse { name: name.to_owned(), id: other[..12.min(other.len())].to_owned() });
        }
        tx.execute(
            &format!(
                "INSERT INTO containers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 'created', NULL, ?6, NULL, ?7, NULL, NULL, 0)"
            ),
            params![id, name, image_id.to_string(), snapshotter, spec.to_string(), std::process::id(), now()],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        drop(db);
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
        db.conn
            .execute(
                "UPDATE containers SET state = ?2, pid = ?3, pid_start = ?4, monitor_pid = ?5,
                 exit_code = COALESCE(?6, exit_code), finished = COALESCE(?7, finished),
                 restart_count = CASE ?2 WHEN 'created' THEN 0 ELSE restart_count END WHERE id = ?1",
                params![
                    id,
                    state.as_str(),
                    leader.map(|l| l.pid),
                    leader.map(|l| l.start),
                    std::process::id(),
                    exit_code,
                    finished
                ],
            )
            .map_err(db.err())?;
        Ok(())
    }

    /// Records that container `id` ended with `exit_code` and that its monitor will start
    /// it again: state `restarting`, its `restarts` since it was last started by the user.
    pub fn note_container_restart(&self, id: &str, exit_code: i32, restarts: u32) -> Result<()> {
        let db = self.db();
        db.conn
            .execute(
                "UPDATE containers SET state = 'restarting', pid = NULL, pid_start = NULL, exit_code = ?2,
                 finished = ?3, restart_count = ?4 WHERE id = ?1",
                params![id, exit_code, now(), restarts],
            )
            .map_err(db.err())?;
        Ok(())
    }

    /// Hands the container to another owner process (`monitor_pid`): the process whose
    /// life is the container's, once the one that started it is gone (a kept probe
    /// container's systemd-nspawn). `gc` leaves a container alone while its owner lives.
    pub fn set_container_owner(&self, id: &str, owner_pid: i64) -> Result<()> {
        let db = self.db();
        db.conn
            .execute("UPDATE containers SET monitor_pid = ?2 WHERE id = ?1", params![id, owner_pid])
            .map_err(db.err())?;
        Ok(())
    }

    /// Stores what the container runs, once it is known.
    pub fn update_container_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        let db = self.db();
        db.conn
            .execute("UPDATE containers SET spec = ?2 WHERE id = ?1", params![id, spec.to_string()])
            .map_err(db.err())?;
        Ok(())
    }

    /// All containers, newest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let db = self.db();
        let mut stmt =
            db.conn.prepare(&format!("SELECT {COLUMNS} FROM containers ORDER BY created DESC")).map_err(db.err())?;
        let rows = stmt.query_map([], record).and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(db.err())
    }

    /// A container by name, id or unique id prefix.
    pub fn container(&self, name_or_id: &str) -> Result<ContainerRecord> {
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers WHERE name = ?1 OR id = ?1 OR id LIKE ?2 || '%' LIMIT 2"
            ))
            .map_err(db.err())?;
        let prefix = if name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) { name_or_id } else { "\u{0}" };
        let found = stmt
            .query_map(params![name_or_id, prefix], record)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db.err())?;
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
        let mut db = self.db();
        let tx = db.write()?;
        let path = self.root.join("racker.db");
        let e = |source| StoreError::Database { path: path.clone(), source };
        let taken: Option<String> =
            tx.query_row("SELECT id FROM containers WHERE name = ?1", [new], |r| r.get(0)).optional().map_err(e)?;
        if let Some(other) = taken {
            return Err(StoreError::NameInUse { name: new.to_owned(), id: other[..12.min(other.len())].to_owned() });
        }
        tx.execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![id, new]).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(())
    }

    /// Forgets a container (its snapshot is the runtime's to remove first).
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let db = self.db();
        db.conn.execute("DELETE FROM containers WHERE id = ?1", [id]).map_err(db.err())?;
        Ok(())
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
