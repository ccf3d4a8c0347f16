//! Events from the packet paths go through a bounded channel to one writer
//! thread that names the machine and stores them in batches, so no packet
//! waits on disk.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use kiln_model::{Event, EventSink, SharedInventory};
use kiln_store::Store;

const QUEUE: usize = 16_384;
const BATCH: usize = 512;

pub struct StoreSink {
    tx: SyncSender<Event>,
    inventory: SharedInventory,
}

impl StoreSink {
    /// Starts the writer thread; it ends when every sink clone is dropped.
    pub fn start(store: Arc<Store>, inventory: SharedInventory) -> Arc<StoreSink> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("kiln-events".into())
            .spawn(move || writer(store, rx))
            .expect("spawning the event writer");
        Arc::new(StoreSink { tx, inventory })
    }
}

impl EventSink for StoreSink {
    fn emit(&self, mut event: Event) {
        if event.machine.is_none() {
            let inv = self.inventory.load();
            let by_mac = event.mac.and_then(|m| inv.by_mac(&m).cloned());
            let by_ip = || match event.ip {
                Some(std::net::IpAddr::V4(ip)) => inv.by_ip(&ip).cloned(),
                _ => None,
            };
            if let Some(hw) = by_mac.or_else(by_ip) {
                event.machine = Some(hw.hostname.clone());
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("kiln_events_dropped_total").increment(1)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn writer(store: Arc<Store>, rx: Receiver<Event>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        for e in &batch {
            tracing::info!(machine = e.machine.as_deref().unwrap_or("-"), kind = %e.kind, "{}", e.detail);
        }
        if let Err(e) = store.append_events(&batch) {
            tracing::warn!("storing {} event(s) failed: {e}", batch.len());
        }
    }
}
