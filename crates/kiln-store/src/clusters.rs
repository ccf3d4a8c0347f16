//! Clusters: the spec as given, its plan and secrets, and which workflow installs each node.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, WorkflowTx};

/// A stored cluster. `secrets` holds keys: never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub name: String,
    pub spec_file: String,
    pub spec: String,
    /// JSON of the plan.
    pub plan: String,
    /// JSON of the cluster's CAs, keys and bootstrap token.
    pub secrets: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("name", &self.name)
            .field("spec_file", &self.spec_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterNode {
    pub cluster: String,
    pub hostname: String,
    pub role: String,
    pub workflow: String,
}

impl WorkflowTx<'_> {
    /// Records a cluster (once, with its first node's workflow).
    pub fn insert_cluster(&self, c: &ClusterRecord) -> Result<(), StoreError> {
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
    pub fn relink_cluster_node(&self, old: &str, new: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE cluster_nodes SET workflow = ?2 WHERE workflow = ?1",
            params![old, new],
        )?;
        Ok(())
    }

    pub fn insert_cluster_node(&self, n: &ClusterNode) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO cluster_nodes (cluster, hostname, role, workflow) VALUES (?1, ?2, ?3, ?4)",
            params![n.cluster, n.hostname, n.role, n.workflow],
        )?;
        Ok(())
    }
}

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

impl Store {
    pub fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY name"))?;
        let rows = stmt.query_map([], record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(&format!("{SELECT} WHERE name = ?1"), [name], record)
            .optional()?)
    }

    pub fn cluster_nodes(&self, cluster: &str) -> Result<Vec<ClusterNode>, StoreError> {
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
    pub fn clustered_machines(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT hostname FROM cluster_nodes")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The cluster node a workflow installs, with its cluster.
    pub fn cluster_of_workflow(
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
    pub fn delete_cluster(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM cluster_nodes WHERE cluster = ?1", [name])?;
        tx.execute("DELETE FROM clusters WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }
}
