//! Workflows, their agent credentials (hashed), action logs and phone-home payloads. A transition
//! is read-modify-write inside one transaction ([`Store::with_workflow`]), with
//! its effects (netboot flag, token revocation, events) in the same commit.

use kiln_model::Event;
use kiln_model::workflow::{Workflow, WorkflowState};
use rusqlite::{OptionalExtension, Transaction, params};

use super::SqliteStore;
use crate::records::{cut_line, decode_workflow, power_due};
use crate::{
    ActionLog, Change, ClusterNode, ClusterRecord, MAX_LOG_LINES, PhoneHome, StoreError,
    WorkflowKey, WorkflowTx,
};

/// A workflow being changed inside a transaction.
struct SqliteTx<'a> {
    tx: &'a Transaction<'a>,
}

impl WorkflowTx for SqliteTx<'_> {
    fn set_netboot(&self, hostname: &str, on: bool) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE hardware SET netboot = ?2 WHERE hostname = ?1",
            params![hostname, on],
        )?;
        Ok(())
    }

    /// The SHA-256 (hex) of the workflow's agent credential; `None` revokes it.
    fn set_agent_token_hash(&self, id: &str, hash: Option<&str>) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE workflows SET agent_token_hash = ?2 WHERE id = ?1",
            params![id, hash],
        )?;
        Ok(())
    }

    fn event(&self, event: &Event) -> Result<(), StoreError> {
        let record = serde_json::to_string(event).expect("events serialize");
        self.tx.execute(
            "INSERT INTO events (at_ms, machine, record) VALUES (?1, ?2, ?3)",
            params![event.at_ms as i64, event.machine, record],
        )?;
        Ok(())
    }

    /// Stores an agent's log lines (each cut at [`MAX_LOG_LINE_BYTES`]) and drops the oldest
    /// beyond [`MAX_LOG_LINES`]; returns how many were dropped, for the workflow to note.
    fn log(
        &self,
        id: &str,
        action: usize,
        attempt: u32,
        at_ms: u64,
        lines: &[String],
    ) -> Result<usize, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO action_logs (workflow, action, attempt, at_ms, line) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for line in lines {
            stmt.execute(params![
                id,
                action as i64,
                attempt,
                at_ms as i64,
                cut_line(line)
            ])?;
        }
        let dropped = self.tx.execute(
            "DELETE FROM action_logs WHERE workflow = ?1 AND id <=
               (SELECT id FROM action_logs WHERE workflow = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![id, MAX_LOG_LINES],
        )?;
        Ok(dropped)
    }

    fn phone_home(
        &self,
        id: &str,
        at_ms: u64,
        peer: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO phone_home (workflow, at_ms, peer, payload) VALUES (?1, ?2, ?3, ?4)",
            params![id, at_ms as i64, peer, payload],
        )?;
        Ok(())
    }

    /// Records a cluster (once, with its first node's workflow).
    fn insert_cluster(&self, c: &ClusterRecord) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO clusters (name, spec_file, spec, plan, secrets, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.name,
                c.spec_file,
                c.spec,
                c.plan,
                c.secrets,
                c.created_ms as i64
            ],
        )?;
        Ok(())
    }

    /// A retried node workflow takes the place of the one it retries (no-op outside clusters).
    fn relink_cluster_node(&self, old: &str, new: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE cluster_nodes SET workflow = ?2 WHERE workflow = ?1",
            params![old, new],
        )?;
        Ok(())
    }

    fn insert_cluster_node(&self, n: &ClusterNode) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO cluster_nodes (cluster, hostname, role, workflow) VALUES (?1, ?2, ?3, ?4)",
            params![n.cluster, n.hostname, n.role, n.workflow],
        )?;
        Ok(())
    }
}

