//! Bytes in, bytes out: decode → decide → encode, without sockets. This is the
//! entry point for the shell, for byte-level tests and for fuzzing.

use std::net::Ipv4Addr;

use dhcproto::v4::{MAGIC, MIN_PACKET_SIZE, Message};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use kiln_model::{Hardware, Inventory, MacAddr};

use crate::config::{Config, Mode};
use crate::decide::{Decision, Ingress, decide_via};

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
const HEADER_LEN: usize = 240;

/// Why a datagram could not be handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// packet is {0} bytes, shorter than a DHCP header with magic cookie (240)
    #[error("packet is {0} bytes, shorter than a DHCP header with magic cookie (240)")]
    TooShort(usize),
    /// packet lacks the DHCP magic cookie (plain BOOTP or not DHCP at all)
    #[error("packet lacks the DHCP magic cookie (plain BOOTP or not DHCP at all)")]
    NoMagicCookie,
    /// option {code} has invalid length {len}
    #[error("option {code} has invalid length {len}")]
    BadOption { code: u8, len: usize },
    /// cannot decode the DHCP message
    #[error("cannot decode the DHCP message: {0}")]
    Decode(#[from] dhcproto::error::DecodeError),
    /// cannot encode the DHCP reply
    #[error("cannot encode the DHCP reply: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// A decision plus the encoded reply, ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub decision: Decision,
    /// `Some` exactly when `decision.reply` is.
    pub bytes: Option<Vec<u8>>,
}

/// Decodes one datagram, decides, encodes the reply. Never panics, whatever
/// the bytes; an error means the packet was malformed (or, in theory, our
/// reply did not encode).
pub fn handle_packet(
    bytes: &[u8],
    ingress: Ingress,
    inv: &Inventory,
    cfg: &Config,
) -> Result<Handled, PacketError> {
    let msg = decode(bytes)?;
    encoded(decide_via(&msg, ingress, inv, cfg))
}

/// [`handle_packet`] with inspection's lease table (see [`crate::decide_inspecting`]).
pub fn handle_packet_inspecting(
    bytes: &[u8],
    ingress: Ingress,
    inv: &Inventory,
    cfg: &Config,
    leases: &mut crate::inspect::Leases,
    now_ms: u64,
) -> Result<Handled, PacketError> {
    let msg = decode(bytes)?;
    encoded(crate::decide::decide_inspecting(
        &msg, ingress, inv, cfg, leases, now_ms,
    ))
}

fn encoded(decision: Decision) -> Result<Handled, PacketError> {
    let bytes = match &decision.reply {
        Some(reply) => Some(encode(&reply.message)?),
        None => None,
    };
    Ok(Handled { decision, bytes })
}

/// Decodes a DHCP message, refusing what dhcproto would otherwise panic on.
pub fn decode(bytes: &[u8]) -> Result<Message, PacketError> {
    if bytes.len() < HEADER_LEN {
        return Err(PacketError::TooShort(bytes.len()));
    }
    if bytes[236..HEADER_LEN] != MAGIC {
        return Err(PacketError::NoMagicCookie);
    }
    check_option_lengths(&bytes[HEADER_LEN..])?;
    Ok(Message::decode(&mut Decoder::new(bytes))?)
}

/// Encodes a reply, padded to the 300-byte BOOTP minimum some PXE ROMs insist on.
pub fn encode(msg: &Message) -> Result<Vec<u8>, PacketError> {
    let mut buf = Vec::with_capacity(576);
    msg.encode(&mut Encoder::new(&mut buf))?;
    if buf.len() < MIN_PACKET_SIZE {
        buf.resize(MIN_PACKET_SIZE, 0);
    }
    Ok(buf)
}

/// dhcproto 0.15 debug-asserts (and in one case subtracts without checking)
/// the length of a few fixed-size options, so a crafted packet would panic in
/// debug builds and fuzzing. Walk the options the way it does — consecutive
/// instances of one code are concatenated (RFC 3396) — and refuse bad lengths
/// before it sees them.
fn check_option_lengths(mut rest: &[u8]) -> Result<(), PacketError> {
    let mut current: Option<(u8, usize)> = None;
    loop {
        let code = match rest.first() {
            None => break,
            Some(&c) => c,
        };
        if code == 0 || code == 255 {
            if let Some((c, len)) = current.take() {
                check_one(c, len)?;
            }
            if code == 255 {
                break;
            }
            rest = &rest[1..];
            continue;
        }
        let Some(&len) = rest.get(1) else { break };
        let len = usize::from(len);
        if rest.len() < 2 + len {
            break; // truncated: dhcproto stops decoding here too
        }
        current = match current {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check_one(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        rest = &rest[2 + len..];
    }
    if let Some((c, len)) = current {
        check_one(c, len)?;
    }
    Ok(())
}

fn check_one(code: u8, len: usize) -> Result<(), PacketError> {
    let ok = match code {
        80 => len == 0,        // rapid commit
        81 => len >= 3,        // client FQDN: flags, rcode1, rcode2, name
        94 => len == 3,        // client network interface id
        151 => len >= 1,       // bulk leasequery status code
        152..=155 => len == 4, // bulk leasequery times
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(PacketError::BadOption { code, len })
    }
}

/// For the cargo-fuzz target: runs `handle_packet` on arbitrary bytes in both
/// modes and through both ports, with the packet's own chaddr enrolled so the
/// fuzzer reaches the reply paths. Must never panic.
pub fn fuzz_entry(data: &[u8]) {
    let mut machines = Vec::new();
    if let Some(mac) = data.get(28..34).and_then(MacAddr::from_slice) {
        machines.push(Hardware {
            hostname: "fuzz-node".into(),
            mac,
            ip: Ipv4Addr::new(10, 77, 0, 10),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            nameservers: vec![Ipv4Addr::new(10, 77, 0, 1)],
            labels: Default::default(),
            disk: "/dev/sda".into(),
            vlan_id: None,
            bmc: None,
            netboot: true,
        });
    }
    let inv = Inventory::new(machines);
    let mut cfg = Config::new(Ipv4Addr::new(10, 77, 0, 1), "http://10.77.0.1:8080");
    for mode in [Mode::Reservation, Mode::Proxy] {
        cfg.mode = mode;
        for ingress in [Ingress::Dhcp, Ingress::Pxe] {
            let _ = handle_packet(data, ingress, &inv, &cfg);
        }
    }
}
