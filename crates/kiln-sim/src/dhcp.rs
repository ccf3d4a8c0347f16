//! The DHCP a simulated machine sends, as its firmware's iPXE and its agent OS's udhcpc send
//! it, and what it reads from the answers. Pure: bytes in, bytes out (the socket is
//! [`crate::dhcp_port`]).

use std::net::Ipv4Addr;

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// Which program on the machine is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// iPXE (QEMU's NIC ROM, or iPXE chain-loaded by PXE firmware): option 77 `iPXE`, option
    /// 60 `PXEClient`, option 93 the architecture. Kiln answers with the script URL.
    Ipxe { arch: u16 },
    /// The firmware's own PXE ROM (before iPXE): option 60 `PXEClient` and option 93, no
    /// user class. Kiln answers with iPXE's file name for TFTP.
    Pxe { arch: u16 },
    /// The agent OS's busybox udhcpc (and an installed OS): no netboot options.
    Plain,
}

/// What a DHCP exchange gave the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub server: Ipv4Addr,
    /// Option 67, else the `file` header field: for iPXE, the script URL.
    pub boot_file: Option<String>,
}

/// An answer the machine could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadReply {
    /// the packet is not a DHCP message
    #[error("not a DHCP message: {0}")]
    Decode(String),
    /// the answer is a request, or has no message type
    #[error("not a DHCP reply")]
    NotReply,
    /// the answer names no server (option 54)
    #[error("the {0:?} names no server (option 54)")]
    NoServer(MessageType),
}

fn header(xid: u32, mac: [u8; 6], ty: MessageType, asker: Asker) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &mac);
    // Broadcast answers: the machine has no address to be sent to yet (and, in the rack,
    // many machines share one socket that is bound to an interface, not to their addresses).
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(ty));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::BootfileName,
    ]));
    if let Asker::Ipxe { arch } | Asker::Pxe { arch } = asker {
        let vc = format!("PXEClient:Arch:{arch:05}:UNDI:002001");
        opts.insert(DhcpOption::ClassIdentifier(vc.into_bytes()));
        opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )));
        opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    }
    if let Asker::Ipxe { .. } = asker {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    msg
}

/// A DHCPDISCOVER from `mac`.
pub fn discover(xid: u32, mac: [u8; 6], asker: Asker) -> Vec<u8> {
    encode(&header(xid, mac, MessageType::Discover, asker))
}

/// The DHCPREQUEST that takes `offer` (same xid, the offered address, the offering server).
pub fn request(xid: u32, mac: [u8; 6], asker: Asker, offer: &Lease) -> Vec<u8> {
    let mut msg = header(xid, mac, MessageType::Request, asker);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.ip));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&msg)
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(400);
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a message we built encodes");
    buf
}

/// The xid and client MAC of a BOOTREPLY, to hand it to the machine that waits for it;
/// `None` for anything else (requests looped back, short packets).
pub fn reply_key(bytes: &[u8]) -> Option<(u32, [u8; 6])> {
    // op (1), htype, hlen, hops, xid (4..8), ..., chaddr (28..34)
    if bytes.len() < 240 || bytes[0] != 2 || bytes[2] != 6 {
        return None;
    }
    let xid = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
    let mac: [u8; 6] = bytes[28..34].try_into().ok()?;
    Some((xid, mac))
}

