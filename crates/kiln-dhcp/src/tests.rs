//! Rule-by-rule tests of the pure core, with hand-built dhcproto messages.

use kiln_model::EventKind;
use std::net::Ipv4Addr;
use std::sync::Arc;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode,
    UnknownOption,
    relay::{RelayAgentInformation, RelayInfo},
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use kiln_model::{Hardware, Inventory, MacAddr};

use crate::{
    Config, Decision, Destination, Ingress, Mode, Outcome, PacketError, decide, decide_via,
    handle_packet,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const BASE: &str = "http://10.77.0.1:8080";

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, n])
}

fn machine(n: u8, netboot: bool) -> Hardware {
    Hardware {
        hostname: format!("node{n}"),
        mac: mac(n),
        ip: Ipv4Addr::new(10, 77, 0, 10 + n),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Some(Ipv4Addr::new(10, 77, 0, 254)),
        nameservers: vec![Ipv4Addr::new(10, 77, 0, 53), Ipv4Addr::new(1, 1, 1, 1)],
        labels: Default::default(),
        disk: "/dev/sda".into(),
        vlan_id: None,
        bmc: None,
        netboot,
    }
}

/// node1 netboots; node2 boots from disk (netboot off).
fn inventory() -> Inventory {
    Inventory::new([machine(1, true), machine(2, false)])
}

fn config() -> Config {
    Config::new(SERVER, BASE)
}

fn proxy_config() -> Config {
    Config {
        mode: Mode::Proxy,
        ..config()
    }
}

fn request(ty: MessageType, m: MacAddr) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(0x1234_5678, zero, zero, zero, zero, &m.0);
    msg.opts_mut().insert(DhcpOption::MessageType(ty));
    msg
}

fn pxe(mut msg: Message, arch: u16) -> Message {
    let vc = format!("PXEClient:Arch:{arch:05}:UNDI:003016");
    msg.opts_mut()
        .insert(DhcpOption::ClassIdentifier(vc.into_bytes()));
    msg.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    msg.opts_mut()
        .insert(DhcpOption::ClientNetworkInterface(1, 3, 16));
    msg
}

fn http(mut msg: Message, arch: u16) -> Message {
    let vc = format!("HTTPClient:Arch:{arch:05}:UNDI:003016");
    msg.opts_mut()
        .insert(DhcpOption::ClassIdentifier(vc.into_bytes()));
    msg.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    msg
}

fn ipxe(msg: Message, arch: u16) -> Message {
    let mut msg = pxe(msg, arch);
    msg.opts_mut()
        .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    msg
}

fn reply(d: &Decision) -> &Message {
    &d.reply
        .as_ref()
        .unwrap_or_else(|| panic!("expected a reply, got {d:?}"))
        .message
}

fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
    m.opts().get(OptionCode::from(code))
}

fn vendor_class(m: &Message) -> Option<&[u8]> {
    match opt(m, 60) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v),
        _ => None,
    }
}

fn file(m: &Message) -> Option<String> {
    // dhcproto keeps the NUL terminator it read; ours has none, strip either way.
    m.fname_str()
        .map(|r| r.unwrap().trim_end_matches('\0').to_string())
}

