//! Finding other DHCP servers on the provisioning segment (preflight): one DHCPDISCOVER from a
//! MAC that is plainly Kiln's probe, then every OFFER for it. The packets are built and read
//! here without I/O; [`listen`] is the thin UDP shell.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use kiln_model::MacAddr;

use crate::server::DhcpError;
use crate::wire::{PacketError, decode, encode};

/// The probe's MAC: locally administered (bit 1 of the first octet), unicast, then "kiln" in
/// ASCII, so a DHCP server's log names it plainly; the last octet varies per probe.
pub fn probe_mac(last: u8) -> MacAddr {
    MacAddr([0x0a, b'k', b'i', b'l', b'n', last])
}

/// Most offers a probe keeps: a segment full of answering hosts must not grow the report
/// without bound.
pub const MAX_OFFERS: usize = 16;

/// A DHCPDISCOVER from `mac` with transaction `xid`, asking for a broadcast reply (the probe
/// has no address the offer could be unicast to).
pub fn discover(xid: u32, mac: MacAddr) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &mac.0);
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::ServerIdentifier,
        OptionCode::AddressLeaseTime,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    opts.insert(DhcpOption::Hostname("kiln-preflight-probe".into()));
    encode(&msg).expect("a DISCOVER built here encodes")
}

/// What one server offered the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Option 54, else the sender's address.
    pub server: Ipv4Addr,
    /// The address offered (0.0.0.0 from a proxy DHCP server).
    pub offered: Ipv4Addr,
    /// Option 67 or the `file` field, when given.
    pub boot_file: Option<String>,
    /// Option 60 echoed (`PXEClient`: a proxy DHCP server).
    pub vendor_class: Option<String>,
}

/// The OFFER for this probe (`xid`, `mac`) in `bytes`, from `sender`; `None` for anything else
/// (other clients' traffic, requests, our own DISCOVER looped back).
pub fn read_offer(
    bytes: &[u8],
    sender: Ipv4Addr,
    xid: u32,
    mac: MacAddr,
) -> Result<Option<Offer>, PacketError> {
    let msg = decode(bytes)?;
    if msg.opcode() != Opcode::BootReply
        || msg.xid() != xid
        || msg.chaddr().get(..6) != Some(&mac.0[..])
    {
        return Ok(None);
    }
    let opts = msg.opts();
    if !matches!(
        opts.get(OptionCode::MessageType),
        Some(DhcpOption::MessageType(MessageType::Offer))
    ) {
        return Ok(None);
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => sender,
    };
    let text = |b: &[u8]| {
        let s = String::from_utf8_lossy(b)
            .trim_end_matches('\0')
            .to_string();
        (!s.is_empty()).then_some(s)
    };
    let boot_file = match opts.get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => text(b),
        _ => msg.fname().and_then(text),
    };
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(b)) => text(b),
        _ => None,
    };
    Ok(Some(Offer {
        server,
        offered: msg.yiaddr(),
        boot_file,
        vendor_class,
    }))
}

/// The offers of servers other than `own` (Kiln's address), one per server, at most
/// [`MAX_OFFERS`].
pub fn others(offers: impl IntoIterator<Item = Offer>, own: Ipv4Addr) -> Vec<Offer> {
    let mut kept: Vec<Offer> = Vec::new();
    for o in offers {
        if o.server != own && !kept.iter().any(|k| k.server == o.server) && kept.len() < MAX_OFFERS
        {
            kept.push(o);
        }
    }
    kept
}

