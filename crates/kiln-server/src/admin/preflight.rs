//! `POST /api/v1/preflight`: what would stop an install, checked before anything is powered.
//! A POST because the files are the body; it only reads (BMCs included), so a read-only
//! token may ask.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_api::{PreflightReport, PreflightRequest};

use super::{AdminState, ApiResult};

/// Checks the machines of a hardware.csv, of a selection or of a cluster spec's placement —
/// BMC reachable, credentials, cipher suite or Redfish version, power state, PXE override —
/// their addresses, the OS image, and the server's own set-up (artifacts, TFTP root,
/// interface, other DHCP servers on the segment). Nothing is powered or changed. A failed
/// check is a row with `status: fail`, not an HTTP error.
#[utoipa::path(post, path = "/api/v1/preflight", tag = "preflight", operation_id = "preflight",
    request_body = PreflightRequest,
    responses((status = 200, body = PreflightReport),
        (status = 404, description = "A machine named is not enrolled", body = kiln_api::ApiErrorBody),
        (status = 422, description = "hardware.csv or spec problems (details located file:line:column), or a selector that matches nothing", body = kiln_api::ApiErrorBody)))]
pub async fn run(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<PreflightRequest>,
) -> ApiResult<Json<PreflightReport>> {
    let report = crate::preflight::run(s.store.clone(), s.options.clone(), req).await?;
    Ok(Json(report))
}