fn assert_pxe_vendor_options(m: &Message) {
    assert_eq!(vendor_class(m), Some(&b"PXEClient"[..]));
    assert_eq!(
        opt(m, 43),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
}

fn assert_lease_options(m: &Message, hw: &Hardware) {
    assert_eq!(m.yiaddr(), hw.ip);
    assert_eq!(opt(m, 1), Some(&DhcpOption::SubnetMask(hw.netmask)));
    assert_eq!(
        opt(m, 3),
        Some(&DhcpOption::Router(vec![hw.gateway.unwrap()]))
    );
    assert_eq!(
        opt(m, 6),
        Some(&DhcpOption::DomainNameServer(hw.nameservers.clone()))
    );
    assert_eq!(opt(m, 12), Some(&DhcpOption::Hostname(hw.hostname.clone())));
    assert_eq!(opt(m, 51), Some(&DhcpOption::AddressLeaseTime(86_400)));
    assert_eq!(opt(m, 58), Some(&DhcpOption::Renewal(43_200)));
    assert_eq!(opt(m, 59), Some(&DhcpOption::Rebinding(75_600)));
    assert_eq!(opt(m, 54), Some(&DhcpOption::ServerIdentifier(SERVER)));
}

fn assert_no_boot(m: &Message) {
    assert_eq!(file(m), None);
    assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(
        opt(m, 60).is_none()
            && opt(m, 43).is_none()
            && opt(m, 67).is_none()
            && opt(m, 175).is_none()
    );
}

// ---- reservation mode: boot files per client ----

#[test]
fn bios_pxe_discover_gets_offer_with_undionly() {
    let d = decide(
        &pxe(request(MessageType::Discover, mac(1)), 0),
        &inventory(),
        &config(),
    );
    assert_eq!(d.outcome, Outcome::Offer);
    let m = reply(&d);
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.chaddr(), &mac(1).0);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_lease_options(m, &machine(1, true));
    assert_eq!(file(m).as_deref(), Some("undionly.kpxe"));
    assert_eq!(m.siaddr(), SERVER);
    assert_pxe_vendor_options(m);
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Broadcast
    );
    assert_eq!(
        d.detail,
        "offered 10.77.0.11 boot=undionly.kpxe arch=0 (BIOS)"
    );
    assert_eq!(
        d.event,
        Some(kiln_model::event::EventData::Dhcp {
            message: kiln_model::event::DhcpMessage::Offer,
            xid: 0x1234_5678,
            proxy: false,
            ip: Some(Ipv4Addr::new(10, 77, 0, 11)),
            reserved: None,
            client: kiln_model::event::DhcpClient::Pxe,
            arch: Some(0),
            vendor_class: Some("PXEClient:Arch:00000:UNDI:003016".into()),
            boot_file: Some("undionly.kpxe".into()),
            netboot: true,
        }),
        "the event carries the facts, the detail is their wording"
    );
    assert_eq!(
        d.machine.as_ref().map(|h| h.hostname.as_str()),
        Some("node1")
    );
    assert_eq!(d.mac, Some(mac(1)));
}

#[test]
fn uefi_x64_pxe_gets_ipxe_efi() {
    for arch in [6, 7, 9] {
        let d = decide(
            &pxe(request(MessageType::Discover, mac(1)), arch),
            &inventory(),
            &config(),
        );
        let m = reply(&d);
        assert_eq!(file(m).as_deref(), Some("ipxe.efi"), "arch {arch}");
        assert_pxe_vendor_options(m);
    }
}

#[test]
fn arm64_uefi_pxe_gets_snp_efi() {
    for arch in [10, 11] {
        let d = decide(
            &pxe(request(MessageType::Discover, mac(1)), arch),
            &inventory(),
            &config(),
        );
        assert_eq!(file(reply(&d)).as_deref(), Some("snp.efi"), "arch {arch}");
    }
    let d = decide(
        &pxe(request(MessageType::Discover, mac(1)), 11),
        &inventory(),
        &config(),
    );
    assert!(
        d.detail.ends_with("boot=snp.efi arch=11 (arm64 UEFI)"),
        "{}",
        d.detail
    );
}

#[test]
fn uefi_http_boot_gets_url_and_httpclient() {
    let cases = [
        (16, "http://10.77.0.1:8080/boot/ipxe.efi"),
        (19, "http://10.77.0.1:8080/boot/snp.efi"),
    ];
    for (arch, url) in cases {
        let d = decide(
            &http(request(MessageType::Discover, mac(1)), arch),
            &inventory(),
            &config(),
        );
        let m = reply(&d);
        assert_eq!(file(m).as_deref(), Some(url));
        assert_eq!(vendor_class(m), Some(&b"HTTPClient"[..]));
        assert!(opt(m, 43).is_none(), "no PXE vendor options for HTTP boot");
        assert_lease_options(m, &machine(1, true));
    }
}

#[test]
fn ipxe_gets_script_url_not_the_binary_again() {
    let d = decide(
        &ipxe(request(MessageType::Discover, mac(1)), 7),
        &inventory(),
        &config(),
    );
    let m = reply(&d);
    assert_eq!(
        file(m).as_deref(),
        Some("http://10.77.0.1:8080/ipxe/52:54:00:aa:bb:01/boot.ipxe")
    );
    // No PXEClient: iPXE would take our offer for a ProxyDHCP one.
    assert!(opt(m, 60).is_none() && opt(m, 43).is_none());
    let no_pxedhcp =
        DhcpOption::Unknown(UnknownOption::new(OptionCode::from(175), vec![176, 1, 1]));
    assert_eq!(opt(m, 175), Some(&no_pxedhcp));
    assert_lease_options(m, &machine(1, true));
}

