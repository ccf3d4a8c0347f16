//! Workflows, their agent credentials (hashed), action logs and phone-home payloads. A
//! transition locks its workflow row (`FOR UPDATE`), so two servers never interleave one.

use std::cell::RefCell;

use kiln_model::Event;
use kiln_model::workflow::{Workflow, WorkflowState};
use postgres::Transaction;

use super::PgStore;
use crate::records::{cut_line, decode_workflow, power_due};
use crate::{
    ActionLog, Change, ClusterNode, ClusterRecord, MAX_LOG_LINES, PhoneHome, StoreError,
    WorkflowKey, WorkflowTx,
};

/// A workflow being changed inside a transaction (`WorkflowTx` takes `&self`).
struct PgTx<'a, 'b> {
    tx: RefCell<&'a mut Transaction<'b>>,
}

impl PgTx<'_, '_> {
    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        Ok(self.tx.borrow_mut().execute(sql, params)?)
    }
}

/// Key of the advisory lock on the events ("evts" in ASCII): writers hold it shared until they
/// commit, a reader of events takes it alone (see [`insert_event`]).
pub(crate) const EVENTS_LOCK: i64 = 0x6576_7473;

/// How a transaction holds the events lock.
#[derive(Clone, Copy)]
pub(super) enum EventsLock {
    /// Writers: side by side.
    Shared,
    /// Readers of events: once no writer holds it.
    Alone,
}

/// Takes the events lock for the rest of the caller's transaction. Every write transaction
/// takes it shared first (`PgStore::write`), before any row lock, so a writer that waits for it
/// (behind a reader) holds nothing another writer could be waiting for.
pub(super) fn take_events_lock(
    tx: &mut impl postgres::GenericClient,
    how: EventsLock,
) -> Result<(), StoreError> {
    let sql = match how {
        EventsLock::Shared => "SELECT pg_advisory_xact_lock_shared($1)",
        EventsLock::Alone => "SELECT pg_advisory_xact_lock($1)",
    };
    tx.execute(sql, &[&EVENTS_LOCK])?;
    Ok(())
}

/// Inserts an event (in the caller's transaction). Event ids are drawn when the rows are
/// inserted, so two writers may commit out of id order, and a reader following
/// `events?after=ID` must never see a larger id before a smaller one has committed. Writers
/// hold the events lock shared (they run side by side; this insert takes it too, in case the
/// transaction did not already); a reader takes it alone (`PgStore::read_events`), so it
/// reads only once every transaction that may hold an uncommitted event has ended.
pub(crate) fn insert_event(
    tx: &mut impl postgres::GenericClient,
    event: &Event,
) -> Result<(), StoreError> {
    let record = serde_json::to_string(event).expect("events serialize");
    // The id (the column default) is drawn per row the SELECT yields: after the lock is held.
    tx.execute(
        "INSERT INTO events (at_ms, machine, record, wire)
         SELECT $1, $2, $3, $4 FROM (SELECT pg_advisory_xact_lock_shared($5)) AS events_lock",
        &[
            &(event.at_ms as i64),
            &event.machine,
            &record,
            &event.is_wire(),
            &EVENTS_LOCK,
        ],
    )?;
    Ok(())
}

impl WorkflowTx for PgTx<'_, '_> {
    fn set_netboot(&self, hostname: &str, on: bool) -> Result<(), StoreError> {
        self.execute(
            "UPDATE hardware SET netboot = $2 WHERE hostname = $1",
            &[&hostname, &on],
        )?;
        Ok(())
    }

