//! The async shell: UDP sockets bound to one interface, and a loop of
//! recv → `handle_packet` → send. All policy lives in `decide`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_model::{DiscoverySink, Event, EventSink, SharedInventory};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{Config, Mode};
use crate::decide::{Decision, Destination, Ingress, Outcome};
use crate::wire::{Handled, handle_packet};

/// Largest datagram we read; DHCP messages are normally ≤ 576 bytes, jumbo-frame clients up to ~1500.
const RECV_BUF: usize = 4096;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The provisioning interface. Required: DHCP must never leak onto other networks.
    pub interface: String,
    pub config: Config,
    /// Server port, 67. Relay replies go to giaddr on this port too.
    pub port: u16,
    /// PXE boot-server port, 4011; bound in proxy mode only.
    pub pxe_port: u16,
    /// Client port, 68.
    pub client_port: u16,
}

impl ServerOptions {
    pub fn new(interface: impl Into<String>, config: Config) -> Self {
        ServerOptions {
            interface: interface.into(),
            config,
            port: 67,
            pxe_port: 4011,
            client_port: 68,
        }
    }

    /// The socket address for a reply; `sender` is the request's source.
    pub fn resolve(&self, destination: Destination, sender: SocketAddr) -> SocketAddr {
        match destination {
            Destination::Broadcast => {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, self.client_port).into()
            }
            Destination::Client(ip) => SocketAddrV4::new(ip, self.client_port).into(),
            Destination::Relay(ip) => SocketAddrV4::new(ip, self.port).into(),
            Destination::Sender => sender,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    /// no interface given: DHCP must be bound to the provisioning interface
    #[error(
        "no interface given: DHCP must be bound to the provisioning interface (refusing to serve on every interface)"
    )]
    NoInterface,
    /// server_ip is 0.0.0.0: clients need our address as server identifier (option 54)
    #[error("the DHCP server address is 0.0.0.0: set Kiln's address on the provisioning network")]
    NoServerIp,
    /// cannot open the DHCP socket
    #[error("cannot open the DHCP socket on interface {interface:?}, UDP port {port}: {source}")]
    Socket {
        interface: String,
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// A DHCP responder with its sockets bound: setup errors (no interface, port
/// taken) come from [`DhcpServer::bind`], so the caller can fail at start-up.
pub struct DhcpServer {
    opts: ServerOptions,
    dhcp: Option<UdpSocket>,
    pxe: Option<UdpSocket>,
    inv: SharedInventory,
    events: Arc<dyn EventSink>,
    discovery: Option<Arc<dyn DiscoverySink>>,
    leases: crate::inspect::SharedLeases,
}

impl DhcpServer {
    /// The inspection lease table (see [`crate::inspect`]), to share with whoever checks an
    /// inspected machine's address.
    pub fn with_leases(mut self, leases: crate::inspect::SharedLeases) -> Self {
        self.leases = leases;
        self
    }

    /// Reports MACs that are not enrolled to `sink` (discovery).
    pub fn with_discovery(mut self, sink: Arc<dyn DiscoverySink>) -> Self {
        self.discovery = Some(sink);
        self
    }

    /// Checks the options and binds the sockets (none in off mode).
    pub fn bind(
        opts: ServerOptions,
        inv: SharedInventory,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, DhcpError> {
        if opts.interface.is_empty() {
            return Err(DhcpError::NoInterface);
        }
        if opts.config.server_ip.is_unspecified() && opts.config.mode != Mode::Off {
            return Err(DhcpError::NoServerIp);
        }
        let (dhcp, pxe) = match opts.config.mode {
            Mode::Off => (None, None),
            Mode::Reservation => (Some(bind_udp(&opts.interface, opts.port)?), None),
            Mode::Proxy => (
                Some(bind_udp(&opts.interface, opts.port)?),
                Some(bind_udp(&opts.interface, opts.pxe_port)?),
            ),
        };
        Ok(DhcpServer {
            opts,
            dhcp,
            pxe,
            inv,
            events,
            discovery: None,
            leases: Default::default(),
        })
    }

    /// Answers until `shutdown` turns true (or its sender is dropped). Bad
    /// packets and failed sends are logged and counted, never fatal.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) -> Result<(), DhcpError> {
        let DhcpServer {
            opts,
            dhcp,
            pxe,
            inv,
            events,
            discovery,
            leases,
        } = self;
        let Some(dhcp) = dhcp else {
            info!(interface = %opts.interface, "DHCP is off");
            let _ = shutdown.wait_for(|stop| *stop).await;
            return Ok(());
        };
        info!(
            interface = %opts.interface, port = opts.port, mode = ?opts.config.mode,
            server_ip = %opts.config.server_ip, "DHCP listening"
        );
        let mut dhcp_buf = vec![0u8; RECV_BUF];
        let mut pxe_buf = vec![0u8; RECV_BUF];
        loop {
            let (socket, ingress, received) = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                r = dhcp.recv_from(&mut dhcp_buf) => (&dhcp, Ingress::Dhcp, r.map(|(n, src)| (&dhcp_buf[..n], src))),
                r = recv_maybe(pxe.as_ref(), &mut pxe_buf) => {
                    let Some(pxe) = pxe.as_ref() else { continue };
                    (pxe, Ingress::Pxe, r.map(|(n, src)| (&pxe_buf[..n], src)))
                }
            };
            let (packet, sender) = match received {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "DHCP receive failed");
                    // Do not spin if the error persists.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some((bytes, to)) = process(
                packet,
                sender,
                ingress,
                &opts,
                &inv,
                events.as_ref(),
                Strangers {
                    discovery: discovery.as_deref(),
                    leases: &leases,
                },
            ) else {
                continue;
            };
            if let Err(e) = socket.send_to(&bytes, to).await {
                warn!(error = %e, %to, "DHCP send failed");
                metrics::counter!("kiln_dhcp_send_errors_total").increment(1);
            }
        }
        info!(interface = %opts.interface, "DHCP stopped");
        Ok(())
    }
}