#[test]
fn ipxe_user_class_in_rfc3004_form_is_recognised() {
    let mut msg = request(MessageType::Discover, mac(1));
    msg.opts_mut()
        .insert(DhcpOption::UserClass(b"\x04iPXE".to_vec()));
    let d = decide(&msg, &inventory(), &config());
    assert!(file(reply(&d)).unwrap().ends_with("/boot.ipxe"));
}

#[test]
fn trailing_slash_in_http_base_is_tolerated() {
    let cfg = Config {
        http_base: format!("{BASE}/"),
        ..config()
    };
    let d = decide(
        &http(request(MessageType::Discover, mac(1)), 16),
        &inventory(),
        &cfg,
    );
    assert_eq!(
        file(reply(&d)).as_deref(),
        Some("http://10.77.0.1:8080/boot/ipxe.efi")
    );
}

#[test]
fn netboot_off_still_leases_but_gets_no_boot_file() {
    for msg in [
        pxe(request(MessageType::Discover, mac(2)), 0),
        ipxe(request(MessageType::Discover, mac(2)), 7),
    ] {
        let d = decide(&msg, &inventory(), &config());
        assert_eq!(d.outcome, Outcome::Offer);
        let m = reply(&d);
        assert_lease_options(m, &machine(2, false));
        assert_no_boot(m);
        assert!(d.detail.contains("netboot off"), "{}", d.detail);
    }
}

#[test]
fn plain_client_gets_a_lease_without_boot_file() {
    let d = decide(
        &request(MessageType::Discover, mac(1)),
        &inventory(),
        &config(),
    );
    let m = reply(&d);
    assert_lease_options(m, &machine(1, true));
    assert_no_boot(m);
    assert_eq!(d.detail, "offered 10.77.0.11");
}

#[test]
fn pxe_without_option_93_is_bios_and_arch_can_come_from_option_60() {
    let mut msg = request(MessageType::Discover, mac(1));
    msg.opts_mut()
        .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    assert_eq!(
        file(reply(&decide(&msg, &inventory(), &config()))).as_deref(),
        Some("undionly.kpxe")
    );
    msg.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
    ));
    assert_eq!(
        file(reply(&decide(&msg, &inventory(), &config()))).as_deref(),
        Some("ipxe.efi")
    );
}

#[test]
fn unsupported_arch_gets_lease_without_boot_file() {
    let d = decide(
        &pxe(request(MessageType::Discover, mac(1)), 2),
        &inventory(),
        &config(),
    );
    assert_no_boot(reply(&d));
    assert!(d.detail.contains("no boot file for arch=2"), "{}", d.detail);
}

#[test]
fn option_67_when_requested_or_too_long_for_the_file_field() {
    let mut msg = pxe(request(MessageType::Discover, mac(1)), 0);
    msg.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::BootfileName,
    ]));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(
        opt(reply(&d), 67),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );

    let long = format!("http://{}.example:8080", "k".repeat(120));
    let cfg = Config {
        http_base: long.clone(),
        ..config()
    };
    let d = decide(
        &http(request(MessageType::Discover, mac(1)), 16),
        &inventory(),
        &cfg,
    );
    let m = reply(&d);
    assert_eq!(file(m), None, "does not fit in 128 bytes");
    assert_eq!(
        opt(m, 67),
        Some(&DhcpOption::BootfileName(
            format!("{long}/boot/ipxe.efi").into_bytes()
        ))
    );
}

// ---- reservation mode: message types ----

#[test]
fn unknown_mac_gets_no_reply() {
    let d = decide(
        &pxe(request(MessageType::Discover, mac(9)), 0),
        &inventory(),
        &config(),
    );
    assert_eq!(d.outcome, Outcome::IgnoredUnknown);
    assert!(d.reply.is_none() && d.machine.is_none());
    assert_eq!(d.mac, Some(mac(9)));
    // Discovery hears what it asked for.
    let seen = d.unknown.expect("an unknown MAC is reported to discovery");
    assert_eq!((seen.mac, seen.arch, seen.count), (mac(9), Some(0), 1));
    assert_eq!(seen.client, kiln_model::event::DhcpClient::Pxe);
    let seen = decide(
        &ipxe(request(MessageType::Discover, mac(9)), 7),
        &inventory(),
        &config(),
    )
    .unknown
    .unwrap();
    assert_eq!(seen.client, kiln_model::event::DhcpClient::Ipxe);
    assert_eq!(seen.user_class.as_deref(), Some("iPXE"));
    // An enrolled machine is not discovered.
    let d = decide(
        &pxe(request(MessageType::Discover, mac(1)), 0),
        &inventory(),
        &config(),
    );
    assert!(d.unknown.is_none());
}

