//! Which boot file a netboot client gets, from its kind and option 93 arch.

use kiln_model::MacAddr;

use crate::client::{ClientInfo, ClientKind};
use crate::config::Config;

/// How the boot file travels, which also decides what we echo in option 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// A first-stage iPXE binary fetched by firmware PXE over TFTP.
    Tftp,
    /// A full `http://` URL for UEFI HTTP boot (arch 16, 19).
    Http,
    /// The per-machine iPXE script URL, for a client that already runs iPXE.
    IpxeScript,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    pub name: String,
    pub kind: BootKind,
}

/// `None` for non-netboot clients and architectures we have no binary for.
pub fn select(client: &ClientInfo, cfg: &Config) -> Option<BootFile> {
    let tftp = |name: &str| {
        Some(BootFile {
            name: name.to_string(),
            kind: BootKind::Tftp,
        })
    };
    let http = |name: &str| {
        Some(BootFile {
            name: format!("{}/boot/{name}", cfg.http_base()),
            kind: BootKind::Http,
        })
    };
    match client.kind {
        ClientKind::Plain => None,
        // Not the binary again, or iPXE chainloads itself forever.
        ClientKind::Ipxe => Some(BootFile {
            name: ipxe_script_url(cfg, &client.mac),
            kind: BootKind::IpxeScript,
        }),
        // PXE firmware that omits option 93 is old BIOS firmware.
        ClientKind::Pxe | ClientKind::Http => match client.arch.unwrap_or(0) {
            0 if client.kind == ClientKind::Pxe => tftp(&cfg.boot.bios),
            6 | 7 | 9 if client.kind == ClientKind::Pxe => tftp(&cfg.boot.efi_x64),
            10 | 11 if client.kind == ClientKind::Pxe => tftp(&cfg.boot.efi_arm64),
            16 => http(&cfg.boot.efi_x64),
            19 => http(&cfg.boot.efi_arm64),
            _ => None,
        },
    }
}

pub fn ipxe_script_url(cfg: &Config, mac: &MacAddr) -> String {
    format!("{}/ipxe/{mac}/boot.ipxe", cfg.http_base())
}

/// Human name of an option 93 code, for events and logs.
pub use kiln_model::event::dhcp_arch_name as arch_name;
