//! Hardware inventory reports and machine facts.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::StoreError;
use crate::records::{InventoryRecord, now_ms};

impl crate::InventoryStore for SqliteStore {
    fn put_inventory(
        &self,
        hostname: &str,
        at_ms: u64,
        report: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO inventories (hostname, at_ms, report) VALUES (?1, ?2, ?3)",
            params![hostname, at_ms as i64, report],
        )?;
        tx.execute(
            "DELETE FROM inventories WHERE hostname = ?1 AND id NOT IN
               (SELECT id FROM inventories WHERE hostname = ?1 ORDER BY id DESC LIMIT ?2)",
            params![hostname, keep as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn inventories(
        &self,
        hostname: &str,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at_ms, report FROM inventories WHERE hostname = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![hostname, limit as i64], |r| {
            Ok(InventoryRecord {
                at_ms: r.get::<_, i64>(0)? as u64,
                report: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_machine_fact(&self, hostname: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO machine_facts (hostname, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (hostname, key) DO UPDATE SET value = ?3, updated_ms = ?4",
            params![hostname, key, value, now_ms()],
        )?;
        Ok(())
    }

    fn machine_fact(&self, hostname: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM machine_facts WHERE hostname = ?1 AND key = ?2",
                params![hostname, key],
                |r| r.get(0),
            )
            .optional()?)
    }
}
