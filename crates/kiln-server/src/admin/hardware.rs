//! `/api/v1/hardware`: list, show, enrol a hardware.csv (all rows or none), update labels and
//! BMC credentials, delete. BMC passwords go in, never out.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_api::{Detail, EnrollOutcome, EnrollRequest, HardwareUpdate};
use kiln_model::Hardware;
use kiln_model::csv::{CsvError, CsvWarning, parse_hardware_csv_rows};
use kiln_store::StoreError;
use serde::Deserialize;

use super::{AdminState, ApiResult, Failure};

pub(crate) fn csv_error(e: CsvError) -> Detail {
    Detail {
        file: Some(e.file),
        line: Some(e.line as u64),
        column: Some(e.column as u64),
        field: (!e.field.is_empty()).then_some(e.field),
        message: e.message,
    }
}

fn csv_warning(w: CsvWarning) -> Detail {
    Detail {
        file: Some(w.file),
        line: Some(w.line as u64),
        column: Some(w.column as u64),
        field: None,
        message: w.message,
    }
}

/// Every enrolled machine, by hostname.
#[utoipa::path(get, path = "/api/v1/hardware", operation_id = "hardware_list", tag = "hardware",
    responses((status = 200, description = "Enrolled machines", body = Vec<Hardware>)))]
pub async fn list(State(s): State<Arc<AdminState>>) -> ApiResult<Json<Vec<Hardware>>> {
    Ok(Json(s.store.run(|store| store.hardware()).await?))
}

/// One machine.
#[utoipa::path(get, path = "/api/v1/hardware/{name}", operation_id = "hardware_get", tag = "hardware",
    params(("name" = String, Path, description = "hostname")),
    responses((status = 200, body = Hardware), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn get_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Hardware>> {
    s.store
        .run(move |store| {
            store
                .hardware_by_name(&name)?
                .map(Json)
                .ok_or_else(|| Failure::not_found(format!("no machine named {name:?} is enrolled")))
        })
        .await
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EnrollQuery {
    /// Validate only; store nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Enrols the machines of a hardware.csv (EKS Anywhere format): every row or none. Problems
/// come back as details located `file:line:column`.
#[utoipa::path(post, path = "/api/v1/hardware", operation_id = "hardware_enroll", tag = "hardware", params(EnrollQuery),
    request_body = EnrollRequest,
    responses((status = 200, body = EnrollOutcome),
        (status = 422, description = "Invalid rows or conflicts; nothing enrolled", body = kiln_api::ApiErrorBody)))]
pub async fn enroll(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<EnrollQuery>,
    Json(req): Json<EnrollRequest>,
) -> ApiResult<Json<EnrollOutcome>> {
    s.store
        .run(move |store| enroll_blocking(store, req, q.dry_run))
        .await
        .map(Json)
}

pub(super) fn enroll_blocking(
    store: &dyn kiln_store::Store,
    req: EnrollRequest,
    dry_run: bool,
) -> ApiResult<EnrollOutcome> {
    let name = req.file_name;
    let parsed = parse_hardware_csv_rows(&name, &req.csv).map_err(|errors| {
        Failure::invalid(format!(
            "{} problem(s) in {name}; nothing was enrolled",
            errors.0.len()
        ))
        .with_details(errors.0.into_iter().map(csv_error).collect())
    })?;
    let mut outcome = EnrollOutcome {
        file: name.clone(),
        dry_run,
        valid: parsed.rows.len(),
        warnings: parsed.warnings.into_iter().map(csv_warning).collect(),
        ..EnrollOutcome::default()
    };
    if dry_run {
        return Ok(outcome);
    }
    let machines: Vec<_> = parsed.rows.iter().map(|r| r.hardware.clone()).collect();
    match store.enroll(&machines) {
        Ok(summary) => {
            outcome.enrolled = true;
            (outcome.added, outcome.updated, outcome.unchanged) =
                (summary.added, summary.updated, summary.unchanged);
            Ok(outcome)
        }
        Err(StoreError::Conflicts(conflicts)) => Err(Failure::invalid(format!(
            "{} conflict(s) with enrolled machines; nothing was enrolled",
            conflicts.len()
        ))
        .with_details(
            conflicts
                .iter()
                .map(|c| {
                    csv_error(CsvError {
                        file: name.clone(),
                        line: parsed.rows[c.index].line,
                        column: 1,
                        field: c.field.to_string(),
                        message: c.message.clone(),
                    })
                })
                .collect(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Changes labels, BMC credentials or netboot of one machine.
#[utoipa::path(patch, path = "/api/v1/hardware/{name}", operation_id = "hardware_update", tag = "hardware",
    params(("name" = String, Path, description = "hostname")),
    request_body = HardwareUpdate,
    responses((status = 200, body = Hardware), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 422, body = kiln_api::ApiErrorBody)))]
pub async fn update(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Json(up): Json<HardwareUpdate>,
) -> ApiResult<Json<Hardware>> {
    s.store
        .run(move |store| {
            let hw = store.update_hardware(&name, &mut |hw| apply_update(hw, &up))?;
            Ok::<_, Failure>(Json(hw))
        })
        .await
}

fn apply_update(hw: &mut Hardware, up: &HardwareUpdate) -> Result<(), String> {
    for (k, v) in up.labels.clone() {
        kiln_model::labels::check_key(&k).map_err(|e| format!("label {k:?}: {e}"))?;
        if let Some(v) = &v {
            kiln_model::labels::check_value(v).map_err(|e| format!("label {k}={v:?}: {e}"))?;
        }
        match v {
            Some(v) => hw.labels.insert(k, v),
            None => hw.labels.remove(&k),
        };
    }
    if up.bmc_username.is_some() || up.bmc_password.is_some() {
        let bmc = hw.bmc.as_mut().ok_or_else(|| {
            format!(
                "{} has no BMC: enrol one with its hardware.csv row",
                hw.hostname
            )
        })?;
        if let Some(u) = up.bmc_username.clone() {
            if u.is_empty() {
                return Err("bmc_username: empty".into());
            }
            bmc.username = u;
        }
        if let Some(p) = up.bmc_password.clone() {
            bmc.password = kiln_model::Secret::new(p);
        }
    }
    if let Some(on) = up.netboot {
        hw.netboot = on;
    }
    Ok(())
}

/// Forgets a machine. Refused (409) while it has an unfinished workflow or is a cluster node.
#[utoipa::path(delete, path = "/api/v1/hardware/{name}", operation_id = "hardware_delete", tag = "hardware",
    params(("name" = String, Path, description = "hostname")),
    responses((status = 204), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 409, body = kiln_api::ApiErrorBody)))]
pub async fn delete(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.store
        .run(move |store| match store.delete_hardware(&name) {
            Ok(()) => Ok(StatusCode::NO_CONTENT),
            Err(StoreError::Invalid(why)) => Err(Failure::conflict(why)),
            Err(e) => Err(e.into()),
        })
        .await
}