/// Broadcasts one DISCOVER from `interface` (client port `client_port` → server port
/// `server_port`) and collects the offers that arrive within `wait`. Needs what the DHCP
/// service needs: the interface and the privileged port.
pub async fn listen(
    interface: &str,
    ports: (u16, u16),
    xid: u32,
    mac: MacAddr,
    wait: Duration,
) -> Result<Vec<Offer>, DhcpError> {
    let (client_port, server_port) = ports;
    let socket = crate::server::bind_udp(interface, client_port)?;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, server_port);
    socket
        .send_to(&discover(xid, mac), to)
        .await
        .map_err(|source| DhcpError::Socket {
            interface: interface.to_string(),
            port: client_port,
            source,
        })?;
    let mut offers = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while offers.len() < MAX_OFFERS * 4 {
        let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = got else { break };
        let std::net::IpAddr::V4(sender) = from.ip() else {
            continue;
        };
        if let Ok(Some(offer)) = read_offer(&buf[..n], sender, xid, mac) {
            offers.push(offer);
        }
    }
    Ok(offers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_bytes(xid: u32, mac: MacAddr, server: Option<Ipv4Addr>, pxe: bool) -> Vec<u8> {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut msg =
            Message::new_with_id(xid, zero, Ipv4Addr::new(10, 77, 0, 100), zero, zero, &mac.0);
        msg.set_opcode(Opcode::BootReply);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        if let Some(s) = server {
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(s));
        }
        if pxe {
            msg.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            msg.opts_mut()
                .insert(DhcpOption::BootfileName(b"pxelinux.0".to_vec()));
        }
        encode(&msg).unwrap()
    }

    #[test]
    fn the_probe_mac_is_local_unicast_and_says_kiln() {
        let m = probe_mac(7);
        assert_eq!(m.0[0] & 0b11, 0b10, "locally administered, unicast");
        assert_eq!(&m.0[1..5], b"kiln");
        assert_eq!(m.0[5], 7);
    }

    #[test]
    fn discover_is_a_broadcast_request_from_the_probe() {
        let mac = probe_mac(1);
        let msg = decode(&discover(0xabcd, mac)).unwrap();
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert_eq!(msg.xid(), 0xabcd);
        assert!(msg.flags().broadcast());
        assert_eq!(&msg.chaddr()[..6], &mac.0[..]);
        assert!(matches!(
            msg.opts().get(OptionCode::MessageType),
            Some(DhcpOption::MessageType(MessageType::Discover))
        ));
        // Our own DISCOVER, looped back, is not an offer.
        let sender = Ipv4Addr::new(10, 77, 0, 1);
        assert_eq!(
            read_offer(&discover(0xabcd, mac), sender, 0xabcd, mac).unwrap(),
            None
        );
    }

    #[test]
    fn offers_for_the_probe_are_read_and_others_ignored() {
        let mac = probe_mac(1);
        let from = Ipv4Addr::new(10, 77, 0, 250);
        let o = read_offer(&offer_bytes(5, mac, Some(from), false), from, 5, mac)
            .unwrap()
            .unwrap();
        assert_eq!(o.server, from);
        assert_eq!(o.offered, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!((o.boot_file, o.vendor_class), (None, None));
        // No option 54: the sender names the server.
        let o = read_offer(&offer_bytes(5, mac, None, true), from, 5, mac)
            .unwrap()
            .unwrap();
        assert_eq!(o.server, from);
        assert_eq!(o.vendor_class.as_deref(), Some("PXEClient"));
        assert_eq!(o.boot_file.as_deref(), Some("pxelinux.0"));
        // Another transaction, another client, garbage.
        assert_eq!(
            read_offer(&offer_bytes(6, mac, Some(from), false), from, 5, mac).unwrap(),
            None
        );
        let other = read_offer(
            &offer_bytes(5, probe_mac(2), Some(from), false),
            from,
            5,
            mac,
        );
        assert_eq!(other.unwrap(), None);
        assert!(read_offer(b"short", from, 5, mac).is_err());
    }

    #[test]
    fn our_own_offers_and_repeats_are_left_out() {
        let own = Ipv4Addr::new(10, 77, 0, 1);
        let offer = |last| Offer {
            server: Ipv4Addr::new(10, 77, 0, last),
            offered: Ipv4Addr::UNSPECIFIED,
            boot_file: None,
            vendor_class: None,
        };
        let kept = others([offer(1), offer(250), offer(250), offer(9)], own);
        let servers: Vec<u8> = kept.iter().map(|o| o.server.octets()[3]).collect();
        assert_eq!(servers, [250, 9]);
        let many = (2..=200).map(offer);
        assert_eq!(others(many, own).len(), MAX_OFFERS);
    }
}
