//! The metadata database: the one source of truth for which images, tags, layers,
//! blobs, containers and volumes exist. Foreign keys are the reference graph that gc
//! walks. Every query of the store is here, behind typed methods on [`Db`], each in the
//! transaction it needs: the other modules move files and call these.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{BlobInfo, ContainerRecord, ContainerState, DiskUsage, Leader, NewImage, Result, StoreError};
use crate::digest::{chain_ids, Digest};
use crate::reference::Reference;
use crate::unpack::UnpackStats;

/// Schema migrations; `PRAGMA user_version` counts how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT NOT NULL,
    added       TEXT NOT NULL
);
CREATE TABLE layers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    diff_id     TEXT NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    added       TEXT NOT NULL
);
CREATE TABLE images (
    id                  TEXT PRIMARY KEY,
    config_digest       TEXT NOT NULL REFERENCES blobs(digest),
    manifest_digest     TEXT NOT NULL REFERENCES blobs(digest),
    manifest_media_type TEXT NOT NULL,
    created             TEXT,
    architecture        TEXT,
    os                  TEXT,
    size                INTEGER NOT NULL,
    added               TEXT NOT NULL
);
CREATE TABLE image_layers (
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    blob_digest TEXT NOT NULL REFERENCES blobs(digest),
    media_type  TEXT NOT NULL,
    diff_id     TEXT NOT NULL REFERENCES layers(diff_id),
    chain_id    TEXT NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX image_layers_blob ON image_layers(blob_digest);
CREATE INDEX image_layers_diff ON image_layers(diff_id);
CREATE TABLE tags (
    repository  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (repository, tag)
);
CREATE INDEX tags_image ON tags(image_id);
CREATE TABLE repo_digests (
    repository      TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    image_id        TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (repository, manifest_digest)
);
CREATE INDEX repo_digests_image ON repo_digests(image_id);
"#,
    r#"
CREATE TABLE containers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    image_id    TEXT NOT NULL REFERENCES images(id),
    snapshotter TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    pid         INTEGER,
    monitor_pid INTEGER,
    exit_code   INTEGER,
    created     TEXT NOT NULL,
    finished    TEXT
);
CREATE INDEX containers_image ON containers(image_id);
"#,
    r#"
ALTER TABLE layers ADD COLUMN unsynced_boot TEXT;
ALTER TABLE blobs ADD COLUMN unsynced_boot TEXT;
"#,
    r#"
ALTER TABLE containers ADD COLUMN pid_start INTEGER;
"#,
    r#"
ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE volumes (
    name        TEXT PRIMARY KEY,
    created     TEXT NOT NULL,
    labels      TEXT NOT NULL
);
"#,
];

/// One row of `racker images`, grouped per image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageSummary {
    pub id: Digest,
    /// `(repository, tag)` pairs, repositories fully qualified.
    pub tags: Vec<(String, String)>,
    pub digests: Vec<(String, Digest)>,
    pub created: Option<String>,
    pub size: u64,
}

/// One layer of an image, with where its unpacked tree lives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerRecord {
    pub blob_digest: Digest,
    pub media_type: String,
    pub blob_size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// `layers.id`: the layer's directory is `layers/<id>`.
    pub layer_id: i64,
    pub size: u64,
}

/// Everything stored about one image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageRecord {
    #[serde(flatten)]
    pub summary: ImageSummary,
    pub config_digest: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub added: String,
    pub layers: Vec<LayerRecord>,
}

/// What `remove` did, for printing as docker does.
#[derive(Debug, Default)]
pub struct Removal {
    pub untagged: Vec<String>,
    pub deleted: Option<Digest>,
}

pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn digest_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Digest> {
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path).map_err(|source| StoreError::Database { path: path.to_owned(), source })?;
        let mut db = Db { conn, path: path.to_owned() };
        // Before anything is written: a newer racker's schema is not this build's to touch
        // (its gc could delete what the newer tables reference).
        let version = db.schema_version().map_err(db.err())?;
        db.refuse_newer(version)?;
        db.setup().map_err(db.err())?;
        Ok(db)
    }

    fn schema_version(&self) -> rusqlite::Result<usize> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0))
    }

    fn refuse_newer(&self, found: usize) -> Result<()> {
        if found > MIGRATIONS.len() {
            return Err(StoreError::NewerSchema { path: self.path.clone(), found, known: MIGRATIONS.len() });
        }
        Ok(())
    }

    fn setup(&mut self) -> rusqlite::Result<()> {
        // Writers queue on each other instead of failing; several racker processes share a store.
        self.conn.busy_timeout(Duration::from_secs(120))?;
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every racker command opens and closes the store: a checkpoint (two fsyncs, and
        // on ext4 a flush of everything dirty) at each close would cost every `run`. So
        // closing does not checkpoint, and gc does (durability.rs). But each process that
        // opens the store first rebuilds the WAL's index by reading the whole WAL: keep it
        // short, checkpointing every 64 pages (about ten runs) instead of SQLite's 1000.
        self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 64)?;
        self.conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
        self.conn.pragma_update(None, "foreign_keys", true)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Database { path: self.path.clone(), source }
    }

    /// [`err`](Self::err) that does not borrow the connection, for use beside a transaction.
    fn err_owned(&self) -> impl Fn(rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        move |source| StoreError::Database { path: path.clone(), source }
    }

    /// A write transaction that waits for other writers instead of failing later.
    fn write(&mut self) -> Result<Transaction<'_>> {
        let e = self.err_owned();
        self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)
    }

    pub(crate) fn layer_id(&self, diff_id: &Digest) -> Result<Option<i64>> {
        layer_id(&self.conn, diff_id).map_err(self.err())
    }

    pub(crate) fn images(&self) -> Result<Vec<ImageSummary>> {
        let q = || -> rusqlite::Result<Vec<ImageSummary>> {
            let mut stmt =
                self.conn.prepare("SELECT id, created, size FROM images ORDER BY COALESCE(created, added) DESC, id")?;
            let rows = stmt.query_map([], |r| {
                Ok(ImageSummary {
                    id: digest_col(r, 0)?,
                    created: r.get(1)?,
                    size: r.get(2)?,
                    tags: vec![],
                    digests: vec![],
                })
            })?;
            let mut images = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            for image in &mut images {
                self.fill_names(image)?;
            }
            Ok(images)
        };
        q().map_err(self.err())
    }

    fn fill_names(&self, image: &mut ImageSummary) -> rusqlite::Result<()> {
        let id = image.id.to_string();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT repository, tag FROM tags WHERE image_id = ?1 ORDER BY repository, tag")?;
        image.tags = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT repository, manifest_digest FROM repo_digests WHERE image_id = ?1 ORDER BY repository",
        )?;
        image.digests =
            stmt.query_map([&id], |r| Ok((r.get(0)?, digest_col(r, 1)?)))?.collect::<rusqlite::Result<_>>()?;
        Ok(())
    }

    pub(crate) fn image(&self, id: &Digest) -> Result<ImageRecord> {
        let q = || -> rusqlite::Result<Option<ImageRecord>> {
            let found = self
                .conn
                .query_row(
                    "SELECT created, size, config_digest, manifest_digest, manifest_media_type, architecture, os, added
                     FROM images WHERE id = ?1",
                    [id.to_string()],
                    |r| {
                        Ok(ImageRecord {
                            summary: ImageSummary {
                                id: id.clone(),
                                tags: vec![],
                                digests: vec![],
                                created: r.get(0)?,
                                size: r.get(1)?,
                            },
                            config_digest: digest_col(r, 2)?,
                            manifest_digest: digest_col(r, 3)?,
                            manifest_media_type: r.get(4)?,
                            architecture: r.get(5)?,
                            os: r.get(6)?,
                            added: r.get(7)?,
                            layers: vec![],
                        })
                    },
                )
                .optional()?;
            let Some(mut record) = found else {
                return Ok(None);
            };
            self.fill_names(&mut record.summary)?;
            let mut stmt = self.conn.prepare_cached(
                "SELECT il.blob_digest, il.media_type, b.size, il.diff_id, il.chain_id, l.id, l.size
                 FROM image_layers il JOIN blobs b ON b.digest = il.blob_digest JOIN layers l ON l.diff_id = il.diff_id
                 WHERE il.image_id = ?1 ORDER BY il.position",
            )?;
            record.layers = stmt
                .query_map([id.to_string()], |r| {
                    Ok(LayerRecord {
                        blob_digest: digest_col(r, 0)?,
                        media_type: r.get(1)?,
                        blob_size: r.get(2)?,
                        diff_id: digest_col(r, 3)?,
                        chain_id: digest_col(r, 4)?,
                        layer_id: r.get(5)?,
                        size: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(record))
        };
        q().map_err(self.err())?.ok_or_else(|| StoreError::ImageNotFound(id.to_string()))
    }

    /// Name lookup as docker does it: a reference first, then an image id or id prefix.
    pub(crate) fn resolve(&self, name_or_id: &str) -> Result<Digest> {
        if let Ok(reference) = Reference::parse(name_or_id) {
            if let Some(id) = self.lookup_reference(&reference)? {
                return Ok(id);
            }
        }
        // A short name also finds `localhost/NAME`, where imports and loads put it (podman).
        if let Some(Ok(local)) = Reference::local_alternative(name_or_id) {
            if let Some(id) = self.lookup_reference(&local)? {
                return Ok(id);
            }
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            let mut stmt =
                self.conn.prepare("SELECT id FROM images WHERE id >= ?1 AND id < ?2 LIMIT 2").map_err(self.err())?;
            let lo = format!("sha256:{hex}");
            let hi = format!("sha256:{hex}\u{7f}");
            let ids = stmt
                .query_map([lo, hi], |r| digest_col(r, 0))
                .map_err(self.err())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(self.err())?;
            match ids.len() {
                1 => return Ok(ids[0].clone()),
                0 => {}
                count => return Err(StoreError::AmbiguousImage { name: name_or_id.to_owned(), count }),
            }
        }
        Err(StoreError::ImageNotFound(name_or_id.to_owned()))
    }

    fn lookup_reference(&self, reference: &Reference) -> Result<Option<Digest>> {
        let name = reference.name();
        let found = if let Some(digest) = reference.digest() {
            self.conn
                .query_row(
                    "SELECT image_id FROM repo_digests WHERE repository = ?1 AND manifest_digest = ?2
                     UNION SELECT id FROM images WHERE manifest_digest = ?2 LIMIT 1",
                    params![name, digest.to_string()],
                    |r| digest_col(r, 0),
                )
                .optional()
        } else {
            self.conn
                .query_row(
                    "SELECT image_id FROM tags WHERE repository = ?1 AND tag = ?2",
                    params![name, reference.tag().unwrap_or(crate::reference::DEFAULT_TAG)],
                    |r| digest_col(r, 0),
                )
                .optional()
        };
        found.map_err(self.err())
    }

    pub(crate) fn set_tag(&mut self, repository: &str, tag: &str, id: &Digest) -> Result<()> {
        put_tag(&self.conn, repository, tag, id).map_err(self.err())
    }

    /// Records that `repository@digest` names image `id`, replacing what it named before.
    pub(crate) fn set_repo_digest(&self, repository: &str, digest: &Digest, id: &Digest) -> Result<()> {
        put_repo_digest(&self.conn, repository, digest, id).map_err(self.err())
    }

    pub(crate) fn remove(&mut self, name_or_id: &str, force: bool) -> Result<Removal> {
        let id = self.resolve(name_or_id)?;
        // Was the image named by a reference (rather than by its id)?
        let mut name = match Reference::parse(name_or_id) {
            Ok(r) if self.lookup_reference(&r)?.as_ref() == Some(&id) => Some(r),
            _ => None,
        };
        // `rmi app:1` for `localhost/app:1`, as resolve finds it.
        if name.is_none() {
            if let Some(Ok(local)) = Reference::local_alternative(name_or_id) {
                if self.lookup_reference(&local)?.as_ref() == Some(&id) {
                    name = Some(local);
                }
            }
        }
        let e = self.err_owned();
        let tx = self.write()?;
        let key = id.to_string();
        let user: Option<String> = tx
            .query_row("SELECT name FROM containers WHERE image_id = ?1 LIMIT 1", [&key], |r| r.get(0))
            .optional()
            .map_err(&e)?;
        let count = |sql: &str| -> Result<usize> { tx.query_row(sql, [&key], |r| r.get(0)).map_err(&e) };
        let mut removal = Removal::default();
        match &name {
            Some(r) => {
                match r.digest() {
                    Some(d) => tx.execute(
                        "DELETE FROM repo_digests WHERE repository = ?1 AND manifest_digest = ?2",
                        params![r.name(), d.to_string()],
                    ),
                    None => {
                        tx.execute("DELETE FROM tags WHERE repository = ?1 AND tag = ?2", params![r.name(), r.tag()])
                    }
                }
                .map_err(&e)?;
                removal.untagged.push(display_reference(r));
            }
            None => {
                let tags = count("SELECT COUNT(*) FROM tags WHERE image_id = ?1")?;
                if tags > 1 && !force {
                    return Err(StoreError::ImageInUse { id: id.short().to_owned(), tags });
                }
            }
        }
        // By id the image goes; by name it goes with its last tag, as in docker.
        if name.is_none() || count("SELECT COUNT(*) FROM tags WHERE image_id = ?1")? == 0 {
            if let Some(container) = user {
                return Err(StoreError::ImageUsedByContainer { id: id.short().to_owned(), container });
            }
            removal.untagged.extend(untag_all(&tx, &id).map_err(&e)?);
            tx.execute("DELETE FROM images WHERE id = ?1", [&key]).map_err(&e)?;
            removal.deleted = Some(id.clone());
        }
        tx.commit().map_err(e)?;
        Ok(removal)
    }
}

/// The `layers.id` of the layer with `diff_id`, if it is stored (on the connection or in
/// a transaction).
fn layer_id(conn: &Connection, diff_id: &Digest) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT id FROM layers WHERE diff_id = ?1", [diff_id.to_string()], |r| r.get(0)).optional()
}

/// Points `repository:tag` at image `id` (on the connection or in a transaction).
fn put_tag(conn: &Connection, repository: &str, tag: &str, id: &Digest) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO tags (repository, tag, image_id) VALUES (?1, ?2, ?3)",
        params![repository, tag, id.to_string()],
    )?;
    Ok(())
}

