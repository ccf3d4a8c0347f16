//! `/api/v1/hardware/{name}/timeline`: the machine's flight recorder (see [`crate::recorder`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kiln_api::TimelineView;

use super::events::event_view;
use super::{AdminState, ApiResult, Failure, now_ms};
use crate::recorder::{self, Inputs};

/// The phases of the machine's newest workflow with their durations, the one it is in, and a
/// diagnosis in words when that one has run longer than is normal for it.
#[utoipa::path(get, path = "/api/v1/hardware/{name}/timeline", operation_id = "hardware_timeline", tag = "hardware",
    params(("name" = String, Path, description = "hostname")),
    responses((status = 200, body = TimelineView), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn timeline(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<TimelineView>> {
    let server_url = s.server_url.clone();
    s.store
        .run(move |store| {
            let hw = store.hardware_by_name(&name)?.ok_or_else(|| {
                Failure::not_found(format!("no machine named {name:?} is enrolled"))
            })?;
            let events: Vec<_> = store
                .events(Some(&name), 0, i64::MAX)?
                .iter()
                .map(event_view)
                .collect();
            let unknown_macs = super::discovered::sightings(store)?;
            // PCI devices without a driver in the last inventory (a NIC the agent OS lacks).
            let driverless: Option<Vec<String>> = store
                .inventories(&name, 1)?
                .first()
                .and_then(|r| {
                    serde_json::from_str::<kiln_api::inventory::Inventory>(&r.report).ok()
                })
                .map(|inv| {
                    inv.unbound_pci
                        .iter()
                        .map(|d| format!("{} ({}, class {})", d.address, d.id, d.class))
                        .collect()
                });
            let mac = hw.mac.to_string();
            let inputs = Inputs {
                machine: &name,
                mac: &mac,
                bmc: hw.bmc.as_ref().map(|b| b.address.as_str()),
                server_url: &server_url,
                events: &events,
                now_ms: now_ms(),
                unknown_macs: &unknown_macs,
                driverless: driverless.as_deref(),
            };
            Ok(Json(recorder::timeline(&inputs)))
        })
        .await
}
