//! Discovery: MACs that asked for DHCP on the provisioning network but are not enrolled
//! (`GET /api/v1/discovered`, `kiln discovered`), and their enrolment from that list
//! (`POST /api/v1/discovered/enroll`, `kiln enroll --from-discovered`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MacAddr;
use crate::disk_hint::{Cmp, parse_size};
use crate::event_data::DhcpClient;
use crate::inventory::{FirmwareKind, Inventory};

/// At most this many MACs are kept; the one seen least recently goes first.
pub const MAX_DISCOVERED: usize = 1024;
/// Longest vendor or user class kept (a client chooses them).
pub const MAX_CLASS_LEN: usize = 64;

/// A MAC not enrolled, and what it asked for the last time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredMac {
    #[schema(value_type = String, example = "52:54:00:12:34:56")]
    pub mac: MacAddr,
    /// Milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// DHCP messages seen from it.
    pub count: u64,
    pub client: DhcpClient,
    /// Client system architecture (option 93, else option 60's `Arch:`).
    pub arch: Option<u16>,
    /// Option 60, escaped and cut at [`MAX_CLASS_LEN`].
    pub vendor_class: Option<String>,
    /// Option 77 (`iPXE`), escaped and cut at [`MAX_CLASS_LEN`].
    pub user_class: Option<String>,
    /// What the agent found when it booted in inspection-only mode (`--discovery inspect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
}

/// An inspection-only boot's report, kept with the discovered MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Inspection {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub inventory: Inventory,
}

/// The largest inventory kept per discovered MAC (JSON bytes): a real server's is a few KiB;
/// with [`MAX_DISCOVERED`] MACs the list stays within 64 MiB whatever unknown clients send.
pub const MAX_INSPECTION_JSON: usize = 64 * 1024;

impl DiscoveredMac {
    /// `self` then `later` (the same MAC): the first sighting stays, the rest is the latest.
    /// A record with `count` 0 is no sighting (an inspection report): only its inspection
    /// is merged.
    pub fn merge(&mut self, later: &DiscoveredMac) {
        if later.count > 0 {
            self.merge_sighting(later);
        }
        // A sighting carries no inventory: it never erases one; a newer inspection replaces it.
        if let Some(i) = &later.inspection
            && self
                .inspection
                .as_ref()
                .is_none_or(|mine| i.at_ms >= mine.at_ms)
        {
            self.inspection = Some(i.clone());
        }
    }

    fn merge_sighting(&mut self, later: &DiscoveredMac) {
        self.first_seen_ms = self.first_seen_ms.min(later.first_seen_ms);
        if later.last_seen_ms >= self.last_seen_ms {
            self.last_seen_ms = later.last_seen_ms;
            self.client = later.client;
            self.arch = later.arch;
            self.vendor_class = later.vendor_class.clone();
            self.user_class = later.user_class.clone();
        }
        self.count = self.count.saturating_add(later.count);
    }

    /// What it asked for, in words: `PXE, arch 0 (BIOS), PXEClient:Arch:00000:UNDI:002001`.
    pub fn asked(&self) -> String {
        let mut parts = vec![format!("{:?}", self.client).to_uppercase()];
        if let Some(a) = self.arch {
            parts.push(format!(
                "arch {a} ({})",
                crate::event_data::dhcp_arch_name(a)
            ));
        }
        parts.extend(self.vendor_class.iter().cloned());
        parts.extend(self.user_class.iter().map(|u| format!("user class {u}")));
        parts.join(", ")
    }

    /// Facts enrolment rules match on: `arch` (`x86_64`, `arm64`, `x86`, `arm32`),
    /// `firmware` (`bios`, `uefi`), `client` (`pxe`, `ipxe`, `http`, `plain`); once inspected,
    /// `vendor` and `product` (DMI), and `firmware` as the agent found it.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = self.dhcp_facts();
        if let Some(inv) = self.inspection.as_ref().map(|i| &i.inventory) {
            facts.retain(|(f, _)| *f != "firmware");
            let firmware = match inv.firmware {
                FirmwareKind::Bios => "bios",
                FirmwareKind::Uefi => "uefi",
            };
            facts.push(("firmware", firmware.to_string()));
            facts.push(("vendor", inv.dmi.vendor.clone()));
            facts.push(("product", inv.dmi.product.clone()));
        }
        facts
    }

    /// Whether the MAC meets a rule's condition; an inventory condition needs an inspection.
    pub fn satisfies(&self, c: &RuleCondition) -> bool {
        match c {
            RuleCondition::Fact { fact, op, value } => {
                let holds = self.facts().iter().any(|(f, v)| f == fact && v == value);
                holds == (*op == Cmp::Eq)
            }
            RuleCondition::Measure { measure, op, n } => {
                let Some(inv) = self.inspection.as_ref().map(|i| &i.inventory) else {
                    return false;
                };
                match measure {
                    Measure::MemoryGib => op.holds(inv.memory_gib(), *n),
                    Measure::CpuCores => op.holds(u64::from(inv.cpu.cores), *n),
                    Measure::Disks => op.holds(inv.disks.len() as u64, *n),
                    Measure::DiskSize => inv.disks.iter().any(|d| op.holds(d.size_bytes, *n)),
                }
            }
        }
    }

    fn dhcp_facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![("client", format!("{:?}", self.client).to_lowercase())];
        if let Some(a) = self.arch {
            let arch = match a {
                0 | 7 | 9 | 16 => "x86_64",
                6 | 15 => "x86",
                10 | 18 => "arm32",
                11 | 19 => "arm64",
                _ => "unknown",
            };
            facts.push(("arch", arch.to_string()));
            facts.push(("firmware", if a == 0 { "bios" } else { "uefi" }.to_string()));
        }
        facts
    }
}

