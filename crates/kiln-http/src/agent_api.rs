//! The agent's API and the installed OS's phone-home. The agent claims its credential
//! once per netboot round and sends it as `Authorization: Bearer` on every call; the
//! installed OS phones home to a URL signed per workflow. What a credential means is the
//! [`Provisioning`] backend's business (the CLI wires the engine in), so this crate stays
//! protocol-only. Every refused attempt leaves one `http.refused` event naming its source.

use kiln_model::event::EventData;
use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_api::agent::DiskWrite;
use kiln_api::inventory::Inventory;
use kiln_model::Event;
use kiln_model::workflow::{ClaimRequest, Claimed, NextAction, Report, Seed};

use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// No credential, or an unknown, revoked or wrongly signed one.
    Unauthorized,
    /// A valid credential from an address that may not use it.
    Forbidden,
    NotFound,
    /// The workflow ended, or what was asked for leaves only once.
    Gone,
    /// A second claim; a report about an action that is not running; a report too early.
    Conflict,
    /// A body that breaks a bound (too many items, too long a field).
    Invalid,
    /// Sent again too soon.
    TooMany,
    Internal,
}

/// Why a request was refused. The message never carries a secret. A `refusal` is an attempt
/// a host that is not the machine would make: it is recorded as an event with its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
    /// The machine the attempt was about, when known.
    pub machine: Option<String>,
    pub refusal: bool,
}

impl ApiError {
    /// An ordinary answer to the machine's own agent (a stale report, an ended workflow).
    pub fn plain(kind: ApiErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            machine: None,
            refusal: false,
        }
    }

    /// An attempt that is recorded with its source.
    pub fn refused(
        kind: ApiErrorKind,
        machine: Option<String>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            machine,
            refusal: true,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::refused(
            ApiErrorKind::Unauthorized,
            None,
            "unknown or revoked credential",
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::plain(ApiErrorKind::Internal, message)
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            ApiErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ApiErrorKind::NotFound => StatusCode::NOT_FOUND,
            ApiErrorKind::Gone => StatusCode::GONE,
            ApiErrorKind::Conflict => StatusCode::CONFLICT,
            ApiErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ApiErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), format!("{}\n", self.message)).into_response()
    }
}

/// What the HTTP routes need from the workflow engine. Calls are blocking (short store
/// transactions); the routes run them on the blocking pool. `peer` is the request's source.
pub trait Provisioning: Send + Sync + 'static {
    /// The agent of the machine with `req.mac` claims its credential.
    fn claim(&self, req: &ClaimRequest, peer: IpAddr) -> Result<Claimed, ApiError>;
    /// The next action for the credential's machine; `run` names the asking agent process.
    fn next(&self, token: &str, peer: IpAddr, run: Option<&str>) -> Result<NextAction, ApiError>;
    fn report(&self, token: &str, peer: IpAddr, report: Report) -> Result<(), ApiError>;
    /// The credential's machine's hardware inventory (bounded; at most one per interval).
    fn inventory(&self, token: &str, peer: IpAddr, inventory: Inventory) -> Result<(), ApiError>;
    /// The credential's agent is about to write a disk.
    fn disk_write(&self, token: &str, peer: IpAddr, write: DiskWrite) -> Result<(), ApiError>;
    /// The credential's machine's cloud-init seed, handed out once per workflow.
    fn seed(&self, token: &str, peer: IpAddr) -> Result<Seed, ApiError>;
    /// The installed OS phoned home to its signed URL.
    fn phone_home(
        &self,
        workflow: &str,
        signature: &str,
        peer: IpAddr,
        payload: String,
    ) -> Result<(), ApiError>;
    /// A MAC that is not enrolled, booted in inspection-only mode, takes a ticket good for one
    /// inventory report (`--discovery inspect`); refused when inspection is off.
    fn inspect_claim(&self, req: &ClaimRequest, _peer: IpAddr) -> Result<Claimed, ApiError> {
        Err(ApiError::refused(
            ApiErrorKind::NotFound,
            None,
            format!("{}: inspection is off on this server", req.mac),
        ))
    }
    /// The ticket's MAC's inventory (once per ticket).
    fn inspect_inventory(&self, _: &str, _: IpAddr, _: Inventory) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
    /// The installed OS's set-up failed (before its phone-home); `log_tail` is its last lines.
    fn installed_os_failed(
        &self,
        workflow: &str,
        signature: &str,
        peer: IpAddr,
        log_tail: String,
    ) -> Result<(), ApiError>;
    /// Whether `hostname` still netboots by the shared state, asked when the in-memory
    /// inventory says it does: that inventory follows the state by up to a refresh, and a
    /// machine back from its agent's reboot sooner (or asking another server of an HA pair)
    /// must get its disk, not the agent again.
    fn still_netboots(&self, _hostname: &str) -> bool {
        true
    }
}

/// No workflows at all (boot services alone).
pub struct NoProvisioning;

