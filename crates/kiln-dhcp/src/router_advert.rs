//! A minimal IPv6 Router Advertisement, so iPXE does not stall (~16 s) waiting
//! for IPv6 autoconfiguration on a segment without a router. It says: no
//! default router here (lifetime 0), no DHCPv6 (M=0, O=0), no prefixes.

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Early advertisements come quickly (machines are booting now), then settle.
const INITIAL_INTERVAL: Duration = Duration::from_secs(4);
const INITIAL_COUNT: u32 = 3;
const INTERVAL: Duration = Duration::from_secs(30);
/// Answer solicitations promptly, but at most this often (a flood of
/// solicitations must not become a flood of advertisements).
const MIN_GAP: Duration = Duration::from_secs(1);
/// After a failed send (e.g. link-local address still tentative).
const RETRY: Duration = Duration::from_secs(1);
/// How soon the socket thread notices shutdown.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterAdvertError {
    /// no interface given for router advertisements
    #[error("no interface given for router advertisements")]
    NoInterface,
    /// cannot read the interface's index from sysfs
    #[error("cannot read the index of interface {interface:?}: {source}")]
    Interface {
        interface: String,
        #[source]
        source: io::Error,
    },
    /// cannot open the ICMPv6 socket
    #[error("cannot open the ICMPv6 socket on {interface:?}: {source}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    /// cannot start the router advertisement thread
    #[error("cannot start the router advertisement thread: {0}")]
    Thread(#[source] io::Error),
}

/// RFC 4861 §4.2 Router Advertisement. The checksum is left zero: the kernel
/// fills it for raw ICMPv6 sockets.
pub fn build_router_advert(source_mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut ra = vec![
        ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum (kernel)
        64, // cur hop limit for hosts that use it
        0,  // flags: M=0, O=0 (no DHCPv6)
        0,
        0, // router lifetime 0: we are not a default router
        0,
        0,
        0,
        0, // reachable time: unspecified
        0,
        0,
        0,
        0, // retrans timer: unspecified
    ];
    if let Some(mac) = source_mac {
        // Source link-layer address option: type 1, length 1 (× 8 bytes).
        ra.extend_from_slice(&[1, 1]);
        ra.extend_from_slice(&mac);
    }
    ra
}

