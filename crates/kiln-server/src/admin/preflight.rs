//! `POST /api/v1/preflight`: what would stop an install, checked before anything is powered.
//! A POST because the files are the body; it only reads (BMCs included), so a read-only
//! token may ask. The last report is kept (in memory, per server) for the web page:
//! `GET /api/v1/preflight/last`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_api::time::rfc3339_ms;
use kiln_api::{LastPreflight, PreflightReport, PreflightRequest};

use super::{AdminState, ApiResult, Failure, now_ms};

/// Checks the machines of a hardware.csv, of a selection or of a cluster spec's placement —
/// BMC reachable, credentials, cipher suite or Redfish version, power state, PXE override —
/// their addresses, the OS image, and the server's own set-up (artifacts, TFTP root,
/// interface, other DHCP servers on the segment). Nothing is powered or changed. A failed
/// check is a row with `status: fail`, not an HTTP error. One runs at a time per server.
#[utoipa::path(post, path = "/api/v1/preflight", tag = "preflight", operation_id = "preflight",
    request_body = PreflightRequest,
    responses((status = 200, body = PreflightReport),
        (status = 404, description = "A machine named is not enrolled", body = kiln_api::ApiErrorBody),
        (status = 429, description = "Another preflight is running on this server (one at a time)", body = kiln_api::ApiErrorBody),
        (status = 422, description = "hardware.csv or spec problems (details located file:line:column), or a selector that matches nothing", body = kiln_api::ApiErrorBody)))]
pub async fn run(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<PreflightRequest>,
) -> ApiResult<Json<PreflightReport>> {
    let Ok(_running) = s.preflight_running.try_lock() else {
        return Err(Failure::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "a preflight is already running on this server; ask again when it has ended",
        ));
    };
    let report = crate::preflight::run(s.store.clone(), s.options.clone(), req).await?;
    let at_ms = now_ms();
    let last = LastPreflight {
        at: rfc3339_ms(at_ms),
        at_ms,
        report: report.clone(),
    };
    *s.last_preflight.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    Ok(Json(report))
}

/// The last preflight report this server made (since it started), and when.
#[utoipa::path(get, path = "/api/v1/preflight/last", tag = "preflight", operation_id = "preflight_last",
    responses((status = 200, body = LastPreflight),
        (status = 404, description = "No preflight has run on this server since it started", body = kiln_api::ApiErrorBody)))]
pub async fn last(State(s): State<Arc<AdminState>>) -> ApiResult<Json<LastPreflight>> {
    let last = s
        .last_preflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    last.map(Json)
        .ok_or_else(|| Failure::not_found("no preflight has run on this server since it started"))
}
