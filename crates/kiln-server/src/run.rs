//! The supervisor: opens the store, starts every service with one shutdown signal, and waits
//! for them to end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_model::{EventSink, Inventory, SharedInventory};
use kiln_store::{Durability, Store, StoreHandle};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::error::{ServerError, StartContext};
use crate::options::ServeOptions;
use crate::sink::StoreSink;

/// Prometheus' recorder is process-wide: installed once, shared by every server a process runs
/// (tests run several).
fn metrics() -> Result<PrometheusHandle, ServerError> {
    // A mutex, not a OnceLock: two servers starting at once must not both install.
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = installed.as_ref() {
        return Ok(h.clone());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
                5.0, 30.0,
            ],
        )
        .start("metric buckets")?
        .install_recorder()
        .start("installing the metrics recorder")?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// A running server: where its listeners ended up (port 0 picks one) and how to stop it.
pub struct Running {
    pub admin_addr: SocketAddr,
    /// What the boot services answer from (for tests: how soon a change reaches it).
    pub inventory: SharedInventory,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Signals every service to stop and waits (at most 5 s) for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            for t in self.tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

/// Runs the server until `shutdown` completes.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let running = start(opts).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Runs `f` (store calls: opening, the first reads) on the blocking pool.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Store(kiln_store::StoreError::Interrupted(e.to_string())))?
}

/// The events' and the engine's store connections, and the enrolled machines.
type Opened = (Arc<dyn Store>, Arc<dyn Store>, Vec<kiln_model::Hardware>);

/// The server's two store connections and the enrolled machines; the URL machines reach it by
/// recorded. Every store call of the start runs on the blocking pool: the PostgreSQL client
/// blocks on a runtime of its own, which panics on a tokio worker thread.
async fn open_stores(
    location: &kiln_store::Location,
    server_url: &str,
) -> Result<Opened, ServerError> {
    let (location, server_url) = (location.clone(), server_url.to_string());
    on_blocking_pool(move || {
        // This connection writes events (and reads): see `Durability::Relaxed`.
        let store = kiln_store::open(&location, Durability::Relaxed)
            .with_start(|| format!("opening the store ({location:?})"))?;
        // The engine writes through its own connection: `data_version` only moves for
        // other connections' commits (SQLite), and the refresher must see the engine
        // turn netboot off.
        let engine_store = kiln_store::open(&location, Durability::Full)
            .start("opening the engine's store connection")?;
        store.set_setting("server_url", &server_url)?;
        let machines = store.hardware()?;
        Ok((store, engine_store, machines))
    })
    .await
}

/// Starts every service and returns once they listen.
pub async fn start(opts: ServeOptions) -> Result<Running, ServerError> {
    opts.check_safety()?;
    let metrics = metrics()?;
    crate::meters::describe(&opts.version);
    let data_dir = opts.data_dir.clone();
    let location = opts.store_location();
    let server_url = opts.server_url();
    let (store, engine_store, machines) = open_stores(&location, &server_url).await?;
    tracing::info!(store = %store.describe(), "store open");
    // After the store opens (its directory exists then), before any service binds.
    crate::preflight::local::at_start(&opts)?;
    let inventory = SharedInventory::new(Inventory::new(machines));
    let events: Arc<dyn EventSink> = StoreSink::start(store.clone(), inventory.clone());
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    let server_id = opts.server_id();
    let engine = kiln_engine::Engine::new(engine_store.clone()).with_owner(&server_id);
    let core = crate::boot_services::Core {
        engine: engine.clone(),
        store: engine_store.clone(),
        inventory: inventory.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
    };

    let agent_tls =
        crate::agent_tls::AgentTlsListener::prepare(&data_dir, opts.address, opts.agent_tls_port)?;
    tasks.extend(crate::boot_services::spawn(&opts, &core, &agent_tls, &shutdown).await?);
    let admin = crate::admin::AdminApi::bind(&opts, &engine, &events, &shutdown).await?;
    let admin_addr = admin.local_addr();
    tasks.push(admin.spawn(shutdown.clone()));
    // Other servers' commits wake the refresher (PostgreSQL); the guard lives as long as it.
    let changes = Arc::new(tokio::sync::Notify::new());
    let watch = {
        let changes = Arc::clone(&changes);
        kiln_store::watch_changes(&location, move || changes.notify_one())?
    };
    tasks.push(crate::refresher::spawn(
        StoreHandle::new(store.clone()),
        engine.clone(),
        inventory.clone(),
        metrics.clone(),
        crate::refresher::ThisServer {
            url: server_url.clone(),
            apis: agent_tls.apis.clone(),
        },
        changes,
        shutdown.clone(),
    ));
    let mut stopped = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let _ = stopped.wait_for(|s| *s).await;
        drop(watch);
    }));
    tasks.push(crate::power::spawn(
        engine.clone(),
        StoreHandle::new(engine_store),
        shutdown.clone(),
    ));
    tracing::info!(
        url = %server_url,
        server_id = %server_id,
        admin_api = %admin_addr,
        dhcp = ?opts.dhcp_mode,
        interface = opts.interface.as_deref().unwrap_or("-"),
        machines = inventory.load().len(),
        "kiln serving"
    );
    Ok(Running {
        admin_addr,
        inventory: inventory.clone(),
        stop,
        tasks,
    })
}