/// What an inventory condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    MemoryGib,
    CpuCores,
    /// How many disks.
    Disks,
    /// Any one disk's size, in bytes.
    DiskSize,
}

/// The condition of an enrolment rule (`FACT=VALUE`, `inventory.memory_gib>=64`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleCondition {
    /// `arch=x86_64`, `vendor!=QEMU`: [`Cmp::Eq`] or [`Cmp::Ne`].
    Fact {
        fact: &'static str,
        op: Cmp,
        value: String,
    },
    Measure {
        measure: Measure,
        op: Cmp,
        n: u64,
    },
}

/// Facts a rule may test for equality.
pub const RULE_FACTS: [&str; 5] = ["arch", "firmware", "client", "vendor", "product"];
/// Inventory measures a rule may compare (the selectors' names).
pub const RULE_MEASURES: &str =
    "inventory.memory_gib, inventory.cpu_cores, inventory.disks, disk.size";

impl RuleCondition {
    /// `arch=arm64`, `vendor!=QEMU`, `inventory.memory_gib>=64`, `disk.size>=500G`.
    pub fn parse(s: &str) -> Result<RuleCondition, String> {
        let (key, op, value) = Cmp::split(s)
            .filter(|(_, op, _)| *op != Cmp::Contains)
            .ok_or_else(|| format!("{s:?} needs one of =, !=, >=, <=, >, <"))?;
        if let Some(&fact) = RULE_FACTS.iter().find(|f| **f == key) {
            if !matches!(op, Cmp::Eq | Cmp::Ne) {
                return Err(format!("{key} is compared with = or != only"));
            }
            return Ok(RuleCondition::Fact {
                fact,
                op,
                value: value.to_string(),
            });
        }
        let measure = match key {
            "inventory.memory_gib" => Measure::MemoryGib,
            "inventory.cpu_cores" => Measure::CpuCores,
            "inventory.disks" => Measure::Disks,
            "disk.size" => Measure::DiskSize,
            _ => {
                return Err(format!(
                    "{key:?} is not one of {}, {RULE_MEASURES}",
                    RULE_FACTS.join(", ")
                ));
            }
        };
        let n = if measure == Measure::DiskSize {
            parse_size(value)
                .ok_or_else(|| format!("{value:?} is not a size (500, 500G, 2T; GiB by default)"))?
        } else {
            value
                .parse()
                .map_err(|_| format!("{value:?} is not a whole number"))?
        };
        Ok(RuleCondition::Measure { measure, op, n })
    }
}

/// A class string a client sent, made safe to store and show.
pub fn clean_class(raw: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .take(MAX_CLASS_LEN)
        .collect();
    crate::event_data::escape_controls(text)
}