/// Points `repository@digest` at image `id` (on the connection or in a transaction).
fn put_repo_digest(conn: &Connection, repository: &str, digest: &Digest, id: &Digest) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO repo_digests (repository, manifest_digest, image_id) VALUES (?1, ?2, ?3)",
        params![repository, digest.to_string(), id.to_string()],
    )?;
    Ok(())
}

/// Removes every tag and repo digest of an image, returning the names as docker prints them.
fn untag_all(tx: &Transaction<'_>, id: &Digest) -> rusqlite::Result<Vec<String>> {
    let mut names = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT repository, tag FROM tags WHERE image_id = ?1 ORDER BY repository, tag")?;
        for row in stmt.query_map([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (repo, tag) = row?;
            names.push(format!("{}:{tag}", crate::reference::familiar_name(&repo)));
        }
        let mut stmt =
            tx.prepare("SELECT repository, manifest_digest FROM repo_digests WHERE image_id = ?1 ORDER BY repository")?;
        for row in stmt.query_map([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (repo, digest) = row?;
            names.push(format!("{}@{digest}", crate::reference::familiar_name(&repo)));
        }
    }
    tx.execute("DELETE FROM tags WHERE image_id = ?1", [id.to_string()])?;
    tx.execute("DELETE FROM repo_digests WHERE image_id = ?1", [id.to_string()])?;
    Ok(names)
}

fn display_reference(r: &Reference) -> String {
    match (r.tag(), r.digest()) {
        (_, Some(d)) => format!("{}@{d}", r.familiar_name()),
        (Some(t), None) => format!("{}:{t}", r.familiar_name()),
        (None, None) => r.familiar_name(),
    }
}

/// A volume's row: its name, when it was made and its labels.
pub(crate) struct VolumeRow {
    pub name: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
}

/// Volume rows: that a volume exists, when it was made and its labels (a JSON object).
impl Db {
    /// Records volume `name` unless it exists; whether it was recorded now.
    pub(crate) fn insert_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<bool> {
        let made = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO volumes (name, created, labels) VALUES (?1, ?2, ?3)",
                params![name, now(), serde_json::to_string(labels).unwrap_or_default()],
            )
            .map_err(self.err())?;
        Ok(made == 1)
    }

    /// Every volume's name, creation time and labels, by name.
    pub(crate) fn volumes(&self) -> Result<Vec<VolumeRow>> {
        let mut stmt =
            self.conn.prepare("SELECT name, created, labels FROM volumes ORDER BY name").map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err())?;
        let row = |(name, created, labels): (String, String, String)| VolumeRow {
            name,
            created,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
        };
        Ok(rows.into_iter().map(row).collect())
    }

    /// Forgets volume `name`; whether it was recorded.
    pub(crate) fn delete_volume(&self, name: &str) -> Result<bool> {
        let deleted = self.conn.execute("DELETE FROM volumes WHERE name = ?1", [name]).map_err(self.err())?;
        Ok(deleted > 0)
    }
}

