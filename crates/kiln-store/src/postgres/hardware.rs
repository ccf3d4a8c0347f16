//! Enrolment and hardware records (the rules of `sqlite/hardware.rs`, in PostgreSQL).

use std::collections::HashMap;

use kiln_model::Hardware;
use postgres::GenericClient;
use postgres::types::ToSql;

use super::PgStore;
use crate::enrolment;
use crate::records::{decode_hardware, now_ms};
use crate::{EnrollSummary, StoreError};

const SELECT: &str = "SELECT hostname, record, bmc_password, netboot FROM hardware";

fn decode(r: &postgres::Row) -> Result<Hardware, StoreError> {
    decode_hardware(r.get::<_, &str>(0), r.get(1), r.get(2), r.get(3))
}

/// The hostname of the enrolled machine where `column` equals `value`.
fn owner(
    c: &mut impl GenericClient,
    column: &str,
    value: &str,
) -> Result<Option<String>, StoreError> {
    Ok(c.query_opt(
        &format!("SELECT hostname FROM hardware WHERE {column} = $1"),
        &[&value],
    )?
    .map(|r| r.get(0)))
}

fn insert_hardware(c: &mut impl GenericClient, hw: &Hardware, now: i64) -> Result<(), StoreError> {
    let record = serde_json::to_string(hw).expect("hardware serializes");
    let bmc_address = hw.bmc.as_ref().map(|b| b.address.clone());
    let bmc_password = hw.bmc.as_ref().map(|b| b.password.expose().to_string());
    let params: [&(dyn ToSql + Sync); 8] = [
        &hw.hostname,
        &hw.mac.to_string(),
        &hw.ip.to_string(),
        &bmc_address,
        &bmc_password,
        &hw.netboot,
        &record,
        &now,
    ];
    c.execute(
        "INSERT INTO hardware (hostname, mac, ip, bmc_address, bmc_password, netboot, record, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &params,
    )?;
    Ok(())
}

impl crate::HardwareStore for PgStore {
    fn enroll(&self, machines: &[Hardware]) -> Result<EnrollSummary, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // One enrolment at a time: the conflict checks below must see a stable table.
            tx.batch_execute("LOCK TABLE hardware IN SHARE ROW EXCLUSIVE MODE")?;
            // A clash returns early: dropping the transaction rolls back, nothing half-applied.
            let (plan, replaced) =
                enrolment::plan(machines, &mut |column, value| owner(&mut tx, column, value))?;
            let mut previous: HashMap<String, Hardware> = HashMap::new();
            for name in &replaced {
                let row = tx.query_one(&format!("{SELECT} WHERE hostname = $1"), &[name])?;
                previous.insert(name.clone(), decode(&row)?);
                tx.execute("DELETE FROM hardware WHERE hostname = $1", &[name])?;
            }
            let (rows, summary) = enrolment::rows(machines, plan, &previous);
            let now = now_ms();
            for hw in &rows {
                insert_hardware(&mut tx, hw, now)?;
            }
            self.commit(tx)?;
            Ok(summary)
        })
    }

    fn hardware(&self) -> Result<Vec<Hardware>, StoreError> {
        self.with(|c| {
            c.query(&format!("{SELECT} ORDER BY hostname"), &[])?
                .iter()
                .map(decode)
                .collect()
        })
    }

    fn hardware_by_name(&self, hostname: &str) -> Result<Option<Hardware>, StoreError> {
        self.hardware_where("hostname", hostname)
    }

    fn hardware_by_mac(&self, mac: &kiln_model::MacAddr) -> Result<Option<Hardware>, StoreError> {
        self.hardware_where("mac", &mac.to_string())
    }

    fn update_hardware(
        &self,
        hostname: &str,
        change: &mut dyn FnMut(&mut Hardware) -> Result<(), String>,
    ) -> Result<Hardware, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let row = tx
                .query_opt(
                    &format!("{SELECT} WHERE hostname = $1 FOR UPDATE"),
                    &[&hostname],
                )?
                .ok_or_else(|| StoreError::NotFound(hostname.to_string()))?;
            let mut hw = decode(&row)?;
            enrolment::update(&mut hw, change)?;
            let record = serde_json::to_string(&hw).expect("hardware serializes");
            let password = hw.bmc.as_ref().map(|b| b.password.expose().to_string());
            tx.execute(
                "UPDATE hardware SET record = $2, bmc_password = $3, netboot = $4, updated_ms = $5
                 WHERE hostname = $1",
                &[&hostname, &record, &password, &hw.netboot, &now_ms()],
            )?;
            self.commit(tx)?;
            Ok(hw)
        })
    }

    fn delete_hardware(&self, hostname: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // Lock the machine first: a workflow created meanwhile waits for this to finish.
            tx.query_opt(
                "SELECT 1 FROM hardware WHERE hostname = $1 FOR UPDATE",
                &[&hostname],
            )?;
            let busy = tx.query_opt(
                "SELECT id FROM workflows WHERE hardware = $1
                 AND state NOT IN ('succeeded', 'failed', 'timed-out')",
                &[&hostname],
            )?;
            if let Some(row) = busy {
                return Err(StoreError::Busy {
                    hardware: hostname.to_string(),
                    id: row.get(0),
                });
            }
            if let Some(row) = tx.query_opt(
                "SELECT cluster FROM cluster_nodes WHERE hostname = $1",
                &[&hostname],
            )? {
                let cluster: String = row.get(0);
                return Err(StoreError::Invalid(format!(
                    "{hostname} is a node of cluster {cluster}: delete the cluster first"
                )));
            }
            if tx.execute("DELETE FROM hardware WHERE hostname = $1", &[&hostname])? == 0 {
                return Err(StoreError::NotFound(hostname.to_string()));
            }
            tx.execute("DELETE FROM bmc_hints WHERE hostname = $1", &[&hostname])?;
            tx.execute("DELETE FROM inventories WHERE hostname = $1", &[&hostname])?;
            tx.execute(
                "DELETE FROM machine_facts WHERE hostname = $1",
                &[&hostname],
            )?;
            self.commit(tx)
        })
    }

    fn set_netboot(&self, hostname: &str, on: bool) -> Result<(), StoreError> {
        let n = self.write(|c| {
            Ok(c.execute(
                "UPDATE hardware SET netboot = $2, updated_ms = $3 WHERE hostname = $1",
                &[&hostname, &on, &now_ms()],
            )?)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(hostname.to_string()));
        }
        Ok(())
    }
}

impl PgStore {
    fn hardware_where(&self, column: &str, value: &str) -> Result<Option<Hardware>, StoreError> {
        self.with(|c| {
            c.query_opt(&format!("{SELECT} WHERE {column} = $1"), &[&value])?
                .as_ref()
                .map(decode)
                .transpose()
        })
    }
}
