//! `GET /api/v1/hardware/{name}/inventory`: what the agent found on the machine.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kiln_api::inventory::{
    BmcSystem, DiskIdentity, Inventory, InventoryHistoryItem, InventoryReport, MachineInventory,
};
use kiln_api::time::rfc3339_ms;

use super::{AdminState, ApiResult, Failure};
use crate::machine_inventory::{FACT_BMC_SYSTEM, FACT_INSTALLED_DISK, INVENTORY_KEEP};

/// The machine's latest inventory report, the history in short, its installed disk.
#[utoipa::path(get, path = "/api/v1/hardware/{name}/inventory", operation_id = "hardware_inventory", tag = "hardware",
    params(("name" = String, Path, description = "hostname")),
    responses((status = 200, body = MachineInventory), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn get_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<MachineInventory>> {
    s.store
        .run(move |store| {
            if store.hardware_by_name(&name)?.is_none() {
                return Err(Failure::not_found(format!(
                    "no machine named {name:?} is enrolled"
                )));
            }
            let records = store.inventories(&name, INVENTORY_KEEP)?;
            // A record this version cannot read is left out rather than failing the view.
            let reports: Vec<InventoryReport> = records
                .iter()
                .filter_map(|r| {
                    Some(InventoryReport {
                        at: rfc3339_ms(r.at_ms),
                        at_ms: r.at_ms,
                        inventory: serde_json::from_str::<Inventory>(&r.report).ok()?,
                    })
                })
                .collect();
            let fact = |key: &str| store.machine_fact(&name, key);
            Ok(Json(MachineInventory {
                history: reports
                    .iter()
                    .map(|r| InventoryHistoryItem {
                        at: r.at.clone(),
                        at_ms: r.at_ms,
                        summary: r.inventory.summary(),
                    })
                    .collect(),
                latest: reports.into_iter().next(),
                installed_disk: fact(FACT_INSTALLED_DISK)?
                    .and_then(|j| serde_json::from_str::<DiskIdentity>(&j).ok()),
                bmc_system: fact(FACT_BMC_SYSTEM)?
                    .and_then(|j| serde_json::from_str::<BmcSystem>(&j).ok()),
                name,
            }))
        })
        .await
}