#[test]
fn request_selecting_our_offer_is_acked() {
    let mut msg = pxe(request(MessageType::Request, mac(1)), 7);
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 11)));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Ack);
    let m = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_lease_options(m, &machine(1, true));
    assert_eq!(file(m).as_deref(), Some("ipxe.efi"));
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Broadcast
    );
    assert!(
        d.detail.starts_with("acked 10.77.0.11 boot=ipxe.efi"),
        "{}",
        d.detail
    );
}

#[test]
fn request_selecting_another_server_gets_no_reply() {
    let mut msg = request(MessageType::Request, mac(1));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 11)));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::IgnoredOtherServer);
    assert!(d.reply.is_none());
}

#[test]
fn request_for_a_wrong_address_is_naked() {
    let mut msg = request(MessageType::Request, mac(1));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 1, 50,
        )));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Nak);
    let m = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(m, 51).is_none() && opt(m, 1).is_none());
    assert_eq!(opt(m, 54), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Broadcast
    );
    assert_eq!(
        d.detail,
        "refused 192.168.1.50: reserved address is 10.77.0.11"
    );
}

#[test]
fn renewing_client_is_acked_by_unicast_and_wrong_ciaddr_is_naked_by_broadcast() {
    let mut msg = request(MessageType::Request, mac(1));
    msg.set_ciaddr(Ipv4Addr::new(10, 77, 0, 11));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Ack);
    assert_eq!(reply(&d).ciaddr(), Ipv4Addr::new(10, 77, 0, 11));
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Client(Ipv4Addr::new(10, 77, 0, 11))
    );

    msg.set_ciaddr(Ipv4Addr::new(10, 77, 0, 99));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Nak);
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Broadcast,
        "RFC 2131: NAKs are broadcast"
    );
}

#[test]
fn request_naming_no_address_is_ignored() {
    let d = decide(
        &request(MessageType::Request, mac(1)),
        &inventory(),
        &config(),
    );
    assert_eq!(d.outcome, Outcome::IgnoredOther);
    assert!(d.reply.is_none());
}

#[test]
fn inform_is_acked_without_address_or_lease() {
    let mut msg = request(MessageType::Inform, mac(1));
    msg.set_ciaddr(Ipv4Addr::new(10, 77, 0, 11));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Ack);
    let m = reply(&d);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(m, 51).is_none() && opt(m, 58).is_none() && opt(m, 59).is_none());
    assert_eq!(
        opt(m, 1),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Client(Ipv4Addr::new(10, 77, 0, 11))
    );
}

#[test]
fn release_and_decline_are_recorded_without_reply() {
    let mut msg = request(MessageType::Release, mac(1));
    msg.set_ciaddr(Ipv4Addr::new(10, 77, 0, 11));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!((d.outcome, d.reply.is_none()), (Outcome::Release, true));
    assert_eq!(d.outcome.event_kind(), Some(EventKind::DhcpRelease));
    assert!(d.machine.is_some());

    let mut msg = request(MessageType::Decline, mac(1));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 11)));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!((d.outcome, d.reply.is_none()), (Outcome::Decline, true));
    assert!(d.detail.contains("10.77.0.11"));
}

// ---- relay ----

#[test]
fn relayed_request_is_answered_to_giaddr_with_giaddr_and_option_82_kept() {
    let relay = Ipv4Addr::new(10, 78, 0, 1);
    let mut msg = pxe(request(MessageType::Discover, mac(1)), 0);
    msg.set_giaddr(relay);
    let mut info = RelayAgentInformation::default();
    info.insert(RelayInfo::AgentCircuitId(b"eth0/1".to_vec()));
    msg.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info.clone()));
    let d = decide(&msg, &inventory(), &config());
    let m = reply(&d);
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Relay(relay)
    );
    assert_eq!(m.giaddr(), relay);
    assert_eq!(opt(m, 82), Some(&DhcpOption::RelayAgentInformation(info)));

    // A relayed NAK goes to the relay with the broadcast bit set.
    let mut msg = request(MessageType::Request, mac(1));
    msg.set_giaddr(relay);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 78, 0, 50)));
    let d = decide(&msg, &inventory(), &config());
    assert_eq!(d.outcome, Outcome::Nak);
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Relay(relay)
    );
    assert!(reply(&d).flags().broadcast());
}

#[test]
fn broadcast_flag_is_copied() {
    let mut msg = request(MessageType::Discover, mac(1));
    msg.set_flags(Flags::default().set_broadcast());
    assert!(
        reply(&decide(&msg, &inventory(), &config()))
            .flags()
            .broadcast()
    );
}

