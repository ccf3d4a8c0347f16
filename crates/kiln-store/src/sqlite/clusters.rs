//! Clusters: the spec as given, its plan and secrets, and which workflow installs each node.

use rusqlite::OptionalExtension;

use super::SqliteStore;
use crate::{ClusterNode, ClusterRecord, StoreError};

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClusterRecord> {
    Ok(ClusterRecord {
        name: r.get(0)?,
        spec_file: r.get(1)?,
        spec: r.get(2)?,
        plan: r.get(3)?,
        secrets: r.get(4)?,
        created_ms: r.get::<_, i64>(5)? as u64,
    })
}

const SELECT: &str = "SELECT name, spec_file, spec, plan, secrets, created_ms FROM clusters";

impl crate::ClusterStore for SqliteStore {
    fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY name"))?;
        let rows = stmt.query_map([], record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(&format!("{SELECT} WHERE name = ?1"), [name], record)
            .optional()?)
    }

    fn cluster_nodes(&self, cluster: &str) -> Result<Vec<ClusterNode>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT cluster, hostname, role, workflow FROM cluster_nodes WHERE cluster = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([cluster], |r| {
            Ok(ClusterNode {
                cluster: r.get(0)?,
                hostname: r.get(1)?,
                role: r.get(2)?,
                workflow: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Machines that belong to a cluster (not free for another one).
    fn clustered_machines(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT hostname FROM cluster_nodes")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The cluster node a workflow installs, with its cluster.
    fn cluster_of_workflow(
        &self,
        workflow: &str,
    ) -> Result<Option<(ClusterRecord, ClusterNode)>, StoreError> {
        let node = {
            let conn = self.conn();
            conn.query_row(
                "SELECT cluster, hostname, role, workflow FROM cluster_nodes WHERE workflow = ?1",
                [workflow],
                |r| {
                    Ok(ClusterNode {
                        cluster: r.get(0)?,
                        hostname: r.get(1)?,
                        role: r.get(2)?,
                        workflow: r.get(3)?,
                    })
                },
            )
            .optional()?
        };
        let Some(node) = node else { return Ok(None) };
        Ok(self.cluster(&node.cluster)?.map(|c| (c, node)))
    }

    /// Forgets a cluster: its machines are free again.
    fn delete_cluster(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        tx.execute("DELETE FROM cluster_nodes WHERE cluster = ?1", [name])?;
        tx.execute("DELETE FROM clusters WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }
}
