//! `/api/v1/clusters`: create (or dry-run) from a spec, list, status, the admin kubeconfig
//! (admin tokens only, although a GET: it is a credential), delete.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use kiln_api::{
    ClusterCreateRequest, ClusterCreated, ClusterDeleteQuery, ClusterDeleted, ClusterStatus,
    MintedKubeconfig, TokenScope,
};

use super::auth::Caller;
use super::{AdminState, ApiResult, Failure};
use crate::clusters::{self, ClusterError};

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Failure {
        match e {
            ClusterError::Spec { ref errors, .. } => {
                let details = errors.clone();
                Failure::invalid(e.to_string()).with_details(details)
            }
            ClusterError::NotFound(_) => Failure::not_found(e.to_string()),
            ClusterError::Exists(_) | ClusterError::Busy { .. } => Failure::conflict(e.to_string()),
            ClusterError::Unplaceable(_) => Failure::invalid(e.to_string()),
            ClusterError::Store(e) => e.into(),
            ClusterError::Engine(kiln_engine::EngineError::Store(e)) => e.into(),
            ClusterError::Engine(e @ kiln_engine::EngineError::Render { .. }) => {
                Failure::invalid(e.to_string())
            }
            e => {
                tracing::error!("admin API: clusters: {e}");
                Failure::internal(e.to_string())
            }
        }
    }
}

/// Plans a cluster on free enrolled machines (by label) and creates one install workflow per
/// node, all or none. `dry_run`: touches nothing and returns every node's seed.
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", operation_id = "cluster_create",
    request_body = ClusterCreateRequest,
    responses((status = 200, body = ClusterCreated),
        (status = 409, description = "A cluster of that name exists", body = kiln_api::ApiErrorBody),
        (status = 422, description = "Spec problems (details located file:line:column), too few machines, unknown image", body = kiln_api::ApiErrorBody)))]
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<ClusterCreateRequest>,
) -> ApiResult<Json<ClusterCreated>> {
    let (engine, url) = (s.engine.clone(), s.server_url.clone());
    let created = s
        .store
        .run(move |store| clusters::create(store, &engine, &url, req))
        .await?;
    Ok(Json(created))
}

/// Every cluster and its state.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", operation_id = "cluster_list",
    responses((status = 200, body = Vec<ClusterStatus>)))]
pub async fn list(State(s): State<Arc<AdminState>>) -> ApiResult<Json<Vec<ClusterStatus>>> {
    Ok(Json(s.store.run(clusters::list).await?))
}

/// Each node of a cluster: machine, role, workflow state, phone-home.
#[utoipa::path(get, path = "/api/v1/clusters/{name}", tag = "clusters", operation_id = "cluster_status",
    params(("name" = String, Path, description = "cluster name")),
    responses((status = 200, body = ClusterStatus), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn status(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterStatus>> {
    let status = s
        .store
        .run(move |store| clusters::status(store, &name))
        .await?;
    Ok(Json(status))
}

/// Mints an admin kubeconfig from the cluster CA Kiln holds (a new key each time, valid one
/// year). A credential: admin tokens only.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/kubeconfig", tag = "clusters",
    operation_id = "cluster_kubeconfig",
    params(("name" = String, Path, description = "cluster name")),
    responses((status = 200, body = MintedKubeconfig),
        (status = 403, description = "Not an admin token", body = kiln_api::ApiErrorBody),
        (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn kubeconfig(
    State(s): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<MintedKubeconfig>> {
    super::auth::require(
        &s,
        &caller,
        TokenScope::Admin,
        "a cluster's admin kubeconfig",
    )?;
    let minted = s
        .store
        .run(move |store| clusters::kubeconfig(store, &name))
        .await?;
    Ok(Json(minted))
}

/// Deprovisions a cluster: with every node ended, a workflow per node wipes its disk and
/// powers it off; with `force` (nodes still installing: cancelled) or `keep_disks`, netboot
/// goes off and the machines are powered off through their BMCs (`power_off` rows). The
/// machines are free at once.
#[utoipa::path(delete, path = "/api/v1/clusters/{name}", tag = "clusters", operation_id = "cluster_delete",
    params(("name" = String, Path, description = "cluster name"), ClusterDeleteQuery),
    responses((status = 200, body = ClusterDeleted), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 409, description = "Nodes still installing (pass force)", body = kiln_api::ApiErrorBody)))]
pub async fn delete(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(q): Query<ClusterDeleteQuery>,
) -> ApiResult<Json<ClusterDeleted>> {
    let (engine, url) = (s.engine.clone(), s.server_url.clone());
    let deletion = s
        .store
        .run(move |store| clusters::delete(store, &engine, &url, &name, &q))
        .await?;
    let mut deleted = deletion.deleted;
    if !deletion.power_off.is_empty() {
        deleted.power_off = crate::bmc_actions::run(
            s.store.clone(),
            kiln_api::BmcOp::Off,
            deletion.power_off,
            false,
        )
        .await?;
    }
    Ok(Json(deleted))
}
