//! `/api/v1/workflows`: create (a template's YAML for machines named or selected), list,
//! show, logs, cancel, retry. Workflows are addressed by id or by a machine's hostname (its
//! newest workflow).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kiln_api::{CancelRequest, CreateWorkflows, LogPage, StartOptions, WorkflowView};
use kiln_engine::EngineError;
use kiln_model::template::parse_template;
use kiln_model::workflow::Workflow;
use kiln_store::Store;
use serde::Deserialize;

use super::{AdminState, ApiResult, Failure, now_ms};
use crate::workflows::{find, log_line, view_stored};

fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::Store(e) => e.into(),
        EngineError::Render { .. } => Failure::invalid(e.to_string()),
        EngineError::NoMachine(_) => Failure::not_found(e.to_string()),
        e => Failure::conflict(e.to_string()),
    }
}

fn found(store: &dyn Store, key: &str) -> Result<Workflow, Failure> {
    find(store, key)?.ok_or_else(|| {
        Failure::not_found(format!(
            "no workflow or machine with a workflow named {key:?}"
        ))
    })
}

fn views(store: &dyn Store, wfs: &[Workflow]) -> Result<Vec<WorkflowView>, Failure> {
    let now = now_ms();
    wfs.iter()
        .map(|w| Ok(view_stored(store, w, now)?))
        .collect()
}

fn server_url<'a>(s: &'a AdminState, start: &'a StartOptions) -> &'a str {
    start
        .server_url
        .as_deref()
        .unwrap_or(&s.server_url)
        .trim_end_matches('/')
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Include finished workflows.
    #[serde(default)]
    all: bool,
}

/// Workflows, newest first: unfinished ones, or all with `all=true`.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", operation_id = "workflow_list",
    params(ListQuery),
    responses((status = 200, body = Vec<WorkflowView>)))]
pub async fn list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<WorkflowView>>> {
    s.store
        .clone()
        .run(move |store| views(store, &store.workflows(!q.all)?))
        .await
        .map(Json)
}

/// One workflow per machine from a template; their netboot is turned on (and, unless
/// `no_power`, the BMC powers them into it). All are created or none. Template problems come
/// back as details located `file:line`.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", operation_id = "workflow_create",
    request_body = CreateWorkflows,
    responses((status = 201, body = Vec<WorkflowView>),
        (status = 404, description = "A named machine is not enrolled", body = kiln_api::ApiErrorBody),
        (status = 409, description = "A machine already has an unfinished workflow", body = kiln_api::ApiErrorBody),
        (status = 422, description = "Template problems or a bad selector; nothing created", body = kiln_api::ApiErrorBody)))]
pub async fn create(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<CreateWorkflows>,
) -> ApiResult<(StatusCode, Json<Vec<WorkflowView>>)> {
    s.store
        .clone()
        .run(move |store| {
            let file = &req.template_file;
            let template = parse_template(file, &req.template).map_err(|errors| {
                Failure::invalid(format!(
                    "{} problem(s) in {file}; no workflow was created",
                    errors.0.len()
                ))
                .with_details(crate::templates::details(errors))
            })?;
            let machines = crate::select::select_with(
                store.hardware()?,
                &req.hardware,
                &req.selector,
                &|h| crate::select::latest_inventory(store, h),
            )?;
            let created = s
                .engine
                .create(
                    &template,
                    &machines,
                    server_url(&s, &req.start),
                    !req.start.no_power,
                )
                .map_err(engine_failure)?;
            views(store, &created)
        })
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

/// One workflow with every action, by id or a machine's hostname (its newest).
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows", operation_id = "workflow_get",
    params(("id" = String, Path, description = "workflow id, or a machine's hostname")),
    responses((status = 200, body = WorkflowView), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn get_one(
    State(s): State<Arc<AdminState>>,
    Path(key): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    s.store
        .clone()
        .run(move |store| {
            let wf = found(store, &key)?;
            Ok(Json(view_stored(store, &wf, now_ms())?))
        })
        .await
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// Only lines after this cursor (the `after` of the previous page).
    #[serde(default)]
    after: i64,
}

/// The agent's output, oldest first, a page at a time: follow by passing the page's `after`
/// back until `ended` and no more lines.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/logs", tag = "workflows", operation_id = "workflow_logs",
    params(("id" = String, Path, description = "workflow id, or a machine's hostname"), LogsQuery),
    responses((status = 200, body = LogPage), (status = 404, body = kiln_api::ApiErrorBody)))]
pub async fn logs(
    State(s): State<Arc<AdminState>>,
    Path(key): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<LogPage>> {
    s.store
        .clone()
        .run(move |store| {
            let wf = found(store, &key)?;
            let lines = store.action_logs(&wf.id, q.after, kiln_api::LOG_PAGE as i64)?;
            Ok(Json(LogPage {
                workflow: wf.id.clone(),
                after: lines.last().map_or(q.after, |l| l.id),
                lines: lines.iter().map(|l| log_line(&wf, l)).collect(),
                ended: wf.state.is_terminal(),
                log_lines_dropped: wf.log_lines_dropped,
                log_lines_kept: kiln_store::MAX_LOG_LINES as u64,
            }))
        })
        .await
}

/// Ends an unfinished workflow now: failed, netboot off, the machine free for a new one (a
/// BMC step not yet run is dropped). 409 when it has already ended.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/cancel", tag = "workflows", operation_id = "workflow_cancel",
    params(("id" = String, Path, description = "workflow id, or a machine's hostname")),
    request_body = CancelRequest,
    responses((status = 200, body = WorkflowView), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 409, body = kiln_api::ApiErrorBody)))]
pub async fn cancel(
    State(s): State<Arc<AdminState>>,
    Path(key): Path<String>,
    Json(req): Json<CancelRequest>,
) -> ApiResult<Json<WorkflowView>> {
    s.store
        .clone()
        .run(move |store| {
            let wf = found(store, &key)?;
            let reason = req.reason.as_deref().unwrap_or("cancelled by the operator");
            let done = s.engine.cancel(&wf.id, reason).map_err(|e| {
                let mut f = engine_failure(e);
                f.body.message = format!("{}: {}", wf.id, f.body.message);
                f
            })?;
            Ok(Json(view_stored(store, &done, now_ms())?))
        })
        .await
}

/// Runs an ended workflow again: a new workflow on the same machine from the same template,
/// rendered afresh. 409 while it has not ended.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/retry", tag = "workflows", operation_id = "workflow_retry",
    params(("id" = String, Path, description = "workflow id, or a machine's hostname")),
    request_body = StartOptions,
    responses((status = 201, body = WorkflowView), (status = 404, body = kiln_api::ApiErrorBody),
        (status = 409, body = kiln_api::ApiErrorBody)))]
pub async fn retry(
    State(s): State<Arc<AdminState>>,
    Path(key): Path<String>,
    Json(start): Json<StartOptions>,
) -> ApiResult<(StatusCode, Json<WorkflowView>)> {
    s.store
        .clone()
        .run(move |store| {
            let old = found(store, &key)?;
            let wf = s
                .engine
                .retry(&old.id, server_url(&s, &start), !start.no_power)
                .map_err(|e| {
                    let mut f = engine_failure(e);
                    f.body.message = format!("retrying {}: {}", old.id, f.body.message);
                    f
                })?;
            Ok(view_stored(store, &wf, now_ms())?)
        })
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}