const CONTAINER_COLUMNS: &str =
    "id, name, image_id, snapshotter, spec, state, pid, monitor_pid, exit_code, created, finished, pid_start, restart_count";

/// A container row as read with [`CONTAINER_COLUMNS`].
fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRecord> {
    let spec: String = r.get(4)?;
    let state: String = r.get(5)?;
    Ok(ContainerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        image_id: digest_col(r, 2)?,
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

/// The id of the container called `name`, if any: names are unique.
fn container_named(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT id FROM containers WHERE name = ?1", [name], |r| r.get(0)).optional()
}

/// [`StoreError::NameInUse`] for a name container `other` holds.
fn name_in_use(name: &str, other: &str) -> StoreError {
    StoreError::NameInUse { name: name.to_owned(), id: other[..12.min(other.len())].to_owned() }
}

/// Container rows. Names are claimed in a write transaction, so that two racker
/// processes cannot both take one.
impl Db {
    /// Records a new container, `created`, owned by process `owner`; fails if the name is taken.
    pub(crate) fn insert_container(
        &mut self,
        id: &str,
        name: &str,
        image_id: &Digest,
        snapshotter: &str,
        spec: &serde_json::Value,
        owner: u32,
    ) -> Result<()> {
        let e = self.err_owned();
        let tx = self.write()?;
        if let Some(other) = container_named(&tx, name).map_err(&e)? {
            return Err(name_in_use(name, &other));
        }
        tx.execute(
            &format!(
                "INSERT INTO containers ({CONTAINER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 'created', NULL, ?6, NULL, ?7, NULL, NULL, 0)"
            ),
            params![id, name, image_id.to_string(), snapshotter, spec.to_string(), owner, now()],
        )
        .map_err(&e)?;
        tx.commit().map_err(e)
    }

    /// Records container `id`'s state, leader, owner process and (if given) exit code and
    /// end; back in `created`, it has not been restarted.
    pub(crate) fn set_container_state(
        &self,
        id: &str,
        state: ContainerState,
        leader: Option<Leader>,
        owner: u32,
        exit_code: Option<i32>,
        finished: Option<String>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE containers SET state = ?2, pid = ?3, pid_start = ?4, monitor_pid = ?5,
                 exit_code = COALESCE(?6, exit_code), finished = COALESCE(?7, finished),
                 restart_count = CASE ?2 WHEN 'created' THEN 0 ELSE restart_count END WHERE id = ?1",
                params![id, state.as_str(), leader.map(|l| l.pid), leader.map(|l| l.start), owner, exit_code, finished],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that container `id` ended with `exit_code` and is `restarting`, for the
    /// `restarts`th time.
    pub(crate) fn set_container_restarting(&self, id: &str, exit_code: i32, restarts: u32) -> Result<()> {
        self.conn
            .execute(
                "UPDATE containers SET state = 'restarting', pid = NULL, pid_start = NULL, exit_code = ?2,
                 finished = ?3, restart_count = ?4 WHERE id = ?1",
                params![id, exit_code, now(), restarts],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records process `owner_pid` as container `id`'s owner (`monitor_pid`).
    pub(crate) fn set_container_owner(&self, id: &str, owner_pid: i64) -> Result<()> {
        self.conn
            .execute("UPDATE containers SET monitor_pid = ?2 WHERE id = ?1", params![id, owner_pid])
            .map_err(self.err())?;
        Ok(())
    }

    /// Replaces container `id`'s spec.
    pub(crate) fn set_container_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        self.conn
            .execute("UPDATE containers SET spec = ?2 WHERE id = ?1", params![id, spec.to_string()])
            .map_err(self.err())?;
        Ok(())
    }

    /// Every container, newest first.
    pub(crate) fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {CONTAINER_COLUMNS} FROM containers ORDER BY created DESC"))
            .map_err(self.err())?;
        let rows = stmt.query_map([], container_row).and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(self.err())
    }

    /// Up to two containers whose name or id is `name_or_id`, or whose id starts with it
    /// if it is hex: two say it is ambiguous.
    pub(crate) fn containers_matching(&self, name_or_id: &str) -> Result<Vec<ContainerRecord>> {
        // A NUL starts no id: what is not hex is no prefix.
        let prefix = if name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) { name_or_id } else { "\u{0}" };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers WHERE name = ?1 OR id = ?1 OR id LIKE ?2 || '%' LIMIT 2"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![name_or_id, prefix], container_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(self.err())
    }

    /// Gives container `id` the name `new`; fails if another container has it.
    pub(crate) fn rename_container(&mut self, id: &str, new: &str) -> Result<()> {
        let e = self.err_owned();
        let tx = self.write()?;
        if let Some(other) = container_named(&tx, new).map_err(&e)? {
            return Err(name_in_use(new, &other));
        }
        tx.execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![id, new]).map_err(&e)?;
        tx.commit().map_err(e)
    }

    /// Forgets container `id`.
    pub(crate) fn delete_container(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM containers WHERE id = ?1", [id]).map_err(self.err())?;
        Ok(())
    }
}

/// Durability marks: a blob or layer row names the boot its file was written in
/// (`unsynced_boot`) until that file is known to be on disk (durability.rs).
impl Db {
    /// Clears the mark of every blob and layer written in `boot`, now synced; how many
    /// layers it cleared.
    pub(crate) fn mark_boot_synced(&self, boot: &str) -> Result<usize> {
        self.conn
            .execute("UPDATE blobs SET unsynced_boot = NULL WHERE unsynced_boot = ?1", [boot])
            .map_err(self.err())?;
        self.conn.execute("UPDATE layers SET unsynced_boot = NULL WHERE unsynced_boot = ?1", [boot]).map_err(self.err())
    }

    /// Folds the WAL into the database file and empties it (closing does not, see `setup`).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(self.err())
    }

    /// The boot blob `digest` was written in, unsynced: None without a row, `Some(None)`
    /// once it is known durable.
    pub(crate) fn blob_unsynced_boot(&self, digest: &Digest) -> Result<Option<Option<String>>> {
        self.conn
            .query_row("SELECT unsynced_boot FROM blobs WHERE digest = ?1", [digest.to_string()], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// The boot layer `id` was written in, unless it is known durable.
    pub(crate) fn layer_unsynced_boot(&self, id: i64) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT unsynced_boot FROM layers WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)))
            .map_err(self.err())
    }

    /// Records that blob `digest`'s file is durable.
    pub(crate) fn mark_blob_synced(&self, digest: &Digest) -> Result<()> {
        self.conn
            .execute("UPDATE blobs SET unsynced_boot = NULL WHERE digest = ?1", [digest.to_string()])
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that layer `id`'s tree is durable.
    pub(crate) fn mark_layer_synced(&self, id: i64) -> Result<()> {
        self.conn.execute("UPDATE layers SET unsynced_boot = NULL WHERE id = ?1", [id]).map_err(self.err())?;
        Ok(())
    }
}

