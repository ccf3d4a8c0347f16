//! What a request says about its sender: message type, MAC and what kind of
//! netboot client it is. Pure: no inventory, no config.

use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use kiln_model::MacAddr;

/// How the client wants to boot, judged from options 60 and 77.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Not a netboot client (e.g. an installed OS renewing its lease).
    Plain,
    /// Firmware PXE: option 60 starts with `PXEClient`.
    Pxe,
    /// UEFI HTTP boot: option 60 starts with `HTTPClient`.
    Http,
    /// iPXE itself: option 77 contains `iPXE`. Checked first, because iPXE also
    /// sends `PXEClient` in option 60 and must not get the binary again.
    Ipxe,
}

impl ClientKind {
    pub fn is_netboot(self) -> bool {
        self != ClientKind::Plain
    }
}

/// The facts `decide` needs from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub msg_type: MessageType,
    pub mac: MacAddr,
    pub kind: ClientKind,
    /// Option 93 (first entry), else the `Arch:NNNNN` field of option 60.
    pub arch: Option<u16>,
    /// Option 60 as text (`PXEClient:Arch:00007:UNDI:003016`), for events.
    pub vendor_class: Option<String>,
    /// Option 77 as text (`iPXE`), for discovery.
    pub user_class: Option<String>,
    /// Option 97, echoed to PXE clients.
    pub uuid: Option<Vec<u8>>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client selected.
    pub server_id: Option<Ipv4Addr>,
    /// Option 55, to know whether the client asked for option 67.
    pub wants_bootfile_option: bool,
}

/// Why a packet is not a request we can classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// op = BOOTREPLY: another server's answer (or our own, looped back).
    BootReply,
    /// op is neither request nor reply.
    BadOpcode,
    /// htype is not Ethernet or hlen is not 6: we key machines by Ethernet MAC.
    NotEthernet,
    /// Plain BOOTP (no option 53): Kiln speaks DHCP only.
    NoMessageType,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::BootReply => "BOOTREPLY",
            Unusable::BadOpcode => "unknown op code",
            Unusable::NotEthernet => "not an Ethernet client (htype/hlen)",
            Unusable::NoMessageType => "no DHCP message type (BOOTP?)",
        })
    }
}

pub fn classify(msg: &Message) -> Result<ClientInfo, Unusable> {
    match msg.opcode() {
        Opcode::BootRequest => {}
        Opcode::BootReply => return Err(Unusable::BootReply),
        Opcode::Unknown(_) => return Err(Unusable::BadOpcode),
    }
    // Check hlen before touching chaddr(): dhcproto slices chaddr by hlen and
    // would panic on hlen > 16.
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Unusable::NotEthernet);
    }
    let mac = MacAddr::from_slice(msg.chaddr()).ok_or(Unusable::NotEthernet)?;
    let msg_type = msg.opts().msg_type().ok_or(Unusable::NoMessageType)?;

    let opts = msg.opts();
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.as_slice()),
        _ => None,
    };
    let user_class = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(uc)) => Some(uc.as_slice()),
        _ => None,
    };
    let is_ipxe = user_class.is_some_and(|uc| contains(uc, b"iPXE"));
    let kind = if is_ipxe {
        ClientKind::Ipxe
    } else if vendor_class.is_some_and(|v| v.starts_with(b"PXEClient")) {
        ClientKind::Pxe
    } else if vendor_class.is_some_and(|v| v.starts_with(b"HTTPClient")) {
        ClientKind::Http
    } else {
        ClientKind::Plain
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => vendor_class.and_then(arch_from_vendor_class),
    };
    let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(u)) => Some(u.clone()),
        _ => None,
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let wants_bootfile_option = matches!(
        opts.get(OptionCode::ParameterRequestList),
        Some(DhcpOption::ParameterRequestList(prl)) if prl.contains(&OptionCode::BootfileName)
    );
    Ok(ClientInfo {
        msg_type,
        mac,
        kind,
        arch,
        vendor_class: vendor_class.map(|v| String::from_utf8_lossy(v).into_owned()),
        user_class: user_class.map(kiln_model::discovery::clean_class),
        uuid,
        requested_ip,
        server_id,
        wants_bootfile_option,
    })
}

/// `PXEClient:Arch:00007:UNDI:003016` → 7. Fallback for firmware that omits option 93.
fn arch_from_vendor_class(vc: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(vc).ok()?;
    let rest = s.split_once(":Arch:")?.1;
    let digits = rest.split(':').next()?;
    if digits.len() != 5 {
        return None;
    }
    digits.parse().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_from_option_60() {
        assert_eq!(
            arch_from_vendor_class(b"PXEClient:Arch:00007:UNDI:003016"),
            Some(7)
        );
        assert_eq!(arch_from_vendor_class(b"HTTPClient:Arch:00016"), Some(16));
        assert_eq!(arch_from_vendor_class(b"PXEClient"), None);
        assert_eq!(arch_from_vendor_class(b"PXEClient:Arch:7x"), None);
        assert_eq!(arch_from_vendor_class(&[0xff, 0xfe]), None);
    }

    #[test]
    fn user_class_substring() {
        assert!(contains(b"\x04iPXE", b"iPXE"));
        assert!(contains(b"iPXE", b"iPXE"));
        assert!(!contains(b"iPX", b"iPXE"));
    }
}
