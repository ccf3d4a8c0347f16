//! What a simulated machine's agent reports of its hardware: one blank virtio disk and its NIC,
//! as the agent OS finds them in a QEMU machine, so Kiln stores an inventory and records the
//! disk each image write goes to, as it does for a real machine.

use kiln_api::inventory::{Cpu, Disk, Dmi, FirmwareKind, Inventory, Nic};

/// Size of every simulated machine's disk.
const DISK_BYTES: u64 = 8 << 30;

/// The machine's one disk (`/dev/vda`, hardware.csv's disk in the rack), blank.
pub fn disk(hostname: &str) -> Disk {
    Disk {
        name: "vda".into(),
        by_path: String::new(),
        size_bytes: DISK_BYTES,
        model: String::new(),
        serial: format!("SIM-{hostname}"),
        wwn: String::new(),
        rotational: false,
        removable: false,
        signatures: Vec::new(),
        partitions: Vec::new(),
    }
}

pub fn inventory(hostname: &str, mac: &str) -> Inventory {
    Inventory {
        cpu: Cpu {
            model: "kiln-sim virtual CPU".into(),
            cores: 1,
        },
        memory_bytes: 1 << 30,
        firmware: FirmwareKind::Bios,
        dmi: Dmi {
            vendor: "Kiln".into(),
            product: "simulated machine".into(),
            serial: hostname.into(),
        },
        disks: vec![disk(hostname)],
        nics: vec![Nic {
            name: "eth0".into(),
            mac: mac.into(),
            driver: "virtio_net".into(),
            link: true,
            speed_mbps: None,
        }],
        unbound_pci: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_within_the_servers_bounds() {
        let inv = inventory("sim-0001", "52:54:00:5a:00:00");
        assert_eq!(inv.check(), Ok(()));
        assert_eq!(inv.disks[0].device(), "/dev/vda");
    }
}
