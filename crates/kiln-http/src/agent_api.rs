//! The agent's API, NoCloud metadata and phone-home. Every route takes the
//! per-workflow token; what a token means is the [`Provisioning`] backend's
//! business (the CLI wires the engine in), so this crate stays protocol-only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_model::workflow::{NextAction, Report};

use crate::AppState;

/// Why a request was refused; the message never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Unknown or revoked token.
    #[error("unknown or revoked token")]
    Unauthorized,
    /// The request came from an address that is not the machine's.
    #[error("{0}")]
    Forbidden(String),
    /// The workflow has ended.
    #[error("{0}")]
    Gone(String),
    /// A report about an action that is not running.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// A machine's NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloudSeed {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

/// What the HTTP routes need from the workflow engine. Calls are blocking
/// (short store transactions); the routes run them on the blocking pool.
pub trait Provisioning: Send + Sync + 'static {
    /// The agent token for a machine with an unfinished workflow.
    fn agent_token(&self, hostname: &str) -> Result<Option<String>, ApiError>;
    /// The next action for the token's machine; `run` names the asking agent process.
    fn next(&self, token: &str, run: Option<&str>) -> Result<NextAction, ApiError>;
    fn report(&self, token: &str, report: Report) -> Result<(), ApiError>;
    /// The seed of the token's machine, if `peer` may read it.
    fn nocloud(&self, token: &str, peer: IpAddr) -> Result<NoCloudSeed, ApiError>;
    fn phone_home(&self, token: &str, peer: IpAddr, payload: String) -> Result<(), ApiError>;
    /// A report from the installed OS before its phone-home: `failed` (set-up failed; the
    /// body is the tail of its log). No kubeconfig is accepted: Kiln mints it.
    fn installed_os_report(
        &self,
        token: &str,
        peer: IpAddr,
        kind: &str,
        body: String,
    ) -> Result<(), ApiError> {
        let _ = (token, peer, kind, body);
        Err(ApiError::Unauthorized)
    }
}

/// No workflows at all (boot services alone).
pub struct NoProvisioning;

impl Provisioning for NoProvisioning {
    fn agent_token(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    fn next(&self, _: &str, _: Option<&str>) -> Result<NextAction, ApiError> {
        Err(ApiError::Unauthorized)
    }
    fn report(&self, _: &str, _: Report) -> Result<(), ApiError> {
        Err(ApiError::Unauthorized)
    }
    fn nocloud(&self, _: &str, _: IpAddr) -> Result<NoCloudSeed, ApiError> {
        Err(ApiError::Unauthorized)
    }
    fn phone_home(&self, _: &str, _: IpAddr, _: String) -> Result<(), ApiError> {
        Err(ApiError::Unauthorized)
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    p: &Arc<dyn Provisioning>,
    f: impl FnOnce(&dyn Provisioning) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let p = p.clone();
    tokio::task::spawn_blocking(move || f(p.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?
}

pub(crate) async fn next(
    State(state): State<AppState>,
    Path(token): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<NextAction>, ApiError> {
    // `?run=ID`: which agent process asks. An id the server would not keep is ignored: the
    // call then counts as a new run.
    let run = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("run=")))
        .filter(|r| kiln_model::workflow::valid_agent_run(r))
        .map(str::to_string);
    blocking(&state.provisioning, move |p| p.next(&token, run.as_deref()))
        .await
        .map(Json)
}

pub(crate) async fn report(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Json(report): Json<Report>,
) -> Result<StatusCode, ApiError> {
    blocking(&state.provisioning, move |p| p.report(&token, report)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn phone_home(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // cloud-init's phone_home posts a form; keep it as text, bounded.
    let payload = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned();
    blocking(&state.provisioning, move |p| {
        p.phone_home(&token, peer.ip(), payload)
    })
    .await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn installed_os_report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if !matches!(kind.as_str(), "failed") {
        return Ok(StatusCode::NOT_FOUND);
    }
    // A log tail is bounded by the node.
    let body = String::from_utf8_lossy(&body[..body.len().min(256 * 1024)]).into_owned();
    blocking(&state.provisioning, move |p| {
        p.installed_os_report(&token, peer.ip(), &kind, body)
    })
    .await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn nocloud(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let seed = blocking(&state.provisioning, move |p| p.nocloud(&token, peer.ip())).await?;
    let body = match file.as_str() {
        "user-data" => seed.user_data,
        "meta-data" => seed.meta_data,
        "network-config" => seed.network_config,
        "vendor-data" => String::new(),
        _ => return Ok((StatusCode::NOT_FOUND, "no such NoCloud file\n").into_response()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
