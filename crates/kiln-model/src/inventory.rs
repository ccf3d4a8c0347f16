//! The in-memory index the boot services answer from, so no packet waits on disk.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use crate::{Hardware, MacAddr};

#[derive(Debug, Default)]
pub struct Inventory {
    by_mac: HashMap<MacAddr, Arc<Hardware>>,
    by_ip: HashMap<Ipv4Addr, Arc<Hardware>>,
}

impl Inventory {
    pub fn new(machines: impl IntoIterator<Item = Hardware>) -> Self {
        let mut inv = Inventory::default();
        for hw in machines {
            let hw = Arc::new(hw);
            inv.by_ip.insert(hw.ip, hw.clone());
            inv.by_mac.insert(hw.mac, hw);
        }
        inv
    }

    pub fn by_mac(&self, mac: &MacAddr) -> Option<&Arc<Hardware>> {
        self.by_mac.get(mac)
    }

    pub fn by_ip(&self, ip: &Ipv4Addr) -> Option<&Arc<Hardware>> {
        self.by_ip.get(ip)
    }

    /// The same machines, `hostname`'s netboot flag set to `on`; `None` when it is not here.
    pub fn with_netboot(&self, hostname: &str, on: bool) -> Option<Inventory> {
        let found = self.by_mac.values().any(|hw| hw.hostname == hostname);
        found.then(|| {
            Inventory::new(self.by_mac.values().map(|hw| {
                let mut hw = Hardware::clone(hw);
                if hw.hostname == hostname {
                    hw.netboot = on;
                }
                hw
            }))
        })
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// An inventory that can be swapped whole while readers keep the one they hold.
#[derive(Debug, Clone, Default)]
pub struct SharedInventory(Arc<RwLock<Arc<Inventory>>>);

impl SharedInventory {
    pub fn new(inv: Inventory) -> Self {
        SharedInventory(Arc::new(RwLock::new(Arc::new(inv))))
    }

    pub fn load(&self) -> Arc<Inventory> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, inv: Inventory) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inv);
    }

    /// Sets one machine's netboot flag at once (the store already holds it; the refresher
    /// would catch up within its tick, a machine rebooting into its disk may not wait).
    pub fn set_netboot(&self, hostname: &str, on: bool) {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = current.with_netboot(hostname, on) {
            *current = Arc::new(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_machines_netboot_changes_at_once_for_new_readers() {
        let hw = crate::csv::parse_hardware_csv(
            "t.csv",
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             n1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/vda\n\
             n2,,,,52:54:00:00:00:02,10.0.0.12,255.255.255.0,,,,/dev/vda\n",
        )
        .unwrap();
        let shared = SharedInventory::new(Inventory::new(hw.into_iter().map(|mut h| {
            h.netboot = true;
            h
        })));
        let before = shared.load();
        shared.set_netboot("n1", false);
        let mac1: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let mac2: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let now = shared.load();
        assert!(!now.by_mac(&mac1).unwrap().netboot);
        assert!(!now.by_ip(&"10.0.0.11".parse().unwrap()).unwrap().netboot);
        assert!(now.by_mac(&mac2).unwrap().netboot, "the others keep theirs");
        assert!(
            before.by_mac(&mac1).unwrap().netboot,
            "a reader keeps what it held"
        );
        shared.set_netboot("nobody", false);
        assert_eq!(shared.load().len(), 2);
    }
}
