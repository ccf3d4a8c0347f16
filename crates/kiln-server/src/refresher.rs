//! Every half second: metrics upkeep and the in-memory inventory rebuilt when another
//! connection (another kiln process, the admin API) committed a change. On
//! PostgreSQL a change notification (LISTEN/NOTIFY, see `kiln_store::watch_changes`) wakes it
//! at once, so a change made through any server reaches every server within milliseconds; the
//! half-second poll stays as the fallback (and is all SQLite has). Every second: workflow
//! timeouts. Every few seconds: this server's heartbeat, and machines and workflows counted by
//! state for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::Engine;
use kiln_model::{Inventory, SharedInventory};
use kiln_store::{Store, StoreError, StoreHandle};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Notify, watch};

/// How often a server writes its heartbeat row.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often workflow and action timeouts are applied (they are whole seconds or more; each
/// round lists the running workflows).
const TIMEOUTS_EVERY: Duration = Duration::from_secs(1);

/// How often machines and workflows are counted by state for `/metrics`.
const COUNT_STATES_EVERY: Duration = Duration::from_secs(5);

pub fn spawn(
    store: StoreHandle,
    engine: Engine,
    inventory: SharedInventory,
    metrics: PrometheusHandle,
    server_url: String,
    changes: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let started = kiln_engine::now_ms();
        let mut beat = tokio::time::Instant::now();
        let mut first = true;
        let mut counted: Option<tokio::time::Instant> = None;
        let mut ticked: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = changes.notified() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            if first || beat.elapsed() >= HEARTBEAT {
                first = false;
                beat = tokio::time::Instant::now();
                let (id, url) = (engine.owner().to_string(), server_url.clone());
                let now = kiln_engine::now_ms();
                if let Err(e) = store
                    .run(move |s| s.heartbeat(&id, &url, started, now))
                    .await
                {
                    tracing::warn!("writing the heartbeat: {e}");
                }
            }
            metrics.run_upkeep();
            // The inventory first: DHCP decides from it whether a machine netboots, and a
            // machine powered on (or rebooted) right after a change must be answered by it.
            match store.run(move |s| reload_if_changed(s, seen)).await {
                Ok(Some((v, hw))) => {
                    if seen.is_some() {
                        tracing::info!(machines = hw.len(), "inventory reloaded");
                    }
                    inventory.replace(Inventory::new(hw));
                    seen = Some(v);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("reloading the inventory: {e}"),
            }
            if ticked.is_none_or(|t| t.elapsed() >= TIMEOUTS_EVERY) {
                ticked = Some(tokio::time::Instant::now());
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.tick_all()).await {
                    Ok(Err(err)) => tracing::warn!("applying workflow timeouts: {err}"),
                    Err(err) => tracing::warn!("applying workflow timeouts: {err}"),
                    Ok(Ok(_)) => {}
                }
            }
            if counted.is_none_or(|t| t.elapsed() >= COUNT_STATES_EVERY) {
                counted = Some(tokio::time::Instant::now());
                count_states(&store, &inventory).await;
            }
        }
    })
}

/// Sets `kiln_machines` and `kiln_workflows` from the store.
async fn count_states(store: &StoreHandle, inventory: &SharedInventory) {
    let machines = inventory.load().len();
    match store.run(|s| s.workflows(false)).await {
        Ok(wfs) => crate::meters::record_states(machines, &wfs),
        Err(e) => tracing::warn!("counting workflows for /metrics: {e}"),
    }
}

/// The hardware, when the store's data version moved since `seen`.
#[allow(clippy::type_complexity)]
fn reload_if_changed(
    store: &dyn Store,
    seen: Option<i64>,
) -> Result<Option<(i64, Vec<kiln_model::Hardware>)>, StoreError> {
    let v = store.data_version()?;
    if Some(v) == seen {
        return Ok(None);
    }
    Ok(Some((v, store.hardware()?)))
}