impl Provisioning for NoProvisioning {
    fn claim(&self, _: &ClaimRequest, _: IpAddr) -> Result<Claimed, ApiError> {
        Err(ApiError::refused(
            ApiErrorKind::NotFound,
            None,
            "this server runs no workflows",
        ))
    }
    fn next(&self, _: &str, _: IpAddr, _: Option<&str>) -> Result<NextAction, ApiError> {
        Err(ApiError::unauthorized())
    }
    fn report(&self, _: &str, _: IpAddr, _: Report) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
    fn seed(&self, _: &str, _: IpAddr) -> Result<Seed, ApiError> {
        Err(ApiError::unauthorized())
    }
    fn inventory(&self, _: &str, _: IpAddr, _: Inventory) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
    fn disk_write(&self, _: &str, _: IpAddr, _: DiskWrite) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
    fn phone_home(&self, _: &str, _: &str, _: IpAddr, _: String) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
    fn installed_os_failed(&self, _: &str, _: &str, _: IpAddr, _: String) -> Result<(), ApiError> {
        Err(ApiError::unauthorized())
    }
}

/// The credential of `Authorization: Bearer <token>`; a request without one is refused.
pub(crate) struct Bearer(String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Bearer(t.trim().to_string()))
            .ok_or_else(|| {
                ApiError::refused(
                    ApiErrorKind::Unauthorized,
                    None,
                    "no credential (Authorization: Bearer)",
                )
            })
    }
}

/// The request's source; IPv4 clients of a dual-stack socket are named as IPv4.
fn source(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// Runs `f` on the blocking pool; a refusal becomes one event naming `route` and the source.
async fn call<T: Send + 'static>(
    state: &AppState,
    route: &'static str,
    peer: IpAddr,
    f: impl FnOnce(&dyn Provisioning) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let p = state.provisioning.clone();
    let out = tokio::task::spawn_blocking(move || f(p.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?;
    if let Err(e) = &out {
        refused(state, route, peer, e);
    }
    out
}

fn refused(state: &AppState, route: &str, peer: IpAddr, e: &ApiError) {
    if !e.refusal {
        return;
    }
    let mut ev = Event::of(EventData::HttpRefused {
        route: route.to_string(),
        peer,
        reason: e.message.clone(),
    })
    .with_ip(peer);
    if let Some(m) = &e.machine {
        ev = ev.with_machine(m.clone());
    }
    state.events.emit(ev);
}

/// A route's extractor failed before the handler ran (no credential, say): still one event.
fn rejected(state: &AppState, route: &str, peer: SocketAddr, e: ApiError) -> ApiError {
    refused(state, route, source(peer), &e);
    e
}

pub(crate) async fn claim(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<ClaimRequest>,
) -> Result<Json<Claimed>, ApiError> {
    let peer = source(peer);
    call(&state, "claim", peer, move |p| p.claim(&req, peer))
        .await
        .map(Json)
}

pub(crate) async fn next(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<NextAction>, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "next", peer, e))?;
    // `?run=ID`: which agent process asks. An id the server would not keep is ignored: the
    // call then counts as a new run.
    let run = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("run=")))
        .filter(|r| kiln_model::workflow::valid_agent_run(r))
        .map(str::to_string);
    let peer = source(peer);
    call(&state, "next", peer, move |p| {
        p.next(&token, peer, run.as_deref())
    })
    .await
    .map(Json)
}

pub(crate) async fn report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
    Json(report): Json<Report>,
) -> Result<StatusCode, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "report", peer, e))?;
    let peer = source(peer);
    call(&state, "report", peer, move |p| {
        p.report(&token, peer, report)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn inventory(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
    Json(inventory): Json<Inventory>,
) -> Result<StatusCode, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "inventory", peer, e))?;
    let peer = source(peer);
    call(&state, "inventory", peer, move |p| {
        p.inventory(&token, peer, inventory)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn inspect_claim(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<ClaimRequest>,
) -> Result<Json<Claimed>, ApiError> {
    let peer = source(peer);
    call(&state, "inspect claim", peer, move |p| {
        p.inspect_claim(&req, peer)
    })
    .await
    .map(Json)
}

pub(crate) async fn inspect_inventory(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
    Json(inventory): Json<Inventory>,
) -> Result<StatusCode, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "inspect inventory", peer, e))?;
    let peer = source(peer);
    call(&state, "inspect inventory", peer, move |p| {
        p.inspect_inventory(&token, peer, inventory)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn disk_write(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
    Json(write): Json<DiskWrite>,
) -> Result<StatusCode, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "disk", peer, e))?;
    let peer = source(peer);
    call(&state, "disk", peer, move |p| {
        p.disk_write(&token, peer, write)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn seed(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bearer: Result<Bearer, ApiError>,
) -> Result<Response, ApiError> {
    let Bearer(token) = bearer.map_err(|e| rejected(&state, "seed", peer, e))?;
    let peer = source(peer);
    let seed = call(&state, "seed", peer, move |p| p.seed(&token, peer)).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(seed)).into_response())
}

pub(crate) async fn phone_home(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((workflow, signature)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // cloud-init's phone_home posts a form; keep it as text, bounded.
    let payload = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned();
    let peer = source(peer);
    call(&state, "phone-home", peer, move |p| {
        p.phone_home(&workflow, &signature, peer, payload)
    })
    .await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn installed_os_failed(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((workflow, signature)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let log_tail = String::from_utf8_lossy(&body).into_owned();
    let peer = source(peer);
    call(&state, "phone-home failure", peer, move |p| {
        p.installed_os_failed(&workflow, &signature, peer, log_tail)
    })
    .await?;
    Ok(StatusCode::OK)
}
