//! End to end over a real (virtual) wire, dora-style: two network namespaces
//! joined by a veth pair; the server runs in one, a client in the other, each
//! as a child process re-running this test binary in a "role". Nothing
//! touches the host's own interfaces. Needs root and iproute2:
//!
//! `cargo test -p kiln-dhcp netns -- --ignored --nocapture`

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use kiln_model::{Hardware, Inventory, MacAddr, NullSink, SharedInventory};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::{Config, ServerOptions};

const ROLE: &str = "KILN_NETNS_ROLE";
const IFACE: &str = "KILN_NETNS_IFACE";
const CLIENT_MAC: &str = "KILN_NETNS_CLIENT_MAC";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the namespaces (and with them the veth pair) however the test ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            ip(&["netns", "del", ns]);
        }
    }
}

/// Kills the server child we started, by its handle.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn role(ns: &str, role: &str, iface: &str, client_mac: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let test = format!("netns_tests::{role}_role");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--ignored", "--exact", &test, "--nocapture"]);
    cmd.env(ROLE, role)
        .env(IFACE, iface)
        .env(CLIENT_MAC, client_mac);
    cmd
}

#[test]
#[ignore = "needs root and iproute2; creates two network namespaces"]
fn netns_end_to_end() {
    if !ip(&["netns", "list"]) {
        eprintln!("skipping: `ip netns` unavailable");
        return;
    }
    let pid = std::process::id();
    let (srv, cli) = (format!("kdhcp-srv-{pid}"), format!("kdhcp-cli-{pid}"));
    let _cleanup = Namespaces(vec![srv.clone(), cli.clone()]);
    for ns in [&srv, &cli] {
        if !ip(&["netns", "add", ns]) {
            eprintln!("skipping: cannot create network namespaces (not root?)");
            return;
        }
    }
    let client_mac = "52:54:00:77:00:02";
    let steps: [&[&str]; 7] = [
        &[
            "-n", &srv, "link", "add", "kd-s", "type", "veth", "peer", "name", "kd-c", "netns",
            &cli,
        ],
        &["-n", &cli, "link", "set", "kd-c", "address", client_mac],
        &["-n", &srv, "addr", "add", "10.77.0.1/24", "dev", "kd-s"],
        &["-n", &srv, "link", "set", "kd-s", "up"],
        &["-n", &cli, "link", "set", "kd-c", "up"],
        &["-n", &srv, "link", "set", "lo", "up"],
        &["-n", &cli, "link", "set", "lo", "up"],
    ];
    for step in steps {
        assert!(ip(step), "ip {}", step.join(" "));
    }
    let server = KillOnDrop(role(&srv, "server", "kd-s", client_mac).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let status = role(&cli, "client", "kd-c", client_mac).status().unwrap();
    drop(server);
    assert!(status.success(), "client role failed");
}

/// Runs DHCP (reservation mode) and router advertisements on `$KILN_NETNS_IFACE` for a while.
#[test]
#[ignore = "a role of netns_end_to_end"]
fn server_role() {
    if std::env::var(ROLE).as_deref() != Ok("server") {
        return;
    }
    let iface = std::env::var(IFACE).unwrap();
    let mac: MacAddr = std::env::var(CLIENT_MAC).unwrap().parse().unwrap();
    let inv = SharedInventory::new(Inventory::new([Hardware {
        hostname: "node1".into(),
        mac,
        ip: Ipv4Addr::new(10, 77, 0, 11),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Some(SERVER_IP),
        nameservers: vec![SERVER_IP],
        labels: Default::default(),
        disk: "/dev/vda".into(),
        vlan_id: None,
        bmc: None,
        netboot: true,
    }]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = watch::channel(false);
        let opts = ServerOptions::new(
            iface.clone(),
            Config::new(SERVER_IP, "http://10.77.0.1:8080"),
        );
        let dhcp = tokio::spawn(crate::run(opts, inv, Arc::new(NullSink), rx.clone()));
        let ra_iface = iface.clone();
        let ra = tokio::spawn(async move { crate::run_router_advert(&ra_iface, rx).await });
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.send(true).unwrap();
        dhcp.await.unwrap().unwrap();
        ra.await.unwrap().unwrap();
    });
}

/// Broadcast DISCOVER from 0.0.0.0:68 and expect a broadcast OFFER; then
/// expect a router advertisement, solicit another and expect it promptly.
#[test]
#[ignore = "a role of netns_end_to_end"]
fn client_role() {
    if std::env::var(ROLE).as_deref() != Ok("client") {
        return;
    }
    let iface = std::env::var(IFACE).unwrap();
    let mac: MacAddr = std::env::var(CLIENT_MAC).unwrap().parse().unwrap();

    let udp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    udp.set_broadcast(true).unwrap();
    udp.set_reuse_address(true).unwrap();
    udp.bind_device(Some(iface.as_bytes())).unwrap();
    udp.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let udp: std::net::UdpSocket = udp.into();

    let zero = Ipv4Addr::UNSPECIFIED;
    let mut discover = Message::new_with_id(42, zero, zero, zero, zero, &mac.0);
    discover
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    discover.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
    ));
    let mut bytes = Vec::new();
    discover.encode(&mut Encoder::new(&mut bytes)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(8);
    let offer = loop {
        assert!(Instant::now() < deadline, "no OFFER");
        udp.send_to(&bytes, (Ipv4Addr::BROADCAST, 67)).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            let msg = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
            if msg.xid() == 42 && msg.opts().msg_type() == Some(MessageType::Offer) {
                eprintln!(
                    "OFFER from {from}: yiaddr {} file {:?}",
                    msg.yiaddr(),
                    msg.fname_str()
                );
                break msg;
            }
        }
    };
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 77, 0, 11));
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "ipxe.efi"
    );

    let icmp = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
    icmp.bind_device(Some(iface.as_bytes())).unwrap();
    icmp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    icmp.set_multicast_hops_v6(255).unwrap();
    let wait_ra = |within: Duration| -> Option<Vec<u8>> {
        let until = Instant::now() + within;
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Ok(n) = (&icmp).read(&mut buf)
                && n >= 16
                && buf[0] == 134
            {
                return Some(buf[..n].to_vec());
            }
        }
        None
    };
    let ra = wait_ra(Duration::from_secs(10)).expect("a periodic router advertisement");
    assert_eq!(&ra[4..8], &[64, 0, 0, 0], "hop limit 64, M=O=0, lifetime 0");
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let all_routers = std::net::SocketAddrV6::new("ff02::2".parse().unwrap(), 0, 0, ifindex);
    // Router Solicitation: type 133, code 0, checksum (kernel), reserved.
    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    let asked = Instant::now();
    icmp.send_to(&rs, &all_routers.into()).unwrap();
    wait_ra(Duration::from_millis(1500)).expect("an answer to the solicitation");
    eprintln!("RA answered {:?} after the solicitation", asked.elapsed());
}
