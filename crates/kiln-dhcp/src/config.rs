//! What the DHCP responder is told by the operator: mode, our address, where
//! the HTTP server lives and which iPXE binaries to hand out.

use std::net::Ipv4Addr;

/// How Kiln takes part in DHCP on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Kiln is the DHCP server for enrolled machines: it leases their reserved
    /// addresses and nothing to anyone else.
    #[default]
    Reservation,
    /// Another DHCP server leases addresses; Kiln only adds boot information
    /// (ProxyDHCP, PXE spec 2.1) for enrolled netboot clients.
    Proxy,
    /// Never answer.
    Off,
}

/// First-stage iPXE binaries, as file names under the TFTP root (and under
/// `{http_base}/boot/` for UEFI HTTP boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Legacy BIOS PXE (arch 0).
    pub bios: String,
    /// x86 / x86-64 UEFI (arch 6, 7, 9; 16 over HTTP).
    pub efi_x64: String,
    /// ARM UEFI (arch 10, 11; 19 over HTTP).
    pub efi_arm64: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".into(),
            efi_x64: "ipxe.efi".into(),
            efi_arm64: "snp.efi".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Our address on the provisioning network: server identifier (54),
    /// `siaddr` (next server for TFTP).
    pub server_ip: Ipv4Addr,
    /// Base of Kiln's HTTP server, e.g. `http://10.77.0.1:8080` (no trailing slash needed).
    pub http_base: String,
    /// Lease time (option 51) for reserved addresses; T1/T2 are derived from it.
    pub lease_secs: u32,
    pub boot: BootFiles,
    /// Which enrolled machines this server answers (several servers, one state).
    pub segments: crate::segment::Segments,
    /// `--discovery inspect`: MACs not enrolled that netboot are answered too (see
    /// [`crate::inspect`]); `None` lists them only.
    pub inspect: Option<crate::inspect::Inspect>,
}

impl Config {
    /// Reservation mode, one-day leases, default iPXE binaries.
    pub fn new(server_ip: Ipv4Addr, http_base: impl Into<String>) -> Self {
        Config {
            mode: Mode::Reservation,
            server_ip,
            http_base: http_base.into(),
            lease_secs: 86_400,
            boot: BootFiles::default(),
            segments: crate::segment::Segments::All,
            inspect: None,
        }
    }

    /// `http_base` without a trailing slash, so joined URLs have exactly one.
    pub(crate) fn http_base(&self) -> &str {
        self.http_base.trim_end_matches('/')
    }
}