/// Reads an OFFER, ACK or NAK.
pub fn parse_reply(bytes: &[u8]) -> Result<(MessageType, Lease), BadReply> {
    let msg =
        Message::decode(&mut Decoder::new(bytes)).map_err(|e| BadReply::Decode(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(BadReply::NotReply);
    }
    let ty = match msg.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        _ => return Err(BadReply::NotReply),
    };
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => return Err(BadReply::NoServer(ty)),
    };
    let from_option = match msg.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let from_header = msg
        .fname_str()
        .and_then(Result::ok)
        .map(|s| s.trim_end_matches('\0').to_string());
    let boot_file = from_option
        .or(from_header)
        .map(|s| s.trim_end_matches('\0').to_string())
        .filter(|s| !s.is_empty());
    Ok((
        ty,
        Lease {
            ip: msg.yiaddr(),
            server,
            boot_file,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dhcp::client::{ClientKind, classify};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x5a, 0x00, 0x07];

    fn decode(b: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(b)).unwrap()
    }

    #[test]
    fn kiln_reads_our_ipxe_discover_as_ipxe_and_udhcpc_as_plain() {
        let d = decode(&discover(7, MAC, Asker::Ipxe { arch: 0 }));
        let info = classify(&d).unwrap();
        assert_eq!(info.kind, ClientKind::Ipxe);
        assert_eq!(info.arch, Some(0));
        assert_eq!(info.msg_type, MessageType::Discover);
        assert_eq!(info.mac.0, MAC);
        assert!(d.flags().broadcast());
        let p = decode(&discover(8, MAC, Asker::Plain));
        assert_eq!(classify(&p).unwrap().kind, ClientKind::Plain);
        let f = decode(&discover(9, MAC, Asker::Pxe { arch: 7 }));
        let info = classify(&f).unwrap();
        assert_eq!((info.kind, info.arch), (ClientKind::Pxe, Some(7)));
    }

    #[test]
    fn a_request_takes_the_offer() {
        let offer = Lease {
            ip: Ipv4Addr::new(10, 77, 1, 10),
            server: Ipv4Addr::new(10, 77, 0, 1),
            boot_file: None,
        };
        let r = decode(&request(9, MAC, Asker::Ipxe { arch: 7 }, &offer));
        let info = classify(&r).unwrap();
        assert_eq!(info.msg_type, MessageType::Request);
        assert_eq!(info.requested_ip, Some(offer.ip));
        assert_eq!(info.server_id, Some(offer.server));
        assert_eq!(info.arch, Some(7));
        assert_eq!(r.xid(), 9);
    }

    fn reply(ty: MessageType, file_opt: Option<&str>, file_hdr: Option<&str>) -> Vec<u8> {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut m =
            Message::new_with_id(0xabcd, zero, Ipv4Addr::new(10, 77, 1, 10), zero, zero, &MAC);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(ty));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 1)));
        if let Some(f) = file_opt {
            m.opts_mut()
                .insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
        }
        if let Some(f) = file_hdr {
            m.set_fname_str(f);
        }
        encode(&m)
    }

    #[test]
    fn reads_offers_with_the_boot_file_from_the_option_or_the_header() {
        let url = "http://10.77.0.1:8080/ipxe/52:54:00:5a:00:07/boot.ipxe";
        let b = reply(MessageType::Offer, Some(url), None);
        assert_eq!(reply_key(&b), Some((0xabcd, MAC)));
        let (ty, lease) = parse_reply(&b).unwrap();
        assert_eq!(ty, MessageType::Offer);
        assert_eq!(lease.ip, Ipv4Addr::new(10, 77, 1, 10));
        assert_eq!(lease.server, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(lease.boot_file.as_deref(), Some(url));
        let (_, h) = parse_reply(&reply(MessageType::Ack, None, Some("undionly.kpxe"))).unwrap();
        assert_eq!(h.boot_file.as_deref(), Some("undionly.kpxe"));
        let (_, none) = parse_reply(&reply(MessageType::Ack, None, None)).unwrap();
        assert_eq!(none.boot_file, None);
    }

    #[test]
    fn refuses_requests_and_garbage() {
        let d = discover(1, MAC, Asker::Plain);
        assert_eq!(reply_key(&d), None, "a request is not handed to a machine");
        assert_eq!(parse_reply(&d), Err(BadReply::NotReply));
        assert!(matches!(parse_reply(&[2, 1, 6]), Err(BadReply::Decode(_))));
        assert_eq!(reply_key(&[2; 10]), None);
    }
}