/// Sends router advertisements on `interface` until `shutdown` turns true (or
/// its sender is dropped, or this future is dropped), and answers each Router
/// Solicitation promptly. Fails only if the socket cannot be set up; send
/// errors (e.g. link-local address still tentative) are logged and retried.
///
/// The socket work runs on a dedicated thread with short receive timeouts:
/// tokio can only poll a raw socket through `AsyncFd::register`, which is
/// `unsafe`, and the workspace forbids unsafe code.
pub async fn run_router_advert(
    interface: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RouterAdvertError> {
    if interface.is_empty() {
        return Err(RouterAdvertError::NoInterface);
    }
    let ifindex = read_sysfs(interface, "ifindex")
        .and_then(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        })
        .map_err(|source| RouterAdvertError::Interface {
            interface: interface.into(),
            source,
        })?;
    let mac = read_sysfs(interface, "address")
        .ok()
        .and_then(|s| parse_mac(&s));
    let socket = open_socket(interface, ifindex).map_err(|source| RouterAdvertError::Socket {
        interface: interface.into(),
        source,
    })?;
    let advertiser = Advertiser {
        interface: interface.to_string(),
        socket,
        ra: build_router_advert(mac),
        to: SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex)),
    };
    info!(
        interface,
        "sending IPv6 router advertisements (lifetime 0, no prefixes)"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("kiln-ra".into())
        .spawn(move || {
            advertiser.run(&thread_stop);
            let _ = done_tx.send(());
        })
        .map_err(RouterAdvertError::Thread)?;
    let _ = shutdown.wait_for(|stop| *stop).await;
    stop.store(true, Ordering::Relaxed);
    let _ = done_rx.await;
    Ok(())
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Advertiser {
    interface: String,
    socket: Socket,
    ra: Vec<u8>,
    to: SockAddr,
}

impl Advertiser {
    fn run(&self, stop: &AtomicBool) {
        let interface = self.interface.as_str();
        let mut sent_ok: u32 = 0;
        let mut last_sent: Option<Instant> = None;
        let mut next = Instant::now();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                match self.socket.send_to(&self.ra, &self.to) {
                    Ok(_) => {
                        sent_ok = sent_ok.saturating_add(1);
                        last_sent = Some(now);
                        next = now
                            + if sent_ok < INITIAL_COUNT {
                                INITIAL_INTERVAL
                            } else {
                                INTERVAL
                            };
                    }
                    Err(e) => {
                        warn!(interface, error = %e, "router advertisement not sent; retrying");
                        next = now + RETRY;
                    }
                }
                continue;
            }
            // Wake for the next send, a solicitation, or to notice `stop`.
            let wait = (next - now).min(POLL).max(Duration::from_millis(1));
            if let Err(e) = self.socket.set_read_timeout(Some(wait)) {
                warn!(interface, error = %e, "cannot set ICMPv6 receive timeout");
                std::thread::sleep(wait);
                continue;
            }
            match (&self.socket).read(&mut buf) {
                // Raw ICMPv6 sockets deliver the ICMPv6 message without the IPv6 header.
                Ok(n) if n >= 8 && buf[0] == ROUTER_SOLICITATION && buf[1] == 0 => {
                    let earliest = last_sent.map_or(now, |t| t + MIN_GAP);
                    next = next.min(earliest.max(now));
                    debug!(interface, "router solicitation seen; advertising");
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    debug!(interface, error = %e, "ICMPv6 receive failed");
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

fn open_socket(interface: &str, ifindex: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    // RFC 4861 §6.1.2: receivers drop advertisements whose hop limit is not 255.
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.set_multicast_loop_v6(false)?;
    // Solicitations go to all-routers; a host (forwarding off) has not joined it.
    if let Err(e) = socket.join_multicast_v6(&ALL_ROUTERS, ifindex) {
        warn!(interface, error = %e, "cannot join ff02::2; only periodic advertisements");
    }
    Ok(socket)
}

fn read_sysfs(interface: &str, file: &str) -> io::Result<String> {
    // A name with '/' or ".." would read another path: interface names never contain them.
    if interface.contains('/') || interface.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}"))
}

/// `aa:bb:cc:dd:ee:ff` → bytes; `None` for malformed or all-zero (loopback) addresses.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mac = s.trim().parse::<kiln_model::MacAddr>().ok()?.octets();
    (mac != [0; 6]).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_without_link_layer_option() {
        let ra = build_router_advert(None);
        assert_eq!(ra, [134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn advert_with_source_link_layer_address() {
        let ra = build_router_advert(Some([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(ra.len(), 24);
        assert_eq!(ra[0], 134, "type: router advertisement");
        assert_eq!(ra[4], 64, "cur hop limit");
        assert_eq!(ra[5] & 0xc0, 0, "M and O flags clear");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&ra[16..], &[1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn mac_from_sysfs() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("00:00:00:00:00:00\n"), None);
        assert_eq!(parse_mac("garbage"), None);
    }

    #[test]
    fn refuses_odd_interface_names() {
        assert!(read_sysfs("../etc", "ifindex").is_err());
        assert!(read_sysfs("a/b", "ifindex").is_err());
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[tokio::test]
    async fn refuses_empty_and_unknown_interfaces() {
        let (_tx, rx) = watch::channel(false);
        assert!(matches!(
            run_router_advert("", rx.clone()).await,
            Err(RouterAdvertError::NoInterface)
        ));
        let r = run_router_advert("kiln-no-such0", rx).await;
        assert!(
            matches!(r, Err(RouterAdvertError::Interface { .. })),
            "{r:?}"
        );
    }

    /// On loopback the sends may fail (no multicast); the loop must keep
    /// going and still stop promptly.
    #[tokio::test]
    async fn starts_and_stops_on_loopback() {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { run_router_advert("lo", rx).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(true).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("stops")
            .unwrap();
        match r {
            Ok(()) => {}
            Err(RouterAdvertError::Socket { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                eprintln!("skipping: no raw sockets here");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