/// Binds and serves: [`DhcpServer::bind`] then [`DhcpServer::serve`].
pub async fn run(
    opts: ServerOptions,
    inv: SharedInventory,
    events: Arc<dyn EventSink>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DhcpError> {
    DhcpServer::bind(opts, inv, events)?.serve(shutdown).await
}

/// Where MACs that are not enrolled go: discovery, and inspection's leases.
struct Strangers<'a> {
    discovery: Option<&'a dyn DiscoverySink>,
    leases: &'a crate::inspect::SharedLeases,
}

/// One packet through the pure core, with metrics, logs and events. Returns
/// the reply bytes and where to send them.
fn process(
    packet: &[u8],
    sender: SocketAddr,
    ingress: Ingress,
    opts: &ServerOptions,
    inv: &SharedInventory,
    events: &dyn EventSink,
    strangers: Strangers<'_>,
) -> Option<(Vec<u8>, SocketAddr)> {
    let Strangers { discovery, leases } = strangers;
    let inventory = inv.load();
    let started = Instant::now();
    let handled = if opts.config.inspect.is_some() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
        crate::wire::handle_packet_inspecting(
            packet,
            ingress,
            &inventory,
            &opts.config,
            &mut leases,
            now,
        )
    } else {
        handle_packet(packet, ingress, &inventory, &opts.config)
    };
    metrics::histogram!("kiln_dhcp_decide_seconds").record(started.elapsed().as_secs_f64());
    let Handled { decision, bytes } = match handled {
        Ok(h) => h,
        Err(e) => {
            debug!(%sender, error = %e, "malformed DHCP packet");
            count(Outcome::Malformed);
            return None;
        }
    };
    count(decision.outcome);
    report(&decision, sender, events);
    if let (Some(sink), Some(seen)) = (discovery, &decision.unknown) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        sink.seen(kiln_model::DiscoveredMac {
            first_seen_ms: now,
            last_seen_ms: now,
            ..seen.clone()
        });
    }
    let reply = decision.reply.as_ref()?;
    Some((bytes?, opts.resolve(reply.destination, sender)))
}

fn count(outcome: Outcome) {
    metrics::counter!("kiln_dhcp_packets_total", "outcome" => outcome.as_str()).increment(1);
}

/// Events only for enrolled machines: unknown MACs could flood the event log.
fn report(decision: &Decision, sender: SocketAddr, events: &dyn EventSink) {
    match (&decision.machine, &decision.event) {
        (Some(hw), Some(data)) => {
            let event = Event::of(data.clone());
            info!(mac = %hw.mac, host = %hw.hostname, %sender, "{}: {}", event.kind, event.detail);
            let event = event
                .with_mac(hw.mac)
                .with_ip(hw.ip.into())
                .with_machine(hw.hostname.clone());
            events.emit(event);
        }
        _ => debug!(
            mac = ?decision.mac, %sender, outcome = decision.outcome.as_str(),
            "no DHCP answer: {}", decision.detail
        ),
    }
}