impl crate::WorkflowStore for SqliteStore {
    /// Stores new workflows, all or none, and runs `then` for each (turning netboot on, say)
    /// in the same transaction. Their agents claim their credentials later.
    fn create_workflows(
        &self,
        items: &[Workflow],
        then: &mut dyn FnMut(&Workflow, &dyn WorkflowTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for wf in items {
            let busy: Option<String> = tx
                .query_row(
                    "SELECT id FROM workflows WHERE hardware = ?1 AND state NOT IN ('succeeded', 'failed', 'timed-out')",
                    [&wf.hardware],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = busy {
                return Err(StoreError::Busy {
                    hardware: wf.hardware.clone(),
                    id,
                });
            }
            tx.execute(
                "INSERT INTO workflows (id, hardware, state, record, created_ms, updated_ms, power_due)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                params![
                    wf.id,
                    wf.hardware,
                    wf.state.name(),
                    serde_json::to_string(wf).expect("workflow serializes"),
                    wf.created_ms as i64,
                    power_due(wf)
                ],
            )?;
            then(wf, &SqliteTx { tx: &tx })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads the workflow named by `key`, lets `change` modify it, and writes
    /// it back, all in one transaction: a crash leaves either the old or the
    /// new state. `change`'s error aborts everything.
    fn change_workflow(
        &self,
        key: WorkflowKey<'_>,
        change: &mut Change<'_>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sql = match key {
            // One writer at a time (an immediate transaction): nothing is ever locked by another.
            WorkflowKey::Id(_) | WorkflowKey::IdUnlessLocked(_) => {
                "SELECT id, record FROM workflows WHERE id = ?1"
            }
            WorkflowKey::AgentTokenHash(_) => {
                "SELECT id, record FROM workflows WHERE agent_token_hash = ?1"
            }
            WorkflowKey::UnfinishedOf(_) => {
                "SELECT id, record FROM workflows WHERE hardware = ?1 AND state NOT IN ('succeeded', 'failed', 'timed-out')"
            }
        };
        let value = match key {
            WorkflowKey::Id(v)
            | WorkflowKey::IdUnlessLocked(v)
            | WorkflowKey::AgentTokenHash(v)
            | WorkflowKey::UnfinishedOf(v) => v,
        };
        let (id, record): (String, String) = tx
            .query_row(sql, [value], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or(StoreError::NoWorkflow)?;
        let mut wf = decode_workflow(&id, &record)?;
        let before = wf.clone();
        change(&mut wf, &SqliteTx { tx: &tx })?;
        if wf != before {
            tx.execute(
                "UPDATE workflows SET state = ?2, record = ?3, updated_ms = ?4, power_due = ?5 WHERE id = ?1",
                params![
                    id,
                    wf.state.name(),
                    serde_json::to_string(&wf).expect("workflow serializes"),
                    wf.updated_ms as i64,
                    power_due(&wf)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn workflow(&self, id: &str) -> Result<Option<Workflow>, StoreError> {
        let conn = self.conn();
        let rec: Option<String> = conn
            .query_row("SELECT record FROM workflows WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        rec.map(|r| decode_workflow(id, &r)).transpose()
    }

    /// Ids of workflows with a BMC step pending or claimed.
    fn workflows_with_power_due(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, hardware FROM workflows WHERE power_due = 1 ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Workflows, newest first; only unfinished ones if `unfinished_only`.
    fn workflows(&self, unfinished_only: bool) -> Result<Vec<Workflow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, record FROM workflows
             WHERE (?1 = 0 OR state NOT IN ('succeeded', 'failed', 'timed-out'))
             ORDER BY created_ms DESC, id",
        )?;
        let rows = stmt.query_map([unfinished_only], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rec) = row?;
            out.push(decode_workflow(&id, &rec)?);
        }
        Ok(out)
    }

    fn workflow_state_counts(&self) -> Result<Vec<(WorkflowState, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT state, count(*) FROM workflows GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n) = row?;
            out.extend(WorkflowState::from_name(&state).map(|s| (s, n as u64)));
        }
        Ok(out)
    }

    fn action_logs(&self, id: &str, after: i64, limit: i64) -> Result<Vec<ActionLog>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, action, attempt, at_ms, line FROM action_logs WHERE workflow = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, after, limit], |r| {
            Ok(ActionLog {
                id: r.get(0)?,
                action: r.get::<_, i64>(1)? as usize,
                attempt: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
                line: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn phone_home_of(&self, id: &str) -> Result<Option<PhoneHome>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT at_ms, peer, payload FROM phone_home WHERE workflow = ?1",
                [id],
                |r| {
                    Ok(PhoneHome {
                        at_ms: r.get::<_, i64>(0)? as u64,
                        peer: r.get(1)?,
                        payload: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}