    fn set_agent_token_hash(&self, id: &str, hash: Option<&str>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE workflows SET agent_token_hash = $2 WHERE id = $1",
            &[&id, &hash],
        )?;
        Ok(())
    }

    fn event(&self, event: &Event) -> Result<(), StoreError> {
        insert_event(&mut **self.tx.borrow_mut(), event)
    }

    fn log(
        &self,
        id: &str,
        action: usize,
        attempt: u32,
        at_ms: u64,
        lines: &[String],
    ) -> Result<usize, StoreError> {
        let mut tx = self.tx.borrow_mut();
        let insert = tx.prepare(
            "INSERT INTO action_logs (workflow, action, attempt, at_ms, line) VALUES ($1, $2, $3, $4, $5)",
        )?;
        for line in lines {
            tx.execute(
                &insert,
                &[
                    &id,
                    &(action as i64),
                    &i64::from(attempt),
                    &(at_ms as i64),
                    &cut_line(line).as_ref(),
                ],
            )?;
        }
        let dropped = tx.execute(
            "DELETE FROM action_logs WHERE workflow = $1 AND id <=
               (SELECT id FROM action_logs WHERE workflow = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            &[&id, &MAX_LOG_LINES],
        )?;
        Ok(dropped as usize)
    }

    fn phone_home(
        &self,
        id: &str,
        at_ms: u64,
        peer: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO phone_home (workflow, at_ms, peer, payload) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workflow) DO UPDATE SET at_ms = $2, peer = $3, payload = $4",
            &[&id, &(at_ms as i64), &peer, &payload],
        )?;
        Ok(())
    }

    fn insert_cluster(&self, c: &ClusterRecord) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO clusters (name, spec_file, spec, plan, secrets, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &c.name,
                &c.spec_file,
                &c.spec,
                &c.plan,
                &c.secrets,
                &(c.created_ms as i64),
            ],
        )?;
        Ok(())
    }

    fn insert_cluster_node(&self, n: &ClusterNode) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cluster_nodes (cluster, hostname, role, workflow) VALUES ($1, $2, $3, $4)",
            &[&n.cluster, &n.hostname, &n.role, &n.workflow],
        )?;
        Ok(())
    }

    fn relink_cluster_node(&self, old: &str, new: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE cluster_nodes SET workflow = $2 WHERE workflow = $1",
            &[&old, &new],
        )?;
        Ok(())
    }
}

const UNFINISHED: &str = "state NOT IN ('succeeded', 'failed', 'timed-out')";

fn decode_rows(rows: &[postgres::Row]) -> Result<Vec<Workflow>, StoreError> {
    rows.iter()
        .map(|r| decode_workflow(r.get(0), r.get(1)))
        .collect()
}

impl crate::WorkflowStore for PgStore {
    fn create_workflows(
        &self,
        items: &[Workflow],
        then: &mut dyn FnMut(&Workflow, &dyn WorkflowTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let busy =
            |tx: &mut Transaction<'_>, hardware: &str| -> Result<Option<String>, StoreError> {
                Ok(tx
                    .query_opt(
                        &format!("SELECT id FROM workflows WHERE hardware = $1 AND {UNFINISHED}"),
                        &[&hardware],
                    )?
                    .map(|r| r.get(0)))
            };
        self.write(|tx| {
            for wf in items {
                if let Some(id) = busy(tx, &wf.hardware)? {
                    return Err(StoreError::Busy {
                        hardware: wf.hardware.clone(),
                        id,
                    });
                }
                // The index settles a race with another server creating one at the same time:
                // this insert waits for it, then inserts nothing.
                let record = serde_json::to_string(wf).expect("workflow serializes");
                let inserted = tx.execute(
                    &format!(
                        "INSERT INTO workflows (id, hardware, state, record, created_ms, updated_ms, power_due)
                         VALUES ($1, $2, $3, $4, $5, $5, $6)
                         ON CONFLICT (hardware) WHERE {UNFINISHED} DO NOTHING"
                    ),
                    &[
                        &wf.id,
                        &wf.hardware,
                        &wf.state.name(),
                        &record,
                        &(wf.created_ms as i64),
                        &power_due(wf),
                    ],
                )?;
                if inserted == 0 {
                    let id = busy(tx, &wf.hardware)?.unwrap_or_default();
                    return Err(StoreError::Busy {
                        hardware: wf.hardware.clone(),
                        id,
                    });
                }
                then(
                    wf,
                    &PgTx {
                        tx: RefCell::new(&mut *tx),
                    },
                )?;
            }
            Ok(())
        })
    }

