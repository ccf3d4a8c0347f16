//! Events from the packet paths go through a bounded channel to one writer
//! thread that names the machine and stores them in batches, so no packet
//! waits on disk (or on the ARP table).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use std::net::{IpAddr, Ipv4Addr};

use kiln_model::{Event, EventSink, MacAddr, SharedInventory};
use kiln_store::Store;

const QUEUE: usize = 16_384;
const BATCH: usize = 512;

pub struct StoreSink {
    tx: SyncSender<Event>,
}

impl StoreSink {
    /// Starts the writer thread; it ends when every sink clone is dropped.
    pub fn start(store: Arc<dyn Store>, inventory: SharedInventory) -> Arc<StoreSink> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("kiln-events".into())
            .spawn(move || writer(store, inventory, rx))
            .expect("spawning the event writer");
        Arc::new(StoreSink { tx })
    }
}

impl EventSink for StoreSink {
    fn emit(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("kiln_events_dropped_total").increment(1)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The MAC the kernel's ARP table holds for `ip` (in proxy mode another
/// server leased the address, so only the neighbour table links it to a MAC).
fn arp_lookup(arp_table: &str, ip: Ipv4Addr) -> Option<MacAddr> {
    let ip = ip.to_string();
    arp_table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.first() == Some(&ip.as_str()))
            .then(|| cols.get(3)?.parse().ok())
            .flatten()
    })
}

/// Names the machine an event is about: by MAC, by reserved IP, or by the
/// MAC the ARP table gives for the IP.
fn resolve(event: &mut Event, inventory: &SharedInventory) {
    if event.machine.is_some() {
        return;
    }
    let inv = inventory.load();
    let mut hw = event.mac.and_then(|m| inv.by_mac(&m).cloned());
    if let (None, Some(IpAddr::V4(ip))) = (&hw, event.ip) {
        hw = inv.by_ip(&ip).cloned().or_else(|| {
            let table = std::fs::read_to_string("/proc/net/arp").ok()?;
            let mac = arp_lookup(&table, ip)?;
            inv.by_mac(&mac).cloned()
        });
    }
    if let Some(hw) = hw {
        event.machine = Some(hw.hostname.clone());
    }
}

fn writer(store: Arc<dyn Store>, inventory: SharedInventory, rx: Receiver<Event>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // Gather what arrives within a few milliseconds: one transaction per
        // batch, not per packet, under load.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(5);
        while batch.len() < BATCH {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        for e in &mut batch {
            resolve(e, &inventory);
            tracing::info!(machine = e.machine.as_deref().unwrap_or("-"), kind = %e.kind, "{}", e.detail);
        }
        if let Err(e) = store.append_events(&batch) {
            tracing::warn!("storing {} event(s) failed: {e}", batch.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_table_lookup() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.77.0.124      0x1         0x2         52:54:00:e2:0f:02     *        br0\n\
                     10.77.0.1        0x1         0x0         00:00:00:00:00:00     *        br0\n";
        assert_eq!(
            arp_lookup(table, "10.77.0.124".parse().unwrap())
                .unwrap()
                .to_string(),
            "52:54:00:e2:0f:02"
        );
        assert!(arp_lookup(table, "10.77.0.9".parse().unwrap()).is_none());
    }
}
