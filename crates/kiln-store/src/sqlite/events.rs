//! Event history: bounded per machine, so a chatty machine cannot fill the disk.

use kiln_model::Event;
use rusqlite::params;

use super::SqliteStore;
use crate::{EventRecord, MAX_EVENTS_PER_MACHINE, StoreError};

impl crate::EventStore for SqliteStore {
    /// Appends events in one transaction and trims each touched machine's history (per class).
    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (at_ms, machine, record, wire) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ev in events {
                let record = serde_json::to_string(ev).expect("events serialize");
                insert.execute(params![ev.at_ms as i64, ev.machine, record, ev.is_wire()])?;
            }
            let mut touched: Vec<(Option<&String>, bool)> = events
                .iter()
                .map(|e| (e.machine.as_ref(), e.is_wire()))
                .collect();
            touched.sort();
            touched.dedup();
            let mut trim = tx.prepare_cached(
                "DELETE FROM events WHERE machine IS ?1 AND wire = ?2 AND id <=
                   (SELECT id FROM events WHERE machine IS ?1 AND wire = ?2
                    ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            )?;
            for (machine, wire) in touched {
                trim.execute(params![machine, wire, MAX_EVENTS_PER_MACHINE])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Events after `after_id`, oldest first, optionally of one machine.
    fn events(
        &self,
        machine: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, record FROM events WHERE id > ?1 AND (?2 IS NULL OR machine = ?2) ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_id, machine, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, record) = row?;
            let event = serde_json::from_str(&record).map_err(|e| StoreError::Corrupt {
                what: format!("event {id}"),
                why: e.to_string(),
            })?;
            out.push(EventRecord { id, event });
        }
        Ok(out)
    }

    /// The id of the newest event, to follow from "now".
    fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }
}
