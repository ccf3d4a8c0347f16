//! Discovery's collector: the DHCP service reports MACs that are not enrolled here (on the
//! packet path, so it only merges into memory); a task writes what gathered to the store
//! every [`FLUSH`]. Bounded both ways: at most [`MAX_DISCOVERED`] MACs wait in memory (others
//! are counted and dropped until the next write), and the store keeps at most as many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_model::discovery::MAX_DISCOVERED;
use kiln_model::{DiscoveredMac, DiscoverySink, MacAddr};
use kiln_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often sightings are written: at most one store write per period, whatever the traffic.
pub const FLUSH: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Discovery {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    seen: HashMap<MacAddr, DiscoveredMac>,
    /// Sightings of new MACs dropped since the last write (the batch was full).
    dropped: u64,
}

impl DiscoverySink for Discovery {
    fn seen(&self, sighting: DiscoveredMac) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let full = p.seen.len() >= MAX_DISCOVERED;
        match p.seen.get_mut(&sighting.mac) {
            Some(known) => known.merge(&sighting),
            None if full => p.dropped += 1,
            None => {
                p.seen.insert(sighting.mac, sighting);
            }
        }
    }
}

impl Discovery {
    /// What gathered since the last call, and how many new MACs were dropped meanwhile.
    pub fn take(&self) -> (Vec<DiscoveredMac>, u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let seen = std::mem::take(&mut p.seen).into_values().collect();
        (seen, std::mem::take(&mut p.dropped))
    }

    /// Writes what gathered every [`FLUSH`], and once more at shutdown.
    pub fn spawn_writer(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(FLUSH) => false,
                    _ = shutdown.wait_for(|s| *s) => true,
                };
                let (seen, dropped) = self.take();
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "discovery: too many unknown MACs at once; some not recorded"
                    );
                }
                if !seen.is_empty() {
                    let store = store.clone();
                    let written =
                        tokio::task::spawn_blocking(move || store.record_discovered(&seen)).await;
                    if let Ok(Err(e)) = written {
                        tracing::warn!("discovery: recording unknown MACs failed: {e}");
                    }
                }
                if stopping {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(n: u16) -> DiscoveredMac {
        DiscoveredMac {
            mac: format!("52:54:00:00:{:02x}:{:02x}", n >> 8, n & 0xff)
                .parse()
                .unwrap(),
            first_seen_ms: 10,
            last_seen_ms: 10,
            count: 1,
            client: kiln_model::event::DhcpClient::Pxe,
            arch: None,
            vendor_class: None,
            user_class: None,
            inspection: None,
        }
    }

    #[test]
    fn a_flood_is_merged_per_mac_and_bounded_until_the_next_write() {
        let d = Discovery::default();
        for _ in 0..3 {
            d.seen(sighting(1));
        }
        for n in 2..(MAX_DISCOVERED as u16 + 10) {
            d.seen(sighting(n));
        }
        // A MAC already waiting still counts when the batch is full.
        d.seen(sighting(1));
        let (seen, dropped) = d.take();
        assert_eq!(seen.len(), MAX_DISCOVERED);
        assert_eq!(dropped, 9);
        assert_eq!(
            seen.iter()
                .find(|s| s.mac == sighting(1).mac)
                .unwrap()
                .count,
            4
        );
        assert_eq!(d.take(), (Vec::new(), 0), "taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_stores_what_gathered_once_per_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let d = Arc::new(Discovery::default());
        let (stop, rx) = watch::channel(false);
        let task = d.clone().spawn_writer(store.clone(), rx);
        d.seen(sighting(1));
        d.seen(sighting(1));
        tokio::time::sleep(FLUSH + Duration::from_millis(10)).await;
        // Let the blocking write finish (real time passes on the blocking pool).
        for _ in 0..100 {
            if !store.discovered().unwrap().is_empty() {
                break;
            }
            tokio::time::resume();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::time::pause();
        }
        let stored = store.discovered().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].count, 2);
        d.seen(sighting(2));
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(store.discovered().unwrap().len(), 2, "written at shutdown");
    }
}