const UNREFERENCED_BLOBS: &str = "SELECT digest, size FROM blobs WHERE digest NOT IN (
    SELECT config_digest FROM images UNION SELECT manifest_digest FROM images UNION SELECT blob_digest FROM image_layers)";
const UNREFERENCED_LAYERS: &str =
    "SELECT id, diff_id, size FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)";

/// A blob row no image reaches.
pub(crate) struct UnusedBlob {
    pub digest: String,
    pub size: u64,
}

/// A layer row no image reaches.
pub(crate) struct UnusedLayer {
    pub id: i64,
    pub diff_id: String,
    pub size: u64,
}

/// What gc's transaction saw: the rows no image reaches, and the file names of the
/// rows that stay (blob hex digests, layer ids), to tell leftovers from live files.
pub(crate) struct Sweep {
    pub blobs: Vec<UnusedBlob>,
    pub layers: Vec<UnusedLayer>,
    pub live_blobs: HashSet<String>,
    pub live_layers: HashSet<String>,
}

fn query_u64(conn: &Connection, sql: &str) -> rusqlite::Result<u64> {
    conn.query_row(sql, [], |r| r.get::<_, Option<u64>>(0)).map(|v| v.unwrap_or(0))
}

/// What gc reads and removes: images are the roots.
impl Db {
    /// Finds the rows no image reaches in one write transaction and, with `delete`,
    /// removes them in it (without, the transaction is rolled back: a dry run).
    pub(crate) fn sweep(&mut self, delete: bool) -> Result<Sweep> {
        let e = self.err_owned();
        let tx = self.write()?;
        let blobs = {
            let mut stmt = tx.prepare(UNREFERENCED_BLOBS).map_err(&e)?;
            let rows = stmt
                .query_map([], |r| Ok(UnusedBlob { digest: r.get(0)?, size: r.get(1)? }))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&e)?;
            rows
        };
        let layers = {
            let mut stmt = tx.prepare(UNREFERENCED_LAYERS).map_err(&e)?;
            let rows = stmt
                .query_map([], |r| Ok(UnusedLayer { id: r.get(0)?, diff_id: r.get(1)?, size: r.get(2)? }))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&e)?;
            rows
        };
        if delete {
            for blob in &blobs {
                tx.execute("DELETE FROM blobs WHERE digest = ?1", [&blob.digest]).map_err(&e)?;
            }
            for layer in &layers {
                tx.execute("DELETE FROM layers WHERE id = ?1", [layer.id]).map_err(&e)?;
            }
        }
        let names = |sql: &str| -> Result<HashSet<String>> {
            let mut stmt = tx.prepare(sql).map_err(&e)?;
            let rows = stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect::<rusqlite::Result<_>>());
            rows.map_err(&e)
        };
        let live_blobs = names("SELECT substr(digest, 8) FROM blobs")?;
        let live_layers = names("SELECT CAST(id AS TEXT) FROM layers")?;
        if delete {
            tx.commit().map_err(&e)?;
        }
        Ok(Sweep { blobs, layers, live_blobs, live_layers })
    }

    /// `system df`'s sizes, as the rows give them (the objects are gc.rs's to count).
    pub(crate) fn disk_usage(&self) -> Result<DiskUsage> {
        let c = &self.conn;
        let q = || -> rusqlite::Result<DiskUsage> {
            let mut du = DiskUsage {
                images: query_u64(c, "SELECT COUNT(*) FROM images")?,
                images_size: query_u64(c, "SELECT SUM(size) FROM images")?,
                layers: query_u64(c, "SELECT COUNT(*) FROM layers")?,
                layers_size: query_u64(c, "SELECT SUM(size) FROM layers")?,
                blobs: query_u64(c, "SELECT COUNT(*) FROM blobs")?,
                blobs_size: query_u64(c, "SELECT SUM(size) FROM blobs")?,
                ..DiskUsage::default()
            };
            du.shared_size = query_u64(
                c,
                "SELECT SUM(size) FROM layers WHERE diff_id IN
                   (SELECT diff_id FROM image_layers GROUP BY diff_id HAVING COUNT(DISTINCT image_id) > 1)",
            )? + query_u64(
                c,
                "SELECT SUM(size) FROM blobs WHERE digest IN
                   (SELECT blob_digest FROM image_layers GROUP BY blob_digest HAVING COUNT(DISTINCT image_id) > 1)",
            )?;
            du.unused_blobs = query_u64(c, &format!("SELECT COUNT(*) FROM ({UNREFERENCED_BLOBS})"))?;
            du.unused_blobs_size = query_u64(c, &format!("SELECT SUM(size) FROM ({UNREFERENCED_BLOBS})"))?;
            du.unused_layers = query_u64(c, &format!("SELECT COUNT(*) FROM ({UNREFERENCED_LAYERS})"))?;
            du.unused_layers_size = query_u64(c, &format!("SELECT SUM(size) FROM ({UNREFERENCED_LAYERS})"))?;
            du.reclaimable_size = du.unused_blobs_size + du.unused_layers_size;
            // Logical: each image counted with all its layers and blobs; physical: stored once.
            let logical = du.images_size
                + query_u64(
                    c,
                    "SELECT SUM(b.size) FROM (SELECT DISTINCT image_id, blob_digest AS d FROM image_layers
                       UNION SELECT id, config_digest FROM images UNION SELECT id, manifest_digest FROM images) u
                     JOIN blobs b ON b.digest = u.d",
                )?;
            let physical = du.layers_size + du.blobs_size - du.reclaimable_size;
            du.dedupe_ratio = if physical == 0 { 1.0 } else { logical as f64 / physical as f64 };
            Ok(du)
        };
        q().map_err(self.err())
    }
}