async fn recv_maybe(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The receive buffer DHCP asks for: a rack whose power comes back sends a thousand
/// DISCOVERs within a second; the default buffer (`rmem_default`, about 208 KiB) holds some
/// 200 of them and the rest would be dropped, each machine retrying only seconds later.
pub(crate) const STORM_BUFFER: usize = 4 << 20;

/// Sets [`STORM_BUFFER`]: past `net.core.rmem_max` when the process may (SO_RCVBUFFORCE
/// needs CAP_NET_ADMIN, which a DHCP server on a real interface has), else up to it.
fn room_for_a_boot_storm(socket: &Socket) {
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, STORM_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(STORM_BUFFER);
    }
}

/// 0.0.0.0:port bound to one interface (SO_BINDTODEVICE), with broadcast on
/// (replies to address-less clients) and SO_REUSEADDR (quick restarts).
pub(crate) fn bind_udp(interface: &str, port: u16) -> Result<UdpSocket, DhcpError> {
    let err = |source| DhcpError::Socket {
        interface: interface.to_string(),
        port,
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_broadcast(true).map_err(err)?;
    room_for_a_boot_storm(&socket);
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err)?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    use kiln_model::{Hardware, Inventory, MacAddr};

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn emit(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, 0x01]);

    #[tokio::test]
    async fn the_dhcp_socket_holds_a_boot_storm() {
        // SO_BINDTODEVICE needs root, as does SO_RCVBUFFORCE past rmem_max (CI runs as root).
        let socket = match bind_udp("lo", 0) {
            Err(DhcpError::Socket { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                return;
            }
            other => other.unwrap(),
        };
        // The kernel reports twice what was set (its bookkeeping overhead included).
        let size = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        assert!(size >= STORM_BUFFER, "receive buffer {size} bytes");
    }

    fn inventory() -> SharedInventory {
        SharedInventory::new(Inventory::new([Hardware {
            hostname: "node1".into(),
            mac: MAC,
            ip: Ipv4Addr::new(10, 77, 0, 11),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: None,
            nameservers: vec![],
            labels: Default::default(),
            disk: "/dev/sda".into(),
            vlan_id: None,
            bmc: None,
            netboot: true,
        }]))
    }

    fn pxe_packet(ty: MessageType, mac: MacAddr) -> Vec<u8> {
        // ciaddr = loopback so the reply is unicast back to the test socket.
        let lo = Ipv4Addr::LOCALHOST;
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut msg = Message::new_with_id(7, lo, zero, zero, zero, &mac.0);
        msg.opts_mut().insert(DhcpOption::MessageType(ty));
        msg.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    /// Sends `packet` to `to` until a reply arrives (the server may still be binding).
    async fn exchange(client: &UdpSocket, packet: &[u8], to: SocketAddr) -> Message {
        for _ in 0..50 {
            client.send_to(packet, to).await.unwrap();
            let mut buf = [0u8; 1500];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf)).await
            {
                return Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
            }
        }
        panic!("no reply from the DHCP server");
    }

    /// Starts the server on loopback; `None` when this environment may not
    /// bind to a device (unprivileged CI). The server binds port 0 (any free
    /// port) itself and the test reads the port off its socket: a port picked
    /// beforehand could be picked by a parallel test too, and with SO_REUSEADDR
    /// both servers would bind it and take each other's packets.
    async fn start(
        config: Config,
        client_port: u16,
    ) -> Option<(
        ServerOptions,
        Arc<Collect>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), DhcpError>>,
    )> {
        let mut opts = ServerOptions::new("lo", config);
        opts.port = 0;
        opts.pxe_port = 0;
        opts.client_port = client_port;
        let events = Arc::new(Collect::default());
        let sink: Arc<dyn EventSink> = events.clone();
        let mut server = match DhcpServer::bind(opts, inventory(), sink) {
            Ok(server) => server,
            Err(e) => {
                eprintln!("skipping: cannot bind a device here: {e}");
                return None;
            }
        };
        let port_of = |s: &Option<UdpSocket>| s.as_ref().map(|s| s.local_addr().unwrap().port());
        server.opts.port = port_of(&server.dhcp).expect("a DHCP socket");
        server.opts.pxe_port = port_of(&server.pxe).unwrap_or(0);
        let opts = server.opts.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(server.serve(stop_rx));
        Some((opts, events, stop_tx, server))
    }

    #[tokio::test]
    async fn refuses_empty_and_unknown_interfaces() {
        let (_tx, rx) = watch::channel(false);
        let cfg = Config::new(Ipv4Addr::LOCALHOST, "http://127.0.0.1:8080");
        let r = run(
            ServerOptions::new("", cfg.clone()),
            inventory(),
            Arc::new(kiln_model::NullSink),
            rx.clone(),
        )
        .await;
        assert!(matches!(r, Err(DhcpError::NoInterface)));
        let unset = Config::new(Ipv4Addr::UNSPECIFIED, "http://x");
        let r = run(
            ServerOptions::new("lo", unset),
            inventory(),
            Arc::new(kiln_model::NullSink),
            rx.clone(),
        )
        .await;
        assert!(matches!(r, Err(DhcpError::NoServerIp)));
        let mut opts = ServerOptions::new("kiln-no-such0", cfg);
        opts.port = 0;
        let r = run(opts, inventory(), Arc::new(kiln_model::NullSink), rx).await;
        assert!(matches!(r, Err(DhcpError::Socket { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn serves_on_loopback_survives_garbage_and_stops() {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client_port = client.local_addr().unwrap().port();
        let cfg = Config::new(Ipv4Addr::LOCALHOST, "http://127.0.0.1:8080");
        let Some((opts, events, stop, server)) = start(cfg, client_port).await else {
            return;
        };
        let to: SocketAddr = (Ipv4Addr::LOCALHOST, opts.port).into();

        client.send_to(b"not dhcp at all", to).await.unwrap();
        client
            .send_to(&pxe_packet(MessageType::Discover, MacAddr([9; 6])), to)
            .await
            .unwrap();
        let offer = exchange(&client, &pxe_packet(MessageType::Discover, MAC), to).await;
        assert_eq!(offer.opcode(), Opcode::BootReply);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 77, 0, 11));

        let seen = events.0.lock().unwrap().clone();
        assert!(!seen.is_empty(), "an offer to an enrolled MAC is an event");
        assert!(
            seen.iter()
                .all(|e| e.kind == kiln_model::EventKind::DhcpOffer && e.mac == Some(MAC)),
            "{seen:?}"
        );
        assert_eq!(seen[0].machine.as_deref(), Some("node1"));
        assert!(
            matches!(
                &seen[0].data,
                Some(kiln_model::event::EventData::Dhcp { boot_file: Some(f), xid, .. })
                    if f == "undionly.kpxe" && *xid != 0
            ),
            "{:?}",
            seen[0]
        );

        stop.send(true).unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops");
        done.unwrap().unwrap();
    }

    #[tokio::test]
    async fn proxy_mode_answers_the_pxe_port_to_the_sender() {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = Config {
            mode: Mode::Proxy,
            ..Config::new(Ipv4Addr::LOCALHOST, "http://127.0.0.1:8080")
        };
        // client_port deliberately wrong: the reply must go to the sender.
        let Some((opts, _events, stop, server)) = start(cfg, 9).await else {
            return;
        };
        let to: SocketAddr = (Ipv4Addr::LOCALHOST, opts.pxe_port).into();
        let ack = exchange(&client, &pxe_packet(MessageType::Request, MAC), to).await;
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn destinations_map_to_ports() {
        let opts = ServerOptions::new("eth1", Config::new(Ipv4Addr::LOCALHOST, "http://x"));
        let sender: SocketAddr = "10.0.0.5:4011".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(
            opts.resolve(Destination::Broadcast, sender),
            "255.255.255.255:68".parse().unwrap()
        );
        assert_eq!(
            opts.resolve(Destination::Client(ip), sender),
            "10.0.0.9:68".parse().unwrap()
        );
        assert_eq!(
            opts.resolve(Destination::Relay(ip), sender),
            "10.0.0.9:67".parse().unwrap()
        );
        assert_eq!(opts.resolve(Destination::Sender, sender), sender);
    }
}
