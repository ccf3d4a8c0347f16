//! Discovered MACs in PostgreSQL (see [`crate::discovery`]).

use kiln_model::{DiscoveredMac, MacAddr};

use super::PgStore;
use crate::StoreError;
use crate::discovery::{EVICT, coalesce, decode, encode};

impl crate::DiscoveryStore for PgStore {
    fn record_discovered(&self, seen: &[DiscoveredMac]) -> Result<(), StoreError> {
        let seen = coalesce(seen);
        self.write(|tx| {
            // One writer at a time: two servers merging the same MAC must not lose a count.
            tx.batch_execute("LOCK TABLE discovered IN SHARE ROW EXCLUSIVE MODE")?;
            for s in &seen {
                let mac = s.mac.to_string();
                let old = tx.query_opt("SELECT record FROM discovered WHERE mac = $1", &[&mac])?;
                let merged = match old {
                    Some(row) => {
                        let mut d = decode(&mac, row.get(0))?;
                        d.merge(s);
                        d
                    }
                    None => s.clone(),
                };
                tx.execute(
                    "INSERT INTO discovered (mac, last_seen_ms, record) VALUES ($1, $2, $3)
                     ON CONFLICT (mac) DO UPDATE SET last_seen_ms = $2, record = $3",
                    &[&mac, &(merged.last_seen_ms as i64), &encode(&merged)],
                )?;
            }
            tx.execute(EVICT, &[])?;
            Ok(())
        })
    }

    fn discovered(&self) -> Result<Vec<DiscoveredMac>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT mac, record FROM discovered ORDER BY last_seen_ms DESC, mac",
                &[],
            )?
            .iter()
            .map(|r| decode(r.get(0), r.get(1)))
            .collect()
        })
    }

    fn forget_discovered(&self, macs: &[MacAddr]) -> Result<usize, StoreError> {
        let macs: Vec<String> = macs.iter().map(MacAddr::to_string).collect();
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM discovered WHERE mac = ANY($1)", &[&macs])? as usize)
        })
    }
}