/// `POST /api/v1/discovered/enroll`: enrol the discovered MACs (all, or those named) with
/// addresses from a pool, all or none, through the same path as a hardware.csv.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredEnroll {
    /// `FIRST-LAST/PREFIX` (`10.0.0.100-10.0.0.150/24`); addresses in use are skipped.
    pub pool: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Labels for every machine (`k=v`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// `CONDITION:K=V`: label `K=V` on machines that meet the condition (see
    /// [`RuleCondition::parse`]: `arch=arm64`, `vendor=Dell Inc.`, `inventory.memory_gib>=64`,
    /// `disk.size>=500G`; inventory conditions need an inspection).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only these MACs (default: every discovered one).
    #[serde(default)]
    pub macs: Vec<String>,
    /// Hostnames are `PREFIX-` and the MAC's 12 hex digits (default `node`).
    pub hostname_prefix: Option<String>,
    /// Install disk (default `/dev/sda`).
    pub disk: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at: u64, arch: Option<u16>) -> DiscoveredMac {
        DiscoveredMac {
            mac: "52:54:00:aa:bb:cc".parse().unwrap(),
            first_seen_ms: at,
            last_seen_ms: at,
            count: 1,
            client: DhcpClient::Pxe,
            arch,
            vendor_class: Some("PXEClient:Arch:00000:UNDI:002001".into()),
            user_class: None,
            inspection: None,
        }
    }

    #[test]
    fn merging_keeps_the_first_sighting_and_the_latest_request() {
        let mut a = seen(100, Some(0));
        let mut b = seen(200, Some(7));
        b.client = DhcpClient::Ipxe;
        b.user_class = Some("iPXE".into());
        a.merge(&b);
        assert_eq!((a.first_seen_ms, a.last_seen_ms, a.count), (100, 200, 2));
        assert_eq!((a.client, a.arch), (DhcpClient::Ipxe, Some(7)));
        // An older sighting arriving late changes only the count and the first time.
        a.merge(&seen(50, Some(0)));
        assert_eq!((a.first_seen_ms, a.last_seen_ms, a.count), (50, 200, 3));
        assert_eq!(a.arch, Some(7));
        assert_eq!(
            a.asked(),
            "IPXE, arch 7 (x86-64 UEFI), PXEClient:Arch:00000:UNDI:002001, user class iPXE"
        );
    }

    #[test]
    fn facts_name_arch_and_firmware_and_classes_are_cut_and_escaped() {
        let facts = seen(1, Some(0)).facts();
        assert!(facts.contains(&("arch", "x86_64".into())));
        assert!(facts.contains(&("firmware", "bios".into())));
        assert!(
            seen(1, Some(11))
                .facts()
                .contains(&("arch", "arm64".into()))
        );
        assert_eq!(clean_class(b"a\x1bb"), "a\\u{1b}b");
        assert_eq!(clean_class(&[b'x'; 200]).len(), MAX_CLASS_LEN);
    }

    fn inspected(at: u64, gib: u64, disks_gib: &[u64]) -> Inspection {
        let mut inventory = Inventory {
            memory_bytes: gib << 30,
            dmi: crate::inventory::Dmi {
                vendor: "QEMU".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        inventory.cpu.cores = 2;
        inventory.firmware = FirmwareKind::Uefi;
        for (i, g) in disks_gib.iter().enumerate() {
            inventory.disks.push(crate::inventory::Disk {
                name: format!("vd{}", (b'a' + i as u8) as char),
                by_path: String::new(),
                size_bytes: g << 30,
                model: String::new(),
                serial: format!("S{i}"),
                wwn: String::new(),
                rotational: false,
                removable: false,
                signatures: Vec::new(),
                partitions: Vec::new(),
            });
        }
        Inspection {
            at_ms: at,
            inventory,
        }
    }

    #[test]
    fn a_sighting_never_erases_an_inspection_and_a_newer_one_replaces_it() {
        let mut a = seen(100, Some(0));
        a.inspection = Some(inspected(150, 1, &[2]));
        a.merge(&seen(200, Some(0)));
        assert_eq!(a.inspection.as_ref().unwrap().at_ms, 150);
        // A report (count 0) changes nothing of what DHCP saw.
        let mut b = seen(300, None);
        b.count = 0;
        b.client = DhcpClient::Plain;
        b.vendor_class = None;
        b.inspection = Some(inspected(300, 4, &[2]));
        a.merge(&b);
        assert_eq!(a.inspection.as_ref().unwrap().inventory.memory_gib(), 4);
        assert_eq!((a.count, a.last_seen_ms, a.arch), (2, 200, Some(0)));
        assert_eq!(a.client, DhcpClient::Pxe);
        assert!(a.vendor_class.is_some());
        let mut old = seen(50, Some(0));
        old.inspection = Some(inspected(50, 8, &[]));
        a.merge(&old);
        assert_eq!(
            a.inspection.as_ref().unwrap().at_ms,
            300,
            "an older report is ignored"
        );
    }

    #[test]
    fn rule_conditions_read_dhcp_facts_and_the_inspected_inventory() {
        let c = |s: &str| RuleCondition::parse(s).unwrap();
        let mut d = seen(1, Some(0));
        assert!(d.satisfies(&c("firmware=bios")));
        assert!(d.satisfies(&c("arch!=arm64")));
        // Not inspected: an inventory condition does not hold, whatever it says.
        assert!(!d.satisfies(&c("inventory.memory_gib>=0")));
        d.inspection = Some(inspected(2, 2, &[4, 8]));
        assert!(d.satisfies(&c("firmware=uefi")), "the agent's word wins");
        assert!(!d.satisfies(&c("firmware=bios")));
        assert!(d.satisfies(&c("vendor=QEMU")));
        assert!(d.satisfies(&c("inventory.memory_gib>=2")));
        assert!(!d.satisfies(&c("inventory.memory_gib>2")));
        assert!(d.satisfies(&c("inventory.cpu_cores=2")));
        assert!(d.satisfies(&c("inventory.disks=2")));
        assert!(d.satisfies(&c("disk.size>=8G")));
        assert!(!d.satisfies(&c("disk.size>8G")));
        for bad in [
            "colour=red",
            "arch>=1",
            "inventory.memory_gib>=lots",
            "disk.size>=9X",
            "arch",
        ] {
            assert!(RuleCondition::parse(bad).is_err(), "{bad}");
        }
    }
}
