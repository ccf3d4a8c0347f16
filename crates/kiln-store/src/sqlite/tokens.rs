//! Admin API bearer tokens: their SHA-256, a name and a scope; the token itself is shown once
//! when made and never stored.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::{ApiTokenRecord, StoreError};

const COLUMNS: &str = "id, name, scope, created_ms, revoked_ms";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        created_ms: r.get::<_, i64>(3)? as u64,
        revoked_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
    })
}

impl crate::TokenStore for SqliteStore {
    fn insert_api_token(&self, t: &ApiTokenRecord, hash: &str) -> Result<(), StoreError> {
        self.conn().execute(
            &format!("INSERT INTO api_tokens ({COLUMNS}, hash) VALUES (?1, ?2, ?3, ?4, NULL, ?5)"),
            params![t.id, t.name, t.scope, t.created_ms as i64, hash],
        )?;
        Ok(())
    }

    /// The live (not revoked) token whose SHA-256 is `hash`.
    fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = ?1 AND revoked_ms IS NULL"),
                [hash],
                from_row,
            )
            .optional()?)
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_ms, id"
        ))?;
        let rows = q.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes the live tokens whose id or name is `key`; how many.
    fn revoke_api_token(&self, key: &str, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE api_tokens SET revoked_ms = ?2 WHERE (id = ?1 OR name = ?1) AND revoked_ms IS NULL",
            params![key, now_ms as i64],
        )?)
    }
}
