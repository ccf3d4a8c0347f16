//! One UDP :68 socket for every simulated machine, as the wire allows: clients ask by
//! broadcast and Kiln answers by broadcast (the machines set the broadcast flag), so one
//! socket bound to the rack's interface hears every answer; each goes to the machine that
//! waits for its (xid, chaddr).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::dhcp::{self, Asker, Lease};

/// How long a machine waits for an answer before it sends again, and how often it tries
/// (iPXE waits 1, 2, 4, 8 ... s; PXE firmware 4, 8, 16, 32 s).
const RETRY_AFTER: Duration = Duration::from_secs(4);
const TRIES: u32 = 4;

type Key = (u32, [u8; 6]);

pub struct DhcpPort {
    socket: UdpSocket,
    waiting: Mutex<HashMap<Key, mpsc::UnboundedSender<Vec<u8>>>>,
    next_xid: AtomicU32,
    /// Where requests go: 255.255.255.255:67 (a test may name another port).
    server: SocketAddr,
}

/// One DORA's result and how long each round trip took.
#[derive(Debug, Clone)]
pub struct Dora {
    pub lease: Lease,
    /// DISCOVER → OFFER and REQUEST → ACK of the round that succeeded.
    pub offer_after: Duration,
    pub ack_after: Duration,
    /// Requests sent again because no answer came in time (a sign of drops).
    pub resent: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoraError {
    /// no answer after every try
    #[error("no DHCP {0} after {TRIES} tries")]
    NoAnswer(&'static str),
    /// the server refused the request
    #[error("DHCPNAK")]
    Nak,
    /// sending failed
    #[error("sending a DHCP request: {0}")]
    Send(#[from] io::Error),
}

impl DhcpPort {
    /// Binds 0.0.0.0:`client_port` on `interface` (SO_BINDTODEVICE, broadcast allowed) and
    /// starts handing answers out; requests go to the broadcast address, `server_port`.
    pub fn bind(interface: &str, client_port: u16, server_port: u16) -> io::Result<Arc<DhcpPort>> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(interface.as_bytes()))?;
        // A boot storm: a thousand OFFERs may arrive before the reader runs.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&s, 8 << 20).is_err() {
            let _ = s.set_recv_buffer_size(8 << 20);
        }
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, client_port)).into())?;
        let socket = UdpSocket::from_std(s.into())?;
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let port = Arc::new(DhcpPort {
            socket,
            waiting: Mutex::new(HashMap::new()),
            next_xid: AtomicU32::new(seed),
            server: SocketAddrV4::new(Ipv4Addr::BROADCAST, server_port).into(),
        });
        tokio::spawn(Arc::clone(&port).hand_out());
        Ok(port)
    }

    async fn hand_out(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, _)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Some(key) = dhcp::reply_key(&buf[..n]) else {
                continue;
            };
            let tx = self.waiting().get(&key).cloned();
            if let Some(tx) = tx {
                let _ = tx.send(buf[..n].to_vec());
            }
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, mpsc::UnboundedSender<Vec<u8>>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// DISCOVER, OFFER, REQUEST, ACK for `mac`, resending as clients do.
    pub async fn dora(&self, mac: [u8; 6], asker: Asker) -> Result<Dora, DoraError> {
        let xid = self.next_xid.fetch_add(0x9e37_79b9, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiting().insert((xid, mac), tx);
        let out = self.exchange(xid, mac, asker, &mut rx).await;
        self.waiting().remove(&(xid, mac));
        out
    }

    async fn exchange(
        &self,
        xid: u32,
        mac: [u8; 6],
        asker: Asker,
        rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    ) -> Result<Dora, DoraError> {
        let mut resent = 0;
        let discover = dhcp::discover(xid, mac, asker);
        let (offer, offer_after) = self
            .ask(&discover, MessageType::Offer, rx, &mut resent)
            .await?
            .ok_or(DoraError::NoAnswer("OFFER"))?;
        let request = dhcp::request(xid, mac, asker, &offer);
        let (lease, ack_after) = self
            .ask(&request, MessageType::Ack, rx, &mut resent)
            .await?
            .ok_or(DoraError::NoAnswer("ACK"))?;
        Ok(Dora {
            lease,
            offer_after,
            ack_after,
            resent,
        })
    }

    /// Sends `packet` until an answer of type `want` comes (a NAK is an error).
    async fn ask(
        &self,
        packet: &[u8],
        want: MessageType,
        rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        resent: &mut u32,
    ) -> Result<Option<(Lease, Duration)>, DoraError> {
        for attempt in 0..TRIES {
            if attempt > 0 {
                *resent += 1;
            }
            let sent = Instant::now();
            self.socket.send_to(packet, self.server).await?;
            let deadline = tokio::time::Instant::now() + RETRY_AFTER * (1 << attempt);
            while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                match dhcp::parse_reply(&bytes) {
                    Ok((ty, lease)) if ty == want => return Ok(Some((lease, sent.elapsed()))),
                    Ok((MessageType::Nak, _)) => return Err(DoraError::Nak),
                    _ => {}
                }
            }
        }
        Ok(None)
    }
}