// ---- proxy mode ----

#[test]
fn proxy_offer_has_boot_info_and_no_address() {
    let mut msg = pxe(request(MessageType::Discover, mac(1)), 7);
    let uuid = vec![0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    msg.opts_mut()
        .insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    let d = decide(&msg, &inventory(), &proxy_config());
    assert_eq!(d.outcome, Outcome::Offer);
    let m = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    for code in [1, 3, 6, 12, 51, 58, 59] {
        assert!(
            opt(m, code).is_none(),
            "proxy offer must not carry option {code}"
        );
    }
    assert_pxe_vendor_options(m);
    assert_eq!(opt(m, 97), Some(&DhcpOption::ClientMachineIdentifier(uuid)));
    assert_eq!(opt(m, 54), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(file(m).as_deref(), Some("ipxe.efi"));
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(
        d.reply.as_ref().unwrap().destination,
        Destination::Broadcast
    );
    assert!(
        d.detail.starts_with("proxy offer boot=ipxe.efi"),
        "{}",
        d.detail
    );
}

#[test]
fn proxy_request_on_pxe_port_is_acked_to_sender() {
    let mut msg = pxe(request(MessageType::Request, mac(1)), 0);
    msg.set_ciaddr(Ipv4Addr::new(192, 168, 1, 40));
    let d = decide_via(&msg, Ingress::Pxe, &inventory(), &proxy_config());
    assert_eq!(d.outcome, Outcome::Ack);
    let m = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(m).as_deref(), Some("undionly.kpxe"));
    assert_eq!(d.reply.as_ref().unwrap().destination, Destination::Sender);

    // On port 67 the REQUEST belongs to the real DHCP server.
    let d = decide(&msg, &inventory(), &proxy_config());
    assert_eq!(
        (d.outcome, d.reply.is_none()),
        (Outcome::IgnoredOther, true)
    );
}

#[test]
fn proxy_ipxe_gets_script_and_pxeclient_so_it_counts_as_proxy_offer() {
    let d = decide(
        &ipxe(request(MessageType::Discover, mac(1)), 7),
        &inventory(),
        &proxy_config(),
    );
    let m = reply(&d);
    assert!(
        file(m)
            .unwrap()
            .ends_with("/ipxe/52:54:00:aa:bb:01/boot.ipxe")
    );
    assert_pxe_vendor_options(m);
    assert!(opt(m, 175).is_none());
}

#[test]
fn proxy_ignores_plain_clients_netboot_off_unknown_and_unbootable_arches() {
    let inv = inventory();
    let cfg = proxy_config();
    let cases = [
        (
            request(MessageType::Discover, mac(1)),
            Outcome::IgnoredNotNetboot,
        ),
        (
            pxe(request(MessageType::Discover, mac(2)), 0),
            Outcome::IgnoredNotNetboot,
        ),
        (
            pxe(request(MessageType::Discover, mac(9)), 0),
            Outcome::IgnoredUnknown,
        ),
        (
            pxe(request(MessageType::Discover, mac(1)), 2),
            Outcome::IgnoredNotNetboot,
        ),
    ];
    for (msg, outcome) in cases {
        let d = decide(&msg, &inv, &cfg);
        assert_eq!(d.outcome, outcome, "{}", d.detail);
        assert!(d.reply.is_none());
    }
}

// ---- off mode and unusable packets ----

#[test]
fn off_mode_never_replies() {
    let cfg = Config {
        mode: Mode::Off,
        ..config()
    };
    for msg in [
        pxe(request(MessageType::Discover, mac(1)), 0),
        request(MessageType::Request, mac(1)),
    ] {
        let d = decide(&msg, &inventory(), &cfg);
        assert_eq!((d.outcome, d.reply.is_none()), (Outcome::IgnoredOff, true));
    }
}

#[test]
fn bootreply_and_non_ethernet_are_ignored() {
    let mut msg = pxe(request(MessageType::Offer, mac(1)), 0);
    msg.set_opcode(Opcode::BootReply);
    assert_eq!(
        decide(&msg, &inventory(), &config()).outcome,
        Outcome::IgnoredOther
    );

    let mut msg = pxe(request(MessageType::Discover, mac(1)), 0);
    msg.set_htype(HType::from(6));
    assert_eq!(
        decide(&msg, &inventory(), &config()).outcome,
        Outcome::IgnoredOther
    );

    let mut msg = pxe(request(MessageType::Discover, mac(1)), 0);
    msg.set_chaddr(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01, 0, 0]);
    assert_eq!(
        decide(&msg, &inventory(), &config()).outcome,
        Outcome::IgnoredOther
    );

    let zero = Ipv4Addr::UNSPECIFIED;
    let bootp = Message::new_with_id(1, zero, zero, zero, zero, &mac(1).0);
    assert_eq!(
        decide(&bootp, &inventory(), &config()).outcome,
        Outcome::IgnoredOther
    );
}

