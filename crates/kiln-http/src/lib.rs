//! Kiln's HTTP service: iPXE scripts, boot artifacts, health and metrics.
//! The router is built from a [`HttpConfig`] and the shared inventory; the
//! binary binds it.

mod accept;
mod agent_api;
pub mod agent_apis;
mod artifacts;
mod deadline;
mod fast_path;
mod file_body;
mod http1;
mod ipxe;
mod limits;
mod metrics_layer;
// The agent API over TLS (issue 11, point 7).
pub mod tls;
pub mod tls_ca;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use kiln_model::{EventSink, SharedInventory};

pub use agent_api::{ApiError, ApiErrorKind, NoProvisioning, Provisioning};
pub use ipxe::{ScriptParams, local_disk_script, netboot_script};
pub use limits::HttpLimits;
pub use tls::{plain_only, serve_tls, serve_tls_with_limits};

/// Renders Prometheus metrics text; the binary owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct HttpConfig {
    /// Base URL machines use to reach this server, e.g. `http://10.77.0.1:8080`.
    pub server_url: String,
    /// Kernel and initrd of the in-memory OS, and anything else served under `/artifacts/`.
    pub artifacts_dir: PathBuf,
    /// Imported OS images (`kiln image import`), served under `/images/`.
    pub images_dir: PathBuf,
    /// iPXE binaries (the TFTP root), also served under `/boot/` for UEFI HTTP boot.
    pub boot_dir: PathBuf,
    pub kernel: String,
    pub initrd: String,
    pub kernel_args: String,
    /// The agent APIs the kernel line names (`kiln.api=`, `kiln.ca-sha256=`), when the agent
    /// API is served over TLS.
    pub agent_apis: Option<agent_apis::AgentApis>,
    /// `--discovery inspect`: a MAC not enrolled gets the agent in inspection-only mode
    /// (`kiln.inspect=1`) instead of a way back to its disk.
    pub inspect: bool,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<HttpConfig>,
    pub inventory: SharedInventory,
    pub events: Arc<dyn EventSink>,
    pub metrics: MetricsRender,
    pub provisioning: Arc<dyn Provisioning>,
}

/// The largest request body taken (a report, a log tail); more is refused with
/// 413 before it is read into memory.
pub const MAX_REQUEST_BODY: usize = 256 * 1024;

/// The whole HTTP surface. Serve it with [`serve`] (or any server that sets
/// `ConnectInfo<SocketAddr>`, so events can name the peer).
pub fn router(
    config: HttpConfig,
    inventory: SharedInventory,
    events: Arc<dyn EventSink>,
    metrics: MetricsRender,
    provisioning: Arc<dyn Provisioning>,
) -> Router {
    let state = AppState {
        config: Arc::new(config),
        inventory,
        events,
        metrics,
        provisioning,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .route("/ipxe/{mac}/boot.ipxe", get(ipxe::boot_script))
        .route("/artifacts/{*path}", get(artifacts::artifact))
        .route("/boot/{*path}", get(artifacts::boot_file))
        .route("/images/{*path}", get(artifacts::image_file))
        .route("/v1/agent/claim", post(agent_api::claim))
        .route("/v1/agent/next", get(agent_api::next))
        .route("/v1/agent/report", post(agent_api::report))
        .route("/v1/agent/seed", get(agent_api::seed))
        // The inventory's bounds (kiln_api::inventory) fit inside MAX_REQUEST_BODY.
        .route("/v1/agent/inventory", post(agent_api::inventory))
        .route("/v1/agent/disk", post(agent_api::disk_write))
        // Inspection-only boots of MACs not enrolled: a ticket, then one inventory.
        .route("/v1/agent/inspect/claim", post(agent_api::inspect_claim))
        .route(
            "/v1/agent/inspect/inventory",
            post(agent_api::inspect_inventory),
        )
        .route(
            "/v1/phone-home/{workflow}/{signature}",
            post(agent_api::phone_home),
        )
        .route(
            "/v1/phone-home/{workflow}/{signature}/failed",
            post(agent_api::installed_os_failed),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn(metrics_layer::record))
        .with_state(state)
}

async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    (state.metrics)()
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets running responses finish,
/// under the default [`HttpLimits`].
///
/// File downloads (`/artifacts`, `/images`, `/boot`) leave by `sendfile(2)` straight from the
/// page cache; every other request is served by hyper (see `fast_path`). Handlers can
/// extract `ConnectInfo<SocketAddr>` either way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    fast_path::serve(listener, app, HttpLimits::default(), None, shutdown).await
}

/// [`serve`] under the given connection caps and time limits. With `refusals`, connections
/// closed over a cap are also recorded there as `http.refused` events naming the source (at
/// most one per cap every 10 s, with the count since the last).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    refusals: Option<Arc<dyn EventSink>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    fast_path::serve(listener, app, limits, refusals, shutdown).await
}

#[cfg(test)]
mod fast_path_tests;
#[cfg(test)]
mod tests;
