//! The whole DHCP policy as one pure function: a decoded request, the
//! inventory and the config in; whether to answer, with what, and where, out.

use kiln_model::EventKind;
use kiln_model::event::{DhcpClient, DhcpMessage, EventData};
use std::net::Ipv4Addr;
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Message, MessageType};
use kiln_model::{DiscoveredMac, Hardware, Inventory, MacAddr};

use crate::boot::{self, BootFile};
use crate::client::{self, ClientInfo, ClientKind};
use crate::config::{Config, Mode};
use crate::reply::{add_boot, add_lease_options, base_reply};

/// Which socket the request arrived on. It matters in proxy mode, where the
/// PXE port (4011) carries the client's second round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The DHCP server port (67).
    Dhcp,
    /// The PXE boot-server port (4011).
    Pxe,
}

/// What happened to one packet; the `outcome` label of `kiln_dhcp_packets_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    Offer,
    Ack,
    Nak,
    /// Client released its lease (no reply).
    Release,
    /// Client declined the address, e.g. found it in use (no reply).
    Decline,
    /// MAC not enrolled.
    IgnoredUnknown,
    /// REQUEST that selected another server's offer.
    IgnoredOtherServer,
    /// A machine of another server's segment (see [`crate::Segments`]).
    IgnoredOtherSegment,
    /// Proxy mode: not a netboot client, netboot off, or an arch we cannot boot.
    IgnoredNotNetboot,
    /// Mode is off.
    IgnoredOff,
    /// Anything else we do not answer (BOOTREPLY, non-Ethernet, odd message types).
    IgnoredOther,
    /// Could not be decoded (set by `handle_packet`, never by `decide`).
    Malformed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Offer => "offer",
            Outcome::Ack => "ack",
            Outcome::Nak => "nak",
            Outcome::Release => "release",
            Outcome::Decline => "decline",
            Outcome::IgnoredUnknown => "ignored_unknown",
            Outcome::IgnoredOtherServer => "ignored_other_server",
            Outcome::IgnoredOtherSegment => "ignored_other_segment",
            Outcome::IgnoredNotNetboot => "ignored_not_netboot",
            Outcome::IgnoredOff => "ignored_off",
            Outcome::IgnoredOther => "ignored_other",
            Outcome::Malformed => "malformed",
        }
    }

    /// Event kind for outcomes worth an operator-visible event (enrolled machines only).
    pub fn event_kind(self) -> Option<EventKind> {
        match self {
            Outcome::Offer => Some(EventKind::DhcpOffer),
            Outcome::Ack => Some(EventKind::DhcpAck),
            Outcome::Nak => Some(EventKind::DhcpNak),
            Outcome::Release => Some(EventKind::DhcpRelease),
            Outcome::Decline => Some(EventKind::DhcpDecline),
            _ => None,
        }
    }
}

/// Where a reply goes (RFC 2131 §4.1). The shell maps these to socket addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255, client port (68). We do not inject ARP entries, so a
    /// client without an address is always reached by broadcast.
    Broadcast,
    /// Unicast to the client's current address (ciaddr), client port.
    Client(Ipv4Addr),
    /// Unicast to the relay agent (giaddr), server port (67).
    Relay(Ipv4Addr),
    /// Back to the datagram's source address and port (PXE port 4011 requests).
    Sender,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub message: Message,
    pub destination: Destination,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reply: Option<Reply>,
    /// The client MAC, when the packet had one.
    pub mac: Option<MacAddr>,
    /// The enrolled machine the packet came from; only these get events.
    pub machine: Option<Arc<Hardware>>,
    /// One line for the event or the debug log.
    pub detail: String,
    /// The event for an enrolled machine's answered (or released, declined) message.
    pub event: Option<EventData>,
    /// A MAC not enrolled and what it asked for (times left 0: the shell stamps them).
    pub unknown: Option<DiscoveredMac>,
}

impl Decision {
    fn ignore(outcome: Outcome, detail: impl Into<String>) -> Self {
        Decision {
            outcome,
            reply: None,
            mac: None,
            machine: None,
            detail: detail.into(),
            event: None,
            unknown: None,
        }
    }

    /// No reply, but an event (a release, a decline).
    fn noted(outcome: Outcome, data: EventData) -> Self {
        Decision {
            event: Some(data.clone()),
            ..Decision::ignore(outcome, data.to_string())
        }
    }

    fn with_mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    fn with_machine(mut self, hw: &Arc<Hardware>) -> Self {
        self.mac = Some(hw.mac);
        self.machine = Some(hw.clone());
        self
    }
}

