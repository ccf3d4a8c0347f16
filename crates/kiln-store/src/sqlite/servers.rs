//! The servers sharing the state: on SQLite, the one server (and any earlier run of it).

use rusqlite::params;

use super::SqliteStore;
use crate::{ServerRecord, StoreError};

impl crate::ServerStore for SqliteStore {
    fn heartbeat(&self, s: &ServerRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO servers (id, url, started_ms, seen_ms, agent_api, ca_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET url = ?2, started_ms = ?3, seen_ms = ?4,
                agent_api = ?5, ca_sha256 = ?6",
            params![
                s.id,
                s.url,
                s.started_ms as i64,
                s.seen_ms as i64,
                s.agent_api,
                s.ca_sha256
            ],
        )?;
        Ok(())
    }

    fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, url, started_ms, seen_ms, agent_api, ca_sha256 FROM servers ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ServerRecord {
                id: r.get(0)?,
                url: r.get(1)?,
                started_ms: r.get::<_, i64>(2)? as u64,
                seen_ms: r.get::<_, i64>(3)? as u64,
                agent_api: r.get(4)?,
                ca_sha256: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
