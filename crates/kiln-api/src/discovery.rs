//! Discovery: MACs that asked for DHCP on the provisioning network but are not enrolled
//! (`GET /api/v1/discovered`, `kiln discovered`), and their enrolment from that list
//! (`POST /api/v1/discovered/enroll`, `kiln enroll --from-discovered`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MacAddr;
use crate::event_data::DhcpClient;

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
}

impl DiscoveredMac {
    /// `self` then `later` (the same MAC): the first sighting stays, the rest is the latest.
    pub fn merge(&mut self, later: &DiscoveredMac) {
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
    /// `firmware` (`bios`, `uefi`), `client` (`pxe`, `ipxe`, `http`, `plain`).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
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
    /// `FACT=VALUE:K=V`: label `K=V` on machines whose fact matches (see [`DiscoveredMac::facts`]).
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
}