// ---- bytes in, bytes out ----

fn to_bytes(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

#[test]
fn handle_packet_round_trip() {
    let bytes = to_bytes(&pxe(request(MessageType::Discover, mac(1)), 0));
    let handled = handle_packet(&bytes, Ingress::Dhcp, &inventory(), &config()).unwrap();
    let out = handled.bytes.expect("reply bytes");
    assert!(out.len() >= 300, "BOOTP minimum size");
    let back = Message::decode(&mut Decoder::new(&out)).unwrap();
    assert_eq!(back.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(back.yiaddr(), Ipv4Addr::new(10, 77, 0, 11));
    assert_eq!(file(&back).as_deref(), Some("undionly.kpxe"));
    assert_eq!(&out[236..240], &[99, 130, 83, 99]);

    let unknown = to_bytes(&request(MessageType::Discover, mac(9)));
    let handled = handle_packet(&unknown, Ingress::Dhcp, &inventory(), &config()).unwrap();
    assert!(handled.bytes.is_none());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let inv = inventory();
    let cfg = config();
    assert!(matches!(
        handle_packet(&[], Ingress::Dhcp, &inv, &cfg),
        Err(PacketError::TooShort(0))
    ));
    assert!(matches!(
        handle_packet(&[0xff; 100], Ingress::Dhcp, &inv, &cfg),
        Err(PacketError::TooShort(100))
    ));
    assert!(matches!(
        handle_packet(&[0xff; 400], Ingress::Dhcp, &inv, &cfg),
        Err(PacketError::NoMagicCookie)
    ));

    // Lengths dhcproto would debug-assert on.
    let good = to_bytes(&pxe(request(MessageType::Discover, mac(1)), 0));
    for (code, len) in [(94u8, 2u8), (80, 1), (81, 1), (151, 0), (152, 3)] {
        let mut bad = good[..240].to_vec();
        bad.extend_from_slice(&[53, 1, 1, code, len]);
        bad.extend(std::iter::repeat_n(0x41, usize::from(len)));
        bad.push(255);
        let r = handle_packet(&bad, Ingress::Dhcp, &inv, &cfg);
        assert!(
            matches!(r, Err(PacketError::BadOption { code: c, .. }) if c == code),
            "{code}: {r:?}"
        );
    }
    // Split across two instances (RFC 3396) the total counts: 2 + 1 = 3 is fine.
    let mut split = good[..240].to_vec();
    split.extend_from_slice(&[53, 1, 1, 94, 2, 1, 3, 94, 1, 16, 255]);
    assert!(handle_packet(&split, Ingress::Dhcp, &inv, &cfg).is_ok());

    // hlen > 16 must not reach dhcproto's chaddr() slice.
    let mut big_hlen = good.clone();
    big_hlen[2] = 200;
    let r = handle_packet(&big_hlen, Ingress::Dhcp, &inv, &cfg).unwrap();
    assert_eq!(r.decision.outcome, Outcome::IgnoredOther);
}

/// A cheap in-process fuzz: truncations and byte flips of valid requests.
#[test]
fn mutated_packets_never_panic() {
    let seeds = [
        to_bytes(&pxe(request(MessageType::Discover, mac(1)), 0)),
        to_bytes(&ipxe(request(MessageType::Request, mac(1)), 7)),
        to_bytes(&http(request(MessageType::Inform, mac(2)), 16)),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &seeds {
        for cut in 0..seed.len() {
            crate::fuzz_entry(&seed[..cut]);
        }
        for _ in 0..3000 {
            let mut b = seed.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = 240 + (next() as usize) % (b.len() - 240);
                b[i] = next() as u8;
            }
            crate::fuzz_entry(&b);
        }
    }
}

#[test]
fn outcome_labels_and_event_kinds() {
    assert_eq!(Outcome::IgnoredUnknown.as_str(), "ignored_unknown");
    assert_eq!(Outcome::Offer.event_kind(), Some(EventKind::DhcpOffer));
    assert_eq!(Outcome::Nak.event_kind(), Some(EventKind::DhcpNak));
    assert_eq!(Outcome::IgnoredUnknown.event_kind(), None);
    assert_eq!(Outcome::Malformed.event_kind(), None);
}

#[test]
fn decision_holds_the_inventory_record() {
    let inv = inventory();
    let d = decide(&request(MessageType::Discover, mac(1)), &inv, &config());
    assert!(Arc::ptr_eq(
        d.machine.as_ref().unwrap(),
        inv.by_mac(&mac(1)).unwrap()
    ));
}

/// The second server of an HA pair on 10.77.0.0/24 (see `crate::segment`).
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn peer_config() -> Config {
    Config::new(PEER, "http://10.77.0.2:8080")
}

/// Two servers on one segment answer alike: the lease is the hardware record's, only the
/// server's own identity differs; a REQUEST that chose one is answered by it alone; a change of
/// the shared record changes both answers the same way.
#[test]
fn an_ha_pair_never_gives_a_machine_conflicting_answers() {
    let (a, b) = (config(), peer_config());
    for inv in [inventory(), Inventory::new([machine(1, false)])] {
        let hw = inv.by_mac(&mac(1)).unwrap().clone();
        let discover = ipxe(request(MessageType::Discover, mac(1)), 7);
        let (da, db) = (decide(&discover, &inv, &a), decide(&discover, &inv, &b));
        let (oa, ob) = (reply(&da), reply(&db));
        assert_lease_options(oa, &hw);
        for code in [1, 3, 6, 12, 51, 58, 59] {
            assert_eq!(opt(oa, code), opt(ob, code), "option {code}");
        }
        assert_eq!(oa.yiaddr(), ob.yiaddr());
        assert_eq!(opt(ob, 54), Some(&DhcpOption::ServerIdentifier(PEER)));
        // The same boot answer (or none), each naming its own server.
        let same = |m: &Message| file(m).map(|f| f.replace("10.77.0.2", "10.77.0.1"));
        assert_eq!(same(oa), same(ob));
        assert_eq!(same(oa).is_some(), hw.netboot);

        // The client takes b's offer: a stays silent, b acknowledges.
        let mut req = ipxe(request(MessageType::Request, mac(1)), 7);
        req.opts_mut().insert(DhcpOption::ServerIdentifier(PEER));
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(hw.ip));
        assert_eq!(decide(&req, &inv, &a).outcome, Outcome::IgnoredOtherServer);
        assert_eq!(decide(&req, &inv, &b).outcome, Outcome::Ack);
    }
}

/// Two segments, one server each: a server answers the machines of its own segment and the
/// relayed subnets it serves, and leaves the others to their server.
#[test]
fn a_server_answers_its_own_segment_and_the_relays_it_serves() {
    let far = Hardware {
        hostname: "far".into(),
        ip: Ipv4Addr::new(10, 88, 0, 11),
        gateway: None,
        ..machine(3, true)
    };
    let relayed = Hardware {
        hostname: "relayed".into(),
        ip: Ipv4Addr::new(10, 99, 0, 11),
        gateway: None,
        ..machine(4, true)
    };
    let inv = Inventory::new([machine(1, true), far, relayed]);
    let cfg = Config {
        segments: crate::Segments::parse("own,10.99.0.0/24").unwrap(),
        ..config()
    };
    let discover = |n| ipxe(request(MessageType::Discover, mac(n)), 7);
    assert_eq!(decide(&discover(1), &inv, &cfg).outcome, Outcome::Offer);
    let d = decide(&discover(3), &inv, &cfg);
    assert_eq!(d.outcome, Outcome::IgnoredOtherSegment);
    assert!(d.reply.is_none() && d.event.is_none());
    let mut msg = discover(4);
    msg.set_giaddr(Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(decide(&msg, &inv, &cfg).outcome, Outcome::Offer);
    let mut msg = discover(3);
    msg.set_giaddr(Ipv4Addr::new(10, 88, 0, 1));
    assert_eq!(
        decide(&msg, &inv, &cfg).outcome,
        Outcome::IgnoredOtherSegment
    );
    // The default answers every enrolled machine, as one server for everything does.
    assert_eq!(
        decide(&discover(3), &inv, &config()).outcome,
        Outcome::Offer
    );
}

fn inspect_config() -> Config {
    Config {
        inspect: Some(crate::Inspect {
            pool: Some(crate::InspectPool::parse("10.77.0.200-10.77.0.201/24").unwrap()),
            lease_secs: crate::INSPECT_LEASE_SECS,
        }),
        ..config()
    }
}

fn lease_time(m: &Message) -> Option<u32> {
    match opt(m, 51) {
        Some(DhcpOption::AddressLeaseTime(s)) => Some(*s),
        _ => None,
    }
}

#[test]
fn inspection_leases_a_pool_address_to_an_unknown_netboot_client_only() {
    let inv = inventory();
    let cfg = inspect_config();
    let mut leases = crate::Leases::default();
    let stranger = mac(9);
    let go = |msg: Message, leases: &mut crate::Leases, now: u64| {
        crate::decide_inspecting(&msg, Ingress::Dhcp, &inv, &cfg, leases, now)
    };
    // A plain client that never netbooted gets nothing: the pool is not a DHCP server.
    let d = go(request(MessageType::Discover, stranger), &mut leases, 0);
    assert_eq!(d.outcome, Outcome::IgnoredUnknown);
    assert!(d.reply.is_none() && d.unknown.is_some());
    // PXE: an offer from the pool, the short lease, the first-stage binary; no event.
    let d = go(
        pxe(request(MessageType::Discover, stranger), 0),
        &mut leases,
        0,
    );
    assert_eq!(d.outcome, Outcome::Offer);
    let m = reply(&d);
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 77, 0, 200));
    assert_eq!(lease_time(m), Some(crate::INSPECT_LEASE_SECS));
    assert_eq!(file(m).as_deref(), Some("undionly.kpxe"));
    assert!(matches!(opt(m, 12), Some(DhcpOption::Hostname(h)) if h == "inspect-525400aabb09"));
    assert!(d.machine.is_none() && d.event.is_none(), "no event: {d:?}");
    assert!(d.unknown.is_some(), "still reported to discovery");
    // iPXE then asks for the script, and the agent OS's plain client for its address.
    let d = go(
        ipxe(request(MessageType::Discover, stranger), 0),
        &mut leases,
        1000,
    );
    assert_eq!(
        file(reply(&d)).as_deref(),
        Some("http://10.77.0.1:8080/ipxe/52:54:00:aa:bb:09/boot.ipxe")
    );
    let mut req = request(MessageType::Request, stranger);
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            10, 77, 0, 200,
        )));
    let d = go(req, &mut leases, 2000);
    assert_eq!(d.outcome, Outcome::Ack);
    assert_eq!(reply(&d).yiaddr(), Ipv4Addr::new(10, 77, 0, 200));
    assert_eq!(
        leases.held(&stranger, 2000),
        Some(Ipv4Addr::new(10, 77, 0, 200))
    );
    // Enrolled machines are answered as before.
    let d = go(
        pxe(request(MessageType::Discover, mac(1)), 0),
        &mut leases,
        0,
    );
    assert_eq!(reply(&d).yiaddr(), machine(1, true).ip);
    assert!(d.event.is_some());
    // The pool runs out: the third stranger gets nothing.
    assert!(
        go(
            pxe(request(MessageType::Discover, mac(10)), 0),
            &mut leases,
            0
        )
        .reply
        .is_some()
    );
    let d = go(
        pxe(request(MessageType::Discover, mac(11)), 0),
        &mut leases,
        0,
    );
    assert!(d.reply.is_none(), "{d:?}");
    // Without inspection, the same stranger gets nothing.
    let d = crate::decide_inspecting(
        &pxe(request(MessageType::Discover, stranger), 0),
        Ingress::Dhcp,
        &inv,
        &config(),
        &mut crate::Leases::default(),
        0,
    );
    assert_eq!(d.outcome, Outcome::IgnoredUnknown);
    assert!(d.reply.is_none());
}

#[test]
fn inspection_in_proxy_mode_adds_boot_information_only() {
    let cfg = Config {
        mode: Mode::Proxy,
        inspect: Some(crate::Inspect {
            pool: None,
            lease_secs: crate::INSPECT_LEASE_SECS,
        }),
        ..config()
    };
    let mut leases = crate::Leases::default();
    let d = crate::decide_inspecting(
        &pxe(request(MessageType::Discover, mac(9)), 7),
        Ingress::Dhcp,
        &inventory(),
        &cfg,
        &mut leases,
        0,
    );
    let m = reply(&d);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(m).as_deref(), Some("ipxe.efi"));
    assert!(leases.is_empty());
    let plain = crate::decide_inspecting(
        &request(MessageType::Discover, mac(9)),
        Ingress::Dhcp,
        &inventory(),
        &cfg,
        &mut leases,
        0,
    );
    assert!(plain.reply.is_none());
}
