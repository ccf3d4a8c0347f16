//! The embedded backend: SQLite (WAL) in the data directory.

mod bmc_hints;
mod clusters;
mod discovery;
mod events;
mod hardware;
mod images;
mod inventory;
mod schema;
mod servers;
mod tokens;
mod workflows;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::{DB_FILE, StoreError};

/// Kiln's state in one SQLite file. One connection, serialized by a mutex:
/// SQLite allows one writer anyway, and callers use `spawn_blocking`.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`. The directory is made
    /// 0700 and the database 0600: it holds BMC passwords.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let io = |source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        };
        if !data_dir.exists() {
            fs::create_dir_all(data_dir).map_err(io)?;
        }
        // Forced on every start, not only at creation: a directory loosened by hand (or made
        // by an installer with the umask) would expose keys and passwords.
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = data_dir.join(DB_FILE);
        // Create with 0600 before SQLite touches it; tighten an existing file too.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            StoreError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when it returns (WAL + NORMAL could lose the
        // last commits on power loss; we promise acknowledged changes survive).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted rows (cluster keys, tokens, BMC passwords) are overwritten with zeros, not
        // left in free pages of the file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        schema::migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// For a connection that only writes events and reads: commits survive a
    /// crash of kiln (WAL) but the last ones may be lost to a power cut, and
    /// no fsync sits on the event path. Workflow and enrolment changes go
    /// through connections that keep `synchronous=FULL`.
    pub fn relax_durability(&self) -> Result<(), StoreError> {
        self.conn().pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transaction that takes the write lock at BEGIN: one that reads first and writes later
/// (deferred) fails at once with "database is locked" when another connection wrote meanwhile,
/// instead of waiting out the busy timeout.
fn write_tx(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, rusqlite::Error> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

impl crate::SettingStore for SqliteStore {
    /// A small named setting (the server's URL, say) shared with the CLI.
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            [key, value],
        )?;
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Changes whenever another connection commits; cheap to poll, so a server
    /// notices the CLI's changes without a notification channel.
    fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).unwrap();
        (dir, store)
    }
}
