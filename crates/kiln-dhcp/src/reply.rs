//! Building replies: the header fields and options each kind of answer carries.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode, UnknownOption};
use kiln_model::Hardware;

use crate::boot::{BootFile, BootKind};
use crate::client::ClientInfo;
use crate::config::{Config, Mode};

/// Header and the options every reply carries: xid, flags, giaddr and chaddr
/// copied, type (53), server id (54), relay agent info (82) echoed (RFC 3046).
pub(crate) fn base_reply(
    req: &Message,
    client: &ClientInfo,
    ty: MessageType,
    cfg: &Config,
) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(
        req.xid(),
        unspecified,
        unspecified,
        unspecified,
        req.giaddr(),
        &client.mac.0,
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(ty));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    if let Some(relay @ DhcpOption::RelayAgentInformation(_)) =
        req.opts().get(OptionCode::RelayAgentInformation)
    {
        opts.insert(relay.clone());
    }
    m
}

pub(crate) fn add_lease_options(m: &mut Message, hw: &Hardware, cfg: &Config, with_lease: bool) {
    let opts = m.opts_mut();
    opts.insert(DhcpOption::SubnetMask(hw.netmask));
    if let Some(gw) = hw.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if !hw.nameservers.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(hw.nameservers.clone()));
    }
    if !hw.hostname.is_empty() {
        opts.insert(DhcpOption::Hostname(hw.hostname.clone()));
    }
    if with_lease {
        let lease = cfg.lease_secs;
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(lease / 2));
        opts.insert(DhcpOption::Rebinding((u64::from(lease) * 7 / 8) as u32));
    }
}

/// The `file` field holds 128 bytes including its NUL; longer names go only in option 67.
const MAX_FILE_FIELD: usize = 127;

/// PXE vendor options (43): sub-option 6 (discovery control) = 8, "boot from
/// the file field, skip boot server discovery"; then end (255).
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// iPXE encapsulated options (175): sub-option 176 (no-pxedhcp) = 1, so iPXE
/// does not wait for ProxyDHCP offers that will never come.
const IPXE_NO_PXEDHCP: [u8; 3] = [176, 1, 1];

pub(crate) fn add_boot(
    m: &mut Message,
    client: &ClientInfo,
    boot: Option<&BootFile>,
    cfg: &Config,
) {
    let Some(boot) = boot else { return };
    m.set_siaddr(cfg.server_ip);
    if boot.name.len() <= MAX_FILE_FIELD {
        m.set_fname_str(&boot.name);
    }
    if client.wants_bootfile_option || boot.name.len() > MAX_FILE_FIELD {
        m.opts_mut()
            .insert(DhcpOption::BootfileName(boot.name.clone().into_bytes()));
    }
    let proxy = cfg.mode == Mode::Proxy;
    // In proxy mode iPXE must see PXEClient too, or it does not treat our
    // offer as a ProxyDHCP offer.
    let vendor_class: Option<&[u8]> = match boot.kind {
        BootKind::Http => Some(b"HTTPClient"),
        BootKind::Tftp => Some(b"PXEClient"),
        BootKind::IpxeScript if proxy => Some(b"PXEClient"),
        BootKind::IpxeScript => None,
    };
    let opts = m.opts_mut();
    if let Some(vc) = vendor_class {
        opts.insert(DhcpOption::ClassIdentifier(vc.to_vec()));
        if vc == b"PXEClient" {
            opts.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
        }
    }
    if boot.kind == BootKind::IpxeScript && !proxy {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175),
            IPXE_NO_PXEDHCP.to_vec(),
        )));
    }
    if let Some(uuid) = &client.uuid {
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
}
