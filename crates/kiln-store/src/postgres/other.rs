//! Events, images, clusters, admin tokens and BMC hints (the rules of the SQLite files of the
//! same names, in PostgreSQL).

use kiln_model::Event;

use super::PgStore;
use super::workflows::insert_event;
use crate::records::now_ms;
use crate::{
    ApiTokenRecord, ClusterNode, ClusterRecord, EventRecord, ImageRecord, MAX_EVENTS_PER_MACHINE,
    ServerRecord, StoreError,
};

impl crate::ServerStore for PgStore {
    fn heartbeat(&self, s: &ServerRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO servers (id, url, started_ms, seen_ms, agent_api, ca_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET url = $2, started_ms = $3, seen_ms = $4,
                    agent_api = $5, ca_sha256 = $6",
                &[
                    &s.id,
                    &s.url,
                    &(s.started_ms as i64),
                    &(s.seen_ms as i64),
                    &s.agent_api,
                    &s.ca_sha256,
                ],
            )?;
            Ok(())
        })
    }

    fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT id, url, started_ms, seen_ms, agent_api, ca_sha256 FROM servers ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| ServerRecord {
                id: r.get(0),
                url: r.get(1),
                started_ms: r.get::<_, i64>(2) as u64,
                seen_ms: r.get::<_, i64>(3) as u64,
                agent_api: r.get(4),
                ca_sha256: r.get(5),
            })
            .collect())
        })
    }
}

impl crate::EventStore for PgStore {
    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut touched: Vec<(Option<&String>, bool)> = events
            .iter()
            .map(|e| (e.machine.as_ref(), e.is_wire()))
            .collect();
        touched.sort();
        touched.dedup();
        self.write(|tx| {
            for ev in events {
                insert_event(tx, ev)?;
            }
            for (machine, wire) in &touched {
                tx.execute(
                    "DELETE FROM events WHERE machine IS NOT DISTINCT FROM $1 AND wire = $2 AND id <=
                       (SELECT id FROM events WHERE machine IS NOT DISTINCT FROM $1 AND wire = $2
                        ORDER BY id DESC LIMIT 1 OFFSET $3)",
                    &[machine, wire, &MAX_EVENTS_PER_MACHINE],
                )?;
            }
            Ok(())
        })
    }

    fn events(
        &self,
        machine: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.read_events(|c| {
            let rows = c.query(
                "SELECT id, record FROM events WHERE id > $1 AND ($2::TEXT IS NULL OR machine = $2)
                 ORDER BY id LIMIT $3",
                &[&after_id, &machine, &limit],
            )?;
            rows.iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    let event =
                        serde_json::from_str(r.get(1)).map_err(|e| StoreError::Corrupt {
                            what: format!("event {id}"),
                            why: e.to_string(),
                        })?;
                    Ok(EventRecord { id, event })
                })
                .collect()
        })
    }

    fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read_events(|c| {
            Ok(
                c.query_one("SELECT COALESCE(MAX(id), 0)::BIGINT FROM events", &[])?
                    .get(0),
            )
        })
    }
}

const IMAGE_COLUMNS: &str = "name, file, raw_size, sha256, created_ms, source_format";

fn image(r: &postgres::Row) -> ImageRecord {
    ImageRecord {
        name: r.get(0),
        file: r.get(1),
        raw_size: r.get::<_, i64>(2) as u64,
        sha256: r.get(3),
        created_ms: r.get::<_, i64>(4) as u64,
        source_format: r.get(5),
    }
}

impl PgStore {
    fn write_image(&self, img: &ImageRecord, on_conflict: &str) -> Result<u64, StoreError> {
        self.write(|tx| {
            Ok(tx.execute(
                &format!(
                    "INSERT INTO images ({IMAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name) {on_conflict}"
                ),
                &[
                    &img.name,
                    &img.file,
                    &(img.raw_size as i64),
                    &img.sha256,
                    &(img.created_ms as i64),
                    &img.source_format,
                ],
            )?)
        })
    }
}

impl crate::ImageStore for PgStore {
    fn put_image(&self, img: &ImageRecord) -> Result<(), StoreError> {
        self.write_image(
            img,
            "DO UPDATE SET file = $2, raw_size = $3, sha256 = $4, created_ms = $5, source_format = $6",
        )?;
        Ok(())
    }

    fn add_image(&self, img: &ImageRecord) -> Result<bool, StoreError> {
        Ok(self.write_image(img, "DO NOTHING")? == 1)
    }

