//! Enrolment and hardware records.

use std::collections::{HashMap, HashSet};

use kiln_model::Hardware;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::enrolment;
use crate::records::{decode_hardware, now_ms};
use crate::{EnrollSummary, StoreError};

const SELECT: &str = "SELECT hostname, record, bmc_password, netboot FROM hardware";

/// The hostname of the enrolled machine whose `column` is `value`.
fn owner(conn: &Connection, column: &str, value: &str) -> Result<Option<String>, StoreError> {
    let sql = format!("SELECT hostname FROM hardware WHERE {column} = ?1");
    Ok(conn
        .query_row(&sql, [value], |r| r.get::<_, String>(0))
        .optional()?)
}

/// Deletes the replaced rows, returning them first, to keep netboot and spot no-ops.
fn remove_replaced(
    conn: &Connection,
    replaced: &HashSet<String>,
) -> Result<HashMap<String, Hardware>, StoreError> {
    let mut previous = HashMap::new();
    for name in replaced {
        let row = conn.query_row(&format!("{SELECT} WHERE hostname = ?1"), [name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        previous.insert(name.clone(), decode_hardware(&row.0, &row.1, row.2, row.3)?);
        conn.execute("DELETE FROM hardware WHERE hostname = ?1", [name])?;
    }
    Ok(previous)
}

fn insert_hardware(conn: &Connection, hw: &Hardware, now: i64) -> Result<(), StoreError> {
    let record = serde_json::to_string(hw).expect("hardware serializes");
    conn.execute(
        "INSERT INTO hardware (hostname, mac, ip, bmc_address, bmc_password, netboot, record, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            hw.hostname,
            hw.mac.to_string(),
            hw.ip.to_string(),
            hw.bmc.as_ref().map(|b| b.address.clone()),
            hw.bmc.as_ref().map(|b| b.password.expose().to_string()),
            hw.netboot,
            record,
            now
        ],
    )?;
    Ok(())
}

impl crate::HardwareStore for SqliteStore {
    /// Stores `machines` in one transaction: each replaces the enrolled machine
    /// with the same hostname or MAC (keeping its netboot flag), or is added.
    /// Any clash with another machine aborts the whole enrolment.
    fn enroll(&self, machines: &[Hardware]) -> Result<EnrollSummary, StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        // A clash returns early: dropping the transaction rolls back, nothing half-applied.
        let (plan, replaced) =
            enrolment::plan(machines, &mut |column, value| owner(&tx, column, value))?;
        let previous = remove_replaced(&tx, &replaced)?;
        let (rows, summary) = enrolment::rows(machines, plan, &previous);
        let now = now_ms();
        for hw in &rows {
            insert_hardware(&tx, hw, now)?;
        }
        tx.commit()?;
        Ok(summary)
    }

    /// Every enrolled machine, by hostname.
    fn hardware(&self) -> Result<Vec<Hardware>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY hostname"))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, record, password, netboot) = row?;
            out.push(decode_hardware(&name, &record, password, netboot)?);
        }
        Ok(out)
    }

    fn hardware_by_name(&self, hostname: &str) -> Result<Option<Hardware>, StoreError> {
        self.hardware_where("hostname", hostname)
    }

    fn hardware_by_mac(&self, mac: &kiln_model::MacAddr) -> Result<Option<Hardware>, StoreError> {
        self.hardware_where("mac", &mac.to_string())
    }

    /// Changes one machine in a transaction: `change` edits it (labels, BMC credentials) and
    /// may refuse with a message; what it returns is stored. Its hostname, MAC, IP and BMC
    /// address stay (a new hardware.csv row changes those).
    fn update_hardware(
        &self,
        hostname: &str,
        change: &mut dyn FnMut(&mut Hardware) -> Result<(), String>,
    ) -> Result<Hardware, StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        let row = tx
            .query_row(&format!("{SELECT} WHERE hostname = ?1"), [hostname], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(hostname.to_string()))?;
        let mut hw = decode_hardware(&row.0, &row.1, row.2, row.3)?;
        enrolment::update(&mut hw, change)?;
        let record = serde_json::to_string(&hw).expect("hardware serializes");
        tx.execute(
            "UPDATE hardware SET record = ?2, bmc_password = ?3, netboot = ?4, updated_ms = ?5
             WHERE hostname = ?1",
            params![
                hostname,
                record,
                hw.bmc.as_ref().map(|b| b.password.expose().to_string()),
                hw.netboot,
                now_ms()
            ],
        )?;
        tx.commit()?;
        Ok(hw)
    }

    /// Forgets a machine (and what was learnt of its BMC). Refused while it has an unfinished
    /// workflow or is a node of a cluster; its events and finished workflows stay as history.
    fn delete_hardware(&self, hostname: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        let busy: Option<String> = tx
            .query_row(
                "SELECT id FROM workflows WHERE hardware = ?1
                 AND state NOT IN ('succeeded', 'failed', 'timed-out')",
                [hostname],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = busy {
            return Err(StoreError::Busy {
                hardware: hostname.to_string(),
                id,
            });
        }
        let cluster: Option<String> = tx
            .query_row(
                "SELECT cluster FROM cluster_nodes WHERE hostname = ?1",
                [hostname],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(cluster) = cluster {
            return Err(StoreError::Invalid(format!(
                "{hostname} is a node of cluster {cluster}: delete the cluster first"
            )));
        }
        if tx.execute("DELETE FROM hardware WHERE hostname = ?1", [hostname])? == 0 {
            return Err(StoreError::NotFound(hostname.to_string()));
        }
        tx.execute("DELETE FROM bmc_hints WHERE hostname = ?1", [hostname])?;
        tx.execute("DELETE FROM inventories WHERE hostname = ?1", [hostname])?;
        tx.execute("DELETE FROM machine_facts WHERE hostname = ?1", [hostname])?;
        tx.commit()?;
        Ok(())
    }

    /// Turns a machine's netboot on or off; the boot services pick it up.
    fn set_netboot(&self, hostname: &str, on: bool) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE hardware SET netboot = ?2, updated_ms = ?3 WHERE hostname = ?1",
            params![hostname, on, now_ms()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(hostname.to_string()));
        }
        Ok(())
    }
}

impl SqliteStore {
    fn hardware_where(&self, column: &str, value: &str) -> Result<Option<Hardware>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(&format!("{SELECT} WHERE {column} = ?1"), [value], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })
            .optional()?;
        row.map(|(n, rec, p, nb)| decode_hardware(&n, &rec, p, nb))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    //! SQLite's own promises; the behaviour every backend shares is tested in `crate::tests`.
    use crate::sqlite::testutil::temp_store;
    use crate::traits::*;

    #[test]
    fn database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, store) = temp_store();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_loosened_data_dir_is_made_private_again_and_deletes_are_zeroed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        drop(crate::SqliteStore::open(&data).unwrap());
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = crate::SqliteStore::open(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let secure: i64 = store
            .conn()
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(secure, 1);
        // What a deleted row held is gone from the file, not left in a free page.
        let marker = "kiln-secret-marker-0123456789";
        store.set_setting("probe", marker).unwrap();
        store
            .conn()
            .execute("DELETE FROM settings WHERE key = 'probe'", [])
            .unwrap();
        store
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "deleted value still in the database file"
        );
    }
}
