//! `kiln hardware show` / `kiln hardware inventory`: a machine's hardware inventory as text.

use std::fmt::Write;

use kiln_api::inventory::{FirmwareKind, MachineInventory};

const GIB: u64 = 1 << 30;

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The latest report in full, the BMC's view, the installed disk and the history in short.
pub fn machine_inventory(m: &MachineInventory) -> String {
    let mut out = String::new();
    let Some(latest) = &m.latest else {
        let _ = writeln!(
            out,
            "inventory: none reported yet (the agent sends one at every netboot)"
        );
        bmc_and_installed(&mut out, m);
        return out;
    };
    let inv = &latest.inventory;
    let _ = writeln!(out, "inventory (reported {}):", latest.at);
    let _ = writeln!(
        out,
        "  cpu:       {} x {}",
        inv.cpu.cores,
        or_dash(&inv.cpu.model)
    );
    let _ = writeln!(out, "  memory:    {} GiB", inv.memory_gib());
    let firmware = match inv.firmware {
        FirmwareKind::Bios => "bios",
        FirmwareKind::Uefi => "uefi",
    };
    let _ = writeln!(out, "  firmware:  {firmware}");
    let _ = writeln!(
        out,
        "  system:    {} {} serial {}",
        or_dash(&inv.dmi.vendor),
        or_dash(&inv.dmi.product),
        or_dash(&inv.dmi.serial)
    );
    let _ = writeln!(out, "  disks:");
    for d in &inv.disks {
        let _ = writeln!(
            out,
            "    {:<14} {:>6} GiB  serial {}  wwn {}  model {}{}{}",
            d.device(),
            d.size_bytes / GIB,
            or_dash(&d.serial),
            or_dash(&d.wwn),
            or_dash(&d.model),
            if d.rotational { "  rotational" } else { "" },
            if d.removable { "  removable" } else { "" },
        );
        let _ = writeln!(out, "    {:<14} holds: {}", "", d.signatures_text());
    }
    let _ = writeln!(out, "  nics:");
    for n in &inv.nics {
        let speed = n.speed_mbps.map_or("-".into(), |s| format!("{s} Mb/s"));
        let _ = writeln!(
            out,
            "    {:<14} {}  driver {}  link {}  {speed}",
            n.name,
            or_dash(&n.mac),
            or_dash(&n.driver),
            if n.link { "up" } else { "down" },
        );
    }
    if !inv.unbound_pci.is_empty() {
        let _ = writeln!(out, "  pci devices without a driver:");
        for p in &inv.unbound_pci {
            let _ = writeln!(out, "    {}  {}  class {}", p.address, p.id, p.class);
        }
    }
    bmc_and_installed(&mut out, m);
    if m.history.len() > 1 {
        let _ = writeln!(out, "inventory history (newest first):");
        for h in &m.history {
            let _ = writeln!(out, "  {}  {}", h.at, h.summary);
        }
    }
    out
}

fn bmc_and_installed(out: &mut String, m: &MachineInventory) {
    if let Some(b) = &m.bmc_system {
        let _ = writeln!(
            out,
            "bmc system: {} {} serial {} power {} (asked {})",
            or_dash(&b.manufacturer),
            or_dash(&b.model),
            or_dash(&b.serial),
            or_dash(&b.power_state),
            b.at
        );
    }
    match &m.installed_disk {
        Some(d) => {
            let _ = writeln!(out, "installed disk: {d}");
        }
        None => {
            let _ = writeln!(
                out,
                "installed disk: none (Kiln has not installed this machine)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::inventory::{Disk, DiskIdentity, Inventory, InventoryReport, Signature};

    #[test]
    fn shows_disks_with_what_they_hold_and_the_installed_disk() {
        let inv = Inventory {
            memory_bytes: 4 * GIB,
            disks: vec![Disk {
                name: "nvme0n1".into(),
                by_path: String::new(),
                size_bytes: 16 * GIB,
                model: "QEMU NVMe Ctrl".into(),
                serial: "NVME-B".into(),
                wwn: String::new(),
                rotational: false,
                removable: false,
                signatures: vec![Signature::Gpt],
                partitions: vec![],
            }],
            ..Default::default()
        };
        let m = MachineInventory {
            name: "n1".into(),
            history: vec![],
            latest: Some(InventoryReport {
                at: "2026-12-07T07:00:00.000Z".into(),
                at_ms: 0,
                inventory: inv,
            }),
            installed_disk: Some(DiskIdentity {
                serial: "NVME-B".into(),
                ..Default::default()
            }),
            bmc_system: None,
        };
        let text = machine_inventory(&m);
        assert!(text.contains("memory:    4 GiB"), "{text}");
        assert!(
            text.contains("/dev/nvme0n1       16 GiB  serial NVME-B"),
            "{text}"
        );
        assert!(text.contains("holds: nvme0n1: gpt"), "{text}");
        assert!(text.contains("installed disk: serial \"NVME-B\""), "{text}");
        let none = MachineInventory {
            latest: None,
            installed_disk: None,
            ..m
        };
        assert!(machine_inventory(&none).contains("none reported yet"));
    }
}
