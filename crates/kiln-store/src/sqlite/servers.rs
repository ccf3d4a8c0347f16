//! The servers sharing the state: on SQLite, the one server (and any earlier run of it).

use rusqlite::params;

use super::SqliteStore;
use crate::{ServerRecord, StoreError};

impl crate::ServerStore for SqliteStore {
    fn heartbeat(
        &self,
        id: &str,
        url: &str,
        started_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO servers (id, url, started_ms, seen_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET url = ?2, started_ms = ?3, seen_ms = ?4",
            params![id, url, started_ms as i64, now_ms as i64],
        )?;
        Ok(())
    }

    fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, url, started_ms, seen_ms FROM servers ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(ServerRecord {
                id: r.get(0)?,
                url: r.get(1)?,
                started_ms: r.get::<_, i64>(2)? as u64,
                seen_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
