//! Every half second: metrics upkeep and the in-memory inventory rebuilt when another
//! connection (another kiln process, the admin API) committed a change. On
//! PostgreSQL a change notification (LISTEN/NOTIFY, see `kiln_store::watch_changes`) wakes it
//! at once, so a change made through any server reaches every server within milliseconds; the
//! half-second poll stays as the fallback (and is all SQLite has). Every second: workflow
//! timeouts. Every few seconds: this server's heartbeat (and, from the others', the agent APIs a
//! netbooted kernel is told to move to), and machines and workflows counted by state for
//! `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::Engine;
use kiln_http::agent_apis::{AgentApis, AgentEndpoint};
use kiln_model::{Inventory, SharedInventory};
use kiln_store::{ServerRecord, Store, StoreError, StoreHandle};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Notify, watch};

/// How often a server writes its heartbeat row.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A server whose heartbeat is older than this is not offered to agents as a place to move to.
const PEER_SILENT_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());

/// This server as its heartbeat describes it: its HTTP URL, and its agent API with the peers'.
pub struct ThisServer {
    pub url: String,
    pub apis: AgentApis,
}

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
    me: ThisServer,
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
                let own = me.apis.own().clone();
                let record = ServerRecord {
                    id: engine.owner().to_string(),
                    url: me.url.clone(),
                    agent_api: Some(own.url),
                    ca_sha256: Some(own.ca_sha256),
                    started_ms: started,
                    seen_ms: kiln_engine::now_ms(),
                };
                let result = store
                    .run(move |s| {
                        s.heartbeat(&record)?;
                        let peers = live_peers(&s.servers()?, &record.id, record.seen_ms);
                        Ok::<_, StoreError>(peers)
                    })
                    .await;
                match result {
                    Ok(peers) => me.apis.set_peers(peers),
                    Err(e) => tracing::warn!("writing the heartbeat: {e}"),
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
    match store.run(|s| s.workflow_state_counts()).await {
        Ok(counts) => crate::meters::record_states(machines, &counts),
        Err(e) => tracing::warn!("counting workflows for /metrics: {e}"),
    }
}

/// The agent APIs of the servers other than `own_id` that beat within [`PEER_SILENT_AFTER`]
/// of `now_ms`, by id.
fn live_peers(servers: &[ServerRecord], own_id: &str, now_ms: u64) -> Vec<AgentEndpoint> {
    let since = now_ms.saturating_sub(PEER_SILENT_AFTER.as_millis() as u64);
    servers
        .iter()
        .filter(|s| s.id != own_id && s.seen_ms >= since)
        .filter_map(|s| AgentEndpoint::new(s.agent_api.as_deref()?, s.ca_sha256.as_deref()?))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, seen_ms: u64, agent: Option<&str>) -> ServerRecord {
        ServerRecord {
            id: id.into(),
            url: format!("http://{id}:8080"),
            agent_api: agent.map(str::to_string),
            ca_sha256: agent.map(|_| "ab".repeat(32)),
            started_ms: 0,
            seen_ms,
        }
    }

    #[test]
    fn agents_are_offered_the_other_servers_that_beat_lately() {
        let now = 100_000;
        let servers = [
            server("a", now, Some("https://10.77.0.1:8443")),
            server("b", now - 2_000, Some("https://10.77.0.2:8443")),
            server(
                "c",
                now - PEER_SILENT_AFTER.as_millis() as u64 - 1,
                Some("https://10.77.0.3:8443"),
            ),
            server("d", now, None),
            server("e", now, Some("http://10.77.0.5:8443")),
        ];
        let urls: Vec<String> = live_peers(&servers, "a", now)
            .into_iter()
            .map(|e| e.url)
            .collect();
        // Not itself, not the silent one, not one without (or with an unusable) agent API.
        assert_eq!(urls, ["https://10.77.0.2:8443"]);
    }
}