/// What [`Db::commit_image`] records: the image, what its config says of it, and the
/// blobs and layers this operation brings (marked with `boot` until synced).
pub(crate) struct ImageRows<'a> {
    pub id: &'a Digest,
    pub image: &'a NewImage,
    pub created: Option<String>,
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub new_blobs: Vec<&'a BlobInfo>,
    pub new_layers: Vec<&'a UnpackStats>,
    pub boot: &'a str,
}

/// A layer row [`Db::commit_image`] made: its tree goes to `layers/<id>`.
pub(crate) struct NewLayerRow<'a> {
    pub diff_id: &'a Digest,
    pub id: i64,
}

/// Adding an image: all its rows in one write transaction.
impl Db {
    /// Records an image with its blobs, layers and names in one transaction. `place`
    /// puts the files in place (given the layer rows made, which name their
    /// directories) before the rows are committed: no committed row lacks its file, and
    /// a failure leaves only files no row names, which gc removes.
    pub(crate) fn commit_image(
        &mut self,
        rows: &ImageRows<'_>,
        place: impl FnOnce(&[NewLayerRow<'_>]) -> Result<()>,
    ) -> Result<()> {
        let e = self.err_owned();
        let tx = self.write()?;
        let now = now();
        for blob in &rows.new_blobs {
            insert_new_blob(&tx, blob, &now, rows.boot).map_err(&e)?;
        }
        let image = rows.image;
        // Blobs that were already present may predate their row (a crash between
        // rename and commit); make sure every referenced blob has one.
        for blob in [&image.manifest, &image.config].into_iter().chain(image.layers.iter().map(|l| &l.blob)) {
            insert_blob_unless_known(&tx, blob, &now).map_err(&e)?;
        }
        let mut made = Vec::new();
        for layer in &rows.new_layers {
            // Another operation may have been first; our copy goes with the staging dir.
            if layer_id(&tx, &layer.diff_id).map_err(&e)?.is_none() {
                let id = insert_layer(&tx, layer, &now, rows.boot).map_err(&e)?;
                made.push(NewLayerRow { diff_id: &layer.diff_id, id });
            }
        }
        if insert_image(&tx, rows, &now).map_err(&e)? {
            insert_image_layers(&tx, rows.id, image).map_err(&e)?;
        }
        for r in &image.tags {
            if let Some(tag) = r.tag() {
                put_tag(&tx, &r.name(), tag, rows.id).map_err(&e)?;
            }
        }
        for r in &image.repo_digests {
            if let Some(digest) = r.digest() {
                put_repo_digest(&tx, &r.name(), digest, rows.id).map_err(&e)?;
            }
        }
        place(&made)?;
        tx.commit().map_err(e)
    }
}

/// A row for a blob this operation staged, marked with `boot`; a row already there
/// takes the mark too, as its file may be the one just written.
fn insert_new_blob(tx: &Transaction<'_>, blob: &BlobInfo, now: &str, boot: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO blobs (digest, size, media_type, added, unsynced_boot) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(digest) DO UPDATE SET unsynced_boot = excluded.unsynced_boot",
        params![blob.digest.to_string(), blob.size, blob.media_type, now, boot],
    )?;
    Ok(())
}

/// A row for a blob the store has, unless it has one.
fn insert_blob_unless_known(tx: &Transaction<'_>, blob: &BlobInfo, now: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO blobs (digest, size, media_type, added) VALUES (?1, ?2, ?3, ?4)",
        params![blob.digest.to_string(), blob.size, blob.media_type, now],
    )?;
    Ok(())
}