/// `decide_via` for a request that arrived on the DHCP port.
pub fn decide(req: &Message, inv: &Inventory, cfg: &Config) -> Decision {
    decide_via(req, Ingress::Dhcp, inv, cfg)
}

pub fn decide_via(req: &Message, ingress: Ingress, inv: &Inventory, cfg: &Config) -> Decision {
    if cfg.mode == Mode::Off {
        return Decision::ignore(Outcome::IgnoredOff, "DHCP is off");
    }
    let client = match client::classify(req) {
        Ok(c) => c,
        Err(why) => return Decision::ignore(Outcome::IgnoredOther, why.to_string()),
    };
    let Some(hw) = inv.by_mac(&client.mac) else {
        let detail = format!("{:?} from unknown MAC {}", client.msg_type, client.mac);
        let unknown = DiscoveredMac {
            mac: client.mac,
            first_seen_ms: 0,
            last_seen_ms: 0,
            count: 1,
            client: event_client(client.kind),
            arch: client.arch,
            vendor_class: client
                .vendor_class
                .as_deref()
                .map(|v| kiln_model::discovery::clean_class(v.as_bytes())),
            user_class: client.user_class.clone(),
            inspection: None,
        };
        return Decision {
            unknown: Some(unknown),
            ..Decision::ignore(Outcome::IgnoredUnknown, detail).with_mac(client.mac)
        };
    };
    if let Err(why) = cfg.segments.answers(hw, req.giaddr(), cfg.server_ip) {
        return Decision::ignore(Outcome::IgnoredOtherSegment, why).with_machine(hw);
    }
    let decision = match cfg.mode {
        Mode::Reservation => reservation(req, &client, hw, ingress, cfg),
        Mode::Proxy => proxy(req, &client, hw, ingress, cfg),
        Mode::Off => Decision::ignore(Outcome::IgnoredOff, "DHCP is off"),
    };
    decision.with_machine(hw)
}

