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
}
