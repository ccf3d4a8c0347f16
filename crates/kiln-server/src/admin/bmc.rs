//! `POST /api/v1/bmc/actions`: power and boot control through the machines' BMCs, many in
//! parallel. A POST even for `status` and `info` (every op talks to hardware); those two only
//! read, so a read-only token may ask them, the rest need an admin one.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use kiln_api::{BmcActionRequest, BmcRow, TokenScope};

use super::auth::Caller;
use super::{AdminState, ApiResult};
use crate::bmc_actions;

/// Runs `op` on the machines named (or matching every `k=v` of `selector`): one row per
/// machine, in order, with the result or the error class and message. A machine that failed
/// is a row with `ok: false`, not an HTTP error.
#[utoipa::path(post, path = "/api/v1/bmc/actions", tag = "bmc", operation_id = "bmc_action",
    request_body = BmcActionRequest,
    responses((status = 200, body = Vec<BmcRow>),
        (status = 404, description = "A machine named is not enrolled", body = kiln_api::ApiErrorBody),
        (status = 422, description = "Nothing named, or a selector that is not k=v or matches nothing", body = kiln_api::ApiErrorBody)))]
pub async fn action(
    State(s): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<BmcActionRequest>,
) -> ApiResult<Json<Vec<BmcRow>>> {
    if !req.op.reads_only() {
        super::auth::require(
            &s,
            &caller,
            TokenScope::Admin,
            "a BMC action that changes power or boot",
        )?;
    }
    let (names, selector) = (req.machines.clone(), req.selector.clone());
    let machines = s
        .store
        .run(move |store| -> ApiResult<_> {
            Ok(crate::select::select_with(
                store.hardware()?,
                &names,
                &selector,
                &|h| crate::select::latest_inventory(store, h),
            )?)
        })
        .await?;
    let rows = bmc_actions::run(s.store.clone(), req.op, machines, req.persistent).await?;
    Ok(Json(rows))
}