/// [`decide_via`], and with `--discovery inspect` (`cfg.inspect`) an answer for a MAC that is
/// not enrolled: a netboot client (or, in reservation mode, a plain client still holding the
/// lease its netboot got) is answered as a machine named `inspect-` and its MAC's hex digits,
/// with an address from the pool for [`crate::inspect::INSPECT_LEASE_SECS`]. Such a decision
/// names no machine (no events: anyone can send one), still reports the MAC to discovery, and
/// records the lease in `leases`.
pub fn decide_inspecting(
    req: &Message,
    ingress: Ingress,
    inv: &Inventory,
    cfg: &Config,
    leases: &mut crate::inspect::Leases,
    now_ms: u64,
) -> Decision {
    let decision = decide_via(req, ingress, inv, cfg);
    let Some(inspect) = cfg.inspect.as_ref() else {
        return decision;
    };
    if decision.outcome != Outcome::IgnoredUnknown {
        return decision;
    }
    let Ok(client) = client::classify(req) else {
        return decision;
    };
    let unknown = decision.unknown.clone();
    let keep = |mut d: Decision| {
        d.mac = Some(client.mac);
        d.machine = None;
        d.event = None;
        d.unknown = unknown.clone();
        d
    };
    let guest =
        |ip: Ipv4Addr, netmask: Ipv4Addr| Hardware::inspection_guest(client.mac, ip, netmask);
    match cfg.mode {
        Mode::Proxy => keep(proxy(
            req,
            &client,
            &guest(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
            ingress,
            cfg,
        )),
        Mode::Reservation => {
            let Some(pool) = inspect.pool.as_ref() else {
                return decision;
            };
            let ip = match client.msg_type {
                MessageType::Release => {
                    leases.release(&client.mac);
                    return decision;
                }
                MessageType::Discover | MessageType::Request if client.kind.is_netboot() => {
                    let lease_ms = u64::from(inspect.lease_secs) * 1000;
                    let taken = |ip: Ipv4Addr| inv.by_ip(&ip).is_some();
                    leases.lease(client.mac, now_ms, lease_ms, pool, &taken)
                }
                MessageType::Discover | MessageType::Request => {
                    let held = leases.held(&client.mac, now_ms);
                    if let Some(ip) = held {
                        let lease_ms = u64::from(inspect.lease_secs) * 1000;
                        let taken = |ip: Ipv4Addr| inv.by_ip(&ip).is_some();
                        leases.lease(client.mac, now_ms, lease_ms, pool, &taken);
                        Some(ip)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let Some(ip) = ip else {
                return Decision {
                    detail: format!("{} (inspection: no pool address for it)", decision.detail),
                    ..decision
                };
            };
            let cfg = Config {
                lease_secs: inspect.lease_secs,
                ..cfg.clone()
            };
            keep(reservation(
                req,
                &client,
                &guest(ip, pool.netmask),
                ingress,
                &cfg,
            ))
        }
        Mode::Off => decision,
    }
}

fn reservation(
    req: &Message,
    client: &ClientInfo,
    hw: &Hardware,
    ingress: Ingress,
    cfg: &Config,
) -> Decision {
    if ingress == Ingress::Pxe {
        return Decision::ignore(
            Outcome::IgnoredOther,
            "PXE port request in reservation mode",
        );
    }
    let boot = if hw.netboot {
        boot::select(client, cfg)
    } else {
        None
    };
    let r = Reserved {
        req,
        client,
        hw,
        ingress,
        cfg,
        boot: boot.as_ref(),
    };
    match client.msg_type {
        MessageType::Discover => r.offer(),
        MessageType::Request => r.request(),
        MessageType::Inform => r.inform(),
        MessageType::Release => {
            let ev = dhcp_event(DhcpMessage::Release, req, client, hw, None).with_ip(req.ciaddr());
            Decision::noted(Outcome::Release, ev.0)
        }
        MessageType::Decline => {
            let ip = client.requested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let ev = dhcp_event(DhcpMessage::Decline, req, client, hw, None).with_ip(ip);
            Decision::noted(Outcome::Decline, ev.0)
        }
        other => Decision::ignore(Outcome::IgnoredOther, format!("{other:?} is not handled")),
    }
}

/// A message from a machine with a reserved address, and what to answer with.
struct Reserved<'a> {
    req: &'a Message,
    client: &'a ClientInfo,
    hw: &'a Hardware,
    ingress: Ingress,
    cfg: &'a Config,
    boot: Option<&'a BootFile>,
}

impl Reserved<'_> {
    fn offer(&self) -> Decision {
        let (req, client, hw, cfg) = (self.req, self.client, self.hw, self.cfg);
        let mut m = base_reply(req, client, MessageType::Offer, cfg);
        m.set_yiaddr(hw.ip);
        add_lease_options(&mut m, hw, cfg, true);
        add_boot(&mut m, client, self.boot, cfg);
        let ev = dhcp_event(DhcpMessage::Offer, req, client, hw, self.boot).with_ip(hw.ip);
        answer(
            Outcome::Offer,
            m,
            destination(req, MessageType::Offer, self.ingress),
            ev.0,
        )
    }

    fn request(&self) -> Decision {
        let (req, client, hw, cfg) = (self.req, self.client, self.hw, self.cfg);
        if let Some(sid) = client.server_id
            && sid != cfg.server_ip
        {
            return Decision::ignore(
                Outcome::IgnoredOtherServer,
                format!("client selected server {sid}"),
            );
        }
        let ciaddr = non_zero(req.ciaddr());
        let Some(wanted) = client.requested_ip.or(ciaddr) else {
            return Decision::ignore(Outcome::IgnoredOther, "REQUEST names no address");
        };
        if wanted != hw.ip {
            return self.nak(wanted);
        }
        let mut m = base_reply(req, client, MessageType::Ack, cfg);
        m.set_yiaddr(hw.ip).set_ciaddr(req.ciaddr());
        add_lease_options(&mut m, hw, cfg, true);
        add_boot(&mut m, client, self.boot, cfg);
        let ev = dhcp_event(DhcpMessage::Ack, req, client, hw, self.boot).with_ip(hw.ip);
        answer(
            Outcome::Ack,
            m,
            destination(req, MessageType::Ack, self.ingress),
            ev.0,
        )
    }

    /// A REQUEST for another address than the reserved one.
    fn nak(&self, wanted: Ipv4Addr) -> Decision {
        let req = self.req;
        let mut m = base_reply(req, self.client, MessageType::Nak, self.cfg);
        let why = format!("{wanted} is not reserved for this client");
        m.opts_mut().insert(DhcpOption::Message(why));
        if !req.giaddr().is_unspecified() {
            // RFC 2131 §4.3.2: the relay must broadcast a NAK.
            m.set_flags(m.flags().set_broadcast());
        }
        let mut ev = dhcp_event(DhcpMessage::Nak, req, self.client, self.hw, None).with_ip(wanted);
        if let EventData::Dhcp { reserved, .. } = &mut ev.0 {
            *reserved = Some(self.hw.ip);
        }
        answer(
            Outcome::Nak,
            m,
            destination(req, MessageType::Nak, self.ingress),
            ev.0,
        )
    }

    /// RFC 2131 §3.4: configuration only; no yiaddr, no lease time.
    fn inform(&self) -> Decision {
        let (req, client, cfg) = (self.req, self.client, self.cfg);
        let mut m = base_reply(req, client, MessageType::Ack, cfg);
        m.set_ciaddr(req.ciaddr());
        add_lease_options(&mut m, self.hw, cfg, false);
        add_boot(&mut m, client, self.boot, cfg);
        let ev =
            dhcp_event(DhcpMessage::Inform, req, client, self.hw, self.boot).with_ip(req.ciaddr());
        answer(
            Outcome::Ack,
            m,
            destination(req, MessageType::Ack, self.ingress),
            ev.0,
        )
    }
}

/// ProxyDHCP: boot information only, never an address, never to a plain client.
fn proxy(
    req: &Message,
    client: &ClientInfo,
    hw: &Hardware,
    ingress: Ingress,
    cfg: &Config,
) -> Decision {
    if !hw.netboot || !client.kind.is_netboot() {
        let why = if hw.netboot {
            "not a netboot client"
        } else {
            "netboot is off for this machine"
        };
        return Decision::ignore(Outcome::IgnoredNotNetboot, why);
    }
    let Some(boot) = boot::select(client, cfg) else {
        let arch = client.arch.map_or("none".into(), |a| a.to_string());
        return Decision::ignore(
            Outcome::IgnoredNotNetboot,
            format!("no boot file for arch {arch}"),
        );
    };
    let (ty, outcome) = match (ingress, client.msg_type) {
        (Ingress::Dhcp, MessageType::Discover) => (MessageType::Offer, Outcome::Offer),
        (Ingress::Pxe, MessageType::Request) => (MessageType::Ack, Outcome::Ack),
        (_, other) => {
            // The lease itself is the other server's business.
            return Decision::ignore(
                Outcome::IgnoredOther,
                format!("proxy mode ignores {other:?} on {ingress:?} port"),
            );
        }
    };
    let mut m = base_reply(req, client, ty, cfg);
    if ty == MessageType::Ack {
        m.set_ciaddr(req.ciaddr());
    }
    add_boot(&mut m, client, Some(&boot), cfg);
    let message = if ty == MessageType::Offer {
        DhcpMessage::Offer
    } else {
        DhcpMessage::Ack
    };
    let mut ev = dhcp_event(message, req, client, hw, Some(&boot));
    if let EventData::Dhcp { proxy, .. } = &mut ev.0 {
        *proxy = true;
    }
    answer(outcome, m, destination(req, ty, ingress), ev.0)
}

/// A DHCP event under construction (see [`dhcp_event`]).
struct DhcpEvent(EventData);

impl DhcpEvent {
    fn with_ip(mut self, addr: Ipv4Addr) -> Self {
        if let EventData::Dhcp { ip, .. } = &mut self.0 {
            *ip = Some(addr);
        }
        self
    }
}

/// The event of a message from enrolled `hw`, before the address it names.
/// How the client wants to boot, as events and discovery say it.
fn event_client(kind: ClientKind) -> DhcpClient {
    match kind {
        ClientKind::Plain => DhcpClient::Plain,
        ClientKind::Pxe => DhcpClient::Pxe,
        ClientKind::Http => DhcpClient::Http,
        ClientKind::Ipxe => DhcpClient::Ipxe,
    }
}

fn dhcp_event(
    message: DhcpMessage,
    req: &Message,
    client: &ClientInfo,
    hw: &Hardware,
    boot: Option<&BootFile>,
) -> DhcpEvent {
    DhcpEvent(EventData::Dhcp {
        message,
        xid: req.xid(),
        proxy: false,
        ip: None,
        reserved: None,
        client: event_client(client.kind),
        arch: client.arch,
        vendor_class: client.vendor_class.clone(),
        boot_file: boot.map(|b| b.name.clone()),
        netboot: hw.netboot,
    })
}

fn answer(outcome: Outcome, message: Message, destination: Destination, ev: EventData) -> Decision {
    Decision {
        outcome,
        reply: Some(Reply {
            message,
            destination,
        }),
        mac: None,
        machine: None,
        detail: ev.to_string(),
        event: Some(ev),
        unknown: None,
    }
}

/// RFC 2131 §4.1, in the order the RFC gives.
fn destination(req: &Message, ty: MessageType, ingress: Ingress) -> Destination {
    if ingress == Ingress::Pxe {
        Destination::Sender
    } else if !req.giaddr().is_unspecified() {
        Destination::Relay(req.giaddr())
    } else if ty == MessageType::Nak {
        Destination::Broadcast
    } else if let Some(ciaddr) = non_zero(req.ciaddr()) {
        Destination::Client(ciaddr)
    } else {
        Destination::Broadcast
    }
}

fn non_zero(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}
