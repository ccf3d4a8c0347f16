//! Hardware inventory reports and machine facts.

use super::PgStore;
use crate::StoreError;
use crate::records::{InventoryRecord, now_ms};

impl crate::InventoryStore for PgStore {
    fn put_inventory(
        &self,
        hostname: &str,
        at_ms: u64,
        report: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO inventories (hostname, at_ms, report) VALUES ($1, $2, $3)",
                &[&hostname, &(at_ms as i64), &report],
            )?;
            tx.execute(
                "DELETE FROM inventories WHERE hostname = $1 AND id NOT IN
                   (SELECT id FROM inventories WHERE hostname = $1 ORDER BY id DESC LIMIT $2)",
                &[&hostname, &(keep as i64)],
            )?;
            Ok(())
        })
    }

    fn inventories(
        &self,
        hostname: &str,
        limit: usize,
    ) -> Result<Vec<InventoryRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT at_ms, report FROM inventories WHERE hostname = $1 ORDER BY id DESC LIMIT $2",
                &[&hostname, &(limit as i64)],
            )?
            .iter()
            .map(|r| InventoryRecord {
                at_ms: r.get::<_, i64>(0) as u64,
                report: r.get(1),
            })
            .collect())
        })
    }

    fn set_machine_fact(&self, hostname: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO machine_facts (hostname, key, value, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hostname, key) DO UPDATE SET value = $3, updated_ms = $4",
                &[&hostname, &key, &value, &now_ms()],
            )?;
            Ok(())
        })
    }

    fn machine_fact(&self, hostname: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT value FROM machine_facts WHERE hostname = $1 AND key = $2",
                &[&hostname, &key],
            )?
            .map(|r| r.get(0)))
        })
    }
}