    fn change_workflow(
        &self,
        key: WorkflowKey<'_>,
        change: &mut Change<'_>,
    ) -> Result<(), StoreError> {
        let mut lock = "FOR UPDATE";
        let (sql, value) = match key {
            WorkflowKey::Id(v) => (
                "SELECT id, record FROM workflows WHERE id = $1".to_string(),
                v,
            ),
            WorkflowKey::IdUnlessLocked(v) => {
                lock = "FOR UPDATE SKIP LOCKED";
                (
                    "SELECT id, record FROM workflows WHERE id = $1".to_string(),
                    v,
                )
            }
            WorkflowKey::AgentTokenHash(v) => (
                "SELECT id, record FROM workflows WHERE agent_token_hash = $1".to_string(),
                v,
            ),
            WorkflowKey::UnfinishedOf(v) => (
                format!("SELECT id, record FROM workflows WHERE hardware = $1 AND {UNFINISHED}"),
                v,
            ),
        };
        // The row stays locked until the commit: another server's transition waits, then
        // reads what this one wrote (or, skipping locked rows, finds nothing).
        let sql = format!("{sql} {lock}");
        self.write(|tx| {
            let row = tx
                .query_opt(&sql, &[&value])?
                .ok_or(StoreError::NoWorkflow)?;
            let id: String = row.get(0);
            let mut wf = decode_workflow(&id, row.get(1))?;
            let before = wf.clone();
            change(
                &mut wf,
                &PgTx {
                    tx: RefCell::new(&mut *tx),
                },
            )?;
            if wf != before {
                tx.execute(
                    "UPDATE workflows SET state = $2, record = $3, updated_ms = $4, power_due = $5
                     WHERE id = $1",
                    &[
                        &id,
                        &wf.state.name(),
                        &serde_json::to_string(&wf).expect("workflow serializes"),
                        &(wf.updated_ms as i64),
                        &power_due(&wf),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn workflow(&self, id: &str) -> Result<Option<Workflow>, StoreError> {
        self.with(|c| {
            c.query_opt("SELECT record FROM workflows WHERE id = $1", &[&id])?
                .map(|r| decode_workflow(id, r.get(0)))
                .transpose()
        })
    }

    fn workflows_with_power_due(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT id, hardware FROM workflows WHERE power_due ORDER BY created_ms, id",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn workflows(&self, unfinished_only: bool) -> Result<Vec<Workflow>, StoreError> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT id, record FROM workflows WHERE (NOT $1 OR {UNFINISHED})
                     ORDER BY created_ms DESC, id"
                ),
                &[&unfinished_only],
            )?;
            decode_rows(&rows)
        })
    }

    fn workflow_state_counts(&self) -> Result<Vec<(WorkflowState, u64)>, StoreError> {
        self.with(|c| {
            let rows = c.query("SELECT state, count(*) FROM workflows GROUP BY state", &[])?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let n: i64 = r.get(1);
                    Some((WorkflowState::from_name(r.get(0))?, n as u64))
                })
                .collect())
        })
    }

    fn action_logs(&self, id: &str, after: i64, limit: i64) -> Result<Vec<ActionLog>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT id, action, attempt, at_ms, line FROM action_logs
                     WHERE workflow = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&id, &after, &limit],
            )?
            .iter()
            .map(|r| ActionLog {
                id: r.get(0),
                action: r.get::<_, i64>(1) as usize,
                attempt: r.get::<_, i64>(2) as u32,
                at_ms: r.get::<_, i64>(3) as u64,
                line: r.get(4),
            })
            .collect())
        })
    }

    fn phone_home_of(&self, id: &str) -> Result<Option<PhoneHome>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT at_ms, peer, payload FROM phone_home WHERE workflow = $1",
                &[&id],
            )?
            .map(|r| PhoneHome {
                at_ms: r.get::<_, i64>(0) as u64,
                peer: r.get(1),
                payload: r.get(2),
            }))
        })
    }
}