    fn delete_image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.write(|tx| {
            Ok(tx
                .query_opt(
                    &format!("DELETE FROM images WHERE name = $1 RETURNING {IMAGE_COLUMNS}"),
                    &[&name],
                )?
                .as_ref()
                .map(image))
        })
    }

    fn image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE name = $1"),
                &[&name],
            )?
            .as_ref()
            .map(image))
        })
    }

    fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                &format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"),
                &[],
            )?
            .iter()
            .map(image)
            .collect())
        })
    }
}

const CLUSTER_SELECT: &str =
    "SELECT name, spec_file, spec, plan, secrets, created_ms FROM clusters";
const NODE_SELECT: &str = "SELECT cluster, hostname, role, workflow FROM cluster_nodes";

fn cluster(r: &postgres::Row) -> ClusterRecord {
    ClusterRecord {
        name: r.get(0),
        spec_file: r.get(1),
        spec: r.get(2),
        plan: r.get(3),
        secrets: r.get(4),
        created_ms: r.get::<_, i64>(5) as u64,
    }
}

fn node(r: &postgres::Row) -> ClusterNode {
    ClusterNode {
        cluster: r.get(0),
        hostname: r.get(1),
        role: r.get(2),
        workflow: r.get(3),
    }
}

impl crate::ClusterStore for PgStore {
    fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query(&format!("{CLUSTER_SELECT} ORDER BY name"), &[])?
                .iter()
                .map(cluster)
                .collect())
        })
    }

    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt(&format!("{CLUSTER_SELECT} WHERE name = $1"), &[&name])?
                    .as_ref()
                    .map(cluster),
            )
        })
    }

    fn cluster_nodes(&self, name: &str) -> Result<Vec<ClusterNode>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                &format!("{NODE_SELECT} WHERE cluster = $1 ORDER BY seq"),
                &[&name],
            )?
            .iter()
            .map(node)
            .collect())
        })
    }

    fn clustered_machines(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            Ok(
                c.query("SELECT hostname FROM cluster_nodes ORDER BY seq", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })
    }

    fn cluster_of_workflow(
        &self,
        workflow: &str,
    ) -> Result<Option<(ClusterRecord, ClusterNode)>, StoreError> {
        self.with(|c| {
            let Some(n) = c
                .query_opt(&format!("{NODE_SELECT} WHERE workflow = $1"), &[&workflow])?
                .as_ref()
                .map(node)
            else {
                return Ok(None);
            };
            Ok(
                c.query_opt(&format!("{CLUSTER_SELECT} WHERE name = $1"), &[&n.cluster])?
                    .as_ref()
                    .map(|r| (cluster(r), n.clone())),
            )
        })
    }

    fn delete_cluster(&self, name: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM cluster_nodes WHERE cluster = $1", &[&name])?;
            tx.execute("DELETE FROM clusters WHERE name = $1", &[&name])?;
            Ok(())
        })
    }
}

const TOKEN_COLUMNS: &str = "id, name, scope, created_ms, revoked_ms";

fn token(r: &postgres::Row) -> ApiTokenRecord {
    ApiTokenRecord {
        id: r.get(0),
        name: r.get(1),
        scope: r.get(2),
        created_ms: r.get::<_, i64>(3) as u64,
        revoked_ms: r.get::<_, Option<i64>>(4).map(|v| v as u64),
    }
}

impl crate::TokenStore for PgStore {
    fn insert_api_token(&self, t: &ApiTokenRecord, hash: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}, hash) VALUES ($1, $2, $3, $4, NULL, $5)"
                ),
                &[&t.id, &t.name, &t.scope, &(t.created_ms as i64), &hash],
            )?;
            Ok(())
        })
    }

    fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1 AND revoked_ms IS NULL"
                ),
                &[&hash],
            )?
            .as_ref()
            .map(token))
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_ms, id"),
                &[],
            )?
            .iter()
            .map(token)
            .collect())
        })
    }

    fn revoke_api_token(&self, key: &str, now_ms: u64) -> Result<usize, StoreError> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE api_tokens SET revoked_ms = $2
                 WHERE (id = $1 OR name = $1) AND revoked_ms IS NULL",
                &[&key, &(now_ms as i64)],
            )? as usize)
        })
    }
}

impl crate::BmcHintStore for PgStore {
    fn bmc_hint(&self, hostname: &str, address: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT hint FROM bmc_hints WHERE hostname = $1 AND address = $2",
                &[&hostname, &address],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn set_bmc_hint(&self, hostname: &str, address: &str, hint: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO bmc_hints (hostname, address, hint, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hostname) DO UPDATE SET address = $2, hint = $3, updated_ms = $4",
                &[&hostname, &address, &hint, &now_ms()],
            )?;
            Ok(())
        })
    }
}
