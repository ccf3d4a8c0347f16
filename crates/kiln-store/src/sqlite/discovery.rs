//! Discovered MACs in SQLite (see [`crate::discovery`]).

use kiln_model::{DiscoveredMac, MacAddr};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, write_tx};
use crate::StoreError;
use crate::discovery::{EVICT, coalesce, decode, encode};

impl crate::DiscoveryStore for SqliteStore {
    fn record_discovered(&self, seen: &[DiscoveredMac]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        for s in coalesce(seen) {
            let mac = s.mac.to_string();
            let old: Option<String> = tx
                .query_row(
                    "SELECT record FROM discovered WHERE mac = ?1",
                    [&mac],
                    |r| r.get(0),
                )
                .optional()?;
            let merged = match old {
                Some(record) => {
                    let mut d = decode(&mac, &record)?;
                    d.merge(&s);
                    d
                }
                None => s,
            };
            tx.execute(
                "INSERT INTO discovered (mac, last_seen_ms, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (mac) DO UPDATE SET last_seen_ms = ?2, record = ?3",
                params![mac, merged.last_seen_ms as i64, encode(&merged)],
            )?;
        }
        tx.execute(EVICT, [])?;
        tx.commit()?;
        Ok(())
    }

    fn discovered(&self) -> Result<Vec<DiscoveredMac>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT mac, record FROM discovered ORDER BY last_seen_ms DESC, mac")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (mac, record) = row?;
            out.push(decode(&mac, &record)?);
        }
        Ok(out)
    }

    fn forget_discovered(&self, macs: &[MacAddr]) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = write_tx(&mut conn)?;
        let mut n = 0;
        for mac in macs {
            n += tx.execute("DELETE FROM discovered WHERE mac = ?1", [mac.to_string()])?;
        }
        tx.commit()?;
        Ok(n)
    }
}