/// A new layer row; its `layers.id`.
fn insert_layer(tx: &Transaction<'_>, layer: &UnpackStats, now: &str, boot: &str) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO layers (diff_id, size, files, added, unsynced_boot) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![layer.diff_id.to_string(), layer.size, layer.files, now, boot],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The image's row, its size the sum of its layers'; false if the image was there.
fn insert_image(tx: &Transaction<'_>, rows: &ImageRows<'_>, now: &str) -> rusqlite::Result<bool> {
    let mut size = 0u64;
    for layer in &rows.image.layers {
        let s: u64 =
            tx.query_row("SELECT size FROM layers WHERE diff_id = ?1", [layer.diff_id.to_string()], |r| r.get(0))?;
        size += s;
    }
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO images (id, config_digest, manifest_digest, manifest_media_type, created, architecture, os, size, added)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            rows.id.to_string(),
            rows.image.config.digest.to_string(),
            rows.image.manifest.digest.to_string(),
            rows.image.manifest.media_type,
            rows.created,
            rows.architecture,
            rows.os,
            size,
            now
        ],
    )?;
    Ok(inserted == 1)
}

/// The image's layers in order, base first, each with its chain id.
fn insert_image_layers(tx: &Transaction<'_>, id: &Digest, image: &NewImage) -> rusqlite::Result<()> {
    let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    for (position, (layer, chain_id)) in image.layers.iter().zip(chain_ids(&diff_ids)).enumerate() {
        tx.execute(
            "INSERT INTO image_layers (image_id, position, blob_digest, media_type, diff_id, chain_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id.to_string(),
                position,
                layer.blob.digest.to_string(),
                layer.blob.media_type,
                layer.diff_id.to_string(),
                chain_id.to_string()
            ],
        )?;
    }
    Ok(())
}
