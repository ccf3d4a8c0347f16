//! The admin API: REST under `/api/v1/` on its own listener (`--api-listen`, loopback by
//! default), TLS with Kiln's CA, bearer tokens (see [`auth`]). The OpenAPI document at
//! `/api/v1/openapi.json` is generated from the handlers' annotations, so every route is in it.

pub mod auth;
mod bmc;
mod clusters;
mod discovered;
mod events;
mod failure;
mod hardware;
mod images;
mod inventory;
mod preflight;
mod templates;
mod timeline;
pub mod tokens;
pub mod ui;
mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::routing::get;
use kiln_api::LocalServer;
use kiln_engine::Engine;
use kiln_model::EventSink;
use kiln_store::{Durability, StoreHandle};
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use failure::{ApiResult, Failure};
pub(crate) use hardware::csv_error;

use crate::error::{ServerError, StartContext};
use crate::options::ServeOptions;

/// Where the CLI on the server host finds the admin API (`DATA_DIR/api.json`).
pub const LOCAL_SERVER_FILE: &str = "api.json";

/// What every admin handler works with.
pub struct AdminState {
    /// The admin API's own connection (its commits move `data_version` for the refresher).
    pub store: StoreHandle,
    pub engine: Engine,
    pub events: Arc<dyn EventSink>,
    pub data_dir: PathBuf,
    pub server_url: String,
    /// Becomes true at shutdown: long-lived responses (the event stream) end then.
    pub shutdown: watch::Receiver<bool>,
    /// Image imports running or lately ended.
    pub imports: crate::images::Imports,
    /// What `kiln serve` was told (the preflight checks the server's own set-up).
    pub options: Arc<ServeOptions>,
    /// The web page's sessions (see [`ui`]).
    pub ui_sessions: ui::Sessions,
    /// This server's last preflight report, for the web page.
    pub last_preflight: std::sync::Mutex<Option<kiln_api::LastPreflight>>,
    /// Held while a preflight runs: one at a time per server (each logs in to every BMC it
    /// names; a second at once would only double the load on them, or lock out an account).
    pub preflight_running: tokio::sync::Mutex<()>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln admin API",
        description = "Bare-metal provisioning: hardware, images, templates, workflows, clusters, BMC actions, events. Every route needs `Authorization: Bearer <token>`; reads take any token, changes an admin one. Errors are `{code, message, details[]}`; times RFC 3339."
    ),
    components(schemas(kiln_api::ApiErrorBody, kiln_api::Detail)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes and the document describing them.
pub fn router(state: Arc<AdminState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(hardware::list, hardware::enroll))
        .routes(routes!(
            hardware::get_one,
            hardware::update,
            hardware::delete
        ))
        .routes(routes!(timeline::timeline))
        .routes(routes!(discovered::list))
        .routes(routes!(discovered::enroll))
        .routes(routes!(inventory::get_one))
        .routes(routes!(workflows::list, workflows::create))
        .routes(routes!(workflows::get_one))
        .routes(routes!(workflows::logs))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::retry))
        .routes(routes!(templates::list))
        .routes(routes!(templates::validate))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .merge(images::routes())
        .routes(routes!(clusters::list, clusters::create))
        .routes(routes!(clusters::status, clusters::delete))
        .routes(routes!(clusters::kubeconfig))
        .routes(routes!(bmc::action))
        .routes(routes!(preflight::run))
        .routes(routes!(preflight::last))
        .split_for_parts();
    let published = Arc::new(doc.clone());
    // The document too needs a token: no request without one is answered.
    let app = api
        .route(
            kiln_api::routes::OPENAPI,
            get(move || {
                let doc = published.clone();
                async move { Json((*doc).clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .merge(ui::routes(state.clone()))
        .with_state(state);
    (app, doc)
}

/// The bound listener and what it serves.
pub struct AdminApi {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Arc<kiln_http::tls::ServerConfig>,
    refusals: Arc<dyn EventSink>,
}

impl AdminApi {
    /// Issues the listener's certificate from Kiln's CA (`DATA_DIR/tls`, made by the agent
    /// API's start), makes the first token if there is none, binds `--api-listen`, and
    /// writes `DATA_DIR/api.json` for the CLI on this host.
    pub async fn bind(
        opts: &ServeOptions,
        engine: &Engine,
        events: &Arc<dyn EventSink>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<AdminApi, ServerError> {
        let data_dir = &opts.data_dir;
        // On the blocking pool, like every store call (see `run::on_blocking_pool`).
        let store = crate::run::on_blocking_pool({
            let (location, data_dir) = (opts.store_location(), data_dir.clone());
            move || {
                let store = kiln_store::open(&location, Durability::Full)
                    .start("opening the admin API's store connection")?;
                auth::ensure_first_token(&*store, &data_dir, now_ms())?;
                Ok(store)
            }
        })
        .await?;
        let listener = tokio::net::TcpListener::bind(opts.api_listen)
            .await
            .with_start(|| format!("binding the admin API to {}", opts.api_listen))?;
        let addr = listener.local_addr().start("the admin API's address")?;
        let mut hosts = vec![addr.ip().to_string()];
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            hosts.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
        }
        hosts.dedup();
        let (chain, key) = kiln_http::tls_ca::issue_listener(
            &data_dir.join("tls"),
            "admin",
            &hosts,
            SystemTime::now(),
        )
        .start("issuing the admin API's certificate")?;
        let tls =
            kiln_http::tls::server_config(chain, key).start("the admin API's TLS configuration")?;
        let state = Arc::new(AdminState {
            store: StoreHandle::new(store),
            engine: engine.clone(),
            events: events.clone(),
            data_dir: data_dir.clone(),
            server_url: opts.server_url(),
            shutdown: shutdown.clone(),
            imports: Default::default(),
            options: Arc::new(opts.clone()),
            ui_sessions: Default::default(),
            last_preflight: Default::default(),
            preflight_running: Default::default(),
        });
        let (app, _) = router(state);
        write_local_server(data_dir, addr)?;
        Ok(AdminApi {
            listener,
            app,
            tls,
            refusals: events.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let addr = self.local_addr();
        tracing::info!(url = %format!("https://{addr}"), "admin API");
        tokio::spawn(async move {
            let served = kiln_http::serve_tls_with_limits(
                self.listener,
                self.app,
                self.tls,
                images::limits(),
                Some(self.refusals),
                async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                },
            )
            .await;
            if let Err(e) = served {
                tracing::error!("admin API stopped: {e}");
            }
        })
    }
}

/// `DATA_DIR/api.json`: the URL (an unspecified listen address becomes loopback) and the
/// files the local CLI needs.
fn write_local_server(data_dir: &std::path::Path, addr: SocketAddr) -> Result<(), ServerError> {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = match addr {
        SocketAddr::V6(_) if !addr.ip().is_unspecified() => {
            format!("https://[{host}]:{}", addr.port())
        }
        _ => format!("https://{host}:{}", addr.port()),
    };
    let local = LocalServer {
        url,
        ca_file: "tls/ca.crt".into(),
        token_file: auth::FIRST_TOKEN_FILE.into(),
    };
    let text = serde_json::to_string_pretty(&local).expect("serializable");
    let path = data_dir.join(LOCAL_SERVER_FILE);
    let tmp = data_dir.join(format!("{LOCAL_SERVER_FILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_start(|| format!("writing {}", path.display()))
}
