//! Hardware inventory: what the agent finds on a machine at every netboot (`POST
//! /v1/agent/inventory`) and what the admin API shows of it. A netbooting client writes
//! this, so everything in it is bounded ([`Inventory::check`]) before it is stored.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most disks, NICs and unbound PCI devices one report may list.
pub const MAX_DISKS: usize = 64;
pub const MAX_NICS: usize = 64;
pub const MAX_PCI: usize = 256;
/// Most partitions listed per disk, and signatures per disk or partition.
pub const MAX_PARTITIONS: usize = 128;
pub const MAX_SIGNATURES: usize = 16;
/// Longest text field (model, serial, driver, ...), in bytes.
pub const MAX_TEXT: usize = 128;
/// Largest accepted report body, in bytes (the bounds above fit well inside it).
pub const MAX_BODY: usize = 256 * 1024;

/// Firmware the machine booted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    #[default]
    Bios,
    Uefi,
}

/// A partition table or file system found in a disk's or partition's first and last sectors.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Signature {
    Mbr,
    Gpt,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Swap,
    Lvm2,
    Iso9660,
    Luks,
}

impl Signature {
    pub fn name(self) -> &'static str {
        match self {
            Signature::Mbr => "mbr",
            Signature::Gpt => "gpt",
            Signature::Ext4 => "ext4",
            Signature::Xfs => "xfs",
            Signature::Btrfs => "btrfs",
            Signature::Vfat => "vfat",
            Signature::Swap => "swap",
            Signature::Lvm2 => "lvm2",
            Signature::Iso9660 => "iso9660",
            Signature::Luks => "luks",
        }
    }

    /// Whether this is a partition table (rather than a file system or volume).
    pub fn is_table(self) -> bool {
        matches!(self, Signature::Mbr | Signature::Gpt)
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct Cpu {
    /// `model name` of the first processor in /proc/cpuinfo.
    pub model: String,
    /// Logical processors.
    pub cores: u32,
}

/// DMI (SMBIOS) identity of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct Dmi {
    pub vendor: String,
    pub product: String,
    pub serial: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Partition {
    /// Kernel name (`vda1`, `nvme0n1p2`).
    pub name: String,
    pub size_bytes: u64,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`); the device is `/dev/NAME`.
    pub name: String,
    /// Stable path under /dev/disk/by-path when udev made one (empty otherwise).
    #[serde(default)]
    pub by_path: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    /// World-wide name (`wwid` in sysfs), empty when the device has none.
    pub wwn: String,
    pub rotational: bool,
    pub removable: bool,
    /// What the disk's own first and last sectors hold (tables and whole-disk file systems).
    pub signatures: Vec<Signature>,
    pub partitions: Vec<Partition>,
}

impl Disk {
    pub fn device(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// Every signature on the disk and its partitions, as `vda: gpt; vda1: ext4`.
    pub fn signatures_text(&self) -> String {
        let mut parts = Vec::new();
        let list = |s: &[Signature]| s.iter().map(|s| s.name()).collect::<Vec<_>>().join(",");
        if !self.signatures.is_empty() {
            parts.push(format!("{}: {}", self.name, list(&self.signatures)));
        }
        for p in &self.partitions {
            if !p.signatures.is_empty() {
                parts.push(format!("{}: {}", p.name, list(&p.signatures)));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }

    /// Whether the disk holds any partition table or file system.
    pub fn has_signatures(&self) -> bool {
        !self.signatures.is_empty() || self.partitions.iter().any(|p| !p.signatures.is_empty())
    }

    /// What identifies this disk across boots (its kernel name may change).
    pub fn identity(&self) -> DiskIdentity {
        DiskIdentity {
            serial: self.serial.clone(),
            wwn: self.wwn.clone(),
            size_bytes: self.size_bytes,
            model: self.model.clone(),
        }
    }
}

/// A disk's identity as recorded at a successful install: the wrong-disk guard compares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct DiskIdentity {
    pub serial: String,
    pub wwn: String,
    pub size_bytes: u64,
    pub model: String,
}

impl DiskIdentity {
    /// Whether `disk` is this disk: the WWN when both have one, else the serial when both
    /// have one, else model and size.
    pub fn matches(&self, disk: &DiskIdentity) -> bool {
        if !self.wwn.is_empty() && !disk.wwn.is_empty() {
            return self.wwn == disk.wwn;
        }
        if !self.serial.is_empty() && !disk.serial.is_empty() {
            return self.serial == disk.serial && self.size_bytes == disk.size_bytes;
        }
        self.model == disk.model && self.size_bytes == disk.size_bytes
    }
}

impl std::fmt::Display for DiskIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "serial {:?}, wwn {:?}, model {:?}, {} bytes",
            self.serial, self.wwn, self.model, self.size_bytes
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nic {
    pub name: String,
    /// As sysfs writes it (`52:54:00:12:34:56`); may be empty for odd devices.
    pub mac: String,
    pub driver: String,
    pub link: bool,
    /// Mb/s, when the link is up and the driver says.
    pub speed_mbps: Option<u32>,
}

/// A PCI device no driver is bound to (a NIC or controller the agent OS cannot use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PciDevice {
    /// `0000:00:03.0`
    pub address: String,
    /// `8086:100e`
    pub id: String,
    /// `0x020000`
    pub class: String,
}

/// Everything the agent reports about a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct Inventory {
    pub cpu: Cpu,
    pub memory_bytes: u64,
    pub firmware: FirmwareKind,
    pub dmi: Dmi,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub unbound_pci: Vec<PciDevice>,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// More items in a list than allowed.
    #[error("{field}: {count} items, at most {max} allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    /// A text field longer than [`MAX_TEXT`].
    #[error("{field}: {len} bytes, at most {MAX_TEXT} allowed")]
    TooLong { field: &'static str, len: usize },
}

fn count(field: &'static str, count: usize, max: usize) -> Result<(), InventoryError> {
    if count > max {
        return Err(InventoryError::TooMany { field, count, max });
    }
    Ok(())
}

fn text(field: &'static str, s: &str) -> Result<(), InventoryError> {
    if s.len() > MAX_TEXT {
        return Err(InventoryError::TooLong {
            field,
            len: s.len(),
        });
    }
    Ok(())
}

const GIB: u64 = 1 << 30;

impl Inventory {
    /// Checks every bound; the server refuses a report that breaks one.
    pub fn check(&self) -> Result<(), InventoryError> {
        text("cpu.model", &self.cpu.model)?;
        for (f, s) in [
            ("dmi.vendor", &self.dmi.vendor),
            ("dmi.product", &self.dmi.product),
            ("dmi.serial", &self.dmi.serial),
        ] {
            text(f, s)?;
        }
        count("disks", self.disks.len(), MAX_DISKS)?;
        for d in &self.disks {
            for (f, s) in [
                ("disks.name", &d.name),
                ("disks.by_path", &d.by_path),
                ("disks.model", &d.model),
                ("disks.serial", &d.serial),
                ("disks.wwn", &d.wwn),
            ] {
                text(f, s)?;
            }
            count("disks.signatures", d.signatures.len(), MAX_SIGNATURES)?;
            count("disks.partitions", d.partitions.len(), MAX_PARTITIONS)?;
            for p in &d.partitions {
                text("disks.partitions.name", &p.name)?;
                count(
                    "disks.partitions.signatures",
                    p.signatures.len(),
                    MAX_SIGNATURES,
                )?;
            }
        }
        count("nics", self.nics.len(), MAX_NICS)?;
        for n in &self.nics {
            for (f, s) in [
                ("nics.name", &n.name),
                ("nics.mac", &n.mac),
                ("nics.driver", &n.driver),
            ] {
                text(f, s)?;
            }
        }
        count("unbound_pci", self.unbound_pci.len(), MAX_PCI)?;
        for p in &self.unbound_pci {
            for (f, s) in [
                ("unbound_pci.address", &p.address),
                ("unbound_pci.id", &p.id),
                ("unbound_pci.class", &p.class),
            ] {
                text(f, s)?;
            }
        }
        Ok(())
    }

    /// Memory in whole GiB, rounded to the nearest (the kernel keeps some for itself, so a
    /// 64 GiB machine reports a little less).
    pub fn memory_gib(&self) -> u64 {
        (self.memory_bytes + GIB / 2) / GIB
    }

    /// One line: `4 cpu (Intel Xeon), 64 GiB, uefi, 2 disks, 2 nics`.
    pub fn summary(&self) -> InventorySummary {
        InventorySummary {
            cpu_cores: self.cpu.cores,
            memory_gib: self.memory_gib(),
            firmware: self.firmware,
            disks: self
                .disks
                .iter()
                .map(|d| format!("{} {} GiB {}", d.name, d.size_bytes / GIB, d.serial))
                .collect(),
            nics: self.nics.len() as u32,
            unbound_pci: self.unbound_pci.len() as u32,
        }
    }
}

/// A short summary of a report: in `inventory.reported` events and the history list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct InventorySummary {
    pub cpu_cores: u32,
    pub memory_gib: u64,
    pub firmware: FirmwareKind,
    /// `vda 20 GiB SERIAL` per disk.
    pub disks: Vec<String>,
    pub nics: u32,
    pub unbound_pci: u32,
}

impl std::fmt::Display for InventorySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cpu, {} GiB, {}, disks [{}], {} nic(s)",
            self.cpu_cores,
            self.memory_gib,
            match self.firmware {
                FirmwareKind::Bios => "bios",
                FirmwareKind::Uefi => "uefi",
            },
            self.disks.join(", "),
            self.nics
        )?;
        if self.unbound_pci > 0 {
            write!(f, ", {} pci device(s) without driver", self.unbound_pci)?;
        }
        Ok(())
    }
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryReport {
    /// RFC 3339.
    pub at: String,
    pub at_ms: u64,
    pub inventory: Inventory,
}

/// An older report, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryHistoryItem {
    pub at: String,
    pub at_ms: u64,
    pub summary: InventorySummary,
}

/// `GET /api/v1/hardware/{name}/inventory`: what the agent last found, earlier reports in
/// short, the disk of the last install, and what the BMC says of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineInventory {
    pub name: String,
    pub latest: Option<InventoryReport>,
    /// Newest first, the latest included.
    pub history: Vec<InventoryHistoryItem>,
    /// The disk Kiln last installed to (what the wrong-disk guard compares).
    pub installed_disk: Option<DiskIdentity>,
    /// From the BMC (Redfish), when asked (`kiln bmc info`).
    pub bmc_system: Option<BmcSystem>,
}

/// What a Redfish BMC says of its system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct BmcSystem {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub power_state: String,
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(serial: &str, wwn: &str, size: u64) -> DiskIdentity {
        DiskIdentity {
            serial: serial.into(),
            wwn: wwn.into(),
            size_bytes: size,
            model: "m".into(),
        }
    }

    #[test]
    fn identity_prefers_wwn_then_serial_then_model_and_size() {
        assert!(disk("a", "w1", 1).matches(&disk("b", "w1", 2)));
        assert!(!disk("a", "w1", 1).matches(&disk("a", "w2", 1)));
        assert!(disk("a", "", 1).matches(&disk("a", "w", 1)));
        assert!(!disk("a", "", 1).matches(&disk("b", "", 1)));
        assert!(disk("", "", 1).matches(&disk("", "", 1)));
        assert!(!disk("", "", 1).matches(&disk("", "", 2)));
    }

    #[test]
    fn bounds_are_checked() {
        let mut inv = Inventory::default();
        assert_eq!(inv.check(), Ok(()));
        inv.cpu.model = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(
            inv.check(),
            Err(InventoryError::TooLong {
                field: "cpu.model",
                ..
            })
        ));
        inv.cpu.model.clear();
        inv.nics = vec![
            Nic {
                name: "eth0".into(),
                mac: String::new(),
                driver: String::new(),
                link: false,
                speed_mbps: None,
            };
            MAX_NICS + 1
        ];
        assert!(matches!(
            inv.check(),
            Err(InventoryError::TooMany { field: "nics", .. })
        ));
    }

    #[test]
    fn memory_rounds_to_the_nearest_gib() {
        let inv = Inventory {
            memory_bytes: 64 * GIB - 300 * (1 << 20),
            ..Default::default()
        };
        assert_eq!(inv.memory_gib(), 64);
    }
}
